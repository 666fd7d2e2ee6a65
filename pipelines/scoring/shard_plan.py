"""How many files the per-frame tables of an audio run get (`--num_shards auto`), chosen at launch.

Stage: scoring 7 (outputs), planned at launch. A table file is sorted by its writer in memory (on
Dataflow one worker writes each file), so a file must not hold an archive's worth of rows. Before the
job starts, `plan_num_shards` matches the inputs (a listing: names and sizes from Beam's
`FileSystems.match` metadata, local or gs://; nothing is opened or decoded), bounds the audio hours
from each file's size and format (`MIN_BYTES_PER_HOUR`: the fewest bytes an hour of that format
plausibly takes, so the hours are an upper bound), turns them into frames of the run's embedding model
and chooses

    files = max(1, ceil(frames_bound / from_run.shard_frames(model, write_embeddings)))

so a file holds at most about as many frames as a rescored run's file (`from_run.MAX_SHARD_FRAMES`,
and with --write_embeddings at most `from_run.MAX_SHARD_EMBEDDING_BYTES` of embeddings): both paths
share one bound. Rows stay assigned to files by the stable hash of `source`, so a recording's rows sit
in one file, and the same inputs always give the same count (a rerun writes the same files).

    plan = plan_num_shards(patterns, model, write_embeddings)   # ShardPlan(num_shards=..., ...)

Inputs that cannot be listed at launch are left out of the estimate (the job reports them as error
rows of stage 'match', as without `auto`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
from collections.abc import Iterable

from pipelines.scoring import from_run, sources

_LOG = logging.getLogger(__name__)

AUTO = "auto"

_MB = 1_000_000
#: Uncompressed sample containers: 8 kHz, 16-bit, mono (16 kB/s), the smallest common recording format
#: (48 kHz 16-bit mono field recordings take 345.6 MB/h, so their hours are overestimated 6x: more,
#: smaller files). 8-bit, mu-law or ADPCM files below 8 kHz take fewer bytes and their files can hold
#: up to ~4x the bound.
PCM_BYTES_PER_HOUR = 57.6 * _MB
#: Lossless compressed audio (FLAC): the PCM bound at 4:1 compression (32 kbit/s).
LOSSLESS_BYTES_PER_HOUR = PCM_BYTES_PER_HOUR / 4
#: Lossy audio (MP3, Ogg Vorbis, Opus, Musepack): 16 kbit/s, a low-rate mono voice encoding.
LOSSY_BYTES_PER_HOUR = 7.2 * _MB
#: AudioSet embedding TFRecords hold 128 bytes per 0.96 s frame (3,750 frames/h) plus framing.
TFRECORD_BYTES_PER_HOUR = 128 * 3750
#: Gzipped TFRecords: the same at 2:1 compression.
TFRECORD_GZ_BYTES_PER_HOUR = TFRECORD_BYTES_PER_HOUR / 2

_LOSSLESS = frozenset({".flac"})
_LOSSY = frozenset({".mp3", ".ogg", ".oga", ".opus", ".mpc"})
_PCM = sources.AUDIO_EXTENSIONS - _LOSSLESS - _LOSSY

#: Bytes per audio hour at least, by kind of file (what the estimate divides a file's size by).
MIN_BYTES_PER_HOUR = {
    "pcm": PCM_BYTES_PER_HOUR,
    "lossless": LOSSLESS_BYTES_PER_HOUR,
    "lossy": LOSSY_BYTES_PER_HOUR,
    # Archives (zip, tar, tar.gz, ...): members may be of any format and compressed again, and are
    # not listed at launch: the smallest rate of any audio format.
    "archive": LOSSY_BYTES_PER_HOUR,
    "tfrecord": TFRECORD_BYTES_PER_HOUR,
    "tfrecord_gz": TFRECORD_GZ_BYTES_PER_HOUR,
    # Files of other names (named explicitly or by a glob; decoding decides): the smallest rate.
    "other": LOSSY_BYTES_PER_HOUR,
}


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """The chosen number of files and what it was chosen from (written to run.json).

    Attributes:
      num_shards: files of each per-frame table (windows, frames, embeddings).
      files: input files matched at launch.
      input_bytes: their total size.
      audio_hours_bound: upper bound of their audio hours (`MIN_BYTES_PER_HOUR`).
      frames_bound: upper bound of the frames (rows per per-frame table) of the run.
      frames_per_file: the bound per file (`from_run.shard_frames`).
      unlisted_patterns: patterns that could not be listed at launch (not in the estimate).
    """

    num_shards: int
    files: int = 0
    input_bytes: int = 0
    audio_hours_bound: float = 0.0
    frames_bound: int = 0
    frames_per_file: int = 0
    unlisted_patterns: int = 0

    def summary(self) -> dict:
        return dataclasses.asdict(self)


def format_kind(path: str) -> str:
    """The key of MIN_BYTES_PER_HOUR for a file name (by its extension)."""
    name = os.path.basename(path.rstrip("/")).lower()
    kind = sources.classify(name)
    if kind == sources.KIND_ARCHIVE:
        return "archive"
    if kind == sources.KIND_TFRECORD:
        return "tfrecord_gz" if name.endswith(".gz") else "tfrecord"
    ext = os.path.splitext(name)[1]
    if ext in _LOSSY:
        return "lossy"
    if ext in _LOSSLESS:
        return "lossless"
    return "pcm" if ext in _PCM else "other"


def hours_bound(path: str, size_bytes: int) -> float:
    """Upper bound of the audio hours in a file of `size_bytes` (0 for an unknown size)."""
    return max(0, size_bytes) / MIN_BYTES_PER_HOUR[format_kind(path)]


def files_for(frames_bound: int, frames_per_file: int) -> int:
    """Files so that none holds more than `frames_per_file` of `frames_bound` frames (at least 1)."""
    return max(1, math.ceil(frames_bound / frames_per_file))


def plan_for_sources(
    srcs: Iterable[sources.Source], model, write_embeddings: bool, unlisted: int = 0
) -> ShardPlan:
    """The plan for matched inputs `srcs` scored with `model` (an EmbeddingModel).

    The frame bound of a file is its hours bound in frames of the model's hop, plus one (the window
    a recording shorter than a frame still gets).
    """
    per_file = from_run.shard_frames(model, write_embeddings)
    n_files = total_bytes = frames = 0
    hours = 0.0
    for src in srcs:
        h = hours_bound(src.path, src.size_bytes)
        n_files += 1
        total_bytes += max(0, src.size_bytes)
        hours += h
        frames += math.ceil(h * 3600 / model.hop_seconds) + 1
    return ShardPlan(
        num_shards=files_for(frames, per_file),
        files=n_files,
        input_bytes=total_bytes,
        audio_hours_bound=round(hours, 3),
        frames_bound=frames,
        frames_per_file=per_file,
        unlisted_patterns=unlisted,
    )


def plan_num_shards(patterns: Iterable[str], model, write_embeddings: bool) -> ShardPlan:
    """Matches `patterns` (names and sizes only) and plans the files of the per-frame tables.

    Args:
      patterns: the run's --input patterns and the lines of its --input_list files.
      model: the run's gunshot_core.embedding_models.EmbeddingModel.
      write_embeddings: whether the run writes the embeddings table (bounds a file's embedding bytes).
    """
    matched, unlisted = [], 0
    for item in sources.expand_patterns(patterns):
        if isinstance(item, sources.Source):
            matched.append(item)
        elif item.reason == "unreadable":
            unlisted += 1
            _LOG.warning("--num_shards auto: %s; its files are not counted", item.message)
    plan = plan_for_sources(matched, model, write_embeddings, unlisted)
    _LOG.info(
        "--num_shards auto: %d files (%d inputs, %.1f GB, at most %.1f audio hours, %d frames; "
        "%d frames per file at most)",
        plan.num_shards,
        plan.files,
        plan.input_bytes / 1e9,
        plan.audio_hours_bound,
        plan.frames_bound,
        plan.frames_per_file,
    )
    return plan


def parse_num_shards(value: str) -> str | int:
    """argparse type of --num_shards: `auto` or an integer >= 1."""
    if value.strip().lower() == AUTO:
        return AUTO
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes `auto` or a number of files, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be `auto` or >= 1, got {number}")
    return number
