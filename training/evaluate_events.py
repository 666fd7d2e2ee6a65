"""Event-level evaluation of scoring runs against annotations: recall, false alarms per hour, report.

    python -m training.evaluate_events --scores old=scores/default --scores new=scores/retrained \\
        --annotations 'heldout/**/*.selections.txt' --output eval/heldout

Each `--scores NAME=DIR` is the output directory of `gunshot batch` (local or `gs://`) over the same
annotated recordings. Annotations are read with `gunshot_core.annotations` (Raven selection tables,
Audacity labels, CSV; the readers of `gunshot dataset`) and matched to the runs' `source`s with its
`RecordingMatcher`. Labels given with `--positive` are the events to find (default `gunshot`); every
other label is a confuser, used to explain false alarms.

What is evaluated:
  - recordings: those an annotation file covers (a Raven table or Audacity file without rows says
    "annotated, nothing there"); with `--all_annotated`, every recording of the runs. Audio duration
    comes from the `recordings` table (status ok). Annotated positives in a recording the run failed
    on count as missed (reason `recording_failed`); its duration does not count.
  - events: at the run's own threshold, the run's `events` table; at any other threshold, events
    re-derived from the `windows` table with the scoring pipeline's own merge
    (`pipelines.scoring.events.merge_events`: consecutive windows with score >= threshold form one event),
    or from the `frames` table when the run has one (a head with frame scores: consecutive frames).
  - matching, one to one: an event and an annotated positive may match when they overlap once the
    annotation is widened by `--tolerance_seconds` on both sides (closed intervals: touching counts).
    Per recording, the matching with the most pairs is taken (`scipy.optimize.linear_sum_assignment`
    on pair weights `M + overlap`, M larger than any total overlap); among those, the one with the
    largest total overlap of the unwidened intervals. An event covering two gunshots matches one.
  - figures: recall = matched positives / positives; precision = matched events / events;
    false alarms = unmatched events, per hour of evaluated audio; F1.
  - target recall: the highest swept threshold whose recall reaches `--target_recall` (the cheapest
    in false alarms of the thresholds tried; recall is not monotone in the threshold, since merged
    events can swallow neighbours), or null when no threshold reaches it.

Outputs in `--output`:
    metrics.json          every scorer: figures at its run threshold and at the target recall, and
                          the best recall within each --false_alarm_budgets false alarms per hour
    sweep.parquet, sweep.csv   one row per scorer and threshold (101-step grid + score quantiles +
                          the run's threshold)
    per_group.csv         per scorer, operating point and group (--group_pattern, e.g. the site)
    per_label.csv         per scorer, operating point and annotation label: recall of positive
                          labels, how often each confuser triggered an event, false alarms it explains
    pr.png, recall_vs_false_alarms.png   all scorers on the same axes
    errors.csv            annotation rows and recordings that could not be evaluated, with reasons
    report.md             the scorers side by side
    NAME/metrics.json     the scorer's part of metrics.json
    NAME/review/<path>/<stem>.Table.1.selections.txt   per recording with a miss or a false alarm at
                          the run threshold: a Raven table (`Annotation` = missed gunshot | false alarm,
                          `Score`, `Overlaps` = confuser labels under a false alarm), for the next review
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence

import numpy as np

from gunshot_core import annotations as ann
from gunshot_core import logs
from gunshot_core.errors import GunshotError

_LOG = logging.getLogger(__name__)

DEFAULT_POSITIVE = ("gunshot",)
GRID_STEPS = 101
SCORE_QUANTILES = 100
NO_GROUP = "(no group)"
UNANNOTATED = "(unannotated)"
RUN_THRESHOLD = "run_threshold"
TARGET_RECALL = "target_recall"
MISS_LABEL = "missed gunshot"
FALSE_ALARM_LABEL = "false alarm"


# ---- matching (pure numpy/scipy) -------------------------------------------------------------------


def match_events(
    events: Sequence[tuple[float, float]], truths: Sequence[tuple[float, float]], tolerance: float
) -> list[tuple[int, int]]:
    """One-to-one matching of detected events to annotated events (see the module docstring).

    Args:
      events: detected (start, end) seconds.
      truths: annotated (start, end) seconds.
      tolerance: seconds each annotation is widened by on both sides.
    Returns:
      sorted (event index, truth index) pairs: as many as possible, then the largest total overlap.
    """
    if not len(events) or not len(truths):
        return []
    from scipy.optimize import linear_sum_assignment

    ev = np.asarray(events, np.float64).reshape(-1, 2)
    tr = np.asarray(truths, np.float64).reshape(-1, 2)
    allowed = (ev[:, None, 0] <= tr[None, :, 1] + tolerance) & (ev[:, None, 1] >= tr[None, :, 0] - tolerance)
    if not allowed.any():
        return []
    overlap = np.clip(
        np.minimum(ev[:, None, 1], tr[None, :, 1]) - np.maximum(ev[:, None, 0], tr[None, :, 0]), 0.0, None
    )
    big = 1.0 + float(np.sum(tr[:, 1] - tr[:, 0]))
    weight = np.where(allowed, big + overlap, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c])


def overlaps(
    span: tuple[float, float], others: Sequence[tuple[float, float]], tolerance: float
) -> np.ndarray:
    """bool [len(others)]: which of `others`, widened by `tolerance`, the closed span touches."""
    if not len(others):
        return np.zeros(0, bool)
    o = np.asarray(others, np.float64).reshape(-1, 2)
    return (span[0] <= o[:, 1] + tolerance) & (span[1] >= o[:, 0] - tolerance)


# ---- inputs ------------------------------------------------------------------------------------------


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


# ---- figures -------------------------------------------------------------------------------------


def events_at(rec: Recording, threshold: float, run_threshold: float) -> list[tuple[float, float, float]]:
    """(start, end, peak score) of the recording's events at `threshold`.

    The run's own events at its threshold; else the scoring pipeline's merge over the windows (or
    frames). The merge is given only the windows at or above the threshold and the one right after
    each of them, which ends its run exactly as in the full sequence: the same events, in a fraction
    of the time when few windows are above the threshold.
    """
    if rec.status != "ok":
        return []
    if threshold == run_threshold:
        return list(rec.events)
    above = rec.scores >= threshold
    if not above.any():
        return []
    from pipelines.scoring.events import merge_events

    keep = np.flatnonzero(above | np.r_[False, above[:-1]])
    merged = merge_events(rec.scores[keep], rec.starts[keep], rec.ends[keep], threshold)
    return [(e.start_seconds, e.end_seconds, e.peak_score) for e in merged]


@dataclasses.dataclass
class Outcome:
    """What happened in one recording at one threshold."""

    events: list  # (start, end, peak)
    matched_events: set
    matched_truths: set
    pairs: list


def outcome(rec: Recording, events: list, tolerance: float) -> Outcome:
    pairs = match_events([(s, e) for s, e, _ in events], [(a, b) for a, b, _ in rec.positives], tolerance)
    return Outcome(events, {p[0] for p in pairs}, {p[1] for p in pairs}, pairs)


def figures(recs: Iterable[Recording], outcomes: Iterable[Outcome]) -> dict:
    """Recall, precision, F1, false alarms (per hour) over recordings and their outcomes."""
    positives = matched = n_events = seconds = failed_positives = 0
    recordings = 0
    for rec, out in zip(recs, outcomes, strict=True):
        recordings += 1
        positives += len(rec.positives)
        matched += len(out.matched_truths)
        n_events += len(out.events)
        seconds += rec.seconds
        if rec.status != "ok":
            failed_positives += len(rec.positives)
    false_alarms = n_events - matched
    hours = seconds / 3600.0
    recall = matched / positives if positives else None
    precision = matched / n_events if n_events else None
    f1 = None
    if recall is not None and precision is not None:
        f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    return {
        "recordings": recordings,
        "hours": hours,
        "positives": positives,
        "matched": matched,
        "missed": positives - matched,
        "missed_in_failed_recordings": failed_positives,
        "events": n_events,
        "false_alarms": false_alarms,
        "false_alarms_per_hour": false_alarms / hours if hours > 0 else None,
        "recall": recall,
        "precision": precision,
        "f1": f1,
    }


def sweep_thresholds(run: Run) -> np.ndarray:
    """Thresholds tried: a 101-step grid on [0, 1], 100 quantiles of the window scores, the run's."""
    scores = [r.scores for r in run.recordings if len(r.scores)]
    grid = [np.linspace(0.0, 1.0, GRID_STEPS), [run.threshold]]
    if scores:
        grid.append(
            np.quantile(np.concatenate(scores).astype(np.float64), np.linspace(0, 1, SCORE_QUANTILES))
        )
    values = np.unique(np.round(np.concatenate(grid), 6))
    return values[(values >= 0.0) & (values <= 1.0 + 1e-9)]


def evaluate_run(run: Run, tolerance: float, target_recall: float) -> dict:
    """The sweep rows and the two operating points of one run."""

    def outcomes(threshold: float) -> list[Outcome]:
        return [outcome(r, events_at(r, threshold, run.threshold), tolerance) for r in run.recordings]

    rows = []
    started = time.monotonic()
    thresholds = sweep_thresholds(run)
    for i, threshold in enumerate(thresholds):
        if i and i % 50 == 0:
            _LOG.info("%s: %d of %d thresholds swept", run.name, i, len(thresholds))
        threshold = float(run.threshold) if abs(threshold - run.threshold) < 5e-7 else float(threshold)
        fig = figures(run.recordings, outcomes(threshold))
        rows.append(
            {"scorer": run.name, "threshold": threshold, "run_threshold": threshold == run.threshold, **fig}
        )
    _LOG.info(
        "%s: %d thresholds over %d recordings in %.1f s",
        run.name, len(thresholds), len(run.recordings), time.monotonic() - started,
    )  # fmt: skip
    at_run = next(r for r in rows if r["run_threshold"])
    reaching = [r for r in rows if r["recall"] is not None and r["recall"] >= target_recall - 1e-12]
    at_target = max(reaching, key=lambda r: r["threshold"]) if reaching else None
    return {
        "rows": rows,
        RUN_THRESHOLD: (at_run, outcomes(at_run["threshold"])),
        TARGET_RECALL: (at_target, outcomes(at_target["threshold"])) if at_target else (None, None),
    }


def recall_at_budgets(rows: list[dict], budgets: Sequence[float]) -> dict[str, dict | None]:
    """{budget: the sweep row with the best recall at <= budget false alarms per hour (ties: the
    highest threshold), as {threshold, recall, false_alarms_per_hour}}; None when no row fits."""
    out = {}
    for budget in budgets:
        fit = [
            r
            for r in rows
            if r["recall"] is not None
            and r["false_alarms_per_hour"] is not None
            and r["false_alarms_per_hour"] <= budget + 1e-9
        ]
        best = max(fit, key=lambda r: (r["recall"], r["threshold"])) if fit else None
        out[f"{budget:g}"] = (
            None if best is None else {k: best[k] for k in ("threshold", "recall", "false_alarms_per_hour")}
        )
    return out


def per_group(run: Run, outs: list[Outcome], point: str, threshold: float) -> list[dict]:
    rows = []
    for group in sorted({r.group for r in run.recordings}):
        idx = [i for i, r in enumerate(run.recordings) if r.group == group]
        fig = figures([run.recordings[i] for i in idx], [outs[i] for i in idx])
        rows.append(
            {"scorer": run.name, "operating_point": point, "threshold": threshold, "group": group, **fig}
        )
    return rows


def attribute_false_alarm(rec: Recording, event: tuple, tolerance: float) -> str:
    """The confuser label a false alarm overlaps most (widened by the tolerance), or UNANNOTATED."""
    touched = overlaps((event[0], event[1]), [(a, b) for a, b, _ in rec.confusers], tolerance)
    if not touched.any():
        return UNANNOTATED
    best = max(
        (min(event[1], b) - max(event[0], a), label)
        for (a, b, label), t in zip(rec.confusers, touched, strict=True)
        if t
    )
    return best[1]


def per_label(run: Run, outs: list[Outcome], point: str, threshold: float, tolerance: float) -> list[dict]:
    """Per annotation label: annotations, detected (positives: matched; confusers: touched by an
    event), the rate, and the false alarms it explains (the confuser the false alarm overlaps most)."""
    stats: dict[tuple[bool, str], dict] = {}

    def entry(positive: bool, label: str) -> dict:
        return stats.setdefault((positive, label), {"annotations": 0, "detected": 0, "false_alarms": 0})

    for rec, out in zip(run.recordings, outs, strict=True):
        for i, (_, _, label) in enumerate(rec.positives):
            e = entry(True, label)
            e["annotations"] += 1
            e["detected"] += i in out.matched_truths
        spans = [(s, e) for s, e, _ in out.events]
        for a, b, label in rec.confusers:
            e = entry(False, label)
            e["annotations"] += 1
            e["detected"] += bool(spans) and bool(overlaps((a, b), spans, tolerance).any())
        for j, event in enumerate(out.events):
            if j not in out.matched_events:
                entry(False, attribute_false_alarm(rec, event, tolerance))["false_alarms"] += 1
    rows = []
    for (positive, label), s in sorted(stats.items(), key=lambda kv: (not kv[0][0], kv[0][1])):
        rows.append(
            {
                "scorer": run.name,
                "operating_point": point,
                "threshold": threshold,
                "label": label or "(empty)",
                "positive": positive,
                "annotations": s["annotations"],
                "detected": s["detected"],
                "detected_rate": s["detected"] / s["annotations"] if s["annotations"] else None,
                "false_alarms": s["false_alarms"],
            }
        )
    return rows


# ---- outputs -------------------------------------------------------------------------------------


def _common_parent(sources: Sequence[str]) -> str:
    """The longest folder prefix (ending in '/') that every source shares."""
    parts = [s.split("/")[:-1] for s in sources]
    common = []
    for items in zip(*parts, strict=False):
        if any(x != items[0] for x in items):
            break
        common.append(items[0])
    return "/".join(common) + "/" if common else ""


def review_tables(run: Run, outs: list[Outcome], tolerance: float) -> dict[str, str]:
    """{relative path: Raven table text} of the misses and false alarms per recording."""
    base = _common_parent([r.source for r in run.recordings])
    tables = {}
    for rec, out in zip(run.recordings, outs, strict=True):
        rows = []
        for i, (a, b, label) in enumerate(rec.positives):
            if i in out.matched_truths:
                continue
            inside = (rec.starts < b) & (rec.ends > a) if len(rec.scores) else np.zeros(0, bool)
            best = float(rec.scores[inside].max()) if inside.any() else None
            rows.append(
                {
                    "file": rec.source,
                    "start_seconds": a,
                    "end_seconds": b,
                    "label": MISS_LABEL,
                    "Score": best,
                    "Overlaps": label,
                }  # fmt: skip
            )
        for j, (s, e, peak) in enumerate(out.events):
            if j in out.matched_events:
                continue
            cause = attribute_false_alarm(rec, (s, e), tolerance)
            rows.append(
                {
                    "file": rec.source,
                    "start_seconds": s,
                    "end_seconds": e,
                    "label": FALSE_ALARM_LABEL,
                    "Score": float(peak),
                    "Overlaps": "" if cause == UNANNOTATED else cause,
                }  # fmt: skip
            )
        if not rows:
            continue
        relative = rec.source[len(base) :] if rec.source.startswith(base) else ann.base_name(rec.source)
        relative = re.sub(r"[!:]", "_", relative.lstrip("/"))
        stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
        tables[f"{stem}.Table.1.selections.txt"] = ann.format_selection_table(
            rows, extra_columns=("Score", "Overlaps")
        )
    return tables


def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text)


def _write_csv(path: str, rows: list[dict], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in fields})
    _write_text(path, buffer.getvalue())


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _plots(out_dir: str, sweeps: dict[str, list[dict]], points: dict[str, dict]) -> list[str]:
    """pr.png (precision vs recall, the sweep in threshold order) and recall_vs_false_alarms.png (the
    best recall reachable at each false-alarm rate, with every swept threshold as a faint dot); every
    scorer on the same axes, its run threshold as a large dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def finite(rows, x, y):
        return [r for r in rows if r[x] is not None and r[y] is not None]

    fig_pr, pr = plt.subplots(figsize=(6, 5))
    fig_fa, fa = plt.subplots(figsize=(6, 5))
    for scorer, rows in sweeps.items():
        run = points[scorer]
        ordered = sorted(finite(rows, "recall", "precision"), key=lambda r: r["threshold"])
        (line,) = pr.plot([r["recall"] for r in ordered], [r["precision"] for r in ordered], ".-", ms=3, lw=1,
                          label=scorer)  # fmt: skip
        color = line.get_color()
        if run["precision"] is not None:
            pr.plot(
                run["recall"],
                run["precision"],
                "o",
                color=color,
                ms=7,
                label=f"{scorer} @ {run['threshold']:.3g}",
            )
        pts = sorted(
            (r["false_alarms_per_hour"], r["recall"]) for r in finite(rows, "false_alarms_per_hour", "recall")
        )
        fa.plot([p[0] for p in pts], [p[1] for p in pts], ".", color=color, ms=3, alpha=0.3)
        frontier, best = [], -1.0
        for x, y in pts:
            if y > best:
                best = y
                frontier.append((x, y))
        if frontier:
            xs = [p[0] for p in frontier] + [max(p[0] for p in pts)]
            ys = [p[1] for p in frontier] + [frontier[-1][1]]
            fa.step(xs, ys, where="post", color=color, lw=1.5, label=f"{scorer} (best recall at <= x)")
        if run["false_alarms_per_hour"] is not None:
            fa.plot(run["false_alarms_per_hour"], run["recall"], "o", color=color, ms=7,
                    label=f"{scorer} @ {run['threshold']:.3g}")  # fmt: skip
    pr.set(xlabel="recall (annotated gunshots found)", ylabel="precision (events that are gunshots)",
           title="Event precision vs. recall", xlim=(0, 1.02), ylim=(0, 1.02))  # fmt: skip
    fa.set(xlabel="false alarms per hour of audio", ylabel="recall (annotated gunshots found)",
           title="Event recall vs. false alarms", ylim=(0, 1.02))  # fmt: skip
    fa.set_xscale("symlog", linthresh=1.0)
    fa.set_xlim(left=0)
    written = []
    for fig, ax, name in ((fig_pr, pr, "pr.png"), (fig_fa, fa, "recall_vs_false_alarms.png")):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=100, metadata={"Software": None})
        plt.close(fig)
        written.append(name)
    return written


def _f(value, pct=False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if pct:
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


_SIDE_BY_SIDE = (
    ("threshold", "threshold", False),
    ("recall", "recall", True),
    ("precision", "precision", True),
    ("f1", "F1", True),
    ("false_alarms_per_hour", "false alarms / hour", False),
    ("matched", "gunshots found", False),
    ("missed", "gunshots missed", False),
    ("false_alarms", "false alarms", False),
    ("events", "events", False),
)


def write_report(out_dir: str, result: dict, groups: list[dict], labels: list[dict], plots: list[str]) -> str:
    scorers = result["scorers"]
    names = list(scorers)
    lines = [
        "# Event-level evaluation",
        "",
        f"Scorers: {', '.join(f'`{n}`' for n in names)}. Positive labels: "
        f"{', '.join(result['positive_labels'])}. Tolerance: {result['tolerance_seconds']:g} s. "
        f"Target recall: {result['target_recall']:g}.",
        "",
    ]
    first = scorers[names[0]]
    lines += [
        f"Evaluated audio: {first['recordings_evaluated']} annotated recordings, "
        f"{first[RUN_THRESHOLD]['hours']:.3f} h, {first[RUN_THRESHOLD]['positives']} annotated positives.",
        "",
    ]
    for point, title in ((RUN_THRESHOLD, "At each run's threshold"), (TARGET_RECALL, "At the target recall")):
        lines += [f"## {title}", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key, label, pct in _SIDE_BY_SIDE:
            cells = []
            for n in names:
                fig = scorers[n][point]
                cells.append("not reached" if fig is None else _f(fig[key], pct))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    budgets = list(scorers[names[0]]["recall_at_false_alarms_per_hour"])
    if budgets:
        lines += [
            "## Best recall within a false-alarm budget",
            "",
            "The highest event recall of any swept threshold with at most this many false alarms per hour "
            "(the threshold in brackets).",
            "",
            "| false alarms / hour | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for budget in budgets:
            cells = []
            for n in names:
                best = scorers[n]["recall_at_false_alarms_per_hour"][budget]
                cells.append("-" if best is None else f"{_f(best['recall'], True)} ({best['threshold']:.3g})")
            lines.append(f"| <= {budget} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Heads",
        "",
        "| scorer | head | model id | window s | hop s | scores |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        s = scorers[n]
        lines.append(
            f"| {n} | {s['head_name']} | {s['model_id']} | {_f(s['window_seconds'])} | "
            f"{_f(s['hop_seconds'])} | `{s['directory']}` |"
        )
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += [
        "## Per group (run threshold)",
        "",
        "| group | " + " | ".join(f"{n} recall | {n} FA/h" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    by_group = {}
    for row in groups:
        if row["operating_point"] == RUN_THRESHOLD:
            by_group.setdefault(row["group"], {})[row["scorer"]] = row
    for group, rows in sorted(by_group.items()):
        cells = []
        for n in names:
            r = rows.get(n)
            cells += [_f(r["recall"], True), _f(r["false_alarms_per_hour"])] if r else ["-", "-"]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per label (run threshold)",
        "",
        "Positives: share found. Confusers: share that triggered an event, and false alarms they explain.",
        "",
        "| label | kind | annotations | "
        + " | ".join(f"{n} detected | {n} false alarms" for n in names)
        + " |",
        "|---|---|---|" + "---|---|" * len(names),
    ]
    by_label = {}
    for row in labels:
        if row["operating_point"] == RUN_THRESHOLD:
            by_label.setdefault((not row["positive"], row["label"]), {})[row["scorer"]] = row
    for (negative, label), rows in sorted(by_label.items()):
        any_row = next(iter(rows.values()))
        cells = []
        for n in names:
            r = rows.get(n)
            cells += [_f(r["detected_rate"], True), str(r["false_alarms"])] if r else ["-", "-"]
        kind = "confuser" if negative else "positive"
        lines.append(f"| {label} | {kind} | {any_row['annotations']} | " + " | ".join(cells) + " |")
    lines += ["", f"## Problems ({len(result['errors'])})", ""]
    if result["errors"]:
        counts = {}
        for e in result["errors"]:
            counts[(e["scorer"], e["reason"])] = counts.get((e["scorer"], e["reason"]), 0) + 1
        lines += [
            f"- {scorer or 'annotations'}: {reason} x{n}" for (scorer, reason), n in sorted(counts.items())
        ]
        lines.append("\nDetails in errors.csv.")
    else:
        lines.append("None.")
    lines += [
        "",
        "Misses and false alarms at the run threshold, as Raven selection tables per recording: "
        + ", ".join(f"`{n}/review/`" for n in names)
        + ".",
        "",
    ]
    path = os.path.join(out_dir, "report.md")
    _write_text(path, "\n".join(lines))
    return path


# ---- the job -------------------------------------------------------------------------------------

_SWEEP_FIELDS = (
    "scorer", "threshold", "run_threshold", "recordings", "hours", "positives", "matched", "missed",
    "missed_in_failed_recordings", "events", "false_alarms", "false_alarms_per_hour", "recall", "precision", "f1",
)  # fmt: skip


def evaluate_events(args) -> dict:
    """Runs the evaluation; writes --output; returns the metrics.json dict."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    positive = {label.lower() for label in args.positive}  # case-insensitive, as in gunshot dataset
    parsed = read_annotation_files(args.annotations, args.label_column)
    errors: list[dict] = []
    for _, p in parsed:
        for e in p.errors:
            errors.append(
                {"scorer": "", "source": e.annotation_file, "reason": e.reason, "message": e.message}
            )
    if not any(p.rows or p.recording_keys for _, p in parsed):
        raise ValueError(f"no annotation could be read from {args.annotations} ({len(errors)} errors)")
    runs = []
    for name, directory in parse_scores(args.scores):
        _LOG.info("reading scoring run %s from %s", name, directory)
        runs.append(
            load_run(name, directory, parsed, positive, args.group_pattern, args.all_annotated, errors)
        )
    sources = [{r.source for r in run.recordings} for run in runs]
    if any(s != sources[0] for s in sources):
        _LOG.warning("the scoring runs cover different annotated recordings; compare with care")
    os.makedirs(args.output, exist_ok=True)
    result = {
        "scores": {run.name: run.directory for run in runs},
        "annotations": list(args.annotations),
        "positive_labels": sorted(positive),
        "tolerance_seconds": args.tolerance_seconds,
        "target_recall": args.target_recall,
        "group_pattern": args.group_pattern,
        "all_annotated": args.all_annotated,
        "scorers": {},
    }
    sweep_rows, group_rows, label_rows, sweeps, run_points = [], [], [], {}, {}
    for run in runs:
        _LOG.info("sweeping thresholds for %s over %d recordings", run.name, len(run.recordings))
        ev = evaluate_run(run, args.tolerance_seconds, args.target_recall)
        sweep_rows += ev["rows"]
        sweeps[run.name] = ev["rows"]
        at_run, run_outs = ev[RUN_THRESHOLD]
        at_target, target_outs = ev[TARGET_RECALL]
        run_points[run.name] = at_run
        for point, fig, outs in ((RUN_THRESHOLD, at_run, run_outs), (TARGET_RECALL, at_target, target_outs)):
            if fig is None:
                continue
            group_rows += per_group(run, outs, point, fig["threshold"])
            label_rows += per_label(run, outs, point, fig["threshold"], args.tolerance_seconds)
        strip = ("scorer", "run_threshold")
        metrics = {
            "directory": run.directory,
            "head_name": run.head_name,
            "model_id": run.model_id,
            "window_seconds": run.window_seconds,
            "hop_seconds": run.hop_seconds,
            "run_threshold": run.threshold,
            "recordings_evaluated": len(run.recordings),
            "recordings_failed": sum(r.status != "ok" for r in run.recordings),
            "recordings_unannotated": run.unannotated,
            RUN_THRESHOLD: {k: v for k, v in at_run.items() if k not in strip},
            TARGET_RECALL: None
            if at_target is None
            else {k: v for k, v in at_target.items() if k not in strip},
            "recall_at_false_alarms_per_hour": recall_at_budgets(ev["rows"], args.false_alarm_budgets),
        }
        result["scorers"][run.name] = metrics
        scorer_dir = os.path.join(args.output, run.name)
        _write_text(
            os.path.join(scorer_dir, "metrics.json"), json.dumps(metrics, indent=1, sort_keys=True) + "\n"
        )
        for relative, text in sorted(review_tables(run, run_outs, args.tolerance_seconds).items()):
            _write_text(os.path.join(scorer_dir, "review", relative), text)
    errors.sort(key=lambda e: (e["scorer"], e["source"], e["reason"], e["message"]))
    result["errors"] = errors
    _write_text(
        os.path.join(args.output, "metrics.json"), json.dumps(result, indent=1, sort_keys=True) + "\n"
    )
    _write_csv(os.path.join(args.output, "sweep.csv"), sweep_rows, _SWEEP_FIELDS)
    table = pa.Table.from_pylist(
        [{k: r[k] for k in _SWEEP_FIELDS} for r in sweep_rows], schema=_sweep_schema()
    )
    pq.write_table(table, os.path.join(args.output, "sweep.parquet"))
    group_fields = ("scorer", "operating_point", "threshold", "group", *_SWEEP_FIELDS[3:])
    _write_csv(os.path.join(args.output, "per_group.csv"), group_rows, group_fields)
    _write_csv(
        os.path.join(args.output, "per_label.csv"),
        label_rows,
        list(label_rows[0]) if label_rows else ["scorer"],
    )
    _write_csv(os.path.join(args.output, "errors.csv"), errors, ("scorer", "source", "reason", "message"))
    plots = _plots(args.output, sweeps, run_points)
    report = write_report(args.output, result, group_rows, label_rows, plots)
    for run in runs:
        fig = result["scorers"][run.name][RUN_THRESHOLD]
        _LOG.info(
            "%s: recall %s, %s false alarms/hour at threshold %.3f; report %s",
            run.name, _f(fig["recall"]), _f(fig["false_alarms_per_hour"]), run.threshold, report,
        )  # fmt: skip
    return result


def _sweep_schema():
    import pyarrow as pa

    f64, i64 = pa.float64(), pa.int64()
    types = {"scorer": pa.string(), "run_threshold": pa.bool_(), "threshold": f64, "hours": f64}
    types.update({k: f64 for k in ("false_alarms_per_hour", "recall", "precision", "f1")})
    return pa.schema([pa.field(k, types.get(k, i64)) for k in _SWEEP_FIELDS])


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="gunshot evaluate-events",
        description="Event-level evaluation of one or more `gunshot batch` runs over annotated recordings: "
        "one-to-one matching of detected events to annotated gunshots, recall, precision and false alarms "
        "per hour at each run's threshold and at a target recall, a threshold sweep, plots with all "
        "scorers on the same axes, breakdowns per group and per label, Raven tables of misses and false "
        "alarms, and a report.md comparing the scorers.",
    )
    parser.add_argument(
        "--scores",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a scoring run: NAME and the output directory of `gunshot batch` (local or gs://); repeat to "
        "compare heads, e.g. --scores old=scores/default --scores new=scores/retrained",
    )
    parser.add_argument(
        "--annotations",
        action="append",
        required=True,
        metavar="PATTERN",
        help="annotation files, folders or globs (local or gs://; repeatable): Raven selection tables, "
        "Audacity label files, CSV file,start_seconds,end_seconds,label",
    )
    parser.add_argument(
        "--label_column", help="Raven/CSV label column (Raven default: Annotation, Label, ...)"
    )
    parser.add_argument(
        "--positive",
        nargs="+",
        default=list(DEFAULT_POSITIVE),
        metavar="LABEL",
        help="labels of the events to find (case-insensitive); all other labels are confusers (default: gunshot)",
    )
    parser.add_argument(
        "--tolerance_seconds",
        type=float,
        default=1.0,
        help="an event matches an annotation it overlaps once the annotation is widened by this much "
        "(%(default)s)",
    )
    parser.add_argument(
        "--target_recall",
        type=float,
        default=0.8,
        help="also report the highest threshold whose event recall reaches this (%(default)s)",
    )
    parser.add_argument(
        "--false_alarm_budgets",
        type=float,
        nargs="+",
        default=[10.0, 20.0, 40.0],
        metavar="PER_HOUR",
        help="also report the best recall reachable with at most this many false alarms per hour (10 20 40)",
    )
    parser.add_argument(
        "--group_pattern",
        help="regex on the recording's source; its first group (else the match) is the group of the "
        "per-group breakdown, e.g. '/(site[^/]+)/'; default: the recording's folder (as in gunshot dataset)",
    )
    parser.add_argument(
        "--all_annotated",
        action="store_true",
        help="every recording of the runs is fully annotated (one without an annotation file has no "
        "events); default: only recordings an annotation file covers are evaluated",
    )
    parser.add_argument("--output", required=True, help="report directory (local)")
    logs.add_logging_flags(parser)
    args = parser.parse_args(argv)
    if not 0.0 < args.target_recall <= 1.0:
        parser.error(f"--target_recall must be in (0, 1], got {args.target_recall}")
    if args.tolerance_seconds < 0:
        parser.error(f"--tolerance_seconds must be >= 0, got {args.tolerance_seconds}")
    if args.group_pattern:
        try:
            re.compile(args.group_pattern)
        except re.error as e:
            parser.error(f"--group_pattern {args.group_pattern!r} is not a regular expression: {e}")
    try:
        parse_scores(args.scores)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = evaluate_events(args)
    except (FileNotFoundError, ValueError, GunshotError) as e:
        print(f"evaluate-events: {e}", file=sys.stderr)
        return 1
    summary = {}
    for name, s in result["scorers"].items():
        point = s[RUN_THRESHOLD]
        summary[name] = {
            k: point[k]
            for k in ("threshold", "recall", "precision", "false_alarms_per_hour", "matched", "positives")
        }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    sys.exit(main())
