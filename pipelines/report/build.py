"""Report stage: the `gunshot report` command, composing tables -> media -> pages into a static site.

    gunshot report --scores DIR [--scores NAME=DIR ...] --output REPORT_DIR [--top 200] [--clip_seconds 6]

Writes into REPORT_DIR (a local folder; open `index.html` from the file system, no server needed):

- `index.html`: per run (side by side when several --scores are given) the summary (inputs, audio
  hours, scored/failed, detections, events, wall time, models and hashes, code version, run.json
  parameters), the score histogram, detections per group as day x hour-of-day heatmaps (per recording
  x hour from its start when recordings have no timestamps), the best events and the errors grouped
  by stage and reason;
- `events.html` (+ `events-2.html`, ...): the top --top events, best peak score first; with several
  runs an event is the union of overlapping events on the same recording, with each run's peak;
- `event-0001.html`, ...: one page per top event: a spectrogram of the best window with
  --clip_seconds/2 of padding on each side (the event's bounds marked), each run's window scores
  around it, an `<audio controls>` clip of --clip_seconds centred on the loudest moment of the best
  window (cut from the source, WAV at the recording's own rate), and the event's Raven line;
- `groups*.html`, `recordings*.html`, `errors*.html`: paginated detail tables;
- `media/`: the PNGs and WAVs; `top_events.selections.txt`: a Raven table of the top events;
  `report.json`: the same figures for programs (counts, events, clip positions).

A recording that cannot be read gives an event page that says why; the report never fails on it.
Clips and figures are made on a thread pool with a progress line on stderr.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np
from markupsafe import Markup

from gunshot_core import annotations, logs, startup
from pipelines.report import html, media, plots
from pipelines.report.tables import ReportTables, RunInput

_LOG = logging.getLogger(__name__)

REPORT_JSON = "report.json"
RAVEN_FILE = "top_events.selections.txt"
#: Rows of the errors and recordings detail tables (per run); the index says when more exist.
MAX_DETAIL_ROWS = 20_000
#: Groups drawn as heatmaps (most detections first); all groups are listed in groups.html.
MAX_HEATMAP_GROUPS = 48
INDEX_EVENTS = 20
INDEX_HEATMAPS = 4
GROUPS_PER_PAGE = 8
SITE_TITLE = "gunshot report"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gunshot report",
        description="Static HTML report over one or more scoring runs (gunshot batch outputs): summary, "
        "heatmaps, score histogram, top events with spectrograms, score timelines and audio clips, errors. "
        "Opens from the file system with no server or network.",
    )
    parser.add_argument(
        "--scores",
        action="append",
        required=True,
        metavar="[NAME=]DIR",
        help="output folder of `gunshot batch` (local or gs://); repeat to show runs side by side "
        "(e.g. --scores old=runs/old --scores new=runs/new); NAME defaults to the folder name",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="local folder for the site (created; a previous report there is replaced)",
    )
    parser.add_argument("--top", type=int, default=200, help="events that get their own page (default 200)")
    parser.add_argument(
        "--clip_seconds", type=float, default=6.0, help="length of each event's audio clip (default 6)"
    )
    parser.add_argument(
        "--group_pattern",
        help="regex over `source` whose first group (or whole match) names a recording's group, e.g. "
        "'/(site[^/]+)/' (RE2 syntax: no lookaround or backreferences); default: the top folder below "
        "the folder common to all recordings",
    )
    parser.add_argument(
        "--timeline_seconds",
        type=float,
        default=60.0,
        help="seconds of window scores shown on each side of an event (default 60)",
    )
    parser.add_argument(
        "--per_page", type=int, default=html.PER_PAGE, help=f"rows per table page (default {html.PER_PAGE})"
    )
    parser.add_argument(
        "--memory_limit",
        default="1GB",
        help="DuckDB memory limit; larger aggregations spill to disk (default 1GB)",
    )
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads cutting clips and drawing figures (default: CPUs, at most 8)",
    )
    parser.add_argument("--title", default=SITE_TITLE, help="title in every page's header")
    parser.add_argument(
        "--thresholds",
        metavar="calibration.json",
        help="per-group thresholds of `gunshot calibrate`: adds the detections and events each group "
        "has at its calibrated threshold (docs/review.md)",
    )
    logs.add_logging_flags(parser)
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top < 0:
        parser.error(f"--top must be >= 0, got {args.top}")
    if not args.clip_seconds > 0:
        parser.error(f"--clip_seconds must be > 0, got {args.clip_seconds}")
    if args.per_page < 1:
        parser.error(f"--per_page must be >= 1, got {args.per_page}")
    if "://" in args.output:
        parser.error(
            f"--output must be a local folder (got {args.output}); copy the folder to a bucket afterwards"
        )
    if args.group_pattern:
        try:
            re.compile(args.group_pattern)
        except re.error as e:
            parser.error(f"--group_pattern {args.group_pattern!r} is not a valid regex: {e}")
    try:
        args.runs = [RunInput.parse(value, i) for i, value in enumerate(args.scores)]
    except ValueError as e:
        parser.error(str(e))
    names = [r.name for r in args.runs]
    if len(set(names)) != len(names):
        parser.error(f"--scores names must differ, got {names}; name them NAME=DIR")
    args.calibration = None
    if args.thresholds:
        from pipelines.report import thresholds

        try:
            args.calibration = thresholds.read_calibration(args.thresholds)
        except thresholds.ThresholdsFileError as e:
            parser.error(str(e))
    return args


# ---- formatting --------------------------------------------------------------------------------


def offset_text(seconds: float) -> str:
    """+H:MM:SS.s from the start of a recording."""
    seconds = max(0.0, float(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"+{int(h)}:{int(m):02d}:{s:04.1f}"


def utc_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def when_text(event: dict) -> str:
    """UTC time of the event's start when the recording had a timestamp, else its offset."""
    if event.get("start_utc") is not None:
        return utc_text(event["start_utc"])
    return offset_text(event["start_seconds"])


def _hours(value: float) -> str:
    return f"{value:,.3f}"


# ---- events across runs ------------------------------------------------------------------------


def merge_top_events(per_run: list[list[dict]], top: int) -> list[dict]:
    """Top events of several runs -> at most `top` report events, best first.

    Each run's events are candidates; a candidate that overlaps an already chosen event of the same
    recording (and whose run has no event there yet) joins it, so the same detection in two runs is one
    row. Ranking: highest peak score of any run, then source and start.

    Returns:
      [{"source", "start_seconds", "end_seconds", "primary": run index, "events": {run index: row}}].
    """
    candidates = [(run, e) for run, events in enumerate(per_run) for e in events]
    candidates.sort(key=lambda c: (-float(c[1]["peak_score"]), c[1]["source"], c[1]["start_seconds"], c[0]))
    merged: list[dict] = []
    by_source: dict[str, list[dict]] = collections.defaultdict(list)
    for run, event in candidates:
        for item in by_source[event["source"]]:
            if (
                run not in item["events"]
                and event["start_seconds"] < item["end_seconds"]
                and (event["end_seconds"] > item["start_seconds"])
            ):
                item["events"][run] = event
                break
        else:
            if len(merged) < top:
                item = {
                    "source": event["source"],
                    "start_seconds": float(event["start_seconds"]),
                    "end_seconds": float(event["end_seconds"]),
                    "primary": run,
                    "events": {run: event},
                }
                merged.append(item)
                by_source[event["source"]].append(item)
    return merged


# ---- media of one event ------------------------------------------------------------------------


def make_event_media(task: dict) -> dict:
    """Cuts the clip and draws the spectrogram and score timeline of one event (runs on a thread).

    Args:
      task: {"stem", "directory", "ref" (AudioRef, "tfrecord" or None), "window" (start, end), "event" (start,
        end), "clip_seconds", "timeline": {run name: [(start, end, score, detected)]}, "threshold",
        "span" (timeline x range)}.
    Returns:
      {"timeline": png name or None, "spectrogram", "clip": names or None, "clip_start_seconds",
      "clip_end_seconds", "first_sample", "sample_rate", "error": text or None, "error_reason"}.
    """
    out = {"timeline": None, "spectrogram": None, "clip": None, "error": None, "error_reason": None}
    directory, stem = task["directory"], task["stem"]
    series = {
        name: (np.array([w[0] for w in rows], np.float64), np.array([w[2] for w in rows], np.float32))
        for name, rows in task["timeline"].items()
    }
    if any(len(s[0]) for s in series.values()):
        # A final point at the last window's end so the step line covers it.
        for name, rows in task["timeline"].items():
            if rows:
                starts, scores = series[name]
                series[name] = (np.append(starts, rows[-1][1]), np.append(scores, scores[-1]))
        name = f"{stem}-scores.png"
        plots.timeline_png(
            os.path.join(directory, name),
            series,
            threshold=task["threshold"],
            marks=[task["event"]],
            span=task["span"],
        )
        out["timeline"] = name
    ref = task["ref"]
    if ref is None:
        out["error"], out["error_reason"] = "the recording is not in the recordings table", "unknown_source"
        return out
    if ref == "tfrecord":
        out["error"] = "this input was an embedding TFRecord, scored without audio"
        out["error_reason"] = "no_audio"
        return out
    half = task["clip_seconds"] / 2
    w0, w1 = task["window"]
    try:
        context = media.cut_clip(ref, max(0.0, w0 - half), w1 + half)
    except media.MediaError as e:
        out["error"], out["error_reason"] = str(e), e.reason
        return out
    centre = media.loudest_seconds(context, within=(w0, w1))
    start = max(context.start_seconds, centre - half)
    end = min(context.end_seconds, start + task["clip_seconds"])
    start = max(context.start_seconds, end - task["clip_seconds"])
    clip = media.sub_clip(context, start, end)
    name = f"{stem}.wav"
    media.write_wav(os.path.join(directory, name), clip)
    out.update(
        clip=name,
        clip_start_seconds=clip.start_seconds,
        clip_end_seconds=clip.end_seconds,
        first_sample=clip.first_sample,
        sample_rate=clip.sample_rate,
    )
    spectrogram = f"{stem}-spectrogram.png"
    e0, e1 = task["event"]
    marks = [(w0, w1, "best window"), (clip.start_seconds, clip.end_seconds, "clip")]
    if e0 < w0 - 1e-6 or e1 > w1 + 1e-6:
        marks.append((max(e0, context.start_seconds), min(e1, context.end_seconds), "event"))
    plots.spectrogram_png(
        os.path.join(directory, spectrogram),
        context.samples,
        context.sample_rate,
        start_seconds=context.start_seconds,
        marks=marks,
    )
    out["spectrogram"] = spectrogram
    return out


# ---- the report --------------------------------------------------------------------------------


def _prepare_output(directory: str) -> None:
    """Creates the site folder; replaces a previous report there, refuses a folder holding other files."""
    if os.path.isdir(directory) and os.listdir(directory):
        if not os.path.exists(os.path.join(directory, REPORT_JSON)):
            raise FileExistsError(
                f"--output {directory} is not empty and holds no earlier report ({REPORT_JSON}); choose a new folder"
            )
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name == html.MEDIA_DIR and os.path.isdir(path):
                shutil.rmtree(path)
            elif name.endswith(".html") or name in (REPORT_JSON, RAVEN_FILE):
                os.remove(path)
    os.makedirs(os.path.join(directory, html.MEDIA_DIR), exist_ok=True)


def _summary_table(names: list[str], summaries: list[dict], manifests: list[dict | None], runs) -> Markup:
    columns = [html.Column("what", "")] + [
        html.Column(f"r{i}", name, "num wrap") for i, name in enumerate(names)
    ]

    def row(label, values):
        out = {"what": label}
        out.update({f"r{i}": v for i, v in enumerate(values)})
        return out

    def from_manifest(path, default=None):
        values = []
        for m in manifests:
            value = m
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(default if value is None else value)
        return values

    prov = [s["provenance"] for s in summaries]
    wall = from_manifest(("summary", "wall_seconds"))
    rows = [
        row("scores folder", [r.uri for r in runs]),
        row("run at (UTC)", from_manifest(("run_utc",), "")),
        row("inputs (recordings rows)", [s["recordings"] for s in summaries]),
        row("audio hours scored", [_hours(s["audio_hours"]) for s in summaries]),
        row("recordings scored", [s["recordings_ok"] for s in summaries]),
        row("recordings failed", [s["recordings_failed"] for s in summaries]),
        row("recordings with detections", [s["recordings_detected"] for s in summaries]),
        row("windows scored", [s["windows"] for s in summaries]),
        row("windows detected (detections)", [s["detected_windows"] for s in summaries]),
        row("events", [s["events"] for s in summaries]),
        row("error rows", [s["errors"] for s in summaries]),
        row("wall time (s)", [f"{w:,.1f}" if isinstance(w, int | float) else "" for w in wall]),
        row("threshold", [p.get("threshold") for p in prov]),
        row(
            "window / hop (s)",
            [f"{p.get('window_seconds', '')} / {p.get('hop_seconds', '')}" if p else "" for p in prov],
        ),
        row("model id", [p.get("model_id") for p in prov]),
        row("head", [p.get("head_name") for p in prov]),
        row("head sha256", [p.get("head_sha256") for p in prov]),
        row("VGGish sha256", [p.get("vggish_sha256") for p in prov]),
        row("PCA sha256", [p.get("pca_sha256") for p in prov]),
        row("code version", [p.get("code_version") for p in prov]),
    ]
    return html.table(columns, rows, id="summary")


def _parameters_table(names, manifests) -> Markup:
    keys = sorted({k for m in manifests if m for k in (m.get("arguments") or {})})
    if not keys:
        return Markup("<p class='note'>run.json is missing: no parameters to show.</p>")
    columns = [html.Column("k", "parameter")] + [
        html.Column(f"r{i}", n, "wrap mono") for i, n in enumerate(names)
    ]
    rows = []
    for key in keys:
        row = {"k": key}
        for i, m in enumerate(manifests):
            value = ((m or {}).get("arguments") or {}).get(key)
            row[f"r{i}"] = (
                "" if value is None else json.dumps(value) if isinstance(value, list | dict) else str(value)
            )
        rows.append(row)
    return html.table(columns, rows, id="parameters")


EVENT_COLUMNS_BASE = [
    html.Column("rank", "#", "num"),
    html.Column("source", "source", "wrap"),
    html.Column("when", "UTC or offset"),
    html.Column("duration", "event (s)", "num", ".1f"),
]


def _event_columns(names):
    return EVENT_COLUMNS_BASE + [
        html.Column(f"peak{i}", f"peak score {n}", "num", ".4f") for i, n in enumerate(names)
    ]


def run(argv=None) -> dict:
    """Builds the report; returns the dict also written to report.json."""
    args = parse_args(argv)
    started = time.monotonic()
    output = os.path.abspath(args.output)
    _prepare_output(output)
    names = [r.name for r in args.runs]
    media_dir = os.path.join(output, html.MEDIA_DIR)
    with tempfile.TemporaryDirectory(prefix="gunshot-report-") as scratch:
        tables = ReportTables(args.runs, scratch, memory_limit=args.memory_limit, threads=args.threads)
        try:
            result = _build(args, tables, names, output, media_dir)
        finally:
            tables.close()
    _LOG.info(
        "report of %d run(s) written to %s in %.1f s",
        len(names),
        os.path.join(output, "index.html"),
        time.monotonic() - started,
    )
    return result


def _build(args, tables: ReportTables, names: list[str], output: str, media_dir: str) -> dict:
    site = html.Site(
        output,
        args.title,
        nav=[("Summary", "index.html"), ("Top events", "events.html"), ("Groups", "groups.html"),
             ("Recordings", "recordings.html"), ("Errors", "errors.html")],
    )  # fmt: skip
    runs = range(len(names))
    clock = time.monotonic()
    summaries = [tables.summary(i) for i in runs]
    manifests = tables.manifests
    _LOG.info(
        "read %s",
        ", ".join(
            f"{n}: {s['windows']:,} windows, {s['events']:,} events"
            for n, s in zip(names, summaries, strict=True)
        ),
    )

    # Score histogram.
    counts, edges = {}, None
    for i in runs:
        edges, counts[names[i]] = tables.histogram(i)
    thresholds = [s["provenance"].get("threshold") for s in summaries]
    threshold = thresholds[0] if len(set(thresholds)) == 1 else None
    plots.histogram_png(os.path.join(media_dir, "histogram.png"), edges, counts, threshold=threshold)

    # Groups and heatmaps.
    group_sections, group_rows, index_heatmaps, heatmaps = [], [], [], []
    for i in runs:
        groups = tables.group_counts(i, args.group_pattern)
        drawn = [g["grp"] for g in groups if g["detected"] > 0][:MAX_HEATMAP_GROUPS]
        timed = tables.calendar(
            i, args.group_pattern, [g["grp"] for g in groups if g["detected_utc"] > 0 and g["grp"] in drawn]
        )
        untimed = tables.per_recording(
            i,
            args.group_pattern,
            [g["grp"] for g in groups if g["detected"] > g["detected_utc"] and g["grp"] in drawn],
        )
        for g in groups:
            group_rows.append({"run": names[i], "group": g["grp"], "recordings": g["recordings"], "hours": g["hours"],
                               "windows": g["windows"], "detected": g["detected"]})  # fmt: skip
        for k, grp in enumerate(drawn):
            for kind, data in (("utc", timed.get(grp)), ("rec", untimed.get(grp))):
                if not data:
                    continue
                if kind == "utc":
                    cols = [str(h) for h in range(24)]
                    xlabel = "hour of day (UTC)" + ("" if data["calendar"] else "; only days with detections")
                    caption = f"{names[i]} / {grp}: detections per day x hour of day (UTC)"
                    rows = data["rows"]
                else:
                    cols = [str(h) for h in range(data["counts"].shape[1])]
                    xlabel = "hour from the start of the recording (no timestamp)"
                    caption = (
                        f"{names[i]} / {grp}: detections per recording x hour (recordings without timestamps)"
                    )
                    if data["more"] > 0:
                        caption += (
                            f"; {data['more']} more recordings with detections are in the recordings table"
                        )
                    rows = [r.rsplit("/", 1)[-1][-40:] for r in data["rows"]]
                heatmaps.append(
                    {"key": (i, k), "png": f"heatmap-r{i}-g{k:03d}-{kind}.png", "caption": caption, "alt": f"heatmap {names[i]} {grp}",
                     "draw": {"counts": data["counts"], "row_labels": rows, "col_labels": cols, "xlabel": xlabel,
                              "title": f"{names[i]} / {grp}"}}
                )  # fmt: skip
    _LOG.info("summary, histogram and group queries: %.1f s", time.monotonic() - clock)
    clock = time.monotonic()
    drawn_maps = media.map_with_progress(
        lambda job: plots.heatmap_png(os.path.join(media_dir, job["png"]), **job["draw"]),
        heatmaps,
        label="heatmaps",
        workers=args.workers,
    )
    by_key: dict[tuple, list] = {}
    for job, result in zip(heatmaps, drawn_maps, strict=True):
        if isinstance(result, Exception):
            part = html.problem(f"{job['caption']}: could not be drawn ({type(result).__name__}: {result})")
        else:
            part = html.figure(f"{html.MEDIA_DIR}/{job['png']}", job["alt"], job["caption"])
        by_key.setdefault(job["key"], []).append(part)
    for parts in by_key.values():
        group_sections.append(Markup("").join(parts))
        if len(index_heatmaps) < INDEX_HEATMAPS * len(names):
            index_heatmaps.append(parts[0])
    group_columns = [html.Column("run", "run"), html.Column("group", "group", "wrap"), html.Column("recordings", "recordings", "num"),
                     html.Column("hours", "audio hours", "num", ".3f"), html.Column("windows", "windows", "num"),
                     html.Column("detected", "detected windows", "num")]  # fmt: skip
    _write_groups(site, group_columns, group_rows, group_sections, args)

    # Top events across runs.
    _LOG.info("%d heatmaps: %.1f s", len(heatmaps), time.monotonic() - clock)
    clock = time.monotonic()
    per_run = [tables.top_events(i, args.top) for i in runs]
    events = merge_top_events(per_run, args.top)
    refs = {}
    for item in events:
        primary = item["events"][item["primary"]]
        if primary.get("input_kind") == "tfrecord":
            refs[item["source"]] = "tfrecord"  # scored from embeddings: there is no audio to cut
        elif primary.get("file"):
            refs[item["source"]] = media.AudioRef(primary["file"], primary.get("member"))
    spans = []
    for k, item in enumerate(events):
        spans.append(
            (
                k,
                item["source"],
                item["start_seconds"] - args.timeline_seconds,
                item["end_seconds"] + args.timeline_seconds,
            )
        )
    windows = [tables.windows_in_spans(i, spans) for i in runs]
    tasks = []
    for k, item in enumerate(events):
        primary = item["events"][item["primary"]]
        rows = windows[item["primary"]].get(k, [])
        inside = [w for w in rows if w[1] > item["start_seconds"] and w[0] < item["end_seconds"]]
        best = max(inside, key=lambda w: (w[2], -w[0])) if inside else None
        window = (
            (best[0], best[1])
            if best
            else (primary["peak_seconds"], primary["peak_seconds"] + (primary.get("window_seconds") or 9.6))
        )
        item["peaks"] = {}
        for i in runs:
            own = [
                w
                for w in windows[i].get(k, [])
                if w[1] > item["start_seconds"] and w[0] < item["end_seconds"]
            ]
            item["peaks"][i] = max((w[2] for w in own), default=None)
        item["window"] = window
        item["rank"] = k + 1
        item["stem"] = f"event-{k + 1:04d}"
        tasks.append(
            {
                "stem": item["stem"],
                "directory": media_dir,
                "ref": refs.get(item["source"]),
                "window": window,
                "event": (item["start_seconds"], item["end_seconds"]),
                "clip_seconds": args.clip_seconds,
                "timeline": {names[i]: windows[i].get(k, []) for i in runs},
                "threshold": {names[i]: t for i, t in enumerate(thresholds) if t is not None},
                "span": (max(0.0, spans[k][2]), spans[k][3]),
            }
        )
    _LOG.info("top events and their windows: %.1f s", time.monotonic() - clock)
    clock = time.monotonic()
    made = media.map_with_progress(make_event_media, tasks, label="clips and figures", workers=args.workers)
    _LOG.info("clips and figures of %d events: %.1f s", len(tasks), time.monotonic() - clock)
    clock = time.monotonic()
    for item, result in zip(events, made, strict=True):
        if isinstance(result, Exception):  # a bug in drawing; the page says so, the report goes on
            result = {"timeline": None, "spectrogram": None, "clip": None,
                      "error": f"{type(result).__name__}: {result}", "error_reason": "report_failed"}  # fmt: skip
        item["media"] = result
    event_rows = []
    for item in events:
        primary = item["events"][item["primary"]]
        row = {
            "rank": item["rank"],
            "source": html.Link(item["source"], f"{item['stem']}.html"),
            "when": when_text(primary),
            "duration": item["end_seconds"] - item["start_seconds"],
        }
        row.update({f"peak{i}": item["peaks"].get(i) for i in runs})
        event_rows.append(row)
    event_columns = _event_columns(names)
    site.write_table_pages(
        "events",
        "Top events",
        event_columns,
        event_rows,
        intro=[Markup("<p class='note'>The {} events with the highest peak window score{}; peak score per run is its best window"
                      " overlapping the event. Raven table: <a href='{}'>{}</a>.</p>").format(
                          len(events), " across runs" if len(names) > 1 else "", RAVEN_FILE, RAVEN_FILE)],
        per_page=args.per_page,
        table_id="events",
        empty="No events: no window reached the threshold.",
    )  # fmt: skip
    raven = annotations.format_selection_table(
        [{"file": item["source"], "start_seconds": item["start_seconds"], "end_seconds": item["end_seconds"],
          "label": "detection", "Score": float(item["events"][item["primary"]]["peak_score"])} for item in events],
        extra_columns=["Score"],
    )  # fmt: skip
    with open(os.path.join(output, RAVEN_FILE), "w", encoding="utf-8") as f:
        f.write(raven)
    for k, item in enumerate(events):
        prev_link = f"event-{k:04d}.html" if k > 0 else None
        next_link = f"event-{k + 2:04d}.html" if k + 1 < len(events) else None
        _write_event_page(site, item, names, prev_link, next_link)

    # Errors and recordings.
    error_groups = [tables.error_groups(i) for i in runs]
    error_rows = []
    for i in runs:
        error_rows += [{"run": names[i], **e} for e in tables.errors(i, MAX_DETAIL_ROWS)]
    error_columns = [html.Column("run", "run"), html.Column("stage", "stage"), html.Column("reason", "reason"),
                     html.Column("source", "source", "wrap"), html.Column("message", "message", "wrap")]  # fmt: skip
    capped = [names[i] for i in runs if summaries[i]["errors"] > MAX_DETAIL_ROWS]
    site.write_table_pages(
        "errors", "Errors", error_columns, error_rows, per_page=args.per_page, table_id="errors",
        intro=[f"First {MAX_DETAIL_ROWS:,} error rows of {', '.join(capped)} (by stage, reason, source); the errors table has them all."] if capped else [],
        empty="No errors.",
    )  # fmt: skip
    recording_rows = []
    for i in runs:
        for r in tables.recordings_with_detections(i, MAX_DETAIL_ROWS):
            recording_rows.append({"run": names[i], **r, "start_utc": utc_text(r["start_utc"])})
    recording_columns = [html.Column("run", "run"), html.Column("source", "source", "wrap"),
                         html.Column("start_utc", "start (UTC)"), html.Column("duration_seconds", "duration (s)", "num", ".1f"),
                         html.Column("windows", "windows", "num"), html.Column("detected", "detected windows", "num"),
                         html.Column("events", "events", "num"), html.Column("max_score", "max score", "num", ".4f"),
                         html.Column("max_score_start_seconds", "at (s)", "num", ".1f")]  # fmt: skip
    site.write_table_pages(
        "recordings", "Recordings with detections", recording_columns, recording_rows, per_page=args.per_page,
        table_id="recordings", empty="No recording has a detection.",
        intro=[f"At most {MAX_DETAIL_ROWS:,} recordings per run, most detected windows first."],
    )  # fmt: skip

    _LOG.info("event, error and recording pages: %.1f s", time.monotonic() - clock)

    # Index.
    parts = [
        html.section("Runs", _summary_table(names, summaries, manifests, tables.runs), id="runs"),
        html.section(
            "Score histogram",
            html.figure(
                f"{html.MEDIA_DIR}/histogram.png",
                "score histogram",
                "Window scores"
                + (" of each run" if len(names) > 1 else "")
                + ", log scale; dashed: threshold.",
            ),
            id="histogram",
        ),  # fmt: skip
    ]
    if index_heatmaps:
        parts.append(html.section("Detections by group", Markup("<div class='grid'>{}</div>").format(Markup("").join(index_heatmaps)),
                                  Markup("<p><a href='groups.html'>All groups</a></p>"), id="heatmaps"))  # fmt: skip
    else:
        parts.append(
            html.section(
                "Detections by group",
                "No detections.",
                Markup("<p><a href='groups.html'>All groups</a></p>"),
                id="heatmaps",
            )
        )
    first = event_rows[:INDEX_EVENTS]
    parts.append(
        html.section(
            "Top events",
            html.table(event_columns, first, id="top-events") if first else html.problem("No events: no window reached the threshold."),
            Markup("<p><a href='events.html'>All {} top events</a> &middot; <a href='{}'>Raven selection table</a></p>").format(len(events), RAVEN_FILE),
            id="events",
        )
    )  # fmt: skip
    group_table_rows = [{"run": names[i], **g} for i in runs for g in error_groups[i]]
    error_group_columns = [html.Column("run", "run"), html.Column("stage", "stage"), html.Column("reason", "reason"),
                           html.Column("n", "rows", "num"), html.Column("example_source", "first source", "wrap"),
                           html.Column("example_message", "its message", "wrap")]  # fmt: skip
    parts.append(
        html.section(
            "Errors by stage and reason",
            html.table(error_group_columns, group_table_rows, id="error-groups")
            if group_table_rows
            else "No errors.",
            Markup("<p><a href='errors.html'>All errors</a></p>"),
            id="errors",
        )
    )
    if any(s["recordings"] and s["recordings_failed"] == s["recordings"] for s in summaries):
        failed = [
            names[i]
            for i in runs
            if summaries[i]["recordings"] and summaries[i]["recordings_failed"] == summaries[i]["recordings"]
        ]
        parts.insert(0, html.problem(f"Every input failed in: {', '.join(failed)}. See the errors below."))
    calibrated = []
    if args.calibration:
        from pipelines.report import thresholds

        calibrated = [{"run": names[i], **r} for i in runs for r in thresholds.calibrated_rows(tables, i, args.calibration)]
        columns = [html.Column("run", "run"), html.Column("group", "group"),
                   html.Column("threshold", "calibrated threshold", "num", ".4f"),
                   html.Column("windows", "windows", "num"), html.Column("run_detected", "detected at the run's threshold", "num"),
                   html.Column("detected", "detected at the calibrated threshold", "num"),
                   html.Column("events", "events at the calibrated threshold", "num")]  # fmt: skip
        parts.append(
            html.section(
                "Calibrated thresholds",
                Markup("<p class='note'>From {} (target precision {}); groups it does not name use its overall threshold.</p>").format(
                    args.thresholds, args.calibration["target_precision"]
                ),
                html.table(columns, calibrated, id="calibrated"),
                id="calibrated-thresholds",
            )
        )  # fmt: skip
    parts.append(html.section("Parameters (run.json)", _parameters_table(names, manifests), id="parameters"))
    site.write("index.html", "Summary", parts)

    report = {
        **({"calibrated": calibrated} if args.calibration else {}),
        "runs": [
            {"name": names[i], "scores": tables.runs[i].uri,
             **{k: v for k, v in summaries[i].items() if k != "provenance"}, "provenance": summaries[i]["provenance"]}
            for i in runs
        ],
        "events": [
            {"rank": item["rank"], "page": f"{item['stem']}.html", "source": item["source"],
             "start_seconds": item["start_seconds"], "end_seconds": item["end_seconds"],
             "best_window": list(item["window"]),
             "peak_scores": {names[i]: item["peaks"].get(i) for i in runs},
             **{k: item["media"].get(k) for k in ("clip", "spectrogram", "timeline", "clip_start_seconds",
                                                  "clip_end_seconds", "first_sample", "sample_rate", "error", "error_reason")}}
            for item in events
        ],
        "error_groups": {names[i]: error_groups[i] for i in runs},
    }  # fmt: skip
    with open(os.path.join(output, REPORT_JSON), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    return report


def _write_groups(site, columns, rows, sections, args) -> None:
    count = max(1, math.ceil(len(sections) / GROUPS_PER_PAGE))
    names = []
    for number in range(1, count + 1):
        chunk = sections[(number - 1) * GROUPS_PER_PAGE : number * GROUPS_PER_PAGE]
        name = "groups.html" if number == 1 else f"groups-{number}.html"
        nav = html.pager("groups", number, count, len(sections))
        parts = []
        if number == 1:
            parts.append(
                html.section(
                    "Groups",
                    html.table(columns, rows[: args.per_page * 10], id="groups")
                    if rows
                    else "No recordings.",
                )
            )
        parts += (
            [
                html.section(
                    "Heatmaps", nav, Markup("<div class='grid'>{}</div>").format(Markup("").join(chunk)), nav
                )
            ]
            if chunk
            else []
        )
        names.append(site.write(name, "Detections by group", parts))


def _write_event_page(site, item, names, prev_link, next_link) -> None:
    primary = item["events"][item["primary"]]
    result = item["media"]
    facts = [
        ("source", item["source"]),
        ("event (s from start)", f"{item['start_seconds']:.2f} - {item['end_seconds']:.2f}"),
        ("UTC", utc_text(primary.get("start_utc")) or "no timestamp"),
        ("best window (s)", f"{item['window'][0]:.2f} - {item['window'][1]:.2f}"),
    ]
    for i, name in enumerate(names):
        event = item["events"].get(i)
        peak = item["peaks"].get(i)
        text = "not scored" if peak is None else f"{peak:.4f}"
        if event is not None:
            text += f" (event {event['start_seconds']:.2f} - {event['end_seconds']:.2f} s, {event['num_windows']} windows)"
        elif peak is not None:
            text += " (below the threshold)"
        facts.append((f"peak score, {name}", text))
    if result.get("clip"):
        facts.append(
            (
                "clip (s from start)",
                f"{result['clip_start_seconds']:.3f} - {result['clip_end_seconds']:.3f} at {result['sample_rate']} Hz",
            )
        )
    links = [("all top events", "events.html")]
    if prev_link:
        links.insert(0, ("previous", prev_link))
    if next_link:
        links.append(("next", next_link))
    nav = Markup(" &middot; ").join(Markup('<a href="{}">{}</a>').format(href, text) for text, href in links)
    parts = [Markup("<p>{}</p>").format(nav), html.kv_table(facts, id="event")]
    if result.get("error"):
        parts.append(
            html.problem(
                f"The audio of this event could not be read ({result['error_reason']}): {result['error']}"
            )
        )
    if result.get("spectrogram"):
        parts.append(html.section("Spectrogram", html.figure(f"{html.MEDIA_DIR}/{result['spectrogram']}", "spectrogram",
                                  "Best window with padding; lines: best window, clip (and event bounds when wider).")))  # fmt: skip
    if result.get("clip"):
        parts.append(html.section("Listen", html.audio(f"{html.MEDIA_DIR}/{result['clip']}"),
                                  Markup("<p class='note'>{}</p>").format("Mono, 16-bit PCM at the recording's own rate; centred on the loudest moment of the best window.")))  # fmt: skip
    if result.get("timeline"):
        parts.append(html.section("Window scores around the event",
                                  html.figure(f"{html.MEDIA_DIR}/{result['timeline']}", "score timeline", "Shaded: the event; dashed: threshold.")))  # fmt: skip
    raven = annotations.format_selection_table(
        [{"file": item["source"], "start_seconds": item["start_seconds"], "end_seconds": item["end_seconds"],
          "label": "detection", "Score": float(primary["peak_score"])}],
        extra_columns=["Score"],
    )  # fmt: skip
    parts.append(html.section("Raven selection", html.pre(raven)))
    site.write(f"{item['stem']}.html", f"Event {item['rank']}: {item['source'].rsplit('/', 1)[-1]}", parts)


def main(argv=None) -> int:
    try:
        run(argv)
    except (FileNotFoundError, FileExistsError) as e:
        print(f"gunshot report: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    logs.configure_logging(logs.flags_from_argv(argv))
    startup.exit_process(main(argv))  # a finished run ends without the interpreter's teardown
