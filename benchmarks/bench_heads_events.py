"""Event-level figures of every head preset on held-out synthetic field sites: recall at 10 and 40
false alarms per hour.

The adaptation loop of docs/adapt.md, run end to end with the project's own jobs on synthetic field
recordings (tests/field_sites.py: per-site soundscapes, gunshots cut from the seed recordings at
--snr_db, default 5-20 dB, speech/footsteps/click/branch confusers, Raven tables):

1. `gunshot batch --write_embeddings` over the training sites and over the held-out sites (VGGish
   runs once per recording);
2. `gunshot dataset --embeddings` on the training sites (positives with --positive_shifts, confusers,
   background windows), all training sites in the train split;
3. `gunshot transform`, then `gunshot train --model P` for every preset P (lstm, mlp, logreg,
   framepool with max pooling, framepool with attention pooling);
4. `gunshot batch --head` of every trained head, and of the bundled default head, on the held-out
   recordings' embedding TFRecords (the head alone on the frames VGGish made in step 1: the same
   scores as from the audio, tested in tests/test_score_pipeline.py; a framepool head gives events
   on 0.96 s frames);
5. `gunshot evaluate-events` over all runs against the held-out annotations (one-to-one matching,
   1 s tolerance); from its threshold sweep, the highest recall with at most 10 (20, 40) false alarms
   per hour of held-out audio. The annotations are the held-out Raven tables' rows, written as an
   annotation CSV whose `file` is the TFRecord source key of each recording (`file.tfrecord!path:0`).

Held-out means unseen sites: their soundscapes (noise colour and level, chirps, rain) never appear
in training. Every stage is seeded; stages whose output exists in --workdir are reused (--fresh
redoes everything).

    python benchmarks/bench_heads_events.py --random_weights          # the test suite's VGGish
    python benchmarks/bench_heads_events.py --checkpoint vggish_model.ckpt --pca vggish_pca_params.npz

The random-weight checkpoint is a weak feature extractor (its embeddings keep only what random
convolutions preserve of the log-mel spectrum); real VGGish weights should do better.
"""

import argparse
import json
import logging
import os
import pathlib
import shutil
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_score import add_model_arguments, resolve_models  # noqa: E402

CONFUSERS = ("speech", "footsteps", "click", "branch")
#: name -> training.train arguments.
HEADS = {
    "lstm": ["--model", "lstm"],
    "mlp": ["--model", "mlp"],
    "logreg": ["--model", "logreg"],
    "framepool": ["--model", "framepool"],
    "framepool_attention": ["--model", "framepool", "--pooling", "attention"],
}
FA_BUDGETS = (10.0, 20.0, 40.0)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def site_names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{chr(ord('A') + i)}" for i in range(n))


def make_field(root: pathlib.Path, sites, args, *, minutes, gunshots, confusers) -> int:
    """Writes the field recordings of `sites` under `root`; returns the number of gunshots."""
    from tests import field_sites

    insertions = field_sites.make_sites(
        root,
        sites=sites,
        recordings_per_site=args.recordings,
        minutes=minutes,
        seed=args.seed,
        gunshots_per_minute=gunshots,
        confusers_per_minute=confusers,
        snr_db=tuple(args.snr_db),
    )
    return sum(1 for i in insertions if i.label == field_sites.GUNSHOT)


def annotations_csv(path: pathlib.Path, heldout_root: pathlib.Path, run_dir: pathlib.Path) -> int:
    """Writes the held-out annotations (the Raven tables' rows) keyed by the TFRecord sources of a
    scoring run over the held-out embedding records; returns the number of rows."""
    import csv

    from pipelines.io import tables
    from tests import field_sites

    sources = tables.read_table(str(run_dir), "recordings").column("source").to_pylist()
    by_path = {s.split("!", 1)[1].rsplit(":", 1)[0]: s for s in sources}
    rows = [
        (by_path[i.file], i.start, i.end, i.label)
        for i in field_sites.read_ground_truth(heldout_root)
        if i.annotated
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "start_seconds", "end_seconds", "label"])
        writer.writerows(rows)
    return len(rows)


SNR_BANDS = ((5.0, 10.0), (10.0, 15.0), (15.0, 20.0))


def diagnose(run_dir: pathlib.Path, threshold: float, heldout_root: pathlib.Path, tolerance: float = 1.0):
    """What a run misses and what fools it at `threshold`, independently of the evaluator's tables.

    Events are merged from the run's frames table (a head with frame scores) or windows table with
    `pipelines.scoring.events.merge_events`, matched one to one with `training.evaluate_events.match_events`.

    Returns:
      ({snr band: (matched, gunshots)}, {label of what a false alarm overlaps: count}).
    """
    from pipelines.io import tables
    from pipelines.scoring import events as scoring_events
    from tests import field_sites
    from training.evaluate_events import match_events, overlaps

    try:
        table = tables.read_table(str(run_dir), "frames")
    except FileNotFoundError:
        table = tables.read_table(str(run_dir), "windows")
    rows = table.select(["source", "start_seconds", "end_seconds", "score"]).to_pandas()
    truth = field_sites.read_ground_truth(heldout_root)
    bands = {band: [0, 0] for band in SNR_BANDS}
    causes: dict[str, int] = {}
    for source, group in rows.groupby("source", sort=True):
        group = group.sort_values("start_seconds")
        path = source.split("!", 1)[1].rsplit(":", 1)[0] if "!" in source else source
        events = scoring_events.merge_events(
            group.score.to_numpy(), group.start_seconds.to_numpy(), group.end_seconds.to_numpy(), threshold
        )
        spans = [(e.start_seconds, e.end_seconds) for e in events]
        shots = [i for i in truth if i.file == path and i.label == field_sites.GUNSHOT]
        others = [i for i in truth if i.file == path and i.label != field_sites.GUNSHOT]
        pairs = match_events(spans, [(i.start, i.end) for i in shots], tolerance)
        found = {t for _, t in pairs}
        for t, shot in enumerate(shots):
            band = next(b for b in SNR_BANDS if shot.snr_db <= b[1] or b == SNR_BANDS[-1])
            bands[band][0] += t in found
            bands[band][1] += 1
        matched_events = {e for e, _ in pairs}
        for e, span in enumerate(spans):
            if e in matched_events:
                continue
            hit = overlaps(span, [(i.start, i.end) for i in others], tolerance)
            labels = sorted({others[k].label for k in np.flatnonzero(hit)}) or ["nothing annotated"]
            for label in labels:
                causes[label] = causes.get(label, 0) + 1
    return {b: tuple(v) for b, v in bands.items()}, causes


def stage(done: pathlib.Path, what: str, fn) -> float:
    """Runs `fn` unless `done` exists; returns the seconds it took (0 when reused)."""
    if done.exists():
        log(f"{what}: reusing {done.parent}")
        return 0.0
    log(f"{what} ...")
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    log(f"{what}: {seconds:.1f} s")
    return seconds


def recall_within(rows: list[dict], budget: float) -> tuple[float, float, float]:
    """(recall, false alarms per hour, threshold) of the swept threshold with the highest recall among
    those with at most `budget` false alarms per hour (ties: fewer false alarms); zeros when none."""
    ok = [r for r in rows if r["false_alarms_per_hour"] is not None and r["false_alarms_per_hour"] <= budget]
    if not ok:
        return 0.0, 0.0, 1.0
    best = max(ok, key=lambda r: (r["recall"] or 0.0, -r["false_alarms_per_hour"]))
    return best["recall"] or 0.0, best["false_alarms_per_hour"], best["threshold"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--workdir", default="/tmp/bench_heads_events", help="stage outputs (%(default)s)")
    parser.add_argument("--fresh", action="store_true", help="delete --workdir first")
    parser.add_argument("--train_sites", type=int, default=6, help="(%(default)s)")
    parser.add_argument("--heldout_sites", type=int, default=4, help="(%(default)s)")
    parser.add_argument("--recordings", type=int, default=2, help="recordings per site (%(default)s)")
    parser.add_argument(
        "--minutes", type=float, default=6.0, help="minutes per training recording (%(default)s)"
    )
    parser.add_argument(
        "--heldout_minutes", type=float, default=5.0, help="minutes per held-out recording (%(default)s)"
    )
    parser.add_argument(
        "--gunshots_per_minute",
        type=float,
        nargs=2,
        default=(1.0, 2.0),
        metavar=("TRAIN", "HELDOUT"),
        help="gunshots per minute at training and held-out sites (%(default)s); sparser training "
        "events leave background windows that overlap no annotation",
    )
    parser.add_argument(
        "--confusers_per_minute",
        type=float,
        nargs=2,
        default=(1.5, 2.0),
        metavar=("TRAIN", "HELDOUT"),
        help="(%(default)s)",
    )
    parser.add_argument("--snr_db", type=float, nargs=2, default=(5.0, 20.0), help="(%(default)s)")
    parser.add_argument("--positive_shifts", type=int, default=4, help="gunshot dataset (%(default)s)")
    parser.add_argument(
        "--negatives_per_hour", type=float, default=400.0, help="gunshot dataset (%(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=60, help="gunshot train (%(default)s)")
    parser.add_argument("--heads", nargs="+", choices=sorted(HEADS), default=list(HEADS))
    parser.add_argument("--seed", type=int, default=0, help="(%(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    resolve_models(parser, args)

    from pipelines import score
    from pipelines.dataset import pipeline as dataset
    from tests import field_sites
    from training import evaluate_events, train, transform

    work = pathlib.Path(args.workdir)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    models = [f"--checkpoint={args.checkpoint}", f"--pca={args.pca}"]
    times = {}

    train_root, heldout_root = work / "field" / "train", work / "field" / "heldout"
    log("writing the field recordings (cached by tests/field_sites.py)")
    train_shots = make_field(
        train_root,
        site_names("train", args.train_sites),
        args,
        minutes=args.minutes,
        gunshots=args.gunshots_per_minute[0],
        confusers=args.confusers_per_minute[0],
    )
    heldout_shots = make_field(
        heldout_root,
        site_names("heldout", args.heldout_sites),
        args,
        minutes=args.heldout_minutes,
        gunshots=args.gunshots_per_minute[1],
        confusers=args.confusers_per_minute[1],
    )

    batch_train, batch_heldout = work / "batch_train", work / "batch_heldout"
    times["batch (train sites)"] = stage(
        batch_train / "run.json",
        "gunshot batch --write_embeddings, training sites",
        lambda: score.run(
            [f"--input={train_root}", f"--output={batch_train}", "--write_embeddings", *models]
        ),
    )
    times["batch (held-out sites, default head)"] = stage(
        batch_heldout / "run.json",
        "gunshot batch --write_embeddings, held-out sites",
        lambda: score.run(
            [f"--input={heldout_root}", f"--output={batch_heldout}", "--write_embeddings", *models]
        ),
    )
    ds = work / "dataset"
    times["dataset"] = stage(
        ds / "stats.json",
        "gunshot dataset --embeddings (training sites)",
        lambda: dataset.run(
            [
                f"--embeddings={batch_train}",
                f"--annotations={train_root}/*/*{field_sites.RAVEN_SUFFIX}",
                f"--output={ds}",
                "--positive",
                "gunshot",
                "--negative",
                *CONFUSERS,
                "--group_pattern",
                r"/(train[A-Z])/",
                "--split",
                "train=1.0",
                f"--positive_shifts={args.positive_shifts}",
                f"--negatives_per_hour={args.negatives_per_hour}",
                f"--seed={args.seed}",
            ]
        ),
    )
    stats = json.loads((ds / "stats.json").read_text())
    tdir = work / "transformed"
    times["transform"] = stage(
        tdir / transform.INFO_FILE,
        "gunshot transform",
        lambda: transform.run(["--train", str(ds / "train"), "--output", str(tdir)]),
    )
    info = transform.read_info(str(tdir))
    heldout_records = str(batch_heldout / "embeddings-*.tfrecord")
    runs = {"default": work / "scores" / "default"}
    times["score default"] = stage(
        runs["default"] / "run.json",
        "gunshot batch, bundled default head (held-out embeddings)",
        lambda: score.run([f"--input={heldout_records}", f"--output={runs['default']}", *models]),
    )
    # Validation = whole recordings (the dataset's video_id is the recording): a quarter of them.
    fit = [f"--epochs={args.epochs}", "--batch_size=32", "--patience=8", f"--seed={args.seed}", "--verbose=0"]
    fit += ["--validation_fraction=0.25"]
    for name in args.heads:
        mdir = work / "heads" / name
        times[f"train {name}"] = stage(
            mdir / "card.json",
            f"gunshot train {' '.join(HEADS[name])}",
            lambda mdir=mdir, name=name: train.main(
                ["--transformed", str(tdir), "--output", str(mdir), "--overwrite", *HEADS[name], *fit]
            ),
        )
        out = work / "scores" / name
        times[f"score {name}"] = stage(
            out / "run.json",
            f"gunshot batch --head {name} (held-out embeddings)",
            lambda out=out, mdir=mdir: score.run(
                [f"--input={heldout_records}", f"--output={out}", f"--head={mdir}", *models]
            ),
        )
        runs[name] = out

    evaluation = work / "evaluation"
    if evaluation.exists():
        shutil.rmtree(evaluation)
    log("gunshot evaluate-events")
    started = time.perf_counter()
    argv = [a for name, path in runs.items() for a in ("--scores", f"{name}={path}")]
    annotations = work / "heldout_annotations.csv"
    annotations_csv(annotations, heldout_root, runs["default"])
    argv += [
        "--annotations",
        str(annotations),
        "--output",
        str(evaluation),
        "--target_recall",
        "0.8",
    ]
    argv += ["--group_pattern", r"/(heldout[A-Z])/"]
    if evaluate_events.main(argv) != 0:
        print("evaluate-events failed; see its messages above", file=sys.stderr)
        return 1
    times["evaluate-events"] = time.perf_counter() - started
    import pyarrow.parquet as pq

    sweep = pq.read_table(evaluation / "sweep.parquet").to_pylist()
    metrics = json.loads((evaluation / "metrics.json").read_text())

    heldout_hours = None
    print()
    print(
        f"field: {args.train_sites} training sites ({train_shots} gunshots; {args.recordings} x "
        f"{args.minutes:g} min each), {args.heldout_sites} held-out sites ({heldout_shots} gunshots; "
        f"{args.recordings} x {args.heldout_minutes:g} min each); gunshot SNR {args.snr_db[0]:g}-"
        f"{args.snr_db[1]:g} dB; confusers/min {args.confusers_per_minute[0]:g} (train), "
        f"{args.confusers_per_minute[1]:g} (held-out)"
    )
    print(
        f"training windows: {json.dumps(info['train_tag_counts'], sort_keys=True)}; background windows "
        f"written {stats['background']['written']} of {stats['background']['available']} available"
    )
    header = f"{'head':<22}{'ROC':>6}" + "".join(
        f"  {'recall@' + format(b, 'g') + '/h':>12} {'FA/h':>6}" for b in FA_BUDGETS
    )
    print(header)
    results = {}
    for name in runs:
        rows = [r for r in sweep if r["scorer"] == name]
        heldout_hours = rows[0]["hours"] if rows else heldout_hours
        card_path = work / "heads" / name / "card.json"
        auc = ""
        if card_path.exists():
            val = json.loads(card_path.read_text()).get("metrics", {}).get("validation", {})
            auc = f"{val.get('roc_auc', float('nan')):.3f}" if "roc_auc" in val else ""
        figures = [recall_within(rows, b) for b in FA_BUDGETS]
        results[name] = {format(b, "g"): f for b, f in zip(FA_BUDGETS, figures, strict=True)}
        print(f"{name:<22}{auc:>6}" + "".join(f"  {recall:>12.3f} {fa:>6.1f}" for recall, fa, _ in figures))
    print(f"held-out audio: {heldout_hours:.2f} h; ROC = validation ROC-AUC of the head's windows (card)")
    print("at the <= 20 FA/h operating point: recall by gunshot SNR; what the false alarms overlap")
    for name in runs:
        bands, causes = diagnose(runs[name], results[name]["20"][2], heldout_root)
        recall = "  ".join(
            f"{lo:g}-{hi:g} dB {m / n if n else 0:.2f} ({m}/{n})" for (lo, hi), (m, n) in bands.items()
        )
        fooled = ", ".join(f"{k} {v}" for k, v in sorted(causes.items(), key=lambda kv: (-kv[1], kv[0])))
        print(f"  {name:<20} {recall}; false alarms: {fooled or 'none'}")
    for name in ("framepool", "framepool_attention"):
        if name in results:
            recall, fa, threshold = results[name]["20"]
            verdict = "reached" if recall >= 0.8 else "not reached"
            print(
                f"target (>= 0.8 recall at <= 20 FA/h) with {name}: {verdict} - recall {recall:.3f} at "
                f"{fa:.1f} FA/h (threshold {threshold:.3f})"
            )
    best_window = max((results[n]["20"][0] for n in results if not n.startswith("framepool")), default=0.0)
    if "framepool" in results and best_window > 0:
        print(
            f"framepool / best window head, recall at <= 20 FA/h: {results['framepool']['20'][0] / best_window:.2f}"
        )
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items() if v))
    print(f"evaluation report: {evaluation / 'report.md'}")
    del metrics
    return 0


if __name__ == "__main__":
    sys.exit(main())
