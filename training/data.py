"""Reading what the subset builder writes: clip records, their tags, and tf.data input pipelines.

A subset is a set of AudioSet-format TFRecords (`tf.train.SequenceExample`, names in
`gunshot_core.records`) plus a tagged Parquet table keyed by (video_id, start time) that says which
class each clip was selected for (`gunshot` or `no_gunshot`). The transform job joins the two; the
evaluation and analysis jobs read the records directly, exactly as a deployed head sees them.
"""

import dataclasses
import glob
import gzip
import logging
import os

import numpy as np
import tensorflow as tf

from gunshot_core import params, records
from gunshot_core.errors import describe

POSITIVE_TAG = "gunshot"
NEGATIVE_TAG = "no_gunshot"

# Feature names of the transformed examples written by training.transform (tf.train.Example).
FRAMES = "frames"  # float32 [frames * 128], z-scored per dimension, padded/truncated
NUM_FRAMES = "num_frames"  # int64, frames in the clip before padding/truncation
LABEL = "label"  # int64, 1 for the positive tag
TAG = "tag"  # bytes, the subset builder's tag
TAG_ID = "tag_id"  # int64, index of the tag in the training vocabulary
VIDEO_ID = "video_id"
START_TIME = "start_time"
CLASS_IDS = "class_ids"  # int64 list, the AudioSet label indices of the clip
WEIGHT = "weight"  # float32, the clip's mixing weight (1 unless --train sources are weighted)

# Column names of the subset builder's tagged table that the join needs.
TAG_TABLE_VIDEO_ID = "video_id"
TAG_TABLE_START = "start_time_seconds"
TAG_TABLE_TAG = "tag"
TAG_TABLE_GLOB = "tagged-*.parquet"
# The tables a split's records are joined to: the subset builder's, and the dataset builder's
# (pipelines.dataset, `examples`, with the same video_id / start_time_seconds / tag columns).
TAG_TABLE_GLOBS = (TAG_TABLE_GLOB, "examples-*.parquet")


@dataclasses.dataclass(frozen=True)
class Clip:
    """One decoded AudioSet clip.

    Attributes:
      video_id: YouTube id of the clip.
      start_time: start of the segment in the video, seconds.
      end_time: end of the segment, seconds.
      class_ids: AudioSet label indices (`labels` context feature).
      frames: uint8 [n, 128], one postprocessed VGGish embedding per 0.96 s; or float32 [n, d] frames
        of the embedding model the record names (e.g. BirdNET [n, 1024], a 3-s frame every hop).
      embedding_model: the frames' embedding model ("vggish" for AudioSet-format records).
    """

    video_id: str
    start_time: float
    end_time: float
    class_ids: tuple
    frames: np.ndarray
    embedding_model: str = records.DEFAULT_EMBEDDING_MODEL


def clip_key(video_id: str, start_time: float) -> str:
    """The join key of a clip between records and the tagged table (gunshot_core.records.clip_key)."""
    return records.clip_key(video_id, start_time)


def decode_clip(serialized: bytes) -> Clip:
    """Decodes one serialized AudioSet SequenceExample (gunshot_core.records).

    Args:
      serialized: bytes of a `tf.train.SequenceExample`.
    Returns:
      The clip, frames uint8 [n, 128] (n >= 1), or float32 [n, d] for another embedding model.
    Raises:
      records.RecordError: malformed record; `.reason` says why (e.g. `bad_embedding_width`).
    """
    context, frames = records.decode_sequence_example(serialized)
    return Clip(
        context.video_id,
        context.start_time,
        context.end_time,
        context.labels,
        frames,
        context.embedding_model,
    )


def pad_frames(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """Zero-pads or truncates a clip to a fixed number of frames, as the heads are fed.

    Args:
      frames: uint8 or float [n, 128].
      num_frames: frames wanted.
    Returns:
      float32 [num_frames, 128]: the first `num_frames` frames, zero frames appended if n is smaller.
    """
    out = np.zeros((num_frames, frames.shape[1]), np.float32)
    n = min(num_frames, frames.shape[0])
    out[:n] = frames[:n]
    return out


def match_files(pattern: str) -> list[str]:
    """Sorted files matching a glob (local or gs://); a comma separates several globs.

    A matched directory stands for the files in it, so the subset builder's split folders work as
    `DIR/train*` (its layout is `DIR/<split>/subset-SSSSS-of-NNNNN.tfrecord`).
    """
    files = []
    for part in pattern.split(","):
        part = part.strip()
        if not part:
            continue
        for found in tf.io.gfile.glob(part) if "://" in part else glob.glob(part):
            if tf.io.gfile.isdir(found):
                files.extend(
                    os.path.join(found, name)
                    for name in tf.io.gfile.listdir(found)
                    if not name.endswith("/") and not name.startswith(".")
                )
            else:
                files.append(found)
    return sorted(set(files))


def find_tag_table(pattern: str) -> str:
    """The tag table next to a split: `tagged-*.parquet` (subset builder) or `examples-*.parquet`
    (dataset builder) in the folder of the matched files or one of its two parents.

    A comma-separated `pattern` (several sources mixed into one split, e.g. a dataset built from
    field recordings and an AudioSet subset) gives the comma-separated tables of every part.

    Raises:
      FileNotFoundError: no such table.
    """
    parts = [part.strip() for part in pattern.split(",") if part.strip()]
    if len(parts) > 1:
        return ",".join(dict.fromkeys(find_tag_table(part) for part in parts))
    files = match_files(pattern)
    if not files:
        raise FileNotFoundError(f"no file matches {pattern!r}")
    folder = os.path.dirname(files[0])
    for _ in range(3):
        for name in TAG_TABLE_GLOBS:
            candidate = os.path.join(folder, name)
            if match_files(candidate):
                return candidate
        folder = os.path.dirname(folder)
    raise FileNotFoundError(f"no {' or '.join(TAG_TABLE_GLOBS)} near {files[0]!r}; pass --tags")


def load_tag_table(pattern: str) -> dict[str, str]:
    """Reads the subset builder's tagged Parquet table(s) (pipelines.schemas.SUBSET_TAGGED) into
    {clip_key: tag}.

    Args:
      pattern: glob of Parquet files with columns `video_id`, `start_time_seconds` and `tag`.
    Raises:
      FileNotFoundError: nothing matches; ValueError: a needed column is missing, or one clip
        carries two different tags.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = match_files(pattern)
    if not files:
        raise FileNotFoundError(f"no tag table matches {pattern!r}")
    columns = [TAG_TABLE_VIDEO_ID, TAG_TABLE_START, TAG_TABLE_TAG]
    tables = []
    for path in files:  # through tf.io.gfile, so gs:// works like a local path
        with tf.io.gfile.GFile(path, "rb") as f:
            buffer = pa.py_buffer(f.read())
        schema = pq.read_schema(pa.BufferReader(buffer))
        missing = set(columns) - set(schema.names)
        if missing:
            raise ValueError(f"tag table {path!r} lacks columns {sorted(missing)}; has {schema.names}")
        tables.append(pq.read_table(pa.BufferReader(buffer), columns=columns))
    table = pa.concat_tables(tables)
    ids = table.column(TAG_TABLE_VIDEO_ID).to_pylist()
    starts = table.column(TAG_TABLE_START).to_pylist()
    tags = table.column(TAG_TABLE_TAG).to_pylist()
    out = {}
    for v, s, t in zip(ids, starts, tags, strict=True):
        key = clip_key(v, s)
        if out.setdefault(key, t) != t:
            raise ValueError(f"clip {key} has two tags in {pattern!r}: {out[key]!r} and {t!r}")
    return out


TAG_TABLE_GROUP = "group"  # the dataset builder's recording group (e.g. the site); no such column: none


def load_groups(pattern: str) -> dict[str, str]:
    """{video_id: group} from tag tables that have a `group` column (the dataset builder's `examples`
    table: group = its --group_pattern match, e.g. the site); {} for tables without one (the subset
    builder's: there each video is its own group) or when nothing matches.

    Args:
      pattern: glob(s) of Parquet tag tables, comma-separated.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    for path in match_files(pattern):
        with tf.io.gfile.GFile(path, "rb") as f:
            buffer = pa.py_buffer(f.read())
        if TAG_TABLE_GROUP not in pq.read_schema(pa.BufferReader(buffer)).names:
            continue
        table = pq.read_table(pa.BufferReader(buffer), columns=[TAG_TABLE_VIDEO_ID, TAG_TABLE_GROUP])
        ids = table.column(TAG_TABLE_VIDEO_ID).to_pylist()
        for v, g in zip(ids, table.column(TAG_TABLE_GROUP).to_pylist(), strict=True):
            out.setdefault(v, g)
    return out


def read_file_records(path: str):
    """Yields every record slot of one TFRecord file (local or gs://, plain or gzip).

    Damaged framing does not raise: a bad slot is yielded with its reason (gunshot_core.records:
    `bad_data_crc`, `bad_length_crc`, `truncated`, `oversized_record`, `unreadable`), and a file that
    cannot be opened gives one `unreadable` slot.

    Yields:
      (source "path:index", payload bytes or None, reason or None, detail).
    """
    try:
        with tf.io.gfile.GFile(path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            handle = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
            for slot in records.read_tfrecords(handle):
                yield f"{path}:{slot.index}", slot.data, slot.reason, slot.detail
    except (OSError, tf.errors.OpError) as e:
        yield f"{path}:-", None, "unreadable", describe(e)


def iter_records(pattern: str):
    """Yields the record slots (see read_file_records) of every file matching `pattern`, in file order."""
    files = match_files(pattern)
    if not files:
        raise FileNotFoundError(f"no TFRecord file matches {pattern!r}")
    for path in files:
        yield from read_file_records(path)


@dataclasses.dataclass
class LabelledClips:
    """Clips of a split with their labels, for evaluation and analysis (held in memory).

    Attributes:
      video_ids, start_times, tags: one entry per clip.
      class_ids: list of tuples of AudioSet label indices.
      labels: int64 [n], 1 for the positive tag.
      frames: list of uint8 [n_i, 128], the clips' frames as stored.
      errors: list of (source, reason, message) for records that could not be used.
      embedding_models: the embedding models of the clips' frames (a set; {"vggish"} for AudioSet records).
    """

    video_ids: list
    start_times: list
    tags: list
    class_ids: list
    labels: np.ndarray
    frames: list
    errors: list
    embedding_models: set = dataclasses.field(default_factory=set)

    def __len__(self) -> int:
        return len(self.video_ids)

    def padded(self, num_frames: int) -> np.ndarray:
        """float32 [n, num_frames, 128]: every clip zero-padded/truncated as a head is fed."""
        if not self.frames:
            return np.zeros((0, num_frames, params.EMBEDDING_SIZE), np.float32)
        return np.stack([pad_frames(f, num_frames) for f in self.frames])

    def frame_means(self) -> np.ndarray:
        """float32 [n, 128]: each clip's mean embedding over its real frames."""
        if not self.frames:
            return np.zeros((0, params.EMBEDDING_SIZE), np.float32)
        return np.stack([f.astype(np.float32).mean(axis=0) for f in self.frames])


def load_clips(pattern: str, tags: dict[str, str], positive_tag: str = POSITIVE_TAG) -> LabelledClips:
    """Reads and labels every clip of a split (in memory; evaluation-sized data).

    A clip's tag comes from `tags` (the tagged table). Unusable records and untagged clips are
    returned in `errors`, never dropped silently.

    Args:
      pattern: glob of subset TFRecord files.
      tags: {clip_key: tag} from `load_tag_table`.
      positive_tag: the tag whose clips are labelled 1.
    """
    out = LabelledClips([], [], [], [], [], [], [])
    labels = []
    for source, raw, reason, detail in iter_records(pattern):
        if raw is None:
            out.errors.append((source, reason, detail))
            continue
        try:
            clip = decode_clip(raw)
        except records.RecordError as e:
            out.errors.append((source, e.reason, str(e)))
            continue
        tag = tags.get(clip_key(clip.video_id, clip.start_time))
        if tag is None:
            out.errors.append(
                (source, "untagged", f"clip {clip_key(clip.video_id, clip.start_time)} has no tag")
            )
            continue
        out.video_ids.append(clip.video_id)
        out.start_times.append(clip.start_time)
        out.tags.append(tag)
        out.class_ids.append(clip.class_ids)
        labels.append(int(tag == positive_tag))
        out.frames.append(clip.frames)
        out.embedding_models.add(clip.embedding_model)
    if out.errors:
        logging.warning(
            "%d of %d records unusable, first: %s",
            len(out.errors),
            len(out.errors) + len(labels),
            out.errors[0],
        )
    out.labels = np.asarray(labels, np.int64)
    return out
