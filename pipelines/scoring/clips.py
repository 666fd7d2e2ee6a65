"""Event clips for reviewers: WAV excerpts around each event (`--export_clips`).

Stage: scoring 8 (exports). `ExportClipsFn`: (RecordingInfo, [(event index, Event)]) -> WAV clips,
error rows when a recording cannot be read again.
"""

import io
import re
import shutil
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.io import errors
from pipelines.scoring import sources

_UNSAFE = re.compile(r"[^0-9A-Za-z._-]+")


def clip_name(source: str, event_index: int, start_seconds: float) -> str:
    """A flat, file-system-safe WAV name for one event clip of one recording."""
    base = _UNSAFE.sub("_", source.split("://", 1)[-1]).strip("_")[-150:]
    return f"{base}__event{event_index:03d}_{start_seconds:09.2f}s.wav"


def _read_segment(target, start: float, end: float) -> tuple[np.ndarray, int]:
    import soundfile

    with soundfile.SoundFile(target) as f:
        rate = f.samplerate
        first = max(0, int(start * rate))
        last = min(f.frames, int(np.ceil(end * rate))) if f.frames > 0 else int(np.ceil(end * rate))
        f.seek(first)
        return f.read(max(0, last - first), dtype="float32", always_2d=True), rate


def _find_member(archive: str, member: str):
    """A seekable copy of one archive member (the archive's own spool is released with its iterator)."""
    members = sources.iter_archive_members(archive)
    try:
        for m in members:
            if m.name == member:
                copy = tempfile.SpooledTemporaryFile(max_size=sources.SPOOL_MAX_MEMORY_BYTES)
                shutil.copyfileobj(m.fileobj, copy, 1 << 20)
                copy.seek(0)
                return copy
    finally:
        members.close()
    raise FileNotFoundError(f"{member!r} not in {archive}")


class ExportClipsFn(beam.DoFn):
    """(RecordingInfo, [(event index, Event)]) -> WAV clips around the events; error rows on failure.

    Clips keep the recording's own sample rate and channels (16-bit PCM WAV) and include
    `padding` seconds of audio before and after the event.
    """

    def __init__(self, directory: str, padding: float):
        self._directory = directory
        self._padding = padding
        self._written = Metrics.counter("score", "clips_written")
        self._errors = errors.ErrorReporter("score_export")

    def process(self, request):
        import soundfile

        info, events = request
        try:
            for index, event in events:
                start = max(0.0, event.start_seconds - self._padding)
                end = event.end_seconds + self._padding
                if info.member:
                    with _find_member(info.file, info.member) as member:
                        audio, rate = _read_segment(member, start, end)
                else:
                    with sources.readable(info.file) as target:
                        audio, rate = _read_segment(target, start, end)
                buffer = io.BytesIO()
                soundfile.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
                path = FileSystems.join(self._directory, clip_name(info.source, index, event.start_seconds))
                with FileSystems.create(path + ".part", compression_type=CompressionTypes.UNCOMPRESSED) as f:
                    f.write(buffer.getvalue())
                if FileSystems.exists(path):
                    FileSystems.delete([path])
                FileSystems.rename([path + ".part"], [path])
                self._written.inc()
        except Exception as e:  # noqa: BLE001 - a failed export is an error row, never a crash
            yield self._errors.emit(
                {
                    "source": info.source,
                    "stage": "export",
                    "reason": "clip_failed",
                    "message": f"{type(e).__name__}: {e}",
                }
            )
