"""Reading AudioSet embedding TFRecords (already embedded) for scoring by the head alone.

Stage: scoring 3 (decode), for embedding TFRecord inputs.

Records are read slot by slot with `gunshot_core.records` (no TensorFlow needed), so a bad CRC, a
truncated file or a malformed record becomes one error row and the rest of the file is still scored.
"""

import dataclasses
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
