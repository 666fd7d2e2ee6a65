"""Stage 1 of `gunshot evaluate-events`: annotation files and scoring runs in.

`--scores NAME=DIR` and `--annotations` -> a `Run` per scoring run, holding its annotated
`Recording`s (positives, confusers, window or frame scores, the run's own events), and error rows
for annotation rows the run cannot place.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from gunshot_core import annotations as ann

NO_GROUP = "(no group)"


@dataclasses.dataclass
class Recording:
    """One annotated recording as a scoring run saw it.

    Attributes:
      source: the run's source key.
      group: from --group_pattern.
      status: ok | error | missing (not in this run).
      seconds: duration from the `recordings` table (0 unless ok).
      positives: (start, end, label) of annotated positives, by start.
      confusers: (start, end, label) of the other annotations, by start.
      starts, ends: float64 [m] window (or frame) times; scores: float32 [m], in window order.
      events: (start, end, peak score) of the run's own events.
    """

    source: str
    group: str
    status: str
    seconds: float
    positives: list
    confusers: list
    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray
    events: list


@dataclasses.dataclass
class Run:
    """A scoring run: name, directory, threshold, provenance and its annotated recordings."""

    name: str
    directory: str
    threshold: float
    head_name: str
    model_id: str
    window_seconds: float | None
    hop_seconds: float | None
    recordings: list[Recording]
    unannotated: int


def parse_scores(values: Sequence[str]) -> list[tuple[str, str]]:
    """`NAME=DIR` (or `DIR`, named after its last folder) -> [(name, dir)], names unique."""
    out = []
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep:
            directory, name = value, os.path.basename(value.rstrip("/")) or value
        if not name or not directory:
            raise ValueError(f"--scores wants NAME=DIR, got {value!r}")
        if not re.fullmatch(r"[\w.+-]+", name):
            raise ValueError(f"--scores name {name!r}: use letters, digits, '.', '+', '-', '_'")
        if name in (n for n, _ in out):
            raise ValueError(f"--scores name {name!r} given twice")
        out.append((name, directory))
    return out


def group_of(source: str, pattern: str | None) -> str:
    """The group of a source, as `gunshot dataset` splits by it: `--group_pattern`'s first capture
    group (else its whole match), by default the recording's folder; NO_GROUP when it does not match."""
    from pipelines.dataset import splitting

    return splitting.group_of(source, pattern) or NO_GROUP


def read_annotation_files(
    patterns: Sequence[str], label_column: str | None
) -> list[tuple[str, ann.ParsedAnnotations]]:
    """[(path, parsed)] of the annotation files the patterns name, as `gunshot dataset` finds them
    (a folder is searched recursively for .txt and .csv; local or gs://), sorted by path. A pattern
    that matches nothing gives one `not_found` error and an unreadable file one `malformed_file`."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.dataset import annotation_io

    parsed = {}
    for pattern in patterns:
        paths, problem = annotation_io.expand_annotation_pattern(pattern)
        if problem:
            error = ann.AnnotationError(pattern, 0, annotation_io.NOT_FOUND, problem)
            parsed[pattern] = ann.ParsedAnnotations("", (), (error,), ())
        for path in paths:
            try:
                with FileSystems.open(path) as handle:
                    data = handle.read()
            except Exception as e:  # noqa: BLE001 - an unreadable file is an error row, not a crash
                error = ann.AnnotationError(
                    path, 0, ann.MALFORMED_FILE, f"{path}: cannot read ({type(e).__name__})"
                )
                parsed[path] = ann.ParsedAnnotations("", (), (error,), ())
                continue
            parsed[path] = ann.parse_annotations(data, path, label_column=label_column)
    return sorted(parsed.items())


def _table(directory: str, name: str):
    from pipelines.io import tables as io_tables

    try:
        return io_tables.read_table(directory, name)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{directory}: no {name!r} table ({name}-*-of-*.parquet); is it the output of `gunshot batch`?"
        ) from None


def _optional_table(directory: str, name: str):
    """A score table that only some runs write (e.g. `frames`), or None when the run has none."""
    from pipelines.io import tables as io_tables

    try:
        return io_tables.read_table(directory, name)
    except FileNotFoundError:
        return None


def _first(table, column, default=None):
    if table.num_rows and column in table.column_names:
        value = table.column(column)[0].as_py()
        return default if value is None else value
    return default


def load_run(
    name: str,
    directory: str,
    parsed: Sequence[tuple[str, ann.ParsedAnnotations]],
    positive: set[str],
    group_pattern: str | None,
    all_annotated: bool,
    errors: list[dict],
) -> Run:
    """Reads one scoring run and attaches the annotations to its recordings.

    Appends to `errors` one row per annotation file row the run cannot place (reason
    `recording_not_in_run`, `ambiguous_recording`, `beyond_end`) and per annotation error.
    """
    recordings_t = _table(directory, "recordings")
    windows_t = _table(directory, "windows")
    events_t = _table(directory, "events")
    threshold = _first(windows_t, "threshold")
    threshold = _first(recordings_t, "threshold") if threshold is None else threshold
    if threshold is None:
        raise ValueError(f"{directory}: the tables hold no row to take the run's threshold from")
    rec_rows = recordings_t.select(["source", "status", "duration_seconds"]).to_pylist()
    status = {r["source"]: r for r in rec_rows}
    matcher = ann.RecordingMatcher(status)

    def place(key: str, file: str, line: int) -> str | None:
        found = matcher.candidates(key)
        source = matcher.match(key)
        if source is None:
            reason = "ambiguous_recording" if found else "recording_not_in_run"
            message = (
                f"{file}:{line}: {key!r} matches {len(found)} recordings of run {name!r}"
                if found
                else f"{file}:{line}: recording {key!r} is not in run {name!r}"
            )
            errors.append({"scorer": name, "source": file, "reason": reason, "message": message})
        return source

    annotated: dict[str, dict] = {}
    for path, p in parsed:
        keys_with_rows = {row.recording_key for row in p.rows}
        for key in p.recording_keys:
            # keys with rows are placed (or reported) row by row below
            source = matcher.match(key) if key in keys_with_rows else place(key, path, 0)
            if source is not None:
                annotated.setdefault(source, {"positives": [], "confusers": []})
        for row in p.rows:
            source = place(row.recording_key, row.annotation_file, row.line)
            if source is None:
                continue
            entry = annotated.setdefault(source, {"positives": [], "confusers": []})
            seconds = status[source]["duration_seconds"]
            if status[source]["status"] == "ok" and seconds is not None and row.start_seconds > seconds:
                errors.append(
                    {
                        "scorer": name,
                        "source": row.annotation_file,
                        "reason": "beyond_end",
                        "message": f"{row.annotation_file}:{row.line}: starts at {row.start_seconds:g} s, "
                        f"after the end of {source} ({seconds:g} s)",
                    }
                )
                continue
            kind = "positives" if row.label.lower() in positive else "confusers"
            entry[kind].append((row.start_seconds, row.end_seconds, row.label))
    if all_annotated:
        for source in status:
            annotated.setdefault(source, {"positives": [], "confusers": []})

    windows = _by_source(windows_t, ["window_index", "start_seconds", "end_seconds", "score"], "window_index")
    frames_t = _optional_table(directory, "frames")
    if frames_t is not None and frames_t.num_rows:
        # A head with frame scores (framepool): its events are runs of frames, so the sweep merges
        # frames exactly as the scoring pipeline did at the run's threshold.
        frames = _by_source(frames_t, ["frame_index", "start_seconds", "end_seconds", "score"], "frame_index")
        windows = {source: frames.get(source) for source in windows}
    events = _by_source(
        events_t, ["event_index", "start_seconds", "end_seconds", "peak_score"], "event_index"
    )
    recordings = []
    for source in sorted(annotated):
        row = status[source]
        ok = row["status"] == "ok"
        w = windows.get(source)
        e = events.get(source)
        recordings.append(
            Recording(
                source=source,
                group=group_of(source, group_pattern),
                status=row["status"],
                seconds=float(row["duration_seconds"] or 0.0) if ok else 0.0,
                positives=sorted(annotated[source]["positives"]),
                confusers=sorted(annotated[source]["confusers"]),
                starts=w["start_seconds"] if w else np.zeros(0),
                ends=w["end_seconds"] if w else np.zeros(0),
                scores=w["score"] if w else np.zeros(0, np.float32),
                events=list(zip(e["start_seconds"], e["end_seconds"], e["peak_score"], strict=True))
                if e
                else [],
            )
        )
    return Run(
        name=name,
        directory=directory,
        threshold=float(threshold),
        head_name=_first(recordings_t, "head_name", ""),
        model_id=_first(recordings_t, "model_id", ""),
        window_seconds=_first(recordings_t, "window_seconds"),
        hop_seconds=_first(recordings_t, "hop_seconds"),
        recordings=recordings,
        unannotated=len(status) - len(annotated),
    )


def _by_source(table, columns: list[str], order: str) -> dict[str, dict[str, np.ndarray]]:
    """{source: {column: array sorted by `order`}} of a score table."""
    if table.num_rows == 0:
        return {}
    t = table.select(["source", *columns]).sort_by([("source", "ascending"), (order, "ascending")])
    sources = t.column("source").to_numpy(zero_copy_only=False)
    cols = {c: t.column(c).to_numpy(zero_copy_only=False) for c in columns}
    out = {}
    bounds = np.flatnonzero(sources[1:] != sources[:-1]) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(sources)], strict=True):
        out[str(sources[a])] = {c: v[a:b] for c, v in cols.items()}
    return out
