"""Heads trained on a few sites, measured on held-out sites whose guns were never heard in training.

Synthetic field sites (tests/field_sites.py): training sites whose shots are cut from one gun family
(`pistol`: pistol_shot.wav), held-out sites with their own soundscapes whose shots come from
another (`ultimate`: ultimate_gunshot.wav); confusers (speech, footsteps, clicks, branch snaps) and
ambience everywhere. BirdNET frames are computed with gunshot_core.birdnet directly (not Beam). Heads
(training.models, as `gunshot train` builds them) are trained on clips of the training sites,
written as artifacts and loaded with gunshot_core.heads; event recall at <= 10/20/40 false alarms
per hour is measured on the held-out sites (tests/birdnet_transfer.py) for:

  birdnet-gun      BirdNET's own Gun_Gun class, zero-shot (no training)
  gunprior         Gun_Gun logit (frozen) + learned L2-regularised correction, max over the window
  framepool        framepool preset on BirdNET frames
  vggish-framepool framepool preset on VGGish frames (the test suite's RANDOM-WEIGHT VGGish: real
                   VGGish weights are not available offline; with --vggish only)

Goal: gunprior beats birdnet-gun zero-shot by >= 0.1 recall at <= 10 false alarms per hour.

    python benchmarks/bench_birdnet_transfer.py [--minutes 3] [--recordings 2] [--seeds 0 1 2] [--vggish]
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.simplefilter("ignore")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes per recording (%(default)s)")
    parser.add_argument("--recordings", type=int, default=2, help="recordings per site (%(default)s)")
    parser.add_argument("--hop", type=float, default=1.0, help="BirdNET hop, seconds (%(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (%(default)s)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (%(default)s)"
    )
    parser.add_argument("--site_seed", type=int, default=7, help="seed of the synthetic sites (%(default)s)")
    parser.add_argument("--window", type=int, default=4, help="frames per training clip (%(default)s)")
    parser.add_argument("--vggish", action="store_true", help="also framepool on random-weight VGGish frames")
    parser.add_argument(
        "--snr", type=float, nargs=2, default=[-5.0, 5.0], help="gunshot SNR range, dB (%(default)s)"
    )
    parser.add_argument(
        "--train_guns", nargs="+", default=["ultimate"], help="gun families of the training sites"
    )
    parser.add_argument(
        "--held_out_guns", nargs="+", default=["pistol"], help="gun families of the held-out sites"
    )
    parser.add_argument("--root", help="folder for the sites (default: a cached temp folder)")
    args = parser.parse_args()

    from gunshot_core import embedding_models
    from tests import birdnet_transfer as bt

    root = (
        pathlib.Path(args.root or tempfile.gettempdir())
        / f"bench_birdnet_transfer_{args.site_seed}_{args.snr[0]:g}_{args.snr[1]:g}_{'+'.join(args.train_guns)}"
    )
    train, held_out = bt.make_split(
        root,
        train_sites=("siteA", "siteB", "siteC", "siteD"),
        held_out_sites=("siteE", "siteF", "siteG"),
        recordings_per_site=args.recordings,
        minutes=args.minutes,
        seed=args.site_seed,
        snr_db=tuple(args.snr),
        train_families=tuple(args.train_guns),
        held_out_families=tuple(args.held_out_guns),
    )
    model = embedding_models.get("birdnet", hop_seconds=args.hop)
    embedder = model.load()
    started = time.process_time()
    bt.embed(train + held_out, embedder)
    shots = sum(len(r.shots) for r in held_out)
    hours = sum(r.seconds for r in held_out) / 3600
    print(
        f"sites: train {sorted({r.site for r in train})} (guns {args.train_guns}), held out "
        f"{sorted({r.site for r in held_out})} (guns {args.held_out_guns}); BirdNET hop {args.hop} s; shots at {args.snr[0]:g}..{args.snr[1]:g} dB SNR; "
        f"frames in {time.process_time() - started:.0f} s CPU"
    )
    print(
        f"held-out: {shots} shots in {hours * 60:.0f} min (1 false alarm = {1 / hours:.1f}/h); "
        f"training: {sum(len(r.shots) for r in train)} shots in {sum(r.seconds for r in train) / 60:.0f} min"
    )
    weights, bias = embedder.gun_layer()
    rows = {}

    def report(name, per_seed):
        rows[name] = {b: [r[b][0] for r in per_seed] for b in bt.BUDGETS}
        text = "  ".join(
            f"<= {b}/h: {np.mean(rows[name][b]):.2f}"
            + (f" ({min(rows[name][b]):.2f}-{max(rows[name][b]):.2f})" if len(per_seed) > 1 else "")
            for b in bt.BUDGETS
        )
        print(f"{name:<18} {text}")

    print(f"event recall on held-out sites (mean over seeds {args.seeds}, range):")
    report("birdnet-gun", [bt.event_recall(held_out, [r.gun_logits for r in held_out], model)])
    x, y = bt.clips(train, model, args.window, 1)
    mean, std = bt.frame_statistics(train)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("gunprior", "framepool"):
            results = []
            for seed in args.seeds:
                head, _ = bt.train_head(
                    kind, x, y, mean, std, os.path.join(tmp, f"{kind}{seed}"), embedding_model="birdnet",
                    prior=(weights, bias), epochs=args.epochs, seed=seed,
                )  # fmt: skip
                results.append(
                    bt.event_recall(held_out, [head.frame_logits(r.frames) for r in held_out], model)
                )
            report(kind, results)
        if args.vggish:
            from benchmarks.bench_score import random_weight_models

            checkpoint, pca = random_weight_models()
            vggish = embedding_models.get("vggish")
            embedder_v = vggish.load(checkpoint=checkpoint, pca=pca)
            frames = {r.path: embedder_v.frames(r.path) for r in train + held_out}

            def frames_of(r):
                return frames[r.path]

            window = vggish.seconds_to_frames(args.window * args.hop + 2.0)
            xv, yv = bt.clips(train, vggish, window, 1, frames_of)
            mean_v, std_v = bt.frame_statistics(train, frames_of)
            results = []
            for seed in args.seeds:
                head, _ = bt.train_head(
                    "framepool", xv, yv, mean_v, std_v, os.path.join(tmp, f"vggish{seed}"),
                    embedding_model="vggish", epochs=args.epochs, seed=seed,
                )  # fmt: skip
                results.append(
                    bt.event_recall(held_out, [head.frame_logits(frames_of(r)) for r in held_out], vggish)
                )
            report("vggish-framepool", results)
    gain = np.mean(rows["gunprior"][10]) - np.mean(rows["birdnet-gun"][10])
    print(f"gunprior - birdnet-gun at <= 10 false alarms/hour: {gain:+.2f} (goal >= +0.10)")


if __name__ == "__main__":
    main()
