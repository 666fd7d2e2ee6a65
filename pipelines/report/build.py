"""Report stage: the `gunshot report` command, composing tables -> media -> pages into a static site.

    gunshot report --scores DIR [--scores NAME=DIR ...] --output REPORT_DIR [--top 200] [--clip_seconds 6]
                   [--max_clip_seconds 30]

Writes into REPORT_DIR (a local folder; open `index.html` from the file system, no server needed):

- `index.html`: per run (side by side when several --scores are given) the summary (inputs, audio
  hours, scored/failed, detections, events, wall time, models and shortened hashes (the full sha256
  on hover and in run.json), code version, run.json parameters), the score histogram with each run's
  threshold, detections per group as day x hour-of-day heatmaps (for recordings without timestamps,
  a score timeline per recording instead), the best events and the errors grouped by stage and reason;
- `events.html` (+ `events-2.html`, ...): the top --top events, best peak score first (the events
  table's `peak_score`: the best window of the event, or its best frame for a frame-level head);
  with several runs an event is the union of overlapping events on the same recording, with each
  run's peak;
- `event-0001.html`, ...: one page per top event, all of it the event's own: an `<audio controls>`
  clip of the event with CLIP_MARGIN_SECONDS before and after it (at least --clip_seconds, at most
  --max_clip_seconds, centred on the event and kept inside the recording; cut from the source, WAV at
  the recording's own rate), a spectrogram of the clip and of the best window overlapping the event
  (event, clip and window bounds marked), each run's window scores around it (within the
  recording), and the event's Raven selection as a table;
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

from gunshot_core import annotations, arguments, logs, params, startup
from gunshot_core.errors import GunshotError
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
#: Hex digits of a sha256 shown in the summary.
SHORT_HASH = 12
#: Audio kept before and after an event in its clip (seconds).
CLIP_MARGIN_SECONDS = 1.0
GROUPS_PER_PAGE = 8
SITE_TITLE = "gunshot report"


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "report",
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
        "--clip_seconds",
        type=float,
        default=6.0,
        help="shortest audio clip of an event (default 6); a clip holds its event plus "
        f"{CLIP_MARGIN_SECONDS:g} s on each side",
    )
    parser.add_argument(
        "--max_clip_seconds",
        type=float,
        default=30.0,
        help="longest audio clip (default 30); a longer event gets a clip centred on its loudest moment",
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
    if not args.max_clip_seconds >= args.clip_seconds:
        parser.error(
            f"--max_clip_seconds must be >= --clip_seconds ({args.clip_seconds}), got {args.max_clip_seconds}"
        )
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


def short_hash(value) -> Markup | None:
    """A sha256 as its first SHORT_HASH hex digits, the full value on hover (run.json has it too)."""
    if not value:
        return None
    text = str(value)
    if len(text) <= SHORT_HASH + 1:
        return Markup("<code>{}</code>").format(text)
    return Markup('<code title="{}">{}&hellip;</code>').format(text, text[:SHORT_HASH])


def _hours(value: float) -> str:
    return f"{value:,.3f}"


def raven_table(text: str, *, id: str | None = None) -> Markup:  # noqa: A002
    """A Raven selection table (tab-separated text, header first) as an HTML table."""
    lines = [line.split("\t") for line in text.splitlines() if line.strip()]
    if not lines:
        return Markup("")
    header = lines[0]
    columns = [html.Column(f"c{k}", name, "mono") for k, name in enumerate(header)]
    rows = [{f"c{k}": value for k, value in enumerate(line)} for line in lines[1:]]
    return html.table(columns, rows, id=id)


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


def event_clip_span(
    event: tuple[float, float],
    *,
    min_seconds: float,
    max_seconds: float,
    recording_seconds: float | None,
    centre: float | None = None,
    margin: float = CLIP_MARGIN_SECONDS,
) -> tuple[float, float]:
    """Where an event's audio clip lies: the event plus `margin` on each side, at least `min_seconds`
    long, centred on the event (or on `centre`, for an event longer than `max_seconds`), shifted and
    clamped to lie inside the recording.

    Args:
      event: (start, end) seconds of the event.
      min_seconds, max_seconds: shortest and longest clip.
      recording_seconds: duration of the recording (None: unknown, only clamped at 0).
      centre: where to centre a clip that cannot hold the whole event (default the event's middle).
    Returns:
      (start, end) seconds from the start of the recording; the clip holds the whole event whenever
      the event plus its margins fits in `max_seconds`.
    """
    e0, e1 = event
    length = max(e1 - e0 + 2 * margin, min_seconds)
    if length > max_seconds:
        length = max_seconds
        middle = (e0 + e1) / 2 if centre is None else centre
    else:
        middle = (e0 + e1) / 2
    start = middle - length / 2
    if recording_seconds is not None:
        start = min(start, recording_seconds - length)
    start = max(0.0, start)
    end = start + length
    if recording_seconds is not None:
        end = min(end, recording_seconds)
    return start, end


def make_event_media(task: dict) -> dict:
    """Cuts the clip and draws the spectrogram and score timeline of one event (runs on a thread).

    The clip is the event's own: the event with CLIP_MARGIN_SECONDS on each side, at least
    --clip_seconds and at most --max_clip_seconds long, inside the recording (an event longer than
    that gets a clip centred on its loudest moment near its peak). The spectrogram spans the clip and
    the best window overlapping the event, with the event, the clip and that window marked.

    Args:
      task: {"stem", "directory", "ref" (AudioRef, "tfrecord" or None), "window" (start, end) of the
        best window overlapping the event, "event" (start, end), "peak" (start, end) of the event's
        best window or frame, "recording_seconds" (or None), "clip_seconds", "max_clip_seconds",
        "timeline": {run name: [(start, end, score, detected)]} windows, "frames": the same for the
        frames of frame-level heads, "threshold", "span" (timeline x range)}.
    Returns:
      {"timeline": png name or None, "spectrogram", "clip": names or None, "clip_start_seconds",
      "clip_end_seconds", "clip_holds_event", "first_sample", "sample_rate", "error": text or None,
      "error_reason"}.
    """
    out = {"timeline": None, "spectrogram": None, "clip": None, "error": None, "error_reason": None}
    directory, stem = task["directory"], task["stem"]
    e0, e1 = task["event"]
    series = {
        name: (np.array([w[0] for w in rows], np.float64), np.array([w[2] for w in rows], np.float32))
        for name, rows in task["timeline"].items()
    }
    # A final point at the last window's (frame's) end so the step line covers it.
    frame_series = {
        name: (np.array([w[0] for w in rows] + [rows[-1][1]]), np.array([w[2] for w in rows] + [rows[-1][2]]))
        for name, rows in task.get("frames", {}).items()
    }
    if any(len(s[0]) for s in series.values()):
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
            frame_series=frame_series,
        )
        out["timeline"] = name
        out["timeline_frames"] = any(len(v[0]) for v in frame_series.values())
    ref = task["ref"]
    if ref is None:
        out["error"], out["error_reason"] = "the recording is not in the recordings table", "unknown_source"
        return out
    if ref == "tfrecord":
        out["error"] = "this input was an embedding TFRecord, scored without audio"
        out["error_reason"] = "no_audio"
        return out
    min_seconds, max_seconds = task["clip_seconds"], task["max_clip_seconds"]
    length = max(e1 - e0 + 2 * CLIP_MARGIN_SECONDS, min_seconds)
    whole = length <= max_seconds
    p0, p1 = task["peak"]
    window = task["window"]
    # Audio around the clip (with room to shift it inside the recording) and the best window.
    if whole:
        lo, hi = e0 - length, e1 + length
    else:
        lo, hi = p0 - max_seconds, p1 + max_seconds
    if window is not None:
        lo, hi = min(lo, window[0]), max(hi, window[1])
    try:
        context = media.cut_clip(ref, max(0.0, lo), hi)
    except media.MediaError as e:
        out["error"], out["error_reason"] = str(e), e.reason
        return out
    centre = None if whole else media.loudest_seconds(context, within=(max(e0, p0), min(e1, p1)))
    start, end = event_clip_span(
        (e0, e1),
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        recording_seconds=context.recording_seconds,
        centre=centre,
    )
    clip = media.sub_clip(context, start, end)
    name = f"{stem}.wav"
    media.write_wav(os.path.join(directory, name), clip)
    out.update(
        clip=name,
        clip_start_seconds=clip.start_seconds,
        clip_end_seconds=clip.end_seconds,
        clip_holds_event=clip.start_seconds <= e0 + 1e-6 and clip.end_seconds >= e1 - 1e-6,
        first_sample=clip.first_sample,
        sample_rate=clip.sample_rate,
    )
    spectrogram = f"{stem}-spectrogram.png"
    shown = (clip.start_seconds, clip.end_seconds)
    marks = [(max(e0, context.start_seconds), min(e1, context.end_seconds), "event")]
    marks.append((clip.start_seconds, clip.end_seconds, "clip"))
    if window is not None and (abs(window[0] - e0) > 1e-3 or abs(window[1] - e1) > 1e-3):
        shown = (min(shown[0], window[0]), max(shown[1], window[1]))
        marks.append((window[0], window[1], "best window"))
    view = media.sub_clip(context, *shown)
    plots.spectrogram_png(
        os.path.join(directory, spectrogram),
        view.samples,
        view.sample_rate,
        start_seconds=view.start_seconds,
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
        row("head sha256", [short_hash(p.get("head_sha256")) for p in prov]),
        row("VGGish sha256", [short_hash(p.get("vggish_sha256")) for p in prov]),
        row("PCA sha256", [short_hash(p.get("pca_sha256")) for p in prov]),
        row("code version", [p.get("code_version") for p in prov]),
    ]
    if any(p.get("embedding_model") for p in prov):  # runs on another embedding model than VGGish
        rows += [
            row(
                "embedding model",
                [f"{p.get('embedding_model') or 'vggish'} (frames every {p.get('embedding_hop_seconds') or 0.96:g} s)"
                 for p in prov],
            ),
            row("embedding files sha256", [p.get("embedding_sha256") or "" for p in prov]),
        ]
    rows += [
        # runs from before the precision columns existed ran fp32 TensorFlow
        row("precision", [(p.get("precision") or "fp32") if p else "" for p in prov]),
        row("embedding runtime", [p.get("embedding_runtime") or ("TensorFlow" if p else "") for p in prov]),
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
    plots.histogram_png(
        os.path.join(media_dir, "histogram.png"),
        edges,
        counts,
        threshold={names[i]: t for i, t in enumerate(thresholds) if t is not None},
    )

    # Groups and heatmaps.
    group_sections, group_rows, index_heatmaps, heatmaps = [], [], [], []
    for i in runs:
        groups = tables.group_counts(i, args.group_pattern)
        drawn = [g["grp"] for g in groups if g["detected"] > 0][:MAX_HEATMAP_GROUPS]
        timed = tables.calendar(
            i, args.group_pattern, [g["grp"] for g in groups if g["detected_utc"] > 0 and g["grp"] in drawn]
        )
        untimed = tables.recording_timelines(
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
                    draw = {"fn": plots.heatmap_png, "counts": data["counts"], "row_labels": data["rows"],
                            "col_labels": cols, "xlabel": xlabel, "title": f"{names[i]} / {grp}"}  # fmt: skip
                    png, alt = f"heatmap-r{i}-g{k:03d}-utc.png", f"heatmap {names[i]} {grp}"
                else:
                    caption = (
                        f"{names[i]} / {grp}: window scores of the recordings without timestamps that have"
                        " detections, most detections first (best score per stretch; dashed: threshold)"
                    )
                    if data["more"] > 0:
                        caption += f"; {data['more']} more such recordings are in the recordings table"
                    rows = [{**r, "label": r["source"].rsplit("/", 1)[-1][-60:] + f"  ({r['detected']} detected)"}
                            for r in data["rows"]]  # fmt: skip
                    draw = {"fn": plots.recording_timelines_png, "rows": rows, "threshold": thresholds[i],
                            "title": f"{names[i]} / {grp}"}  # fmt: skip
                    png, alt = f"timelines-r{i}-g{k:03d}.png", f"score timelines {names[i]} {grp}"
                heatmaps.append({"key": (i, k), "png": png, "caption": caption, "alt": alt, "draw": draw})
    _LOG.info("summary, histogram and group queries: %.1f s", time.monotonic() - clock)
    clock = time.monotonic()
    drawn_maps = media.map_with_progress(
        lambda job: job["draw"]["fn"](
            os.path.join(media_dir, job["png"]), **{k: v for k, v in job["draw"].items() if k != "fn"}
        ),
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
    frame_events = [(m or {}).get("events_from") == "frames" for m in tables.manifests]
    # seconds one frame covers (run.json's embedding model; runs before it: VGGish's 0.96 s)
    frame_seconds = [
        ((m or {}).get("embedding") or {}).get("frame_seconds") or params.FRAME_SECONDS for m in tables.manifests
    ]
    frames = [tables.windows_in_spans(i, spans, "frames") if frame_events[i] else {} for i in runs]
    tasks = []
    for k, item in enumerate(events):
        primary = item["events"][item["primary"]]
        e0, e1 = item["start_seconds"], item["end_seconds"]
        rows = windows[item["primary"]].get(k, [])
        inside = [w for w in rows if w[1] > e0 and w[0] < e1]
        best = max(inside, key=lambda w: (w[2], -w[0])) if inside else None
        item["window"] = (best[0], best[1]) if best else None
        item["window_score"] = best[2] if best else None
        # Each run's score of this event: its event's peak_score (the best window, or for a
        # frame-level head the best frame); for a run without an event here, its best window.
        item["peaks"], item["window_peaks"] = {}, {}
        for i in runs:
            own = [w[2] for w in windows[i].get(k, []) if w[1] > e0 and w[0] < e1]
            item["window_peaks"][i] = max(own, default=None)
            event = item["events"].get(i)
            item["peaks"][i] = float(event["peak_score"]) if event is not None else None
        peak_start = float(primary["peak_seconds"])
        width = primary.get("window_seconds") or 9.6
        frame = frame_seconds[item["primary"]]
        if frame_events[item["primary"]]:
            width = frame
        peak = (peak_start, min(peak_start + width, max(e1, peak_start + frame)))
        duration = primary.get("duration_seconds")
        item["rank"] = k + 1
        item["stem"] = f"event-{k + 1:04d}"
        tasks.append(
            {
                "stem": item["stem"],
                "directory": media_dir,
                "ref": refs.get(item["source"]),
                "window": item["window"],
                "event": (e0, e1),
                "peak": peak,
                "recording_seconds": duration,
                "clip_seconds": args.clip_seconds,
                "max_clip_seconds": args.max_clip_seconds,
                "timeline": {names[i]: windows[i].get(k, []) for i in runs},
                "frames": {names[i]: frames[i][k] for i in runs if frames[i].get(k)},
                "threshold": {names[i]: t for i, t in enumerate(thresholds) if t is not None},
                "span": (
                    max(0.0, spans[k][2]),
                    spans[k][3] if duration is None else min(spans[k][3], duration),
                ),
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
        intro=[Markup("<p class='note'>The {} events with the highest peak score{}: the events table's peak_score, the best window"
                      " of the event (the best frame for a frame-level head); blank: that run has no event there. Raven table: <a href='{}'>{}</a>.</p>").format(
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
                + ", log scale; dashed: "
                + ("each run's threshold." if len(names) > 1 else "threshold."),
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
             "best_window": list(item["window"]) if item["window"] else None,
             "peak_scores": {names[i]: item["peaks"].get(i) for i in runs},
             "best_window_scores": {names[i]: item["window_peaks"].get(i) for i in runs},
             **{k: item["media"].get(k) for k in ("clip", "spectrogram", "timeline", "clip_start_seconds", "clip_holds_event",
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
    ]
    if item["window"]:
        facts.append(
            (
                "best window (s)",
                f"{item['window'][0]:.2f} - {item['window'][1]:.2f}, score {item['window_score']:.4f}",
            )
        )
    for i, name in enumerate(names):
        event = item["events"].get(i)
        window_peak = item["window_peaks"].get(i)
        if event is not None:
            text = (
                f"{float(event['peak_score']):.4f} (event {event['start_seconds']:.2f} - "
                f"{event['end_seconds']:.2f} s, {event['num_windows']} windows)"
            )
        elif window_peak is not None:
            text = f"no event; best window {window_peak:.4f} (below the threshold)"
        else:
            text = "not scored"
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
        parts.append(
            html.section(
                "Spectrogram",
                html.figure(
                    f"{html.MEDIA_DIR}/{result['spectrogram']}",
                    "spectrogram",
                    "The clip and the best window overlapping the event; solid lines start and dashed "
                    "lines end the event, the clip and the best window.",
                ),
            )
        )
    if result.get("clip"):
        note = (
            f"Mono, 16-bit PCM at the recording's own rate: the event with {CLIP_MARGIN_SECONDS:g} s before"
            " and after it (at least --clip_seconds, at most --max_clip_seconds, inside the recording)."
        )
        if not result.get("clip_holds_event", True):
            note += " The event is longer than that: the clip is centred on its loudest moment near its peak."
        parts.append(
            html.section(
                "Listen",
                html.audio(f"{html.MEDIA_DIR}/{result['clip']}"),
                Markup("<p class='note'>{}</p>").format(note),
            )
        )
    if result.get("timeline"):
        parts.append(
            html.section(
                "Window scores around the event",
                html.figure(
                    f"{html.MEDIA_DIR}/{result['timeline']}",
                    "score timeline",
                    "Shaded: the event; dashed: threshold"
                    + ("; thin line: the head's frame scores." if result.get("timeline_frames") else "."),
                ),
            )
        )
    raven = annotations.format_selection_table(
        [{"file": item["source"], "start_seconds": item["start_seconds"], "end_seconds": item["end_seconds"],
          "label": "detection", "Score": float(primary["peak_score"])}],
        extra_columns=["Score"],
    )  # fmt: skip
    parts.append(html.section("Raven selection", raven_table(raven, id="raven")))
    site.write(f"{item['stem']}.html", f"Event {item['rank']}: {item['source'].rsplit('/', 1)[-1]}", parts)


def main(argv=None) -> int:
    try:
        run(argv)
    except (FileNotFoundError, FileExistsError, GunshotError) as e:
        return arguments.fail("report", e)
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    logs.configure_logging(logs.flags_from_argv(argv))
    startup.exit_process(main(argv))  # a finished run ends without the interpreter's teardown
