"""Stage 3 of `gunshot evaluate-events`: events at a threshold, outcomes and their figures.

Per recording and threshold: the events (the run's own, or re-merged from windows or frames) and
their matching to annotated positives (an `Outcome`); over recordings: recall, precision, F1,
false alarms per hour; the threshold sweep and its two operating points (the run's threshold, the
target recall), the best recall within false-alarm budgets, and breakdowns per group and per label.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence

import numpy as np

from training.events.inputs import Recording, Run
from training.events.matching import match_events, overlaps

_LOG = logging.getLogger(__name__)

GRID_STEPS = 101
SCORE_QUANTILES = 100
UNANNOTATED = "(unannotated)"
RUN_THRESHOLD = "run_threshold"
TARGET_RECALL = "target_recall"


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
