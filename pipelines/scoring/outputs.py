"""Where the scoring tables go: file names, sort keys, staged writes and their finalization.

Stage: scoring 7 (outputs). Tables are written by `pipelines.io.tables.WriteTable` into
`DIR/.staging/` and moved into `DIR` only after the whole job succeeded (`finalize_tables`), so a
failed or interrupted run never leaves a half-written table next to a complete one.
"""

import logging
import os
import posixpath

from apache_beam.io.filesystems import FileSystems

_LOG = logging.getLogger(__name__)
STAGING = ".staging"
RUN_MANIFEST = "run.json"
EVENTS_CSV = "events.csv"
RAVEN_TABLE = "events.selections.txt"
CLIPS_DIR = "clips"


def _windows_key(row):
    return (row["source"], row["window_index"])


def _recordings_key(row):
    return (row["source"],)


def _events_key(row):
    return (row["source"], row["event_index"])


def _errors_key(row):
    return (row["source"], row["stage"], row["reason"], row["message"])


def _embeddings_key(row):
    return (row["source"], row["frame_index"])


# The columns each table is sorted by within a file (they identify a row); Arrow sorts them.
SORT_COLUMNS = {
    "windows": ("source", "window_index"),
    "recordings": ("source",),
    "events": ("source", "event_index"),
    "errors": ("source", "stage", "reason", "message"),
    "embeddings": ("source", "frame_index"),
    "frames": ("source", "frame_index"),
}


# Rows per Parquet row group of the per-frame tables: 65,536 frames (17.5 hours of VGGish audio, ~8 MB
# of embeddings), the unit `--from_run`, search and `dataset --embeddings` read at a time.
ROW_GROUP_ROWS = {"embeddings": 1 << 16, "frames": 1 << 16}
# Embedding bytes per row group at most: a model with larger frames gets fewer rows per group
# (BirdNET's 4 kB frames: 2,048 rows), so a reader's unit stays ~8 MB whatever the model.
ROW_GROUP_EMBEDDING_BYTES = 8 << 20


def row_group_rows(name: str, model) -> int | None:
    """Rows per Parquet row group of table `name` for frames of `model` (None: pyarrow's default).

    Args:
      name: a table name of the scoring job.
      model: the gunshot_core.embedding_models.EmbeddingModel whose frames the run stores.
    """
    rows = ROW_GROUP_ROWS.get(name)
    if rows and name == "embeddings":
        rows = max(1024, min(rows, ROW_GROUP_EMBEDDING_BYTES // model.frame_bytes))
    return rows


def source_key(row):
    """Shard key: all rows of one recording go to the same file."""
    return row["source"]


SORT_KEYS = {
    "windows": _windows_key,
    "recordings": _recordings_key,
    "events": _events_key,
    "errors": _errors_key,
    "embeddings": _embeddings_key,
    "frames": _embeddings_key,
}


def table_pattern(output_dir: str, name: str) -> str:
    return FileSystems.join(output_dir, f"{name}-*-of-*.parquet")


def existing_files(pattern: str) -> list[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing directory is no table
        return []


def clear_staging(output_dir: str) -> int:
    """Deletes what an interrupted earlier run left in `output_dir/.staging/`; returns how many files.

    Staged files of another shard count would otherwise be moved in next to this run's.
    """
    leftovers = existing_files(FileSystems.join(output_dir, STAGING, "*"))
    if leftovers:
        _LOG.info("removing %d files an earlier, unfinished run left in %s", len(leftovers), STAGING)
        FileSystems.delete(leftovers)
    return len(leftovers)


def finalize_tables(output_dir: str, names) -> list[str]:
    """Moves the staged tables of a finished run into `output_dir`, replacing the previous shards.

    Returns:
      the final paths.
    """
    staging = FileSystems.join(output_dir, STAGING)
    moved = []
    for name in names:
        staged = existing_files(table_pattern(staging, name))
        if not staged:
            continue
        old = existing_files(table_pattern(output_dir, name))
        final = [FileSystems.join(output_dir, posixpath.basename(p)) for p in staged]
        stale = [p for p in old if p not in final]
        if stale:
            FileSystems.delete(stale)
        existing_final = [p for p in final if FileSystems.exists(p)]
        if existing_final:
            FileSystems.delete(existing_final)
        FileSystems.rename(staged, final)
        moved.extend(final)
    if existing_files(FileSystems.join(staging, "embeddings-*-of-*.tfrecord")):
        for old in existing_files(FileSystems.join(output_dir, "embeddings-*-of-*.tfrecord")):
            if not FileSystems.exists(FileSystems.join(staging, posixpath.basename(old))):
                FileSystems.delete([old])
    for leftover in existing_files(FileSystems.join(staging, "*")):
        final = FileSystems.join(output_dir, posixpath.basename(leftover))
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([leftover], [final])
        moved.append(final)
    if "://" not in staging and os.path.isdir(staging):
        try:
            os.rmdir(staging)
        except OSError:
            pass
    return moved
