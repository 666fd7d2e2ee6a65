"""Report stage: audio clips cut from scored recordings, and parallel work with a progress line.

Shared by `gunshot report` and `gunshot search`. A recording is named as in the scoring tables: a
local path or `gs://` URI (`file`), plus the archive member when it sits in a zip or tar archive
(`member`; the tables' `source` is then `archive!member`, see `AudioRef.from_source`).

Clips are decoded through the core's decoder (`gunshot_core.audio.iter_waveform`: the same
soundfile reader, error reasons and mix-down the scoring pipeline uses), at the recording's own sample
rate (no resampling, so a clip's samples are the recording's), mixed down to mono, and written as
16-bit PCM WAV. Archive members and `gs://` files are opened with the scoring pipeline's own readers
(`pipelines.scoring.sources`): zip and plain tar members by random access, compressed tar members by
one pass over the archive, `gs://` through Beam's FileSystems.

    ref = AudioRef.from_source("site7/day1.zip!rec_0001.wav")
    clip = cut_clip(ref, 12.0, 18.0)             # Clip: float32 [n] mono at clip.sample_rate
    write_wav("event_001.wav", clip)              # int16 PCM, byte-identical on reruns
    results = map_with_progress(make_one, items, label="clips")   # threads + stderr progress
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from gunshot_core import audio
from gunshot_core import progress as progress_lib
from gunshot_core.errors import AudioDecodeError
from pipelines.scoring import sources


class MediaError(Exception):
    """A clip could not be cut. `reason` is a short stable word (unreadable, missing_member, corrupt,
    empty, out_of_range, ...); the message names the recording and never holds run-specific text."""

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class AudioRef:
    """Where a scored recording's audio is: a file (local or gs://) and, inside an archive, a member."""

    file: str
    member: str | None = None

    @property
    def source(self) -> str:
        """The `source` key the scoring tables use for this recording."""
        return sources.member_source_id(self.file, self.member) if self.member else self.file

    @classmethod
    def from_source(cls, source: str) -> AudioRef:
        """Splits a tables' `source` key: `archive!member` when the part before a `!` names a zip or
        tar archive (the first such `!`), else a plain file path (which may itself contain `!`)."""
        start = 0
        while (bang := source.find("!", start)) >= 0:
            if sources.classify(source[:bang]) == sources.KIND_ARCHIVE:
                return cls(source[:bang], source[bang + 1 :])
            start = bang + 1
        return cls(source)


@dataclasses.dataclass(frozen=True)
class Clip:
    """A stretch of a recording, mixed down to mono at the recording's own rate.

    Attributes:
      samples: float32 [num_samples] in [-1, 1).
      sample_rate: Hz, the recording's.
      first_sample: index in the recording of samples[0]; start_seconds = first_sample / sample_rate.
      recording_seconds: duration of the whole recording.
    """

    samples: np.ndarray
    sample_rate: int
    first_sample: int
    recording_seconds: float

    @property
    def start_seconds(self) -> float:
        return self.first_sample / self.sample_rate

    @property
    def end_seconds(self) -> float:
        return (self.first_sample + self.samples.size) / self.sample_rate


def _member_entry(file: str, member: str) -> sources.ArchiveEntry:
    entries, _ = sources.list_archive_members(file)
    for entry in entries:
        if entry.name == member:
            return entry
    raise MediaError(f"{file}: archive has no audio member {member!r}", reason="missing_member")


@contextlib.contextmanager
def open_recording(ref: AudioRef) -> Iterator[object]:
    """Yields what the core's decoder opens for `ref`: a local path, or a seekable binary file object.

    Raises:
      MediaError: the file or archive cannot be read, or the member is not in it.
    """
    if not ref.member:
        try:
            with sources.readable(ref.file) as target:
                yield target
        except (OSError, ValueError) as e:
            raise MediaError(f"{ref.file}: cannot open: {type(e).__name__}", reason="unreadable") from e
        return
    try:
        if sources.splits_into_parts(ref.file):  # zip / plain tar: read just this member
            entry = _member_entry(ref.file, ref.member)
            members = sources.iter_part_members(ref.file, sources.ArchivePart(0, 1, (entry,)))
        else:  # compressed tar: one pass until the member
            members = (m for m in sources.iter_archive_members(ref.file) if m.name == ref.member)
        found = next(members, None)
    except MediaError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/tarfile/OSError: the archive itself is unreadable
        raise MediaError(f"{ref.source}: cannot read archive: {type(e).__name__}", reason="unreadable") from e
    try:
        if found is None:
            raise MediaError(
                f"{ref.file}: archive has no audio member {ref.member!r}", reason="missing_member"
            )
        if isinstance(found, tuple):  # (name, exception) from iter_part_members
            raise MediaError(
                f"{ref.source}: cannot read member: {type(found[1]).__name__}", reason="unreadable"
            )
        with contextlib.suppress(AttributeError):  # decoder messages then name the member
            found.fileobj.name = ref.source
        yield found.fileobj
    finally:
        members.close()


def cut_clip(ref: AudioRef, start_seconds: float, end_seconds: float) -> Clip:
    """Decodes the recording's samples [floor(start * rate), ceil(end * rate)), clamped to the recording.

    Args:
      ref: the recording.
      start_seconds, end_seconds: the stretch wanted, in seconds from the recording's start.
    Returns:
      Clip with float32 mono samples at the recording's own rate (integer PCM scaled by 1/32768).
    Raises:
      MediaError: unreadable input (reason from the decoder: corrupt, empty, unsupported, ...), or a
        stretch that holds no samples of the recording (reason out_of_range).
    """
    if not end_seconds > start_seconds:
        raise ValueError(f"clip end {end_seconds} must be after its start {start_seconds}")
    with open_recording(ref) as target:
        try:
            info = audio.probe(target)
            rate = info.sample_rate
            first = min(max(0, math.floor(start_seconds * rate)), info.frames)
            last = min(max(first, math.ceil(end_seconds * rate)), info.frames)
            if last <= first:
                raise MediaError(
                    f"{ref.source}: {start_seconds:.3f}-{end_seconds:.3f} s lies outside the recording"
                    f" ({info.duration_seconds:.3f} s)",
                    reason="out_of_range",
                )
            blocks = list(audio.iter_waveform(target, rate, start=first, stop=last))
        except AudioDecodeError as e:
            # A path names itself in the decoder's message; a file object's repr would hold an address.
            message = str(e) if isinstance(target, str) else f"{ref.source}: cannot decode audio ({e.reason})"
            raise MediaError(message, reason=e.reason) from e
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise MediaError(
            f"{ref.source}: no samples could be decoded at {start_seconds:.3f} s", reason="corrupt"
        )
    return Clip(samples, rate, first, info.duration_seconds)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 [n] in [-1, 1) -> int16 [n]; exact for audio that came from 16-bit PCM (x * 32768)."""
    return np.clip(np.round(np.asarray(samples, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | os.PathLike, clip: Clip) -> int:
    """Writes a clip as mono 16-bit PCM WAV at its own rate (atomically); returns the size in bytes."""
    import soundfile

    path = os.fspath(path)
    partial = path + ".part"
    soundfile.write(partial, to_pcm16(clip.samples), clip.sample_rate, format="WAV", subtype="PCM_16")
    os.replace(partial, path)
    return os.path.getsize(path)


def loudest_seconds(
    clip: Clip, within: tuple[float, float] | None = None, frame_seconds: float = 0.05
) -> float:
    """Time (recording seconds) of the centre of the loudest `frame_seconds` frame of the clip,
    optionally only among frames inside `within` = (start, end) seconds; where to centre a short clip
    inside a long window (a shot fills a fraction of a second of a 10-s window)."""
    rate = clip.sample_rate
    hop = max(1, int(frame_seconds * rate))
    n = clip.samples.size // hop
    if n == 0:
        return (clip.start_seconds + clip.end_seconds) / 2
    energy = np.square(clip.samples[: n * hop].astype(np.float64)).reshape(n, hop).sum(axis=1)
    centres = clip.start_seconds + (np.arange(n) + 0.5) * hop / rate
    if within is not None:
        inside = (centres >= within[0]) & (centres <= within[1])
        if inside.any():
            energy = np.where(inside, energy, -1.0)
    return float(centres[int(np.argmax(energy))])


def sub_clip(clip: Clip, start_seconds: float, end_seconds: float) -> Clip:
    """The part of an already decoded clip between two recording times (clamped to the clip)."""
    rate = clip.sample_rate
    first = min(
        max(clip.first_sample, math.floor(start_seconds * rate)), clip.first_sample + clip.samples.size
    )
    last = min(max(first, math.ceil(end_seconds * rate)), clip.first_sample + clip.samples.size)
    return Clip(
        clip.samples[first - clip.first_sample : last - clip.first_sample],
        rate,
        first,
        clip.recording_seconds,
    )


# A bar on a terminal, a few plain lines in a log (not one per item): see gunshot_core.progress.
Progress = progress_lib.Progress


def map_with_progress(
    fn: Callable[[object], object],
    items: Iterable[object],
    *,
    label: str,
    workers: int | None = None,
    stream=None,
) -> list[object]:
    """fn(item) for every item on a thread pool, in input order, with a progress line.

    Decoding (libsndfile), FFTs and PNG encoding release the GIL for most of their time, so threads
    overlap them without copying audio between processes. An exception raised by `fn` is returned in
    place of its result (the caller turns it into a page that says what failed), never raised.

    Args:
      workers: threads (default: the CPUs this process may use, at most 8).
    Returns:
      [fn(item) or the exception it raised], same order as `items`.
    """
    items = list(items)
    if workers is None:
        workers = min(
            8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
    progress = Progress(len(items), label, stream)
    results: list[object] = [None] * len(items)
    if not items:
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as e:  # noqa: BLE001 - returned to the caller, see docstring
                results[i] = e
            progress.advance()
    return results
