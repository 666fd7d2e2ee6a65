"""`gunshot batch --thresholds calibration.json --scores RUN_DIR --output NEW_DIR`: a scoring run's
detections and events re-derived at per-group thresholds, from its tables (no audio, no VGGish).

The thresholds come from `gunshot calibrate` (docs/review.md): each recording's group (the
calibration's group pattern over `source`, else the top folder, as `gunshot report` groups) gets its
group's threshold, a group the calibration does not name its overall threshold. NEW_DIR receives
the run's tables with `detected`, `threshold`, the recordings' `detected`/`events` and a new
`events` table (runs of consecutive windows, or of frames for a frame-pooling head with a `frames`
table, merged exactly as the scoring pipeline merges them), events.csv, the Raven selection table
and run.json (the old one plus the thresholds applied). Errors are carried over unchanged.
Embeddings are not copied (they do not depend on the threshold).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gunshot_core import logs
from pipelines import schemas
from pipelines.scoring import events as events_lib
from pipelines.scoring import exports, outputs

TABLES = ("windows", "recordings", "errors", "frames")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gunshot batch --thresholds",
        description="Re-derive a scoring run's detections and events at the per-group thresholds of a "
        "`gunshot calibrate` calibration.json, from the run's tables (VGGish is not run again).",
    )
    parser.add_argument(
        "--thresholds",
        required=True,
        metavar="calibration.json|T",
        help="what `gunshot calibrate --output CAL_DIR` wrote (CAL_DIR/calibration.json: per-group "
        "thresholds), or one number T in [0, 1] for every recording (e.g. a threshold below the run's, "
        "to offer a review the events the run missed)",
    )
    parser.add_argument("--scores", required=True, metavar="RUN_DIR", help="the scoring run (local folder)")
    parser.add_argument("--output", required=True, metavar="NEW_DIR", help="local folder for the new tables")
    parser.add_argument(
        "--group_pattern", help="override the calibration's group pattern (regex over source)"
    )
    logs.add_logging_flags(parser)
    return parser


def _shards(run_dir: str, table: str) -> list[str]:
    return sorted(
        os.path.join(run_dir, f)
        for f in os.listdir(run_dir)
        if re.fullmatch(rf"{table}-\d+-of-\d+\.parquet", f)
    )


def _run_model(run_dir: str):
    """The embedding model (gunshot_core.embedding_models) of a run, from its run.json (VGGish for runs
    that name none)."""
    from gunshot_core import embedding_models

    manifest_path = os.path.join(run_dir, outputs.RUN_MANIFEST)
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    model = embedding_models.get(manifest.get("embedding_model") or None)
    if model.is_default:
        return model
    return model.with_hop((manifest.get("embedding") or {}).get("hop_seconds"))


def _read(run_dir: str, table: str, model=None) -> pa.Table | None:
    files = _shards(run_dir, table)
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files]).cast(schemas.score_tables(model)[table])


def _groups(run_dir: str, pattern: str | None) -> dict[str, str]:
    """{source: group} as `gunshot report` / `gunshot review` name groups."""
    import tempfile

    from pipelines.report.tables import ReportTables, RunInput

    with tempfile.TemporaryDirectory(prefix="gunshot-rethreshold-") as scratch:
        tables = ReportTables([RunInput("run", run_dir)], scratch)
        try:
            expr = tables.group_expression(0, pattern)
            rows = tables.con.execute(
                f"SELECT DISTINCT source, {expr} AS grp FROM (SELECT source FROM r0_windows UNION SELECT source FROM r0_recordings)"
            ).fetchall()
        finally:
            tables.close()
    return dict(rows)


def _write(output: str, table: str, rows: pa.Table) -> None:
    path = os.path.join(output, f"{table}-00000-of-00001.parquet")
    pq.write_table(rows, path + ".part")
    os.replace(path + ".part", path)


def rethreshold(run_dir: str, calibration: dict, output: str, group_pattern: str | None = None) -> dict:
    """Writes NEW_DIR; returns {group: {"threshold", "windows", "detected", "events"}}.

    Args:
      calibration: read by `pipelines.report.thresholds.read_calibration`.
    """
    model = _run_model(run_dir)
    windows = _read(run_dir, "windows", model)
    if windows is None:
        raise FileNotFoundError(
            f"--scores {run_dir}: no windows-*.parquet there; pass a `gunshot batch` output"
        )
    pattern = group_pattern or calibration["group_pattern"]
    group_of = _groups(run_dir, pattern)
    threshold_of = {s: calibration["groups"].get(g, calibration["overall"]) for s, g in group_of.items()}
    os.makedirs(output, exist_ok=True)

    def apply(table: pa.Table) -> pa.Table:
        sources = table.column("source").to_pylist()
        thresholds = np.array([threshold_of[s] for s in sources], np.float64)
        scores = table.column("score").to_numpy().astype(np.float64)
        table = table.set_column(
            table.schema.get_field_index("detected"), "detected", pa.array(scores >= thresholds)
        )
        return table.set_column(table.schema.get_field_index("threshold"), "threshold", pa.array(thresholds))

    windows = apply(windows)
    frames = _read(run_dir, "frames", model)
    frames = apply(frames) if frames is not None else None
    recordings = _read(run_dir, "recordings", model)
    start_utc = {}
    if recordings is not None:
        start_utc = dict(
            zip(
                recordings.column("source").to_pylist(),
                recordings.column("start_utc").to_pylist(),
                strict=True,
            )
        )
    provenance_names = [
        f.name for f in schemas.PROVENANCE_FIELDS + schemas.EMBEDDING_MODEL_FIELDS if f.name in windows.schema.names
    ]
    event_rows = []
    by_source = windows.to_pydict()
    order = np.lexsort((np.array(by_source["window_index"]), np.array(by_source["source"], dtype=object)))
    sources = np.array(by_source["source"], dtype=object)[order]
    frame_data = frames.to_pydict() if frames is not None else None
    for source in sorted(set(sources.tolist())):
        rows = order[sources == source]
        first = int(rows[0])
        threshold = threshold_of[source]
        scores = np.array(by_source["score"], np.float64)[rows]
        starts = np.array(by_source["start_seconds"])[rows]
        ends = np.array(by_source["end_seconds"])[rows]
        if frame_data is not None:
            mine = [k for k, s in enumerate(frame_data["source"]) if s == source]
            mine.sort(key=lambda k: frame_data["frame_index"][k])
            frame_scores = np.array([frame_data["score"][k] for k in mine], np.float64)
            frame_starts = np.array([frame_data["start_seconds"][k] for k in mine], np.float64)
            frame_ends = np.array([frame_data["end_seconds"][k] for k in mine], np.float64)
            # windows as frame ranges [first, last): the frames starting at the window's start and
            # ending at its end (VGGish 0.96 s frames back to back; BirdNET 3-s frames every hop)
            window_first = np.searchsorted(frame_starts, starts - 1e-6)
            window_last = np.searchsorted(frame_ends, ends - 1e-6) + 1
            found = events_lib.merge_frame_events(  # events end at start + frame length, as scoring's
                frame_scores, window_first, window_last, threshold, frame_starts, frame_starts + model.frame_seconds
            )
        else:
            found = events_lib.merge_events(scores, starts, ends, threshold)
        origin = start_utc.get(source)
        for k, event in enumerate(found):
            event_rows.append(
                {
                    "source": source,
                    "event_index": k,
                    "start_seconds": event.start_seconds,
                    "end_seconds": event.end_seconds,
                    "peak_score": event.peak_score,
                    "peak_seconds": event.peak_seconds,
                    "num_windows": event.num_windows,
                    "start_utc": origin + datetime.timedelta(seconds=event.start_seconds) if origin else None,
                    "end_utc": origin + datetime.timedelta(seconds=event.end_seconds) if origin else None,
                    **{name: by_source[name][first] for name in provenance_names},
                    "threshold": threshold,
                }
            )
    events = pa.Table.from_pylist(event_rows, schema=schemas.score_tables(model)["events"])
    _write(output, "windows", windows)
    _write(output, "events", events)
    if frames is not None:
        _write(output, "frames", frames)
    counts = {}
    for row in event_rows:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    if recordings is not None:
        sources_r = recordings.column("source").to_pylist()
        thr = [threshold_of.get(s, calibration["overall"]) for s in sources_r]
        best = recordings.column("max_score").to_pylist()
        ok = [s == "ok" for s in recordings.column("status").to_pylist()]
        columns = {
            "detected": pa.array(
                [(b is not None and b >= t) if o else None for b, t, o in zip(best, thr, ok, strict=True)]
            ),
            "events": pa.array(
                [counts.get(s, 0) if o else None for s, o in zip(sources_r, ok, strict=True)], pa.int32()
            ),
            "threshold": pa.array(thr, pa.float64()),
        }
        for name, values in columns.items():
            recordings = recordings.set_column(recordings.schema.get_field_index(name), name, values)
        _write(output, "recordings", recordings)
    errors = _read(run_dir, "errors", model)
    if errors is not None:
        _write(output, "errors", errors)
    with open(os.path.join(output, outputs.EVENTS_CSV), "w", encoding="utf-8", newline="") as f:
        f.write(exports.events_csv(event_rows))
    with open(os.path.join(output, outputs.RAVEN_TABLE), "w", encoding="utf-8", newline="") as f:
        f.write(exports.raven_selection_table(event_rows))
    summary = {}
    groups = np.array([group_of[s] for s in by_source["source"]], dtype=object)
    detected = windows.column("detected").to_numpy(zero_copy_only=False)
    for group in sorted(set(groups.tolist())):
        inside = groups == group
        summary[group] = {
            "threshold": calibration["groups"].get(group, calibration["overall"]),
            "windows": int(inside.sum()),
            "detected": int(detected[inside].sum()),
            "events": sum(1 for r in event_rows if group_of[r["source"]] == group),
        }
    manifest_path = os.path.join(run_dir, outputs.RUN_MANIFEST)
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    manifest["rethresholded"] = {"from": run_dir, "group_pattern": pattern, "groups": summary}
    with open(os.path.join(output, outputs.RUN_MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    return summary


def _plain_threshold(value: str) -> dict | None:
    """A calibration (as `read_calibration` returns) of one threshold for every group when `value` is a
    number in [0, 1], else None (a calibration.json path)."""
    from pipelines.report import thresholds

    try:
        threshold = float(value)
    except ValueError:
        return None
    if not 0.0 <= threshold <= 1.0:
        raise thresholds.ThresholdsFileError(f"--thresholds {value}: a single threshold must be in [0, 1]")
    return {"overall": threshold, "groups": {}, "group_pattern": None, "target_precision": None}


def run(argv=None) -> int:
    from pipelines.report import thresholds

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:  # also `gunshot batch --thresholds --help`, without a file
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    for name in ("scores", "output"):
        if "://" in getattr(args, name):
            parser.error(f"--{name} must be a local folder with --thresholds (got {getattr(args, name)})")
    if not os.path.isdir(args.scores):
        print(
            f"gunshot batch: error: --scores {args.scores}: no such folder; give the --output folder of "
            "the `gunshot batch` run that was calibrated",
            file=sys.stderr,
        )
        return 2
    try:
        calibration = _plain_threshold(args.thresholds) or thresholds.read_calibration(args.thresholds)
        summary = rethreshold(args.scores, calibration, args.output, args.group_pattern)
    except (thresholds.ThresholdsFileError, FileNotFoundError) as e:
        print(f"gunshot batch: error: {e}", file=sys.stderr)
        return 2
    for group, s in summary.items():
        print(
            f"{group}: threshold {s['threshold']:.4f}, {s['detected']} of {s['windows']} windows, {s['events']} events"
        )
    print(f"-> {args.output}")
    return 0
