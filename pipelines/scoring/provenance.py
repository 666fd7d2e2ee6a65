"""Provenance: the columns every scoring table carries (which models, code and settings produced a row).

Stage: scoring 7 (outputs: provenance columns added to every row before writing).
"""

import dataclasses
import hashlib


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Columns every table carries: which models, code and settings produced a row."""

    head_name: str
    vggish_sha256: str
    pca_sha256: str
    head_sha256: str
    code_version: str
    window_seconds: float
    hop_seconds: float
    threshold: float
    precision: str = "fp32"
    embedding_runtime: str = ""

    @property
    def model_id(self) -> str:
        """Short hash of the three model files (the same at every precision: compare `precision`)."""
        joined = f"{self.vggish_sha256}:{self.pca_sha256}:{self.head_sha256}"
        return hashlib.sha256(joined.encode()).hexdigest()[:16]

    def columns(self) -> dict:
        return {"model_id": self.model_id, **dataclasses.asdict(self)}


def with_provenance(row: dict, columns: dict) -> dict:
    """`row` plus the provenance columns (a new dict)."""
    out = dict(row)
    out.update(columns)
    return out
