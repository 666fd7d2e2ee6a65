"""BirdNET V2.4 scoring: cost against BirdNET alone and against VGGish, and birdnet-gun thresholds.

Default mode, on the same synthetic audio (mono 44.1 kHz WAVs, `--minutes` in total), in one process,
CPU time by `time.process_time` (all threads):
  1. BirdNET alone: the recordings decoded and resampled to 48 kHz whole, cut into 3-s frames every
     hop, run through the TFLite interpreter in a plain loop (the floor);
  2. `gunshot score --embedding_model birdnet` in-process (gunshot_core.score_cli.Scorer: block-wise
     decoding, framing, the interpreter, birdnet-gun windows); ratio floor / scoring (goal >= 0.8);
  3. the same recordings through VGGish scoring (Scorer with the bundled head), as audio hours per
     CPU-hour for both models.
`--pipeline` instead runs the Beam scoring job (`gunshot batch`, DirectRunner in this process) on the
same audio: BirdNET alone vs. `gunshot batch --embedding_model birdnet` (goal >= 0.8), and audio hours
per CPU-hour of `gunshot batch` on BirdNET vs. on VGGish (`--random_weights` or --checkpoint/--pca),
each job timed after a warm-up job on one file (imports, derived model file, hash caches).
`--thresholds` instead measures birdnet-gun recall and non-gun frames per hour at several thresholds
on synthetic field recordings (tests/field_sites.py), at two SNR ranges (docs/models.md's table).

    python benchmarks/bench_birdnet.py --random_weights [--minutes 5] [--hop 1.0]
    python benchmarks/bench_birdnet.py --pipeline --random_weights [--minutes 10] [--hop 1.0]
    python benchmarks/bench_birdnet.py --thresholds
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
import soundfile  # noqa: E402

from benchmarks.bench_score import add_model_arguments, random_weight_models  # noqa: E402


def write_wavs(directory: pathlib.Path, minutes: float, file_seconds: float = 60.0) -> list[str]:
    rng = np.random.default_rng(0)
    paths, left = [], minutes * 60.0
    while left > 0:
        seconds = min(file_seconds, left)
        x = (0.05 * rng.standard_normal(int(seconds * 44100))).astype(np.float32)
        path = directory / f"rec{len(paths):03d}.wav"
        soundfile.write(path, x, 44100, subtype="PCM_16")
        paths.append(str(path))
        left -= seconds
    return paths


def timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def speed(args) -> None:
    from gunshot_core import audio, birdnet, embedding_models
    from gunshot_core.score_cli import Scorer

    model = embedding_models.get("birdnet", hop_seconds=args.hop)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_wavs(pathlib.Path(tmp), args.minutes)
        hours = args.minutes / 60.0
        scorer = Scorer(None, None, None, embedding_model=model)
        network = scorer.embedder.network
        hop = birdnet.hop_samples(args.hop)

        def alone():
            for path in paths:
                network.infer(birdnet.frames_of(audio.load_audio(path, birdnet.SAMPLE_RATE), hop))

        window, step = model.seconds_to_frames(10.0), model.seconds_to_frames(4.8)

        def scoring():
            for path in paths:
                scorer.score(path, window, step)

        alone()  # warm-up: derived model file, hash cache, first interpreter calls
        cpu_alone, wall_alone = timed(alone)
        cpu_score, wall_score = timed(scoring)
        print(
            f"{args.minutes:g} min of 44.1 kHz audio in {len(paths)} files; hop {args.hop} s; {os.cpu_count()} CPUs"
        )
        print(f"BirdNET alone (plain loop): CPU {cpu_alone:.2f} s, wall {wall_alone:.2f} s")
        print(f"BirdNET scoring (Scorer):   CPU {cpu_score:.2f} s, wall {wall_score:.2f} s")
        print(f"ratio alone/scoring (CPU): {cpu_alone / cpu_score:.2f}   (goal >= 0.8)")
        print(f"BirdNET: {hours / (cpu_score / 3600):.0f} audio hours per CPU-hour")
        if args.checkpoint or args.random_weights:
            checkpoint, pca = (args.checkpoint, args.pca) if args.checkpoint else random_weight_models()
            vggish = Scorer(checkpoint, pca, None)
            w, s = (
                embedding_models.get().seconds_to_frames(10.0),
                embedding_models.get().seconds_to_frames(4.8),
            )
            vggish.score(paths[0], w, s)
            cpu_vggish, _ = timed(lambda: [vggish.score(p, w, s) for p in paths])
            print(
                f"VGGish scoring (Scorer):    CPU {cpu_vggish:.2f} s: {hours / (cpu_vggish / 3600):.0f} audio hours per CPU-hour"
            )
            print(f"BirdNET / VGGish audio hours per CPU-hour: {cpu_vggish / cpu_score:.2f}")


def pipeline_speed(args) -> None:
    """BirdNET alone vs. the BirdNET scoring pipeline vs. the VGGish scoring pipeline, one process."""
    import logging

    from gunshot_core import audio, birdnet
    from pipelines import score

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "in").mkdir()
        paths = write_wavs(root / "in", args.minutes)
        (root / "warm").mkdir()
        os.link(paths[0], root / "warm" / "rec.wav")
        hours = args.minutes / 60.0
        network = birdnet.BirdNET()
        hop = birdnet.hop_samples(args.hop)

        def alone():
            for path in paths:
                network.infer(birdnet.frames_of(audio.load_audio(path, birdnet.SAMPLE_RATE), hop))

        birdnet_args = ["--embedding_model=birdnet", f"--embedding_hop_seconds={args.hop}"]
        runs = 0

        def job(inputs, extra):
            nonlocal runs
            runs += 1
            score.run([f"--input={inputs}", f"--output={root / f'out{runs}'}", *extra])

        job(root / "warm", birdnet_args)
        alone()  # warm-up of the plain loop
        cpu_alone, wall_alone = timed(alone)
        cpu_job, wall_job = timed(lambda: job(root / "in", birdnet_args))
        print(
            f"{args.minutes:g} min of 44.1 kHz audio in {len(paths)} files; hop {args.hop} s; {os.cpu_count()} CPUs"
        )
        print(f"BirdNET alone (plain loop):          CPU {cpu_alone:.2f} s, wall {wall_alone:.2f} s")
        print(f"gunshot batch --embedding_model birdnet: CPU {cpu_job:.2f} s, wall {wall_job:.2f} s")
        print(f"ratio alone/pipeline (CPU): {cpu_alone / cpu_job:.2f}   (goal >= 0.8)")
        print(f"BirdNET pipeline: {hours / (cpu_job / 3600):.0f} audio hours per CPU-hour")
        if args.checkpoint or args.random_weights:
            checkpoint, pca = (args.checkpoint, args.pca) if args.checkpoint else random_weight_models()
            vggish_args = [f"--checkpoint={checkpoint}", f"--pca={pca}"]
            job(root / "warm", vggish_args)
            cpu_vggish, wall_vggish = timed(lambda: job(root / "in", vggish_args))
            print(
                f"gunshot batch (VGGish):               CPU {cpu_vggish:.2f} s, wall {wall_vggish:.2f} s: "
                f"{hours / (cpu_vggish / 3600):.0f} audio hours per CPU-hour"
            )
            print(f"BirdNET / VGGish pipeline audio hours per CPU-hour: {cpu_vggish / cpu_job:.2f}")


def thresholds(args) -> None:
    from gunshot_core import birdnet, embedding_models
    from tests import field_sites

    model = embedding_models.get("birdnet", hop_seconds=args.hop)
    embedder = model.load()
    for snr in ((5.0, 20.0), (-5.0, 5.0)):
        root = pathlib.Path(tempfile.gettempdir()) / f"bench_birdnet_sites_{snr[0]:g}_{snr[1]:g}"
        insertions = field_sites.make_sites(
            root,
            recordings_per_site=2,
            minutes=2.0,
            seed=3,
            sample_rates=(44100,),
            formats=("wav",),
            snr_db=snr,
            gunshots_per_minute=4.0,
        )
        guns = [i for i in insertions if i.label == field_sites.GUNSHOT]
        files = []  # (frame scores, frame starts, frame ends, [(shot start, shot end)])
        for path in sorted({i.file for i in insertions}):
            scores = birdnet.sigmoid(np.concatenate([o.gun_logits for o in embedder.iter_outputs(path)]))
            index = np.arange(scores.size)
            shots = [(g.start, g.end) for g in guns if g.file == path]
            files.append((scores, model.frame_start_seconds(index), model.frame_end_seconds(index), shots))
        hours = sum(f[0].size for f in files) * args.hop / 3600  # one frame step per hop
        events = np.array([f[0][(f[1] < end) & (f[2] > start)].max() for f in files for start, end in f[3]])
        print(
            f"SNR {snr[0]:g}..{snr[1]:g} dB: {events.size} gunshots, {hours * 60:.0f} min, median event score {np.median(events):.4f}"
        )
        curve = []
        for t in sorted({0.1, 0.05, 0.02, 0.01, 0.005, *np.geomspace(1e-4, 0.9, 60).round(6).tolist()}):
            found, false_alarms = 0, 0
            for scores, starts, ends, shots in files:
                # events: runs of frames >= t, merged where their 3-s spans overlap
                spans = []
                for i in np.flatnonzero(scores >= t):
                    if spans and starts[i] <= spans[-1][1]:
                        spans[-1][1] = ends[i]
                    else:
                        spans.append([starts[i], ends[i]])
                false_alarms += sum(not any(a < e and b > s for s, e in shots) for a, b in spans)
                found += sum(any(a < e and b > s for a, b in spans) for s, e in shots)
            curve.append((t, found / events.size, false_alarms / hours))
            if any(abs(t - x) < 1e-9 for x in (0.1, 0.05, 0.02, 0.01, 0.005)):
                print(
                    f"  threshold {t:<6.3g}: recall {found / events.size:.2f}, false-alarm events per hour {false_alarms / hours:.0f}"
                )
        for budget in (10, 20, 40):
            best = max(((r, t) for t, r, fa in curve if fa <= budget), default=(0.0, None))
            print(f"  recall at <= {budget} false alarms/hour: {best[0]:.2f} (threshold {best[1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--minutes", type=float, default=5.0, help="audio to score (default %(default)s)")
    parser.add_argument("--hop", type=float, default=1.0, help="BirdNET hop in seconds (default %(default)s)")
    parser.add_argument("--thresholds", action="store_true", help="measure birdnet-gun thresholds instead")
    parser.add_argument(
        "--pipeline", action="store_true", help="measure the Beam scoring job (gunshot batch) instead of Scorer"
    )
    args = parser.parse_args()
    if args.thresholds:
        thresholds(args)
    elif args.pipeline:
        pipeline_speed(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
