"""Outputs of the scoring pipeline: provenance, staged table writes, reruns, reviewer exports, run.json.

Tables are written by `pipelines.common.WriteTable` into `DIR/.staging/` and moved into `DIR` only
after the whole job succeeded (`finalize_tables`), so a failed or interrupted run never leaves a
half-written table next to a complete one. A rerun with `--skip_existing` carries the rows of
already scored files over from the previous tables and scores only the rest.
"""

import csv
import dataclasses
import hashlib
import io
import logging
import os
import posixpath
import re
import shutil
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from gunshot_core import params
from pipelines import schemas
from pipelines import scoring_sources as sources
from pipelines.io import errors, sharded, tables

_LOG = logging.getLogger(__name__)

STAGING = ".staging"
RUN_MANIFEST = "run.json"
EVENTS_CSV = "events.csv"
RAVEN_TABLE = "events.selections.txt"
CLIPS_DIR = "clips"


# ---- Provenance ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Columns every table carries: which models, code and settings produced a row."""

    head_name: str
    vggish_sha256: str
    pca_sha256: str
    head_sha256: str
    code_version: str
    window_seconds: float
    hop_seconds: float
    threshold: float

    @property
    def model_id(self) -> str:
        joined = f"{self.vggish_sha256}:{self.pca_sha256}:{self.head_sha256}"
        return hashlib.sha256(joined.encode()).hexdigest()[:16]

    def columns(self) -> dict:
        return {"model_id": self.model_id, **dataclasses.asdict(self)}


def with_provenance(row: dict, columns: dict) -> dict:
    """`row` plus the provenance columns (a new dict)."""
    out = dict(row)
    out.update(columns)
    return out


# ---- Sort keys of the tables (module level: picklable) ---------------------------------------------


def _windows_key(row):
    return (row["source"], row["window_index"])


def _recordings_key(row):
    return (row["source"],)


def _events_key(row):
    return (row["source"], row["event_index"])


def _errors_key(row):
    return (row["source"], row["stage"], row["reason"], row["message"])


def _embeddings_key(row):
    return (row["source"], row["frame_index"])


# The columns each table is sorted by within a file (they identify a row); Arrow sorts them.
SORT_COLUMNS = {
    "windows": ("source", "window_index"),
    "recordings": ("source",),
    "events": ("source", "event_index"),
    "errors": ("source", "stage", "reason", "message"),
    "embeddings": ("source", "frame_index"),
}


def source_key(row):
    """Shard key: all rows of one recording go to the same file."""
    return row["source"]


SORT_KEYS = {
    "windows": _windows_key,
    "recordings": _recordings_key,
    "events": _events_key,
    "errors": _errors_key,
    "embeddings": _embeddings_key,
}


def table_pattern(output_dir: str, name: str) -> str:
    return FileSystems.join(output_dir, f"{name}-*-of-*.parquet")


def existing_files(pattern: str) -> list[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing directory is no table
        return []


def clear_staging(output_dir: str) -> int:
    """Deletes what an interrupted earlier run left in `output_dir/.staging/`; returns how many files.

    Staged files of another shard count would otherwise be moved in next to this run's.
    """
    leftovers = existing_files(FileSystems.join(output_dir, STAGING, "*"))
    if leftovers:
        _LOG.info("removing %d files an earlier, unfinished run left in %s", len(leftovers), STAGING)
        FileSystems.delete(leftovers)
    return len(leftovers)


def finalize_tables(output_dir: str, names) -> list[str]:
    """Moves the staged tables of a finished run into `output_dir`, replacing the previous shards.

    Returns:
      the final paths.
    """
    staging = FileSystems.join(output_dir, STAGING)
    moved = []
    for name in names:
        staged = existing_files(table_pattern(staging, name))
        if not staged:
            continue
        old = existing_files(table_pattern(output_dir, name))
        final = [FileSystems.join(output_dir, posixpath.basename(p)) for p in staged]
        stale = [p for p in old if p not in final]
        if stale:
            FileSystems.delete(stale)
        existing_final = [p for p in final if FileSystems.exists(p)]
        if existing_final:
            FileSystems.delete(existing_final)
        FileSystems.rename(staged, final)
        moved.extend(final)
    if existing_files(FileSystems.join(staging, "embeddings-*-of-*.tfrecord")):
        for old in existing_files(FileSystems.join(output_dir, "embeddings-*-of-*.tfrecord")):
            if not FileSystems.exists(FileSystems.join(staging, posixpath.basename(old))):
                FileSystems.delete([old])
    for leftover in existing_files(FileSystems.join(staging, "*")):
        final = FileSystems.join(output_dir, posixpath.basename(leftover))
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([leftover], [final])
        moved.append(final)
    if "://" not in staging and os.path.isdir(staging):
        try:
            os.rmdir(staging)
        except OSError:
            pass
    return moved


# ---- Reruns (--skip_existing) ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PreviousRun:
    """What a previous run in the same output directory already scored.

    Attributes:
      done_files: matched files all of whose recordings were scored ok (skipped by the rerun).
      done_sources: the `source` keys of those files' recordings (their rows are carried over).
    """

    done_files: frozenset
    done_sources: frozenset


def read_previous_run(output_dir: str, provenance: Provenance) -> PreviousRun:
    """Reads the recordings table of a previous run; empty when there is none.

    Raises:
      ValueError: the previous run used other models or settings (its rows could not be mixed in).
    """
    if not existing_files(table_pattern(output_dir, "recordings")):
        return PreviousRun(frozenset(), frozenset())
    table = tables.read_table(output_dir, "recordings")
    if table.num_rows == 0:
        return PreviousRun(frozenset(), frozenset())
    expected = provenance.columns()
    for column in ("model_id", "window_seconds", "hop_seconds", "threshold"):
        values = set(table.column(column).to_pylist())
        if values != {expected[column]}:
            raise ValueError(
                f"--skip_existing: the tables in {output_dir} were made with {column}={sorted(values)}, this run"
                f" uses {expected[column]!r}; write to a new --output or rerun without --skip_existing"
            )
    files = table.column("file").to_pylist()
    statuses = table.column("status").to_pylist()
    src = table.column("source").to_pylist()
    bad = {f for f, s in zip(files, statuses, strict=True) if s != "ok"}
    done_files = frozenset(set(files) - bad)
    done_sources = frozenset(s for s, f in zip(src, files, strict=True) if f in done_files)
    return PreviousRun(done_files, done_sources)


class _KeepDone(beam.DoFn):
    def __init__(self, done_sources: frozenset, provenance_columns: tuple):
        self._done = done_sources
        self._drop = provenance_columns

    def process(self, row):
        if row["source"] in self._done and row.get("stage") != "match":
            yield {k: v for k, v in row.items() if k not in self._drop}


class CarryOver(beam.PTransform):
    """PBegin -> the previous run's rows of one table for the files this run skips (no provenance)."""

    def __init__(self, output_dir: str, name: str, done_sources: frozenset):
        super().__init__()
        self._files = existing_files(table_pattern(output_dir, name))
        self._done = done_sources

    def expand(self, pbegin):
        if not self._files or not self._done:
            return pbegin | beam.Create([])
        drop = tuple(f.name for f in schemas.PROVENANCE_FIELDS)
        reads = [pbegin | f"Read{i}" >> beam.io.ReadFromParquet(path) for i, path in enumerate(self._files)]
        return reads | "Merge" >> beam.Flatten() | "Keep" >> beam.ParDo(_KeepDone(self._done, drop))


# ---- Embeddings as AudioSet TFRecords ---------------------------------------------------------------


def recording_record(grouped) -> tuple[str, bytes]:
    """(source, serialized SequenceExample) of one recording's embedding rows.

    The record holds all frames of the recording in order (video_id = source, start 0, end = frames *
    0.96 s, no labels), so scoring the TFRecord gives the recording's own windows and scores again.
    """
    from gunshot_core import records

    source, rows = grouped
    rows = sorted(rows, key=_embeddings_key)
    frames = np.frombuffer(b"".join(r["embedding"] for r in rows), np.uint8).reshape(len(rows), -1)
    return source, records.encode_sequence_example(source, 0.0, len(rows) * params.FRAME_SECONDS, [], frames)


def _record_key(element):
    return element[0]


def _write_records(handle, elements) -> None:
    from gunshot_core import records

    records.write_tfrecords(handle, (payload for _, payload in elements))


class WriteEmbeddingRecords(beam.PTransform):
    """PCollection[dict] embedding rows -> `{directory}/embeddings-SSSSS-of-NNNNN.tfrecord`, one record
    per recording (deterministic shards, sorted by source)."""

    def __init__(self, directory: str, num_shards: int):
        super().__init__()
        self._prefix = FileSystems.join(directory, "embeddings")
        self._num_shards = num_shards

    def expand(self, rows):
        return (
            rows
            | "BySource" >> beam.Map(lambda r: (r["source"], r))
            | "Group" >> beam.GroupByKey()
            | "Encode" >> beam.Map(recording_record)
            | "Write"
            >> sharded.WriteSharded(self._prefix, self._num_shards, ".tfrecord", _write_records, _record_key)
        )


# ---- Reviewer exports ----------------------------------------------------------------------------

CSV_COLUMNS = (
    "source",
    "event_index",
    "start_seconds",
    "end_seconds",
    "peak_score",
    "peak_seconds",
    "num_windows",
    "start_utc",
    "end_utc",
)


def events_csv(events: list[dict]) -> str:
    """The events as CSV text (sorted by source and start), one header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in sorted(events, key=_events_key):
        writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def raven_selection_table(events: list[dict]) -> str:
    """The events as one Raven Pro selection table (tab-separated).

    Begin/End Time are seconds from the start of the file named in `Begin Path` (the same value as
    `File Offset (s)`); frequencies span the VGGish band (125-7500 Hz).
    """
    header = [
        "Selection",
        "View",
        "Channel",
        "Begin Time (s)",
        "End Time (s)",
        "Low Freq (Hz)",
        "High Freq (Hz)",
        "Begin Path",
        "File Offset (s)",
        "Peak Score",
        "Peak Time (s)",
        "Source",
    ]
    lines = ["\t".join(header)]
    for i, row in enumerate(sorted(events, key=_events_key), start=1):
        path = row["source"].split("!", 1)[0] if "!" in row["source"] else row["source"]
        lines.append(
            "\t".join(
                [
                    str(i),
                    "Spectrogram 1",
                    "1",
                    f"{row['start_seconds']:.3f}",
                    f"{row['end_seconds']:.3f}",
                    f"{params.MEL_MIN_HZ:.1f}",
                    f"{params.MEL_MAX_HZ:.1f}",
                    path,
                    f"{row['start_seconds']:.3f}",
                    f"{row['peak_score']:.6f}",
                    f"{row['peak_seconds']:.3f}",
                    row["source"],
                ]
            )
        )
    return "\n".join(lines) + "\n"


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path, mime_type="text/plain") as f:
        f.write(text.encode("utf-8"))


class _WriteExports(beam.DoFn):
    def __init__(self, directory: str):
        self._directory = directory

    def process(self, events: list[dict]):
        _write_text(FileSystems.join(self._directory, EVENTS_CSV), events_csv(events))
        _write_text(FileSystems.join(self._directory, RAVEN_TABLE), raven_selection_table(events))
        yield len(events)


class WriteEventExports(beam.PTransform):
    """PCollection[dict] event rows -> events.csv and a Raven selection table in `directory`."""

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def expand(self, events):
        return (
            events
            | "ToList" >> beam.combiners.ToList()
            | "Write" >> beam.ParDo(_WriteExports(self._directory))
        )


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
