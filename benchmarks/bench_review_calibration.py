"""Per-site calibration from 100 reviewed windows or events on synthetic field sites, against the head card's
threshold.

    python benchmarks/bench_review_calibration.py [--work DIR] [--minutes 3] [--verdicts 100]
    python benchmarks/bench_review_calibration.py --work DIR --heldout_confusers_per_minute 8 \
        --items events --min_recall 0.5 --seeds 1 2 3 4 5 6 7 8      # the table in docs/review.md

A frame-pooling head is trained on four synthetic sites (tests/field_sites.py, as
tests/test_adapt_loop.py does, with the random-weight VGGish of the test fixtures), then scores four
held-out sites. From that run a stratified review sample of `--verdicts` items (per site; windows
and events side by side, `--items`) is drawn and answered from the generator's annotations (an item
is "yes" when it overlaps an annotated gunshot), `gunshot calibrate` fits per-site thresholds for precision 0.9, `gunshot batch
--thresholds` re-derives the events, and `gunshot evaluate-events` compares the card's threshold
with the calibrated ones on the held-out annotations: event recall and false alarms per hour, side
by side in one run. Prints one JSON line with the figures (per seed with `--seeds`, then a table).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gunshot_core import cli  # noqa: E402
from pipelines.review import sample, verdicts  # noqa: E402
from tests import field_sites, review_runs  # noqa: E402

TRAIN_SITES = ("site1", "site2", "site3", "site4")
HELDOUT_SITES = ("site5", "site6", "site7", "site8")
NEGATIVES = ("speech", "footsteps", "click", "branch")


def random_vggish() -> tuple[str, str]:
    import hashlib

    from tests.conftest import RECIPE, _cache_root, load_recipe  # the test fixtures' cached model

    digest = hashlib.sha256(RECIPE.read_bytes()).hexdigest()[:16]
    recipe = load_recipe()
    directory = _cache_root() / f"vggish-random-{digest}"
    ckpt, pca = directory / recipe.CKPT_NAME, directory / recipe.PCA_NAME
    if not (ckpt.exists() and pca.exists()):
        sys.exit(f"{directory} lacks the random VGGish: run any test using the random_vggish fixture first")
    return str(ckpt), str(pca)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--verdicts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="several held-out seeds in one run (the head is trained once): a JSON line per seed, then a"
        " markdown table of every seed",
    )
    parser.add_argument("--target_precision", type=float, default=0.9)
    parser.add_argument(
        "--heldout_confusers_per_minute",
        type=float,
        help="make the held-out sites apart, with this many confusers (clicks, branch snaps, speech, "
        "footsteps) per minute instead of the training sites' 4: a soundscape the head never met",
    )
    parser.add_argument("--min_verdicts", type=int, default=30, help="gunshot calibrate --min_verdicts")
    parser.add_argument("--min_recall", type=float, help="gunshot calibrate --min_recall")
    parser.add_argument("--pooling", default="partial", help="gunshot calibrate --pooling")
    parser.add_argument(
        "--tag", default="", help="suffix of the review/calibration folders (to keep several)"
    )
    parser.add_argument(
        "--items",
        nargs="+",
        choices=("windows", "events"),
        default=["windows", "events"],
        help="review items compared side by side (gunshot review sample --items)",
    )
    args = parser.parse_args()
    args.work = args.work or tempfile.mkdtemp(prefix="bench-review-")
    results = []
    for seed in args.seeds or [args.seed]:
        args.seed = seed
        results.append(measure(args))
        print(json.dumps(results[-1]), flush=True)
    if args.seeds:
        print(table(results))
    return 0


def table(results: list[dict]) -> str:
    """Markdown: per seed the card's and the calibrated event recall / false alarms per hour, the cut."""
    lines = [
        "| seed | card: recall / FA per h | calibrated: recall / FA per h | FA cut | >= 5x at >= 0.5 recall |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        card = r["card_threshold"]
        for kind, c in r["calibrated"].items():
            ratio = c["false_alarm_ratio"]
            cut = "all removed" if ratio is None else f"{ratio:.1f}x"
            met = (ratio is None or ratio >= 5) and c["recall"] >= 0.5
            lines.append(
                f"| {r['seed']}{'' if len(r['calibrated']) == 1 else ' ' + kind} | {card['recall']:.2f} /"
                f" {card['false_alarms_per_hour']:.0f} | {c['recall']:.2f} / {c['false_alarms_per_hour']:.0f}"
                f" | {cut} | {'yes' if met else 'no'} |"
            )
    return "\n".join(lines)


def measure(args) -> dict:
    """Trains the head once (cached in args.work), scores the held-out sites of args.seed, reviews,
    calibrates, re-derives and evaluates; returns the figures."""
    work = pathlib.Path(args.work)
    ckpt, pca = random_vggish()
    models = ["--checkpoint", ckpt, "--pca", pca]
    started = time.monotonic()
    sites = work / "sites"
    insertions = field_sites.make_sites(
        sites, sites=TRAIN_SITES + HELDOUT_SITES, recordings_per_site=1, minutes=args.minutes, seed=args.seed,
        gunshots_per_minute=4.0, confusers_per_minute=4.0,
    )  # fmt: skip
    train_audio = [a for s in TRAIN_SITES for a in ("--audio", str(sites / s))]
    train_notes = [a for s in TRAIN_SITES for a in ("--annotations", str(sites / s))]
    out = work  # where the held-out scores, review, calibration and evaluation go
    heldout_sites = sites
    if args.heldout_confusers_per_minute is not None:
        out = work / f"confusers{args.heldout_confusers_per_minute:g}-seed{args.seed}"
        heldout_sites = out / "sites"
        insertions = field_sites.make_sites(
            heldout_sites, sites=HELDOUT_SITES, recordings_per_site=1, minutes=args.minutes, seed=args.seed + 1,
            gunshots_per_minute=4.0, confusers_per_minute=args.heldout_confusers_per_minute,
        )  # fmt: skip
    heldout = [a for s in HELDOUT_SITES for a in ("--input", str(heldout_sites / s))]
    pattern = "/(site[0-9]+)/"

    def step(*argv):
        status = cli.main(list(argv))
        if status:
            sys.exit(f"step failed ({status}): gunshot {' '.join(argv)}")

    if not (work / "head").exists():
        step("dataset", *train_audio, *train_notes, "--negative", *NEGATIVES, "--group_pattern", pattern,
             "--split", "train=0.75", "--split", "eval=0.25", "--positive_shifts", "2",
             "--negatives_per_hour", "300", "--output", str(work / "dataset"), *models)  # fmt: skip
        step("transform", "--train", str(work / "dataset" / "train"), "--eval", str(work / "dataset" / "eval"),
             "--output", str(work / "tft"))  # fmt: skip
        step("train", "--transformed", str(work / "tft"), "--model", "framepool", "--output", str(work / "head"),
             "--verbose", "0")  # fmt: skip
    if not (out / "scores").exists():
        step("batch", *heldout, "--output", str(out / "scores"), "--head", str(work / "head"), *models)
    trained = time.monotonic() - started

    notes = [a for s in HELDOUT_SITES for a in ("--annotations", str(heldout_sites / s))]
    scorers = ["--scores", f"card={out / 'scores'}"]
    calibrations = {}
    for kind in args.items:
        review = out / f"review_{kind}{args.tag}"
        if not (review / sample.SAMPLE_CSV).exists():
            step("review", "sample", "--scores", str(out / "scores"), "--output", str(review), "--size",
                 str(args.verdicts), "--items", kind, "--per_group", "--group_pattern", pattern,
                 "--seed", str(args.seed))  # fmt: skip
        (review / verdicts.VERDICTS_CSV).unlink(missing_ok=True)
        review_runs.answer_from_insertions(review, insertions)
        cal = out / f"cal_{kind}{args.tag}"
        step("calibrate", "--verdicts", str(review), "--target_precision", str(args.target_precision),
             "--output", str(cal), "--min_verdicts", str(args.min_verdicts), "--pooling", args.pooling,
             *(["--min_recall", str(args.min_recall)] if args.min_recall else []))  # fmt: skip
        step("batch", "--thresholds", str(cal / "calibration.json"), "--scores", str(out / "scores"),
             "--output", str(out / f"scores_{kind}{args.tag}"))  # fmt: skip
        scorers += ["--scores", f"{kind}={out / f'scores_{kind}{args.tag}'}"]
        calibrations[kind] = json.loads((cal / "calibration.json").read_text())
    step("evaluate-events", *scorers, *notes, "--group_pattern", pattern,
         "--output", str(out / f"eval{args.tag}"))  # fmt: skip
    metrics = json.loads((out / f"eval{args.tag}" / "metrics.json").read_text())["scorers"]
    card = metrics["card"]["run_threshold"]

    def figures(kind):
        cal = metrics[kind]["run_threshold"]
        calibration = calibrations[kind]
        return {
            "recall": cal["recall"],
            "false_alarms_per_hour": cal["false_alarms_per_hour"],
            "false_alarm_ratio": (card["false_alarms_per_hour"] / cal["false_alarms_per_hour"])
            if cal["false_alarms_per_hour"]
            else None,
            "items_in_frame": calibration["overall"]["windows"],
            "thresholds": {g: round(r["threshold"], 4) for g, r in calibration["groups"].items()},
            "fits": {g: r["fit"]["source"] for g, r in calibration["groups"].items()},
            "offsets": {g: round(r["fit"].get("offset", 0.0), 2) for g, r in calibration["groups"].items()},
            "implied_recall": {g: round(r["implied_recall"], 2) for g, r in calibration["groups"].items()},
        }

    result = {
        "heldout_sites": len(HELDOUT_SITES),
        "minutes_per_site": args.minutes,
        "verdicts": args.verdicts,
        "target_precision": args.target_precision,
        "min_recall": args.min_recall,
        "min_verdicts": args.min_verdicts,
        "pooling": args.pooling,
        "seed": args.seed,
        "card_threshold": {"recall": card["recall"], "false_alarms_per_hour": card["false_alarms_per_hour"]},
        "calibrated": {kind: figures(kind) for kind in args.items},
        "seconds_training_and_scoring": round(trained, 1),
        "seconds_total": round(time.monotonic() - started, 1),
        "heldout_confusers_per_minute": args.heldout_confusers_per_minute or 4.0,
        "work": str(out),
    }
    return result


if __name__ == "__main__":
    sys.exit(main())
