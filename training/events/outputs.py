"""Stage 4 of `gunshot evaluate-events`: files written to --output.

Raven review tables of misses and false alarms, CSV tables, the plots (pr.png,
recall_vs_false_alarms.png) and report.md with the scorers side by side.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence

import numpy as np

from gunshot_core import annotations as ann
from training.events.figures import RUN_THRESHOLD, TARGET_RECALL, UNANNOTATED, Outcome, attribute_false_alarm
from training.events.inputs import Run

MISS_LABEL = "missed gunshot"
FALSE_ALARM_LABEL = "false alarm"


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


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text)


def write_csv(path: str, rows: list[dict], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in fields})
    write_text(path, buffer.getvalue())


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_plots(out_dir: str, sweeps: dict[str, list[dict]], points: dict[str, dict]) -> list[str]:
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


def format_value(value, pct=False) -> str:
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
                cells.append("not reached" if fig is None else format_value(fig[key], pct))
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
                cells.append(
                    "-" if best is None else f"{format_value(best['recall'], True)} ({best['threshold']:.3g})"
                )
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
            f"| {n} | {s['head_name']} | {s['model_id']} | {format_value(s['window_seconds'])} | "
            f"{format_value(s['hop_seconds'])} | `{s['directory']}` |"
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
            cells += (
                [format_value(r["recall"], True), format_value(r["false_alarms_per_hour"])]
                if r
                else ["-", "-"]
            )
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
            cells += [format_value(r["detected_rate"], True), str(r["false_alarms"])] if r else ["-", "-"]
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
    write_text(path, "\n".join(lines))
    return path
