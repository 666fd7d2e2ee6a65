"""Whole-shard decoding of AudioSet embedding records: framing in one pass, parsing by TensorFlow in one call.

Stage: records (read). The record-by-record reader (`gunshot_core.records`) touches every field of
every record from Python, ~8 us per record. Here one in-memory shard is split into its payloads in a
single loop (both CRC32C checks), all payloads are parsed by one `tf.io.parse_sequence_example` call
(context and embedding frames, in C++), and what tagging needs comes back as numpy arrays, ~2 us per
record. Python objects are then only built for the clips a caller keeps.

This path is all or nothing: anything unusual in a shard (a bad CRC, a truncated or oversized record,
a record TensorFlow's parser rejects, a missing or multi-valued context field, no `labels`, an
embedding that is missing, empty or not 128 bytes wide) raises `ShardAnomaly`, and the caller reads
that shard again record by record, where each bad record gets its precise error row. Records written
by any protobuf serializer decode to the same values on both paths; only hand-made wire-level oddities
that TensorFlow's parser skips without looking (e.g. a malformed feature the reader does not ask for)
would be accepted here and rejected there.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from gunshot_core import records


class ShardAnomaly(Exception):
    """The shard holds something the whole-shard path does not decide; read it record by record.

    The message is deterministic (no addresses or temporary paths): it names the first anomaly found.
    """


@dataclasses.dataclass(frozen=True)
class FramedShard:
    """The payloads of one TFRecord file that passed every framing check.

    Attributes:
      payloads: list of n bytes, the records in file order.
      offsets: int64 [n], byte offset of each record's length field.
    """

    payloads: list
    offsets: np.ndarray


def split_framed(buffer: bytes) -> FramedShard:
    """Splits a whole TFRecord file held in memory into its payloads, checking both CRCs of each.

    Args:
      buffer: the file's bytes (decompressed).
    Returns:
      FramedShard.
    Raises:
      ShardAnomaly: a bad length or payload CRC, an oversized length or a truncated record.
    """
    unpack = struct.unpack_from
    crc = records.masked_crc32c
    length_crcs = {}  # length -> masked CRC of its 8 bytes: shards hold few distinct lengths
    payloads = []
    offsets = []
    offset = 0
    end = len(buffer)
    while offset < end:
        if end - offset < 12:
            raise ShardAnomaly(f"record {len(payloads)}: file ends inside a record header")
        length, length_crc = unpack("<QI", buffer, offset)
        expected = length_crcs.get(length)
        if expected is None:
            expected = length_crcs[length] = crc(buffer[offset : offset + 8])
        if expected != length_crc:
            raise ShardAnomaly(f"record {len(payloads)}: length field CRC mismatch")
        if length > records.MAX_RECORD_BYTES:
            raise ShardAnomaly(f"record {len(payloads)}: record length {length} bytes")
        start = offset + 12
        stop = start + length
        if stop + 4 > end:
            raise ShardAnomaly(f"record {len(payloads)}: file ends inside a record")
        data = buffer[start:stop]
        if crc(data) != unpack("<I", buffer, stop)[0]:
            raise ShardAnomaly(f"record {len(payloads)}: payload CRC mismatch")
        payloads.append(data)
        offsets.append(offset)
        offset = stop + 4
    return FramedShard(payloads, np.asarray(offsets, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class ShardContexts:
    """The contexts of n valid AudioSet records, as arrays.

    Attributes:
      video_ids: object [n] of bytes (valid UTF-8).
      start_times: float32 [n]; end_times: float32 [n].
      label_values: int64 [m], every record's labels in record order, records concatenated.
      label_rows: int64 [m], the record of each label value.
      label_splits: int64 [n + 1], record i's labels are label_values[label_splits[i]:label_splits[i+1]].
      num_frames: int64 [n] embedding frames per record (each checked to be EMBEDDING_WIDTH bytes).
    """

    video_ids: np.ndarray
    start_times: np.ndarray
    end_times: np.ndarray
    label_values: np.ndarray
    label_rows: np.ndarray
    label_splits: np.ndarray
    num_frames: np.ndarray

    def labels(self, i: int) -> tuple[int, ...]:
        """Record i's labels as a tuple of int, in record order (as `records.ClipContext.labels`)."""
        return tuple(self.label_values[self.label_splits[i] : self.label_splits[i + 1]].tolist())


def _parse_specs(tf):
    context = {
        records.VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
        records.START_TIME: tf.io.FixedLenFeature([], tf.float32),
        records.END_TIME: tf.io.FixedLenFeature([], tf.float32),
        records.LABELS: tf.io.VarLenFeature(tf.int64),
    }
    sequence = {records.EMBEDDING: tf.io.FixedLenSequenceFeature([], tf.string)}
    return context, sequence


def parse_contexts(tf, payloads: list) -> ShardContexts:
    """Parses and checks n serialized AudioSet SequenceExamples in one TensorFlow call.

    Args:
      tf: the imported `tensorflow` module (the caller decides when to pay its import).
      payloads: list of n >= 1 serialized records.
    Returns:
      ShardContexts.
    Raises:
      ShardAnomaly: a record the parser rejects (malformed, a context field missing, of another type or
        with several values, an embedding frame with several values), a record without labels (the
        parser cannot tell an empty list from a missing one), an embedding that is missing, empty or
        has a frame that is not EMBEDDING_WIDTH bytes, or a video id that is not UTF-8.
    """
    context_spec, sequence_spec = _parse_specs(tf)
    try:
        context, sequence, lengths = tf.io.parse_sequence_example(
            payloads, context_features=context_spec, sequence_features=sequence_spec
        )
        frames = sequence[records.EMBEDDING]
        num_frames = lengths[records.EMBEDDING].numpy().astype(np.int64)
        widths = tf.strings.length(frames).numpy()
    except (tf.errors.OpError, ValueError) as e:  # InvalidArgumentError for a record it rejects, ...
        raise ShardAnomaly(f"TensorFlow's parser rejects the shard: {type(e).__name__}") from None
    n = len(payloads)
    if num_frames.shape != (n,) or (num_frames < 1).any():
        raise ShardAnomaly("a record has no embedding frame (or no audio_embedding feature list)")
    valid = np.arange(widths.shape[1])[None, :] < num_frames[:, None]
    if not (widths[valid] == records.EMBEDDING_WIDTH).all():
        raise ShardAnomaly(f"an embedding frame is not {records.EMBEDDING_WIDTH} bytes wide")
    labels = context[records.LABELS]
    label_values = labels.values.numpy()
    label_rows = labels.indices.numpy()[:, 0]
    counts = np.bincount(label_rows, minlength=n)
    if (counts == 0).any():
        raise ShardAnomaly("a record has no labels (empty or missing labels feature)")
    video_ids = context[records.VIDEO_ID].numpy()
    try:
        # A newline between ids breaks any multi-byte sequence: the join is UTF-8 iff every id is.
        b"\n".join(video_ids.tolist()).decode("utf-8")
    except UnicodeDecodeError:
        raise ShardAnomaly("a video_id is not UTF-8") from None
    splits = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=splits[1:])
    return ShardContexts(
        video_ids=video_ids,
        start_times=context[records.START_TIME].numpy(),
        end_times=context[records.END_TIME].numpy(),
        label_values=label_values.astype(np.int64),
        label_rows=label_rows.astype(np.int64),
        label_splits=splits,
        num_frames=num_frames,
    )


def rows_with_any(contexts: ShardContexts, indices) -> np.ndarray:
    """Indices of the records that carry at least one label of `indices`.

    Args:
      contexts: parsed shard.
      indices: iterable of class indices (e.g. the union of every tag's classes).
    Returns:
      int64 [k], sorted record indices.
    """
    wanted = np.fromiter(sorted(indices), dtype=np.int64)
    hit = np.isin(contexts.label_values, wanted)
    return np.unique(contexts.label_rows[hit])


def tag_hits(contexts: ShardContexts, tag_indices) -> np.ndarray:
    """Which records carry at least one label of each tag.

    Args:
      contexts: parsed shard of n records.
      tag_indices: sequence of T iterables of class indices, one per tag.
    Returns:
      bool [T, n]: [t, i] is True when record i carries a class of tag t.
    """
    n = len(contexts.video_ids)
    hits = np.zeros((len(tag_indices), n), dtype=bool)
    for t, indices in enumerate(tag_indices):
        wanted = np.fromiter(sorted(indices), dtype=np.int64)
        hits[t, contexts.label_rows[np.isin(contexts.label_values, wanted)]] = True
    return hits
