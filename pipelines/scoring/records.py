"""Reading AudioSet embedding TFRecords (already embedded) for scoring by the head alone.

Stage: scoring 3 (decode), for embedding TFRecord inputs.

Records are read slot by slot with `gunshot_core.records` (no TensorFlow needed), so a bad CRC, a
truncated file or a malformed record becomes one error row and the rest of the file is still scored.

A TFRecord written by `--write_embeddings` holds one record per recording whose `video_id` is the
recording's `source`; when the run's recordings table lies next to it (`run_recordings`), scoring the
TFRecord keeps each recording's identity (source, file, member, times, format) from that table.
"""

import dataclasses
import functools
import posixpath
from collections.abc import Iterator

import numpy as np

from gunshot_core import records
from pipelines.io import files


@dataclasses.dataclass(frozen=True)
class EmbeddingRecord:
    """One record slot of an embedding TFRecord.

    Attributes:
      member: the record's id inside the file: the clip key `video_id:start_ms`, or `record<i>` for a
        slot that could not be decoded.
      context: records.ClipContext, or None for a bad slot.
      frames: uint8 [n, 128], or None for a bad slot.
      reason, detail: why a slot is bad (None / "" for a good one).
    """

    member: str
    context: records.ClipContext | None
    frames: np.ndarray | None
    reason: str | None = None
    detail: str = ""


def iter_embedding_records(path: str) -> Iterator[EmbeddingRecord]:
    """Every record slot of a (gzip-)TFRecord file of AudioSet SequenceExamples, local or gs://.

    Raises:
      OSError: the file cannot be opened.
    """
    with files.open_maybe_compressed(path) as handle:
        for slot in records.read_tfrecords(handle):
            if slot.data is None:
                yield EmbeddingRecord(f"record{slot.index}", None, None, slot.reason, slot.detail)
                continue
            try:
                context, frames = records.decode_sequence_example(slot.data)
            except records.RecordError as e:
                yield EmbeddingRecord(f"record{slot.index}", None, None, e.reason, str(e))
                continue
            yield EmbeddingRecord(context.key, context, frames)


@functools.lru_cache(maxsize=8)
def run_recordings(path: str) -> dict:
    """The recordings a TFRecord's run scored ok, when its recordings table lies next to it.

    Args:
      path: a TFRecord file (local or gs://), e.g. `RUN/embeddings-00000-of-00001.tfrecord`.
    Returns:
      {source: recordings-table row (dict)} of the ok rows of `recordings-*.parquet` in the same
      folder, or {} when there is none or it cannot be read (the records are then scored as records).
    """
    from apache_beam.io.filesystems import FileSystems

    from pipelines.io import tables

    folder = posixpath.dirname(path) or "."
    try:
        if not FileSystems.match([FileSystems.join(folder, "recordings-*-of-*.parquet")])[0].metadata_list:
            return {}
        table = tables.read_table(folder, "recordings")
    except Exception:  # noqa: BLE001 - no usable table: the records keep their own identity
        return {}
    return {row["source"]: row for row in table.to_pylist() if row["status"] == "ok"}
