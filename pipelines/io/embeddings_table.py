"""The embeddings table of a scoring run, as its Parquet footers describe it (no row data read).

`gunshot search` checks the tables it searches with it, `gunshot dataset --embeddings` reads the
embedding model of the frames it takes, and rescoring opens the table's files (local or gs://).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

DEFAULT_MODEL = "vggish"


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """What the Parquet footers of the embeddings table say (read at launch, no row data).

    Attributes:
      files: readable files with the embeddings columns, sorted.
      rows: embedding rows in those files.
      errors: (file, reason, message) for files that cannot be searched.
      vggish_sha256, pca_sha256: model hashes found in the files (from column statistics).
      precision: how the embeddings were computed (fp32 for files without the column).
      embedding_model: the embedding models of the files ("vggish" for files without the column).
      embedding_hop_seconds, embedding_sha256: a non-default model's hop and file hashes.
    """

    files: tuple[str, ...]
    rows: int
    errors: tuple[tuple[str, str, str], ...]
    vggish_sha256: tuple[str, ...]
    pca_sha256: tuple[str, ...]
    precision: tuple[str, ...] = ()
    embedding_model: tuple[str, ...] = ()
    embedding_hop_seconds: tuple[float, ...] = ()
    embedding_sha256: tuple[str, ...] = ()

    def model(self):
        """The gunshot_core.embedding_models.EmbeddingModel of the table (one model: see run)."""
        from gunshot_core import embedding_models

        name = self.embedding_model[0] if self.embedding_model else embedding_models.DEFAULT
        hop = self.embedding_hop_seconds[0] if self.embedding_hop_seconds else None
        return embedding_models.get(name, hop_seconds=hop)


REQUIRED_COLUMNS = ("source", "frame_index", "start_seconds", "embedding")


def open_parquet(path: str) -> pq.ParquetFile:
    """A ParquetFile over a local path or a (seekable) gs:// file object."""
    if "://" not in path:
        return pq.ParquetFile(path)
    return pq.ParquetFile(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))


def stat_values(metadata, column: str, value=None) -> set:
    """Distinct min/max values of a column over all row groups (empty when not recorded), as text
    unless `value` (e.g. float) converts them."""
    names = metadata.schema.names
    if column not in names:
        return set()
    value = value or text
    index = names.index(column)
    values = set()
    for rg in range(metadata.num_row_groups):
        stats = metadata.row_group(rg).column(index).statistics
        if stats is not None and stats.has_min_max:
            values.update(value(v) for v in (stats.min, stats.max))
    return values


def text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def schema_problem(schema: pa.Schema) -> str | None:
    """Why a file's schema cannot be searched (missing or mistyped columns), or None."""
    from pipelines import schemas

    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        return f"no column {', '.join(missing)}"
    model = schema_model(schema)
    if model is None:
        return "column embedding_model names no known embedding model"
    expected = schemas.score_tables(model)["embeddings"]
    for name in REQUIRED_COLUMNS:
        want, got = expected.field(name).type, schema.field(name).type
        if got != want:
            return f"column {name} is {got}, expected {want}"
    return None


def schema_model(schema: pa.Schema, metadata=None):
    """The embedding model a file's schema (and, given the footer, its statistics) says made its
    frames: the default model without an `embedding_model` column, else the column's value (None when
    it names no known model). Without `metadata` the embedding width decides between known models."""
    from gunshot_core import embedding_models

    if "embedding_model" not in schema.names:
        return embedding_models.get()
    if metadata is not None:
        names = stat_values(metadata, "embedding_model")
        if len(names) == 1 and next(iter(names)) in embedding_models.MODELS:
            return embedding_models.get(next(iter(names)))
        return None if names else embedding_models.get()
    width = schema.field("embedding").type.byte_width if "embedding" in schema.names else -1
    for model in embedding_models.MODELS.values():
        if not model.is_default and model.frame_bytes == width:
            return model
    return None


def inspect_table(paths: list[str]) -> TableInfo:
    """Reads the footers of the embeddings files: which can be searched, how many rows, which models.

    Args:
      paths: Parquet files of an embeddings table (local or gs://).
    """
    files, errors, rows = [], [], 0
    vggish, pca, precisions = set(), set(), set()
    model_names, hops, model_hashes = set(), set(), set()
    for path in sorted(paths):
        try:
            metadata = open_parquet(path).metadata
        except Exception as e:  # noqa: BLE001 - any unreadable footer is an error row
            errors.append((path, "unreadable", f"{path}: not a readable Parquet file ({type(e).__name__})"))
            continue
        problem = schema_problem(metadata.schema.to_arrow_schema())
        if problem:
            errors.append((path, "wrong_schema", f"{path}: {problem}; not an embeddings table"))
            continue
        files.append(path)
        rows += metadata.num_rows
        vggish |= stat_values(metadata, "vggish_sha256")
        pca |= stat_values(metadata, "pca_sha256")
        precisions |= stat_values(metadata, "precision") or {"fp32"}  # older tables: always fp32
        if metadata.num_rows:
            model_names |= stat_values(metadata, "embedding_model") or {DEFAULT_MODEL}  # no column: VGGish
        hops |= stat_values(metadata, "embedding_hop_seconds", float)
        model_hashes |= stat_values(metadata, "embedding_sha256")
    return TableInfo(
        tuple(files),
        rows,
        tuple(errors),
        tuple(sorted(vggish)),
        tuple(sorted(pca)),
        tuple(sorted(precisions)),
        tuple(sorted(model_names)),
        tuple(sorted(hops)),
        tuple(sorted(model_hashes)),
    )
