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
    # Set only for an embedding model other than the default (VGGish), whose tables then carry these
    # columns too (pipelines.schemas.score_tables); VGGish tables keep their original columns.
    embedding_model: str | None = None
    embedding_hop_seconds: float | None = None
    embedding_sha256: str | None = None  # "role=sha256,..." of the model's files, roles sorted

    @property
    def model_id(self) -> str:
        """Short hash of the model files (the same at every precision: compare `precision`)."""
        joined = f"{self.vggish_sha256}:{self.pca_sha256}:{self.head_sha256}"
        if self.embedding_model is not None:
            joined += f":{self.embedding_model}:{self.embedding_hop_seconds}:{self.embedding_sha256}"
        return hashlib.sha256(joined.encode()).hexdigest()[:16]

    def columns(self) -> dict:
        out = {"model_id": self.model_id, **dataclasses.asdict(self)}
        if self.embedding_model is None:
            for name in EMBEDDING_MODEL_COLUMNS:
                del out[name]
        return out


#: Provenance columns only the tables of a non-default embedding model have.
EMBEDDING_MODEL_COLUMNS = ("embedding_model", "embedding_hop_seconds", "embedding_sha256")


def for_model(model, file_hashes: dict[str, str], **fields) -> Provenance:
    """The Provenance of a run on embedding `model` (gunshot_core.embedding_models) whose files hash to
    `file_hashes` ({role: sha256}); `fields` are the other columns. The default model's file hashes
    fill vggish_sha256 / pca_sha256 as they always did; another model's go to the embedding columns
    (and the VGGish columns are empty)."""
    if model.is_default:
        return Provenance(vggish_sha256=file_hashes["checkpoint"], pca_sha256=file_hashes["pca"], **fields)
    return Provenance(
        vggish_sha256="",
        pca_sha256="",
        embedding_model=model.name,
        embedding_hop_seconds=float(model.hop_seconds),
        embedding_sha256=",".join(f"{role}={sha}" for role, sha in sorted(file_hashes.items())),
        **fields,
    )


def table_precisions(paths) -> set[str]:
    """The `precision` values of scoring tables' Parquet files (from their footers' column statistics).

    Files written before the column existed, or with it null, count as fp32 (the only precision then).
    """
    from pipelines.io import embeddings_table

    found = set()
    for path in paths:
        metadata = embeddings_table.open_parquet(path).metadata
        found |= embeddings_table.stat_values(metadata, "precision") or ({"fp32"} if metadata.num_rows else set())
    return found


def with_provenance(row: dict, columns: dict) -> dict:
    """`row` plus the provenance columns (a new dict)."""
    out = dict(row)
    out.update(columns)
    return out
