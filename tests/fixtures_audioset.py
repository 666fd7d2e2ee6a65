"""Synthetic AudioSet embedding TFRecords carrying real clip ids and label sets, with made-up embeddings.

Importable by any test or script (no pytest needed):

    from tests.fixtures_audioset import read_segments, write_shards
    segments = read_segments(AUDIOSET / "eval_segments.csv")          # real ids + labels
    paths = write_shards(tmp / "eval", segments, num_shards=8)         # official record format

Embeddings are deterministic (seeded by the clip key) and carry a weak class signal: every class index
has a fixed random direction, and a clip's frames are noise around 128 + the mean of its classes'
directions (`signal` scales it), quantised to uint8 like the release. So a model trained on the output
can learn real-label distinctions, and two calls with the same arguments write identical bytes.

Damage helpers (`corrupt_payload_crc`, `truncate`, `append_garbage`, `malformed_records`) make the bad
inputs a reader must survive.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import hashlib
import os
from collections.abc import Iterable, Sequence

import numpy as np

from gunshot_core import labels as labels_lib
from gunshot_core import records

NUM_CLASSES = 527


@dataclasses.dataclass(frozen=True)
class Segment:
    """One row of an AudioSet segments CSV, with MIDs resolved to class indices."""

    video_id: str
    start_time: float
    end_time: float
    labels: tuple[int, ...]


def read_segments(
    path, catalog: labels_lib.ClassCatalog | None = None, limit: int | None = None
) -> list[Segment]:
    """Reads an AudioSet segments CSV (`# YTID, start_seconds, end_seconds, positive_labels`).

    Args:
      path: CSV path (e.g. ../shared/audioset/eval_segments.csv).
      catalog: class catalogue for MID -> index (default: the shipped one).
      limit: keep only the first `limit` rows.
    Returns:
      list of Segment in file order.
    """
    catalog = catalog or labels_lib.ClassCatalog.from_files()
    result = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle, skipinitialspace=True):
            if not row or row[0].startswith("#"):
                continue
            mids = [m for m in row[3].split(",") if m]
            result.append(
                Segment(row[0], float(row[1]), float(row[2]), tuple(catalog.by_mid[m].index for m in mids))
            )
            if limit is not None and len(result) >= limit:
                break
    return result


def _rng_for(key: str, seed: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@functools.lru_cache(maxsize=4)
def _class_directions(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 7919).normal(0.0, 1.0, size=(NUM_CLASSES, records.EMBEDDING_WIDTH))


def synthetic_embedding(
    segment: Segment, *, num_frames: int = 10, seed: int = 0, signal: float = 1.0
) -> np.ndarray:
    """Made-up, deterministic embedding of a clip.

    Returns:
      uint8 [num_frames, 128]: clip(128 + 40 * (signal * mean class direction + noise)).
    """
    rng = _rng_for(records.clip_key(segment.video_id, segment.start_time), seed)
    directions = _class_directions(seed)
    valid = [i for i in segment.labels if 0 <= i < NUM_CLASSES]
    mean = directions[valid].mean(axis=0) if valid else np.zeros(records.EMBEDDING_WIDTH)
    noise = rng.normal(0.0, 1.0, size=(num_frames, records.EMBEDDING_WIDTH))
    values = 128.0 + 40.0 * (signal * mean[None, :] + noise)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def encode_segment(segment: Segment, *, num_frames: int = 10, seed: int = 0, signal: float = 1.0) -> bytes:
    """The serialized official-format SequenceExample of one synthetic clip."""
    embedding = synthetic_embedding(segment, num_frames=num_frames, seed=seed, signal=signal)
    return records.encode_sequence_example(
        segment.video_id, segment.start_time, segment.end_time, segment.labels, embedding
    )


def write_tfrecord_file(path, payloads: Iterable[bytes], *, compress: bool = False) -> str:
    """Writes payloads as one TFRecord file (gzip-compressed if `compress`); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    opener = (lambda p: gzip.GzipFile(p, "wb", mtime=0)) if compress else (lambda p: open(p, "wb"))
    with opener(path) as handle:
        records.write_tfrecords(handle, payloads)
    return path


def write_shards(
    directory,
    segments: Sequence[Segment],
    *,
    num_shards: int | None = 8,
    num_frames: int = 10,
    seed: int = 0,
    signal: float = 1.0,
    compress: bool = False,
    extra: dict[int, Sequence[bytes]] | None = None,
) -> list[str]:
    """Writes segments as synthetic AudioSet shards.

    Args:
      directory: output directory (created).
      segments: clips to write.
      num_shards: contiguous chunks of `segments` named `shard-SSSSS.tfrecord`; None: the release's
        layout, one file per 2-character video-id prefix (`--.tfrecord`, `-0.tfrecord`, ...).
      num_frames: frames per clip.
      seed, signal: embedding generator settings (see synthetic_embedding).
      compress: gzip the files (names get `.gz`).
      extra: shard number -> extra raw payloads appended to that shard (e.g. malformed_records()).
    Returns:
      sorted list of written paths.
    """
    directory = os.fspath(directory)
    groups: dict[str, list[Segment]] = {}
    if num_shards is None:
        for s in segments:
            groups.setdefault(f"{s.video_id[:2]}.tfrecord", []).append(s)
    else:
        bounds = np.linspace(0, len(segments), num_shards + 1).astype(int)
        for i in range(num_shards):
            groups[f"shard-{i:05d}.tfrecord"] = list(segments[bounds[i] : bounds[i + 1]])
    paths = []
    for number, (name, group) in enumerate(sorted(groups.items())):
        payloads = [encode_segment(s, num_frames=num_frames, seed=seed, signal=signal) for s in group]
        payloads += list((extra or {}).get(number, ()))
        name = name + ".gz" if compress else name
        paths.append(write_tfrecord_file(os.path.join(directory, name), payloads, compress=compress))
    return sorted(paths)


# ---- Damage ------------------------------------------------------------------------------------


def record_offsets(path) -> list[int]:
    """Byte offsets of each record's length field in an uncompressed TFRecord file."""
    with open(path, "rb") as handle:
        return [r.offset for r in records.read_tfrecords(handle)]


def corrupt_payload_crc(path, record_index: int) -> None:
    """Flips one payload byte of record `record_index` (its data CRC no longer matches)."""
    offset = record_offsets(path)[record_index]
    with open(path, "r+b") as handle:
        handle.seek(offset + 12 + 5)
        byte = handle.read(1)
        handle.seek(offset + 12 + 5)
        handle.write(bytes([byte[0] ^ 0xFF]))


def truncate(path, keep_records: int, extra_bytes: int = 7) -> None:
    """Cuts a file inside record `keep_records` (keeps that many whole records + `extra_bytes`)."""
    offsets = record_offsets(path)
    with open(path, "r+b") as handle:
        handle.truncate(offsets[keep_records] + extra_bytes)


def append_garbage(path, data: bytes = b"\x00garbage that is not a TFRecord header") -> None:
    """Appends bytes that fail the length CRC check."""
    with open(path, "ab") as handle:
        handle.write(data)


def malformed_records() -> dict[str, bytes]:
    """Well-framed payloads that are not valid AudioSet records, keyed by the expected error reason."""
    emb = np.zeros((10, records.EMBEDDING_WIDTH), np.uint8)
    good = records.SequenceExample.FromString(
        records.encode_sequence_example("badclip0001", 0.0, 10.0, [0], emb)
    )

    def without(key):
        example = records.SequenceExample()
        example.CopyFrom(good)
        del example.context.feature[key]
        return example.SerializeToString(deterministic=True)

    narrow = records.SequenceExample()
    narrow.CopyFrom(good)
    narrow.feature_lists.feature_list[records.EMBEDDING].feature[3].bytes_list.value[0] = b"\x01" * 64
    no_embedding = records.SequenceExample()
    no_embedding.CopyFrom(good)
    del no_embedding.feature_lists.feature_list[records.EMBEDDING]
    return {
        "not_a_sequence_example": b"\x0a\xff\xff\xff\xff\x0f not a protobuf",
        "missing_video_id": without(records.VIDEO_ID),
        "missing_labels": without(records.LABELS),
        "bad_embedding_width": narrow.SerializeToString(deterministic=True),
        "missing_embedding": no_embedding.SerializeToString(deterministic=True),
    }
