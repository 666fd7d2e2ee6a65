"""Reading AudioSet embedding TFRecords (already embedded) for scoring by the head alone."""

from collections.abc import Iterator

import numpy as np

from gunshot_core import records


def decode_sequence_example(serialized: bytes) -> tuple[str, float, float, np.ndarray]:
    """One AudioSet SequenceExample -> (video_id, start seconds, end seconds, uint8 [n, 128] frames).

    Raises:
      ValueError: the record is not a SequenceExample with 128-byte embedding frames.
    """
    import tensorflow as tf

    example = tf.train.SequenceExample.FromString(serialized)
    context = example.context.feature
    video_id = (
        context[records.VIDEO_ID].bytes_list.value[0].decode("utf-8") if records.VIDEO_ID in context else ""
    )
    start = float(context[records.START_TIME].float_list.value[0]) if records.START_TIME in context else 0.0
    feature_list = example.feature_lists.feature_list
    if records.EMBEDDING not in feature_list:
        raise ValueError(f"record {video_id!r} has no {records.EMBEDDING!r} feature list")
    rows = [f.bytes_list.value[0] for f in feature_list[records.EMBEDDING].feature]
    bad = [len(r) for r in rows if len(r) != records.EMBEDDING_WIDTH]
    if bad:
        raise ValueError(
            f"record {video_id!r}: embedding frames of {bad[0]} bytes, expected {records.EMBEDDING_WIDTH}"
        )
    frames = np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), records.EMBEDDING_WIDTH)
    if records.END_TIME in context:
        end = float(context[records.END_TIME].float_list.value[0])
    else:
        end = start + 0.96 * len(rows)
    return video_id, start, end, frames


def iter_embedding_records(path: str) -> Iterator[tuple[str, float, float, np.ndarray]]:
    """(video_id, start, end, uint8 [n, 128]) for every record of a (gzip-)TFRecord file, local or gs://.

    Raises:
      tensorflow.errors.DataLossError, ValueError: a corrupt file or record.
    """
    import tensorflow as tf

    compression = "GZIP" if path.lower().endswith(".gz") else ""
    for serialized in tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator():
        yield decode_sequence_example(serialized)
