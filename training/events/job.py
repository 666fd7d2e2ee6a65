"""The `gunshot evaluate-events` job: flags -> the stages of `training.events` -> --output.

`main(argv)` parses the flags, runs `evaluate_events` and prints each scorer's figures at its run
threshold as one JSON line; exit code 1 on a missing or unreadable input, 2 (one line naming the files,
lines and recordings) when nothing can be evaluated.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys

from gunshot_core import arguments, logs
from gunshot_core.errors import GunshotError, InputError
from training.events.figures import (
    RUN_THRESHOLD,
    TARGET_RECALL,
    evaluate_run,
    per_group,
    per_label,
    recall_at_budgets,
)
from training.events.inputs import load_run, parse_scores, read_annotation_files
from training.events.outputs import (
    format_value,
    review_tables,
    write_csv,
    write_plots,
    write_report,
    write_text,
)

_LOG = logging.getLogger(__name__)

DEFAULT_POSITIVE = ("gunshot",)
# Unusable annotation rows shown on the console (all of them are in errors.csv), names in a message.
SHOWN_ERRORS = 5
SHOWN_NAMES = 3


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
    # A file counts when it holds a row, or covers a recording without any error (an empty table says
    # "annotated, nothing there"; a table whose every row is bad says nothing).
    if not any(p.rows or (p.recording_keys and not p.errors) for _, p in parsed):
        lines = error_lines(errors)
        more = f" (and {len(errors) - len(lines)} more)" if len(errors) > len(lines) else ""
        raise InputError(
            f"no annotation could be read from {', '.join(args.annotations)}: "
            + (" | ".join(lines[:SHOWN_NAMES]) if lines else "no annotation file found")
            + more
        )
    runs = []
    for name, directory in parse_scores(args.scores):
        _LOG.info("reading scoring run %s from %s", name, directory)
        runs.append(
            load_run(name, directory, parsed, positive, args.group_pattern, args.all_annotated, errors)
        )
    runs = _runs_with_recordings(runs, parsed)
    _warn_errors(errors)
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
        write_text(
            os.path.join(scorer_dir, "metrics.json"), json.dumps(metrics, indent=1, sort_keys=True) + "\n"
        )
        for relative, text in sorted(review_tables(run, run_outs, args.tolerance_seconds).items()):
            write_text(os.path.join(scorer_dir, "review", relative), text)
    errors.sort(key=lambda e: (e["scorer"], e["source"], e["reason"], e["message"]))
    result["errors"] = errors
    write_text(os.path.join(args.output, "metrics.json"), json.dumps(result, indent=1, sort_keys=True) + "\n")
    write_csv(os.path.join(args.output, "sweep.csv"), sweep_rows, _SWEEP_FIELDS)
    table = pa.Table.from_pylist(
        [{k: r[k] for k in _SWEEP_FIELDS} for r in sweep_rows], schema=_sweep_schema()
    )
    pq.write_table(table, os.path.join(args.output, "sweep.parquet"))
    group_fields = ("scorer", "operating_point", "threshold", "group", *_SWEEP_FIELDS[3:])
    write_csv(os.path.join(args.output, "per_group.csv"), group_rows, group_fields)
    write_csv(
        os.path.join(args.output, "per_label.csv"),
        label_rows,
        list(label_rows[0]) if label_rows else ["scorer"],
    )
    write_csv(os.path.join(args.output, "errors.csv"), errors, ("scorer", "source", "reason", "message"))
    plots = write_plots(args.output, sweeps, run_points)
    report = write_report(args.output, result, group_rows, label_rows, plots)
    for run in runs:
        fig = result["scorers"][run.name][RUN_THRESHOLD]
        _LOG.info(
            "%s: recall %s, %s false alarms/hour at threshold %.3f; report %s",
            run.name, format_value(fig["recall"]), format_value(fig["false_alarms_per_hour"]), run.threshold, report,
        )  # fmt: skip
    return result


def error_lines(errors: list[dict], n: int = SHOWN_ERRORS) -> list[str]:
    """`file:line: what is wrong (reason)` of the first `n` error rows, for the console."""
    out = []
    for e in errors[:n]:
        message = e["message"] if e["message"].startswith(e["source"]) else f"{e['source']}: {e['message']}"
        out.append(f"{message} ({e['reason']})")
    return out


def _warn_errors(errors: list[dict]) -> None:
    if not errors:
        return
    ordered = sorted(errors, key=lambda e: (e["source"], e["scorer"], e["message"]))
    _LOG.warning("%d annotation rows could not be used (all in errors.csv); first:", len(errors))
    for line in error_lines(ordered):
        _LOG.warning("  %s", line)


def _annotated_names(parsed) -> list[str]:
    return sorted(
        {r.recording_key for _, p in parsed for r in p.rows}
        | {k for _, p in parsed for k in p.recording_keys}
    )


def _runs_with_recordings(runs: list, parsed) -> list:
    """The runs that hold at least one annotated recording; the others are named in a warning.

    Raises:
      InputError: no run holds any annotated recording (nothing can be evaluated).
    """
    from training.events.inputs import _table

    empty = [run for run in runs if not run.recordings]
    if not empty:
        return runs
    names = _annotated_names(parsed)
    described = []
    for run in empty:
        sources = sorted(_table(run.directory, "recordings").column("source").to_pylist())
        shown = ", ".join(sources[:SHOWN_NAMES]) + (", ..." if len(sources) > SHOWN_NAMES else "")
        described.append(
            f"run {run.name!r} ({run.directory}) has {len(sources)} recordings ({shown or 'none'})"
        )
    text = (
        f"none of the {len(names)} annotated recordings "
        f"({', '.join(names[:SHOWN_NAMES])}{', ...' if len(names) > SHOWN_NAMES else ''}) is in the scoring "
        f"run: {'; '.join(described)}; score the annotated recordings with `gunshot batch`, or give the "
        "annotations of the scored ones"
    )
    if len(empty) == len(runs):
        raise InputError(text)
    _LOG.warning("left out of the comparison: %s", text)
    return [run for run in runs if run.recordings]


def _sweep_schema():
    import pyarrow as pa

    f64, i64 = pa.float64(), pa.int64()
    types = {"scorer": pa.string(), "run_threshold": pa.bool_(), "threshold": f64, "hours": f64}
    types.update({k: f64 for k in ("false_alarms_per_hour", "recall", "precision", "f1")})
    return pa.schema([pa.field(k, types.get(k, i64)) for k in _SWEEP_FIELDS])


def parse_args(argv):
    parser = arguments.ArgumentParser(
        "evaluate-events",
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
        return arguments.fail("evaluate-events", e)
    summary = {}
    for name, s in result["scorers"].items():
        point = s[RUN_THRESHOLD]
        summary[name] = {
            k: point[k]
            for k in ("threshold", "recall", "precision", "false_alarms_per_hour", "matched", "positives")
        }
    print(json.dumps(summary, sort_keys=True))
    return 0
