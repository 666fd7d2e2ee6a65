"""`gunshot calibrate`: per-group thresholds and counts with 90 % intervals from reviewed samples.

    gunshot calibrate --scores runs/siteA --verdicts reviews/siteA --target_precision 0.9 --output cal/

Reads the review folder (`gunshot review sample` + verdicts.csv) and the scoring runs it was drawn
from, then per group (site) and overall: a logistic regression of the verdict on logit(score), the
lowest threshold whose expected precision on the group's windows reaches the target and the recall
it implies (both from the fit over the group's scores; from a probability sample also the
design-based recall and precision: estimated gunshot windows above the threshold over all of them,
resp. over the windows above it). Answered items count as their verdicts, the others as the fit's
p(s). Each group's intercept is shrunk toward the overall fit by empirical Bayes (`--pooling partial`,
review_stats.fit_partial_pooling); with `--pooling none` a group with fewer than --min_verdicts
answers (or fewer than 3 yes or 3 no) uses the overall fit, else its own, and the outputs say so. From a probability sample (stratified or
random) also the estimated number of windows holding a gunshot per group, per day and overall, with
90 % intervals (`gunshot_core.review_stats`: model-assisted stratified estimator; assumptions in
docs/review.md). Several reviewers: an item counts when their latest yes/no answers agree; unsure or
disagreeing items are left out (treated as missing at random within their stratum).

Writes CAL_DIR/calibration.json (read by `gunshot report --thresholds`), thresholds.csv,
counts_groups.csv, counts_days.csv, reliability.png and index.html (the report's page style).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np

from gunshot_core import arguments, logs, review_stats
from gunshot_core.errors import GunshotError

CALIBRATION_JSON = "calibration.json"
OVERALL = "(all)"
MIN_EACH = 3  # yes and no answers a group needs for its own fit
POOLING = ("partial", "none")


class CalibrationError(GunshotError):
    """The verdicts cannot support a calibration (too few, all alike, runs that do not match)."""


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "calibrate",
        description="Per-group (site) thresholds reaching a target precision, the recall they imply, and "
        "estimated gunshot counts with 90 %% intervals, from verdicts of a `gunshot review` sample.",
    )
    parser.add_argument(
        "--scores",
        action="append",
        metavar="RUN_DIR",
        help="scoring run(s) the sample was drawn from (default: those recorded in REVIEW_DIR/review.json)",
    )
    parser.add_argument("--verdicts", required=True, metavar="REVIEW_DIR", help="the review folder")
    parser.add_argument(
        "--target_precision", type=float, default=0.9, help="precision wanted at the threshold (default 0.9)"
    )
    parser.add_argument(
        "--min_recall",
        type=float,
        help="implied recall the threshold must keep (share of the true items of the frame it detects, "
        "estimated from the verdicts; for events: of the gunshots the run detected, not of all); "
        "when the target precision would cost more, the highest threshold keeping it is used and the "
        "note says so (default: none)",
    )
    parser.add_argument("--output", required=True, metavar="CAL_DIR", help="local folder for the results")
    parser.add_argument(
        "--pooling",
        choices=POOLING,
        default="partial",
        help="per-group fits: 'partial' shrinks each group's intercept toward the overall fit, by how much "
        "its verdicts disagree with it and how many it has (empirical Bayes, docs/review.md); 'none' fits "
        "each group on its own, or uses the overall fit below --min_verdicts (default partial)",
    )
    parser.add_argument(
        "--min_verdicts",
        type=int,
        default=30,
        help="with --pooling none: answers a group needs for its own fit; fewer: the overall fit is used "
        "(default 30)",
    )
    logs.add_logging_flags(parser)
    return parser


def _answered(review_dir: str, frame, sample_rows: list[dict]):
    """Frame indices and yes/no of the items whose reviewers agree; sample membership of each."""
    from pipelines.review import verdicts as verdicts_io

    rows = verdicts_io.read_verdicts(review_dir)
    if not rows:
        raise CalibrationError(
            f"{review_dir} holds no verdicts yet; review first: gunshot review serve {review_dir}"
        )
    decided = verdicts_io.consensus(rows)
    window_of = {key: i for i, key in enumerate(frame.keys())}
    by_item = {}
    for row in rows:
        by_item.setdefault(row["item_id"], (row["source"], round(float(row["start_seconds"]), 3)))
    in_sample = {r["item_id"] for r in sample_rows}
    indices, yes, sampled, unmatched = [], [], [], 0
    for item, verdict in sorted(decided.items()):
        if verdict == "unsure":
            continue
        index = window_of.get(by_item[item])
        if index is None:
            unmatched += 1
            continue
        indices.append(index)
        yes.append(verdict == "yes")
        sampled.append(item in in_sample)
    return np.array(indices, np.int64), np.array(yes, bool), np.array(sampled, bool), len(decided), unmatched


def calibrate(
    frame,
    answered: np.ndarray,
    yes: np.ndarray,
    *,
    target_precision: float,
    min_verdicts: int,
    strata: np.ndarray | None,
    sampled: np.ndarray,
    min_recall: float | None = None,
    pooling: str = "partial",
) -> dict:
    """Fits, thresholds and counts.

    Args:
      frame: the windows (pipelines.review.frame.Frame).
      answered: int [m] frame indices of the items with a yes/no verdict.
      yes: bool [m] their verdicts.
      target_precision: precision wanted.
      min_verdicts: answers a group needs for its own fit.
      strata: object [n] stratum of every frame window for a probability sample, else None (no counts).
      sampled: bool [m] whether each answered item belongs to the sample (others only help the fit).
      min_recall: implied recall each threshold must keep (review_stats.threshold_for_precision).
      pooling: "partial" (review_stats.fit_partial_pooling: group intercepts shrunk toward the overall
        fit) or "none" (own fit per group, the overall one below `min_verdicts`).
    Returns:
      dict with `overall`, `groups` ({group: result}) and `counts` (`groups`, `days`, `overall`).
    """
    if answered.size < 2 or yes.all() or not yes.any():
        raise CalibrationError(
            f"{answered.size} yes/no verdicts ({int(yes.sum())} yes): a fit needs both yes and no answers;"
            " review more items"
        )
    overall_model = review_stats.fit_logistic(frame.scores[answered], yes)

    pooled = None
    if pooling == "partial":
        pooled = review_stats.fit_partial_pooling(
            frame.scores[answered], yes, frame.groups[answered], overall=overall_model
        )

    heard = np.full(len(frame), np.nan)  # float [n]: 1/0 for the answered items, NaN for the others
    heard[answered] = yes

    def result(model, inside, own, n, k, note):
        scores = frame.scores[inside]
        choice = review_stats.threshold_for_precision(
            model, scores, target_precision, min_recall=min_recall, known=heard[inside]
        )
        return {
            "threshold": choice.threshold,
            "expected_precision": choice.precision,
            "implied_recall": choice.recall,
            "detections": choice.detections,
            "windows": int(scores.size),
            "target_reached": choice.reached,
            "fit": {
                "intercept": model.intercept,
                "slope": model.slope,
                "source": own if isinstance(own, str) else ("own" if own else "overall"),
            },
            "verdicts": n,
            "yes": k,
            "note": note,
        }

    overall = result(overall_model, np.ones(len(frame), bool), True, int(answered.size), int(yes.sum()), "")
    groups, models = {}, {}
    answered_groups = frame.groups[answered]
    for group in sorted(set(frame.groups.tolist())):
        mine = answered_groups == group
        n, k = int(mine.sum()), int(yes[mine].sum())
        model, note = overall_model, ""
        if pooled is not None:
            model = pooled.model(group)
            offset, sd = pooled.offsets.get(group, 0.0), pooled.offset_sd.get(group, 0.0)
            models[group] = model
            groups[group] = result(model, frame.groups == group, "pooled", n, k, "")
            groups[group]["fit"].update(offset=offset, offset_sd=sd, tau=pooled.tau)
            note = (
                f"pooled: intercept {offset:+.2f} from the overall fit (posterior sd {sd:.2f}; between-group"
                f" sd {pooled.tau:.2f}; {n} verdicts, {k} yes)"
            )
            groups[group]["note"] = note
        elif n < min_verdicts or k < MIN_EACH or n - k < MIN_EACH:
            note = (
                f"overall fit used: {n} verdicts ({k} yes, {n - k} no); a group's own fit needs"
                f" >= {min_verdicts} with >= {MIN_EACH} of each"
            )
        else:
            model = review_stats.fit_logistic(frame.scores[answered][mine], yes[mine])
        if pooled is None:
            models[group] = model
            groups[group] = result(model, frame.groups == group, not note, n, k, note)
        if not groups[group]["target_reached"]:
            groups[group]["note"] = (groups[group]["note"] + "; " if note else "") + (
                f"precision {target_precision} would cost recall below {min_recall}: the highest threshold"
                " keeping that recall is given"
                if min_recall is not None and groups[group]["implied_recall"] >= min_recall
                else f"no threshold reaches precision {target_precision}: the most precise one is given"
            )
    counts = None
    if strata is not None:
        predicted = np.empty(len(frame))
        for group, model in models.items():
            inside = frame.groups == group
            predicted[inside] = model.predict(frame.scores[inside])
        codes = np.unique(strata, return_inverse=True)[1]
        sample_index, sample_yes = answered[sampled], yes[sampled]
        unseen = sorted(set(strata.tolist()) - set(strata[sample_index].tolist()))
        counts = {"unanswered_strata": unseen}
        for name, domains in (("groups", frame.groups), ("days", frame.days), ("overall", None)):
            estimates = review_stats.estimate_totals(
                codes, sample_index, sample_yes, domains=domains, predicted=predicted
            )
            counts[name] = {
                str(d): {
                    "estimate": e.total,
                    "low90": e.low,
                    "high90": e.high,
                    "standard_error": e.standard_error,
                    "verdicts": e.answered,
                    "yes": e.yes,
                    "windows": int(len(frame) if domains is None else (domains == d).sum()),
                }
                for d, e in estimates.items()
            }
        counts["overall"] = counts["overall"]["all"]
        # Design-based recall and precision at each threshold, beside the model's: estimated gunshot
        # windows above it over all of the group's (resp. over the windows above it). On synthetic
        # runs neither is uniformly closer to the truth: the model's leans on the fit's tails, the
        # design's on few verdicts in the large low-score bins.
        for group, r in [(None, overall)] + list(groups.items()):
            inside = np.ones(len(frame), bool) if group is None else frame.groups == group
            position = np.cumsum(inside) - 1  # frame index -> index among the group's windows
            mine = inside[sample_index]
            recall, precision = review_stats.design_recall(
                codes[inside],
                position[sample_index[mine]],
                sample_yes[mine],
                predicted[inside],
                frame.scores[inside] >= r["threshold"],
            )
            r["design_recall"], r["design_precision"] = recall, precision
    return {"overall": overall, "groups": groups, "counts": counts}


def _write_csv(path, columns, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def reliability_png(path: str, scores: np.ndarray, yes: np.ndarray, model, bins: int = 8) -> None:
    """Observed share of yes per bin of predicted probability against the prediction (and counts)."""
    from pipelines.report import plots

    predicted = model.predict(scores)
    edges = np.linspace(0, 1, bins + 1)
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    figure = plots._figure(4.5, 3.6)
    axes = figure.add_axes((0.14, 0.14, 0.82, 0.76))
    axes.plot([0, 1], [0, 1], color="#999", linewidth=1, linestyle="--", label="perfect")
    xs, ys, ns = [], [], []
    for b in range(bins):
        inside = which == b
        if inside.any():
            xs.append(float(predicted[inside].mean()))
            ys.append(float(yes[inside].mean()))
            ns.append(int(inside.sum()))
    axes.plot(xs, ys, marker="o", color="#c0392b", label="verdicts")
    for x, y, n in zip(xs, ys, ns, strict=True):
        axes.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xticks(edges[::2])
    axes.set_xlabel("fitted probability of a gunshot", fontsize=8)
    axes.set_ylabel("share answered yes", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, loc="upper left")
    figure.suptitle("reliability of the overall fit (numbers: verdicts per bin)", fontsize=8)
    plots._save(figure, path)


def write_outputs(output: str, result: dict, meta: dict, answered_scores, answered_yes) -> None:
    """calibration.json, thresholds.csv, counts_*.csv, reliability.png and index.html."""
    from pipelines.report import html

    os.makedirs(output, exist_ok=True)
    document = dict(meta, **result)
    with open(os.path.join(output, CALIBRATION_JSON), "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2, sort_keys=True, allow_nan=True)
        f.write("\n")
    threshold_rows = [
        dict(group=g, **_flat(r))
        for g, r in [(OVERALL, result["overall"])] + sorted(result["groups"].items())
    ]
    threshold_columns = [
        "group", "threshold", "expected_precision", "implied_recall", "detections", "windows",
        "target_reached", "fit_source", "intercept", "slope", "verdicts", "yes", "note",
    ]  # fmt: skip
    _write_csv(os.path.join(output, "thresholds.csv"), threshold_columns, threshold_rows)
    count_columns = ["domain", "estimate", "low90", "high90", "standard_error", "verdicts", "yes", "windows"]
    counts = result["counts"]
    if counts:
        for name in ("groups", "days"):
            rows = [dict(domain=d or "(no timestamp)", **c) for d, c in sorted(counts[name].items())]
            _write_csv(os.path.join(output, f"counts_{name}.csv"), count_columns, rows)
    site = html.Site(output, title="gunshot calibration")
    model = review_stats.Logistic(result["overall"]["fit"]["intercept"], result["overall"]["fit"]["slope"])
    reliability_png(
        os.path.join(output, html.MEDIA_DIR, "reliability.png"), answered_scores, answered_yes, model
    )
    Column = html.Column
    parts = [
        html.section(
            "Review",
            html.kv_table(
                [
                    ("review folder", meta["verdicts"]),
                    ("scoring runs", ", ".join(meta["scores"])),
                    ("sample strategy", meta["strategy"]),
                    ("review items", meta.get("item_kind", "windows")),
                    ("target precision", meta["target_precision"]),
                    ("recall floor", "none" if meta.get("min_recall") is None else meta["min_recall"]),
                    ("yes/no verdicts used", meta["verdicts_used"]),
                    ("items left out (unsure or reviewers disagree)", meta["left_out"]),
                ]
            ),
        ),
        html.section(
            "Thresholds",
            html.table(
                [
                    Column("group", "group"),
                    Column("threshold", "threshold", "num", ".4f"),
                    Column("expected_precision", "expected precision", "num", ".3f"),
                    Column("implied_recall", "implied recall", "num", ".3f"),
                    Column("detections", "detections", "num"),
                    Column("windows", "windows", "num"),
                    Column("verdicts", "verdicts", "num"),
                    Column("yes", "yes", "num"),
                    Column("fit_source", "fit"),
                    Column("note", "note", "wrap"),
                ],
                threshold_rows,
                id="thresholds",
            ),
            html.figure(
                "media/reliability.png",
                "reliability plot",
                "Fitted probability against the share of yes answers.",
            ),
        ),
    ]
    if counts:
        count_cols = [
            Column("domain", "group / day"),
            Column("estimate", "estimated gunshot windows", "num", ".1f"),
            Column("low90", "90 % low", "num", ".1f"),
            Column("high90", "90 % high", "num", ".1f"),
            Column("verdicts", "verdicts", "num"),
            Column("yes", "yes", "num"),
            Column("windows", "windows", "num"),
        ]
        overall = dict(domain=OVERALL, **counts["overall"])
        parts.append(
            html.section(
                "Counts",
                html.table(
                    count_cols,
                    [overall] + [dict(domain=d, **c) for d, c in sorted(counts["groups"].items())],
                    id="counts-groups",
                ),
                html.table(
                    count_cols,
                    [dict(domain=d or "(no timestamp)", **c) for d, c in sorted(counts["days"].items())],
                    id="counts-days",
                ),
                html.Markup("<p class='note'>{}</p>").format(meta["estimator"]),
            )
        )
    else:
        parts.append(html.section("Counts", html.problem(meta["estimator"])))
    site.write("index.html", "Calibration", parts)


def _flat(r: dict) -> dict:
    flat = {k: v for k, v in r.items() if k != "fit"}
    flat.update(fit_source=r["fit"]["source"], intercept=r["fit"]["intercept"], slope=r["fit"]["slope"])
    return flat


ESTIMATOR = (
    "Counts are numbers of windows holding a gunshot among the windows offered for review, estimated "
    "with the model-assisted stratified estimator from the sample's inclusion probabilities; 90 % "
    "intervals by the normal approximation. Assumes the sample was drawn as recorded, verdicts are "
    "right, and unsure items are like the answered ones of their score bin (docs/review.md)."
)


def run(args) -> dict:
    from pipelines.review import frame as frame_io
    from pipelines.review import sample as sample_io

    sample_rows = sample_io.read_sample(args.verdicts)
    manifest = sample_io.read_manifest(args.verdicts)
    runs = args.scores or manifest.get("scores")
    if not runs:
        raise CalibrationError(f"{args.verdicts}/review.json names no scoring runs; pass --scores RUN_DIR")
    item_kind = manifest.get("item_kind", "windows")
    frame = frame_io.read_frame(
        runs,
        group_pattern=manifest.get("group_pattern"),
        min_score=float(manifest.get("min_score") or 0.0),
        items=item_kind,
    )
    strategy = manifest.get("strategy", "")
    strata = None
    if strategy in sample_io.PROBABILITY_STRATEGIES:
        strata = sample_io.strata_of(frame, strategy, int(manifest["bins"]), bool(manifest["per_group"]))
        with open(os.path.join(args.verdicts, sample_io.STRATA_CSV), newline="", encoding="utf-8") as f:
            recorded = {r["stratum"]: int(r["population"]) for r in csv.DictReader(f)}
        now = {str(k): int(v) for k, v in zip(*np.unique(strata, return_counts=True), strict=True)}
        if recorded != now:
            raise CalibrationError(
                f"the windows of {', '.join(runs)} are not those the sample was drawn from"
                f" ({sum(now.values())} windows now, {sum(recorded.values())} when sampled); pass the same --scores"
            )
    answered, yes, sampled, decided, unmatched = _answered(args.verdicts, frame, sample_rows)
    if unmatched:
        raise CalibrationError(
            f"{unmatched} verdicts name windows that are not in {', '.join(runs)}; pass the runs the sample came from"
        )
    result = calibrate(
        frame,
        answered,
        yes,
        target_precision=args.target_precision,
        min_verdicts=args.min_verdicts,
        strata=strata,
        sampled=sampled,
        min_recall=args.min_recall,
        pooling=args.pooling,
    )
    meta = {
        "scores": list(runs),
        "verdicts": args.verdicts,
        "strategy": strategy,
        "item_kind": item_kind,
        "group_pattern": manifest.get("group_pattern"),
        "target_precision": args.target_precision,
        "min_recall": args.min_recall,
        "min_verdicts": args.min_verdicts,
        "pooling": args.pooling,
        "verdicts_used": int(answered.size),
        "left_out": decided - int(answered.size),
        "estimator": ESTIMATOR
        if strata is not None
        else f"No counts: a {strategy or 'non-probability'} sample has no inclusion probabilities;"
        " draw a stratified or random sample for counts.",
    }
    write_outputs(args.output, result, meta, frame.scores[answered], yes)
    return dict(meta, **result)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.target_precision < 1:
        parser.error(f"--target_precision must be in (0, 1), got {args.target_precision}")
    if args.min_recall is not None and not 0 < args.min_recall <= 1:
        parser.error(f"--min_recall must be in (0, 1], got {args.min_recall}")
    if "://" in args.output:
        parser.error(f"--output must be a local folder (got {args.output})")
    try:
        result = run(args)
    except Exception as e:  # noqa: BLE001 - user errors become one line; anything else is re-raised
        if not arguments.is_user_error(e):
            raise
        return arguments.fail("calibrate", e)
    print(f"{'group':<20} {'threshold':>9} {'precision':>9} {'recall':>7}  note")
    for group, r in [(OVERALL, result["overall"])] + sorted(result["groups"].items()):
        print(
            f"{group:<20} {r['threshold']:>9.4f} {r['expected_precision']:>9.3f} {r['implied_recall']:>7.3f}  {r['note']}"
        )
    if result["counts"]:
        c = result["counts"]["overall"]
        print(
            f"estimated gunshot windows: {c['estimate']:.1f} (90 % interval {c['low90']:.1f}-{c['high90']:.1f})"
        )
    print(f"-> {os.path.join(args.output, CALIBRATION_JSON)}, {os.path.join(args.output, 'index.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
