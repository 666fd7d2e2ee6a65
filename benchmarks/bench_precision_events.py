"""Event recall of a framepool head on held-out synthetic field sites at each `--precision`.

The head is trained on float32 embeddings, as heads are; what changes is only how VGGish runs when
the held-out recordings are scored. With the project's own jobs, in this process (DirectRunner):

1. `gunshot batch --write_embeddings --precision fp32` over the training sites
   (tests/field_sites.py: per-site soundscapes, gunshots cut from the seed recordings at 5-20 dB
   SNR among speech, footsteps, click and branch confusers, Raven tables);
2. `gunshot dataset --embeddings`, `gunshot transform`, `gunshot train --model framepool`;
3. `gunshot batch --head HEAD --precision P` over the held-out sites' audio, for every P;
4. `gunshot evaluate-events --scores P=run ...` against the held-out Raven tables (one-to-one
   matching, 1 s tolerance); from its threshold sweep, the highest event recall with at most 10, 20
   and 40 false alarms per hour of held-out audio, and its difference from fp32.

Also printed: the largest change of a frame score against fp32 (the frames tables, row by row).
The goal: recall at <= 20 false alarms per hour within 0.03 of fp32 for bf16 and int8.

    python benchmarks/bench_precision_events.py --random_weights
    python benchmarks/bench_precision_events.py --checkpoint vggish_model.ckpt --pca vggish_pca_params.npz

Held-out sites are sites never seen in training. Every stage is seeded; stages whose output exists in
--workdir are reused (--fresh redoes everything).
"""

import argparse
import json
import logging
import os
import pathlib
import shutil
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_heads_events import recall_within, site_names, stage  # noqa: E402
from benchmarks.bench_score import add_model_arguments, resolve_models  # noqa: E402

CONFUSERS = ("speech", "footsteps", "click", "branch")
FA_BUDGETS = (10.0, 20.0, 40.0)
#: The goal: event recall at <= 20 false alarms per hour within this of fp32's.
RECALL_TOLERANCE = 0.03


def frame_score_change(base: pathlib.Path, other: pathlib.Path) -> tuple[float, int]:
    """(largest |score difference|, frames) between the frames tables of two runs of the same audio."""
    from pipelines.io import tables

    def scores(run):
        table = tables.read_table(str(run), "frames").select(["source", "start_seconds", "score"])
        return table.sort_by([("source", "ascending"), ("start_seconds", "ascending")])

    a, b = scores(base), scores(other)
    if a.column("source").to_pylist() != b.column("source").to_pylist():
        raise RuntimeError(f"{base} and {other} have different frames")
    diff = np.abs(a.column("score").to_numpy() - b.column("score").to_numpy())
    return float(diff.max(initial=0.0)), len(diff)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--workdir", default="/tmp/bench_precision_events", help="(%(default)s)")
    parser.add_argument("--fresh", action="store_true", help="delete --workdir first")
    parser.add_argument("--precision", default="fp32,bf16,int8", help="compared precisions, fp32 first")
    parser.add_argument("--train_sites", type=int, default=4, help="(%(default)s)")
    parser.add_argument("--heldout_sites", type=int, default=4, help="(%(default)s)")
    parser.add_argument("--recordings", type=int, default=2, help="recordings per site (%(default)s)")
    parser.add_argument("--minutes", type=float, default=4.0, help="minutes per recording (%(default)s)")
    parser.add_argument("--gunshots_per_minute", type=float, default=4.0, help="(%(default)s)")
    parser.add_argument("--confusers_per_minute", type=float, default=4.0, help="(%(default)s)")
    parser.add_argument("--epochs", type=int, default=50, help="gunshot train (%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(%(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    resolve_models(parser, args)
    chosen = [p.strip() for p in args.precision.split(",") if p.strip()]
    if chosen[0] != "fp32":
        parser.error("--precision must start with fp32 (the reference)")

    import pyarrow.parquet as pq

    from pipelines import score
    from pipelines.dataset import pipeline as dataset
    from tests import field_sites
    from training import evaluate_events, train, transform

    work = pathlib.Path(args.workdir)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    models = [f"--checkpoint={args.checkpoint}", f"--pca={args.pca}"]
    train_names = site_names("train", args.train_sites)
    heldout_names = site_names("heldout", args.heldout_sites)
    sites = work / "sites"
    insertions = field_sites.make_sites(
        sites,
        sites=train_names + heldout_names,
        recordings_per_site=args.recordings,
        minutes=args.minutes,
        seed=args.seed,
        gunshots_per_minute=args.gunshots_per_minute,
        confusers_per_minute=args.confusers_per_minute,
    )
    heldout_shots = sum(1 for i in insertions if i.site in heldout_names and i.label == field_sites.GUNSHOT)
    times = {}
    train_audio = [f"--input={sites / s}" for s in train_names]
    heldout_audio = [f"--input={sites / s}" for s in heldout_names]
    embeddings = work / "scores_train"
    times["batch train"] = stage(
        embeddings / "run.json",
        "gunshot batch --write_embeddings (training sites, fp32)",
        lambda: score.run([*train_audio, f"--output={embeddings}", "--write_embeddings", *models]),
    )
    ds = work / "dataset"
    notes = [a for s in train_names for a in ("--annotations", str(sites / s))]
    times["dataset"] = stage(
        ds / "stats.json",
        "gunshot dataset --embeddings",
        lambda: dataset.run(
            [f"--embeddings={embeddings}", *notes, "--negative", *CONFUSERS, "--group_pattern"]
            + ["/(train[A-Z])/", "--split", "train=1.0", "--positive_shifts=2"]
            + ["--negatives_per_hour=300", f"--seed={args.seed}", f"--output={ds}"]
        ),
    )
    tft = work / "transformed"
    times["transform"] = stage(
        tft / transform.INFO_FILE,
        "gunshot transform",
        lambda: transform.run(["--train", str(ds / "train"), "--output", str(tft)]),
    )
    head = work / "head"
    times["train"] = stage(
        head / "card.json",
        "gunshot train --model framepool",
        lambda: train.main(
            ["--transformed", str(tft), "--model", "framepool", "--output", str(head), "--overwrite"]
            + [f"--epochs={args.epochs}", f"--seed={args.seed}", "--verbose=0", "--validation_fraction=0.25"]
        ),
    )
    runs = {}
    for p in chosen:
        runs[p] = work / "scores" / p
        times[f"batch {p}"] = stage(
            runs[p] / "run.json",
            f"gunshot batch --head HEAD --precision {p} (held-out sites)",
            lambda p=p: score.run(
                [*heldout_audio, f"--output={runs[p]}", f"--head={head}", f"--precision={p}", *models]
            ),
        )
    evaluation = work / "evaluation"
    shutil.rmtree(evaluation, ignore_errors=True)
    argv = [a for p, run in runs.items() for a in ("--scores", f"{p}={run}")]
    argv += [a for s in heldout_names for a in ("--annotations", str(sites / s))]
    argv += ["--group_pattern", "/(heldout[A-Z])/", "--target_recall", "0.8", "--output", str(evaluation)]
    if evaluate_events.main(argv) != 0:
        print("evaluate-events failed; see its messages above", file=sys.stderr)
        return 1
    sweep = pq.read_table(evaluation / "sweep.parquet").to_pylist()

    results = {
        p: [recall_within([r for r in sweep if r["scorer"] == p], b) for b in FA_BUDGETS] for p in runs
    }
    hours = next(r["hours"] for r in sweep if r["scorer"] == "fp32")
    print()
    print(
        f"framepool head trained on fp32 embeddings of {args.train_sites} sites; held out: "
        f"{args.heldout_sites} sites, {hours:.2f} h, {heldout_shots} gunshots (5-20 dB SNR), "
        f"{args.confusers_per_minute:g} confusers/min; CPU flags: "
        + ", ".join(sorted(_native_flags()) or ["none"])
    )
    header = f"  {'precision':<10}" + "".join(
        f"{'recall@' + format(b, 'g') + '/h':>14}{'FA/h':>7}" for b in FA_BUDGETS
    )
    print(header + f"{'max |frame score - fp32|':>27}")
    base = results["fp32"]
    verdicts = []
    for p, figures in results.items():
        cells = ""
        for (recall, fa, _), (recall0, _, _) in zip(figures, base, strict=True):
            delta = "" if p == "fp32" else f" ({recall - recall0:+.3f})"
            cells += f"{recall:>6.3f}{delta:>9}{fa:>6.1f}"
        change = (
            "" if p == "fp32" else "{:.4f} over {} frames".format(*frame_score_change(runs["fp32"], runs[p]))
        )
        print(f"  {p:<10}{cells}   {change}")
        if p != "fp32":
            gap = abs(figures[1][0] - base[1][0])
            verdicts.append(f"{p} {'within' if gap <= RECALL_TOLERANCE else 'NOT within'} ({gap:.3f})")
    print(f"recall at <= 20 FA/h within {RECALL_TOLERANCE} of fp32: " + "; ".join(verdicts))
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items() if v))
    (work / "results.json").write_text(
        json.dumps({p: dict(zip(map(str, FA_BUDGETS), f, strict=True)) for p, f in results.items()}, indent=1)
    )
    return 0


def _native_flags() -> set:
    from gunshot_core import precision

    return set(precision.cpu_flags() & (precision.BF16_FLAGS | precision.INT8_FLAGS))


if __name__ == "__main__":
    sys.exit(main())
