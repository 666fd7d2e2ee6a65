"""The AudioSet embedding record format: tf.train.SequenceExample, as in the official release.

Context features: `video_id` (bytes), `start_time_seconds` and `end_time_seconds` (float),
`labels` (int64 list of class indices). Feature list `audio_embedding`: one 128-byte string of uint8
per 0.96 s frame. Every reader and writer in the project imports these names from here.

Frames of another embedding model (gunshot_core.embedding_models, e.g. BirdNET: 1024 floats per 3-s
frame every hop) use the same SequenceExample with two more context features, `embedding_model`
(bytes, the model's name) and `embedding_hop_seconds` (float), and one `float_list` of
`embedding_size` values per frame in `audio_embedding` (`encode_embedding_record`). A record without
`embedding_model` is a VGGish record (the AudioSet format, unchanged).

Besides the names, this module encodes and decodes the records and reads and writes their TFRecord
framing (length, masked CRC32C of the length, payload, masked CRC32C of the payload) record by record,
so a reader can report a bad CRC or a truncated file and go on, instead of failing a whole job.

The protobuf messages are the `tensorflow.*` Example messages, declared here in a private descriptor
pool (wire-identical to `tf.train.SequenceExample`), so parsing a record needs neither a TensorFlow
import (seconds and hundreds of MB per worker process) nor a running TF graph; parsing runs in the
protobuf C extension (upb parses a whole ~1.5 kB record in about a microsecond, faster than any
Python-level attempt to skip the embedding bytes; what costs is touching fields from Python, so
`decode_context` reads only the context fields and `validate_record` adds the frame-width check).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence
from typing import BinaryIO, NamedTuple

import google_crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from gunshot_core.errors import describe

VIDEO_ID = "video_id"
START_TIME = "start_time_seconds"
END_TIME = "end_time_seconds"
LABELS = "labels"
EMBEDDING = "audio_embedding"
EMBEDDING_WIDTH = 128
EMBEDDING_MODEL = "embedding_model"
EMBEDDING_HOP = "embedding_hop_seconds"
#: The embedding model of a record without an `embedding_model` context feature (AudioSet format).
DEFAULT_EMBEDDING_MODEL = "vggish"

MAX_RECORD_BYTES = 64 << 20
"""A framed length above this is taken as corruption (AudioSet records are ~1.5 kB)."""


class RecordError(ValueError):
    """A record that is not a valid AudioSet embedding record.

    Attributes:
      reason: short machine-readable kind, one of `not_a_sequence_example`, `missing_video_id`,
        `missing_start_time`, `missing_end_time`, `missing_labels`, `missing_embedding`,
        `empty_embedding`, `bad_embedding_width`, `unknown_embedding_model`.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# ---- Protobuf messages (wire-compatible with tensorflow/core/example/{feature,example}.proto) --------


def _build_messages():
    fdp = descriptor_pb2.FileDescriptorProto(
        name="gunshot_core/audioset_example.proto", package="tensorflow", syntax="proto3"
    )
    label_rep = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    label_opt = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    types = descriptor_pb2.FieldDescriptorProto

    def message(name, fields, nested=()):
        msg = fdp.message_type.add(name=name)
        for n in nested:
            msg.nested_type.add().CopyFrom(n)
        for fname, number, label, ftype, type_name, oneof in fields:
            field = msg.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                field.type_name = type_name
            if oneof is not None:
                if not msg.oneof_decl:
                    msg.oneof_decl.add(name="kind")
                field.oneof_index = oneof
        return msg

    def map_entry(name, value_type):
        entry = descriptor_pb2.DescriptorProto(name=name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=label_opt, type=types.TYPE_STRING)
        entry.field.add(
            name="value", number=2, label=label_opt, type=types.TYPE_MESSAGE, type_name=value_type
        )
        return entry

    message("BytesList", [("value", 1, label_rep, types.TYPE_BYTES, None, None)])
    message("FloatList", [("value", 1, label_rep, types.TYPE_FLOAT, None, None)])
    message("Int64List", [("value", 1, label_rep, types.TYPE_INT64, None, None)])
    message(
        "Feature",
        [
            ("bytes_list", 1, label_opt, types.TYPE_MESSAGE, ".tensorflow.BytesList", 0),
            ("float_list", 2, label_opt, types.TYPE_MESSAGE, ".tensorflow.FloatList", 0),
            ("int64_list", 3, label_opt, types.TYPE_MESSAGE, ".tensorflow.Int64List", 0),
        ],
    )
    message(
        "Features",
        [("feature", 1, label_rep, types.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry", None)],
        nested=[map_entry("FeatureEntry", ".tensorflow.Feature")],
    )
    message("FeatureList", [("feature", 1, label_rep, types.TYPE_MESSAGE, ".tensorflow.Feature", None)])
    message(
        "FeatureLists",
        [
            (
                "feature_list",
                1,
                label_rep,
                types.TYPE_MESSAGE,
                ".tensorflow.FeatureLists.FeatureListEntry",
                None,
            )
        ],
        nested=[map_entry("FeatureListEntry", ".tensorflow.FeatureList")],
    )
    message(
        "SequenceExample",
        [
            ("context", 1, label_opt, types.TYPE_MESSAGE, ".tensorflow.Features", None),
            ("feature_lists", 2, label_opt, types.TYPE_MESSAGE, ".tensorflow.FeatureLists", None),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))  # noqa: E731
    return get("Features"), get("FeatureLists"), get("SequenceExample")


Features, FeatureLists, SequenceExample = _build_messages()


# ---- Records ----------------------------------------------------------------------------------


class ClipContext(NamedTuple):
    """The context of one AudioSet clip record (immutable; a NamedTuple because it is made per record).

    Attributes:
      video_id: YouTube id, str.
      start_time: clip start in seconds (float32 in the record, here a Python float).
      end_time: clip end in seconds.
      labels: class indices (class_labels_indices.csv `index`), tuple of int in record order.
      embedding_model: the embedding model of the frames ("vggish" for AudioSet-format records).
      hop_seconds: seconds between frame starts (None for VGGish records: 0.96 s).
    """

    video_id: str
    start_time: float
    end_time: float
    labels: tuple[int, ...]
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    hop_seconds: float | None = None

    @property
    def key(self) -> str:
        """The clip's key `video_id:start_ms` (see clip_key)."""
        return clip_key(self.video_id, self.start_time)


def clip_key(video_id: str, start_time: float) -> str:
    """The key of a clip across records, segment CSVs and tables: `{video_id}:{start in whole ms}`.

    Start times are float32 in the records and decimal text in the CSVs; rounding to milliseconds makes
    both give the same key (e.g. `--PJHxphWEs:30000`).
    """
    return f"{video_id}:{round(float(start_time) * 1000)}"


def _parse(message_class, data: bytes, what: str):
    try:
        return message_class.FromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise RecordError(f"cannot parse {what}: {e}", "not_a_sequence_example") from None


def context_from_features(features) -> ClipContext:
    """ClipContext from a parsed `Features` message (the SequenceExample context).

    Raises:
      RecordError: a missing or mistyped field (reason `missing_<field>`).
    """
    get = features.feature.get
    feature = get(VIDEO_ID)
    values = feature.bytes_list.value if feature is not None else ()
    if not values:
        raise RecordError(f"record has no {VIDEO_ID!r} bytes feature", "missing_video_id")
    try:
        video_id = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{VIDEO_ID} is not UTF-8: {values[0]!r}", "missing_video_id") from None
    feature = get(START_TIME)
    start = feature.float_list.value if feature is not None else ()
    if not start:
        raise RecordError(f"record has no {START_TIME!r} float feature", "missing_start_time")
    feature = get(END_TIME)
    end = feature.float_list.value if feature is not None else ()
    if not end:
        raise RecordError(f"record has no {END_TIME!r} float feature", "missing_end_time")
    feature = get(LABELS)
    if feature is None or not feature.HasField("int64_list"):
        raise RecordError(f"record has no {LABELS!r} int64 feature", "missing_labels")
    labels = tuple(feature.int64_list.value)
    feature = get(EMBEDDING_MODEL)
    if feature is None:
        return ClipContext(video_id, float(start[0]), float(end[0]), labels)
    names = feature.bytes_list.value
    try:
        model = names[0].decode("utf-8") if len(names) == 1 else ""
    except UnicodeDecodeError:
        model = ""
    if not model:
        raise RecordError(
            f"{EMBEDDING_MODEL} must be one model name, got {list(names)!r}", "unknown_embedding_model"
        )
    feature = get(EMBEDDING_HOP)
    hop = feature.float_list.value if feature is not None else ()
    return ClipContext(
        video_id, float(start[0]), float(end[0]), labels, model, float(hop[0]) if hop else None
    )


def _model_width(name: str) -> int:
    """Values per frame of embedding model `name` (its description in gunshot_core.embedding_models)."""
    from gunshot_core import embedding_models

    model = embedding_models.MODELS.get(name)
    if model is None:
        raise RecordError(
            f"record frames are of unknown embedding model {name!r}; known: {', '.join(embedding_models.NAMES)}",
            "unknown_embedding_model",
        )
    return model.embedding_size


def parse_record(serialized: bytes):
    """Parses a serialized SequenceExample into its protobuf message (no field is checked yet).

    Raises:
      RecordError(reason="not_a_sequence_example"): the bytes are not a SequenceExample.
    """
    return _parse(SequenceExample, serialized, "SequenceExample")


def decode_context(serialized: bytes) -> ClipContext:
    """The context of a serialized AudioSet SequenceExample; the embedding frames are not converted.

    Raises:
      RecordError: malformed record or a missing context field (see RecordError.reason).
    """
    return context_from_features(parse_record(serialized).context)


def _frame_values(example, kind: str) -> list:
    """The values (`kind`: "bytes_list" or "float_list") of each frame of a record's `audio_embedding`.

    Raises:
      RecordError: the feature list is missing or holds no frame.
    """
    lists = example.feature_lists.feature_list
    if EMBEDDING not in lists:
        raise RecordError(f"record has no {EMBEDDING!r} feature list", "missing_embedding")
    frames = [getattr(feature, kind).value for feature in lists[EMBEDDING].feature]
    if not frames:
        raise RecordError(f"{EMBEDDING} has no frame", "empty_embedding")
    return frames


def embedding_frames(example) -> list[bytes]:
    """The `audio_embedding` frames of a parsed SequenceExample, checked for width.

    Returns:
      list of n >= 1 bytes objects of EMBEDDING_WIDTH bytes each.
    Raises:
      RecordError: missing or empty feature list, or a frame that is not EMBEDDING_WIDTH bytes.
    """
    frames = _frame_values(example, "bytes_list")
    for i, values in enumerate(frames):
        if len(values) != 1 or len(values[0]) != EMBEDDING_WIDTH:
            raise RecordError(
                f"{EMBEDDING} frame {i} has byte widths {[len(v) for v in values]}, "
                f"expected one value of {EMBEDDING_WIDTH}",
                "bad_embedding_width",
            )
    return [values[0] for values in frames]


def float_embedding_frames(example, width: int) -> np.ndarray:
    """The `audio_embedding` frames of a parsed record of float frames, checked for width.

    Returns:
      float32 [n, width], n >= 1.
    Raises:
      RecordError: missing or empty feature list, or a frame that is not `width` floats.
    """
    frames = _frame_values(example, "float_list")
    for i, values in enumerate(frames):
        if len(values) != width:
            raise RecordError(
                f"{EMBEDDING} frame {i} has {len(values)} float values, expected {width}",
                "bad_embedding_width",
            )
    return np.array(frames, dtype=np.float32).reshape(len(frames), width)


def validate_record(serialized: bytes) -> tuple[ClipContext, int]:
    """Fully checks a serialized record (context and embedding) without building numpy arrays.

    Returns:
      (context, number of embedding frames).
    Raises:
      RecordError: see RecordError.reason.
    """
    example = parse_record(serialized)
    context = context_from_features(example.context)
    if context.embedding_model == DEFAULT_EMBEDDING_MODEL:
        return context, len(embedding_frames(example))
    return context, len(float_embedding_frames(example, _model_width(context.embedding_model)))


def decode_sequence_example(serialized: bytes) -> tuple[ClipContext, np.ndarray]:
    """Decodes a serialized AudioSet SequenceExample.

    Returns:
      (context, embedding uint8 [num_frames, 128]) for an AudioSet-format (VGGish) record; for a
      record of another embedding model (context `embedding_model`), float32 [num_frames, d] with d
      that model's embedding_size.
    Raises:
      RecordError: malformed record (see RecordError.reason).
    """
    example = parse_record(serialized)
    context = context_from_features(example.context)
    if context.embedding_model != DEFAULT_EMBEDDING_MODEL:
        return context, float_embedding_frames(example, _model_width(context.embedding_model))
    frames = embedding_frames(example)
    embedding = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(len(frames), EMBEDDING_WIDTH)
    return context, embedding


def _clip_example(video_id: str, start_time: float, end_time: float, labels: Sequence[int]) -> SequenceExample:
    """A SequenceExample with the clip's AudioSet context (video_id, start/end seconds, labels)."""
    example = SequenceExample()
    context = example.context.feature
    context[VIDEO_ID].bytes_list.value.append(video_id.encode("utf-8"))
    context[START_TIME].float_list.value.append(float(start_time))
    context[END_TIME].float_list.value.append(float(end_time))
    context[LABELS].int64_list.value.extend(int(v) for v in labels)
    return example


def encode_sequence_example(
    video_id: str, start_time: float, end_time: float, labels: Sequence[int], embedding: np.ndarray
) -> bytes:
    """Serializes one clip in the official AudioSet format.

    Args:
      video_id: YouTube id.
      start_time, end_time: seconds (stored as float32).
      labels: class indices.
      embedding: uint8 [num_frames, 128] quantised VGGish embeddings.
    Returns:
      the serialized tf.train.SequenceExample (deterministic bytes for equal input).
    Raises:
      ValueError: embedding of the wrong dtype or shape (the message prints it).
    """
    embedding = np.asarray(embedding)
    if embedding.dtype != np.uint8 or embedding.ndim != 2 or embedding.shape[1] != EMBEDDING_WIDTH:
        raise ValueError(
            f"embedding must be uint8 [n, {EMBEDDING_WIDTH}], got {embedding.dtype} {list(embedding.shape)}"
        )
    example = _clip_example(video_id, start_time, end_time, labels)
    frames = example.feature_lists.feature_list[EMBEDDING].feature
    for row in embedding:
        frames.add().bytes_list.value.append(row.tobytes())
    return example.SerializeToString(deterministic=True)


def encode_embedding_record(
    video_id: str, start_time: float, end_time: float, labels: Sequence[int], frames: np.ndarray, model
) -> bytes:
    """Serializes one clip's frames of any embedding model: the one writer for training records.

    VGGish frames give the AudioSet format byte for byte (`encode_sequence_example`); other models'
    frames get the context features `embedding_model` (model.name) and `embedding_hop_seconds`
    (model.hop_seconds) and one float_list of model.embedding_size values per frame.

    Args:
      video_id: the clip's recording id.
      start_time, end_time: seconds (stored as float32).
      labels: class indices.
      frames: [num_frames, model.embedding_size] of model.dtype (uint8 for VGGish, float32 else).
      model: gunshot_core.embedding_models.EmbeddingModel the frames were made with.
    Returns:
      the serialized tf.train.SequenceExample (deterministic bytes for equal input).
    Raises:
      ValueError: frames of the wrong dtype or shape for the model.
    """
    if model.name == DEFAULT_EMBEDDING_MODEL:
        return encode_sequence_example(video_id, start_time, end_time, labels, frames)
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] != model.embedding_size or frames.dtype != np.dtype(model.dtype):
        raise ValueError(
            f"{model.name} frames must be {model.dtype} [n, {model.embedding_size}], "
            f"got {frames.dtype} {list(frames.shape)}"
        )
    example = _clip_example(video_id, start_time, end_time, labels)
    context = example.context.feature
    context[EMBEDDING_MODEL].bytes_list.value.append(model.name.encode("utf-8"))
    context[EMBEDDING_HOP].float_list.value.append(float(model.hop_seconds))
    lists = example.feature_lists.feature_list[EMBEDDING].feature
    for row in frames:
        lists.add().float_list.value.extend(row.tolist())
    return example.SerializeToString(deterministic=True)


# ---- TFRecord framing -------------------------------------------------------------------------


def masked_crc32c(data: bytes) -> int:
    """The masked CRC32C that TFRecord files store after the length and after the payload."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """The TFRecord framing of one payload: length, length CRC, payload, payload CRC."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (length, struct.pack("<I", masked_crc32c(length)), data, struct.pack("<I", masked_crc32c(data)))
    )


def write_tfrecords(handle: BinaryIO, payloads) -> int:
    """Writes payloads (bytes, unchanged) as TFRecords to a binary file; returns how many."""
    count = 0
    for data in payloads:
        handle.write(frame_record(data))
        count += 1
    return count


def read_record_at(handle: BinaryIO, offset: int) -> bytes:
    """The payload of the record whose length field starts at `offset`, both CRCs checked.

    Args:
      handle: seekable binary file object (decompressed stream for compressed files).
      offset: `FramedRecord.offset` of a record read before.
    Returns:
      the payload bytes.
    Raises:
      ValueError: no intact record there (e.g. the file changed since it was read); the message
        gives the offset and what failed.
    """
    handle.seek(offset)
    header = handle.read(12)
    if len(header) < 12:
        raise ValueError(f"no record at offset {offset}: the file ends there")
    length, length_crc = struct.unpack("<QI", header)
    if masked_crc32c(header[:8]) != length_crc or length > MAX_RECORD_BYTES:
        raise ValueError(f"no record at offset {offset}: length field CRC mismatch")
    body = handle.read(length + 4)
    if len(body) < length + 4 or masked_crc32c(body[:length]) != struct.unpack("<I", body[length:])[0]:
        raise ValueError(f"no intact record at offset {offset}: payload truncated or CRC mismatch")
    return body[:length]


@dataclasses.dataclass(frozen=True)
class FramedRecord:
    """One record slot of a TFRecord file.

    Attributes:
      index: 0-based record number in the file.
      offset: byte offset of the record's length field (in the decompressed stream).
      data: the payload bytes, or None when the slot is bad.
      reason: None for a good record; else `bad_length_crc`, `bad_data_crc`, `truncated`,
        `oversized_record` or `unreadable` (decompression or I/O failure).
      detail: human-readable explanation of a bad slot.
    """

    index: int
    offset: int
    data: bytes | None
    reason: str | None = None
    detail: str = ""


def read_tfrecords(handle: BinaryIO, *, verify_crc: bool = True) -> Iterator[FramedRecord]:
    """Reads TFRecord framing record by record, reporting bad slots instead of raising.

    A payload with a bad CRC is reported and skipped (its length was valid, so reading goes on). A bad
    length CRC, an oversized length or a truncated record cannot be resynchronised: it is reported and
    reading of the file stops. I/O or decompression errors are reported as `unreadable` and stop.

    Args:
      handle: binary file object (already decompressed).
      verify_crc: check the payload CRCs (length CRCs are always checked).
    Yields:
      FramedRecord per record slot, in file order.
    """
    index = offset = 0
    read = handle.read
    unpack = struct.unpack
    while True:
        try:
            header = read(12)
        except Exception as e:  # zlib.error, EOFError, OSError from a damaged stream
            yield FramedRecord(index, offset, None, "unreadable", describe(e))
            return
        if not header:
            return
        if len(header) < 12:
            yield FramedRecord(
                index,
                offset,
                None,
                "truncated",
                f"file ends inside a record header ({len(header)} of 12 bytes)",
            )
            return
        length, length_crc = unpack("<QI", header)
        if masked_crc32c(header[:8]) != length_crc:
            yield FramedRecord(
                index, offset, None, "bad_length_crc", f"length field CRC mismatch (length {length})"
            )
            return
        if length > MAX_RECORD_BYTES:
            yield FramedRecord(index, offset, None, "oversized_record", f"record length {length} bytes")
            return
        try:
            body = read(length + 4)
        except Exception as e:
            yield FramedRecord(index, offset, None, "unreadable", describe(e))
            return
        if len(body) < length + 4:
            yield FramedRecord(
                index,
                offset,
                None,
                "truncated",
                f"file ends inside a record ({len(body)} of {length + 4} bytes)",
            )
            return
        data = body[:length]
        if verify_crc and masked_crc32c(data) != unpack("<I", body[length:])[0]:
            yield FramedRecord(index, offset, None, "bad_data_crc", f"payload CRC mismatch ({length} bytes)")
        else:
            yield FramedRecord(index, offset, data)
        index += 1
        offset += 16 + length
