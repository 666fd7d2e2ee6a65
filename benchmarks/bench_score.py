"""Throughput of the batch scoring pipeline vs. the VGGish floor and vs. the original per-clip approach.

Measured side by side in one run, on the same synthetic mixed 44.1 kHz recordings (mono and stereo,
WAV and FLAC, 5-minute files), in audio-seconds per second:

- floor: `VGGish.embed` alone on the recordings' pre-computed examples (the network's own cost);
- pipeline: `pipelines.score.run` end to end with its default settings on the DirectRunner
  (matching, decoding, resampling, framing, embedding, scoring, Parquet writing, model loading),
  on the recordings and on twice as much audio; the difference gives the marginal (steady-state)
  rate, free of the one-off start-up (Beam, loading the 288 MB checkpoint);
- original, in process: the original inference_pipeline.py flow for every 10-s clip - resampy
  resampling, a new TF1 graph and session with the VGGish network defined in it and its checkpoint
  restored, the PCA postprocessor, and the head loaded with Keras 2 `load_model` and run with
  `predict` (tf_keras; `pip install -r benchmarks/requirements.txt`) - timed after one warm-up clip;
- original, per call: the original usage, one process per clip (`python inference_pipeline.py
  --wav_file X`), emulated with `python -m gunshot_core.score_cli X` per clip.

And as a user runs it, each job a new `python -m pipelines.score` process (warm: files cached, model
hashes and the checkpoint's V2 copy in the user's cache, one untimed run first), with the one-off
costs included (importing Beam and TensorFlow, building the pipeline, loading VGGish, writing):

- new process / floor: `--process_minutes` of 44.1 kHz mono WAV in files of `--process_file_seconds`
  (default 20 minutes, 8 files of 150 s) against `VGGish.embed` alone on the same examples (target
  >= 0.7); the process's CPU seconds are printed too, a figure that load on the machine affects less;
- small job: the two bundled examples (11 s of audio), wall seconds (target <= 8 s).

    python benchmarks/bench_score.py --checkpoint vggish_model.ckpt --pca vggish_pca_params.npz
    python benchmarks/bench_score.py --random_weights   # the test suite's random-weight VGGish
    python benchmarks/bench_score.py --random_weights --measure new_process --repeats 3
    python benchmarks/bench_score.py --random_weights --measure new_process --repeats 3 --cpu_isa avx2

Prints the ratios pipeline/floor (target >= 0.7) and pipeline/original (target >= 20), and for new
processes new process/floor (target >= 0.7) and the small job's seconds (target <= 8).
"""

import argparse
import logging
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_recordings(directory: pathlib.Path, minutes: float, file_minutes: float = 5.0) -> float:
    """Writes mixed 44.1 kHz recordings totalling `minutes`; returns their duration in seconds."""
    rng = np.random.default_rng(0)
    rate, total, i = 44100, 0.0, 0
    block = rate * 10
    while total < minutes * 60 - 1e-6:
        seconds = min(file_minutes * 60, minutes * 60 - total)
        channels = 1 + i % 2
        fmt = "FLAC" if i % 3 == 2 else "WAV"
        path = directory / f"rec{i:03d}.{fmt.lower()}"
        with soundfile.SoundFile(path, "w", rate, channels, "PCM_16", format=fmt) as f:
            for start in range(0, int(seconds * rate), block):
                n = min(block, int(seconds * rate) - start)
                t = (start + np.arange(n)) / rate
                x = 0.2 * np.sin(2 * np.pi * (200 + 50 * (i + 1)) * t) + 0.05 * rng.standard_normal(n)
                f.write(np.repeat(x[:, None], channels, axis=1).astype(np.float32))
        total += seconds
        i += 1
    return total


def write_mono_wavs(directory: pathlib.Path, minutes: float, file_seconds: float) -> float:
    """Writes 44.1 kHz mono 16-bit WAV files of `file_seconds` totalling `minutes`; returns seconds."""
    rng = np.random.default_rng(1)
    rate, total, i = 44100, 0.0, 0
    while total < minutes * 60 - 1e-6:
        seconds = min(file_seconds, minutes * 60 - total)
        t = np.arange(int(seconds * rate)) / rate
        x = 0.2 * np.sin(2 * np.pi * (180 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(directory / f"site{i:02d}.wav", x.astype(np.float32), rate, subtype="PCM_16")
        total += seconds
        i += 1
    return total


def process_seconds(
    inputs: list, checkpoint: str, pca: str, output: pathlib.Path, precision: str = "fp32"
) -> tuple[float, float]:
    """(wall, CPU) seconds of `python -m pipelines.score` over `inputs` in a new process, from the
    command's start to its exit, as a user runs it."""
    argv = [sys.executable, "-m", "pipelines.score", f"--output={output}", f"--checkpoint={checkpoint}"]
    argv += [f"--pca={pca}", f"--precision={precision}"] + [f"--input={i}" for i in inputs]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def new_process_figures(tmp: pathlib.Path, args) -> dict:
    """New-process measurements: floor and process on the mono WAVs, and the small job (best of
    `args.repeats` each, alternating, so slow phases of a shared machine hit both alike)."""
    wavs = tmp / "mono"
    wavs.mkdir()
    audio_seconds = write_mono_wavs(wavs, args.process_minutes, args.process_file_seconds)
    examples_glob = str(REPO / "examples" / "*.wav")
    process_seconds([examples_glob], args.checkpoint, args.pca, tmp / "warm")  # warm caches, untimed
    floors, runs, smalls = [], [], []
    for i in range(args.repeats):
        floors.append(floor_seconds(wavs, args.checkpoint))
        runs.append(process_seconds([str(wavs)], args.checkpoint, args.pca, tmp / f"proc{i}"))
        smalls.append(process_seconds([examples_glob], args.checkpoint, args.pca, tmp / f"small{i}"))
    floor, examples = min(floors)
    return {
        "audio_seconds": audio_seconds,
        "examples": examples,
        "floor": floor,
        "process": min(runs),
        "small": min(smalls),
    }


def print_new_process(figures: dict, args) -> None:
    seconds = figures["audio_seconds"]
    wall, cpu = figures["process"]
    small_wall, small_cpu = figures["small"]
    print(
        f"new process: {seconds / 60:.1f} min of 44.1 kHz mono WAV in {args.process_file_seconds:g}-s files"
        f" ({figures['examples']} examples), best of {args.repeats}; {os.cpu_count()} CPUs"
        + (f", oneDNN limited to {args.cpu_isa.upper()}" if args.cpu_isa else "")
    )
    print(
        f"  {'floor: VGGish.embed alone, examples precomputed':<46} {seconds / figures['floor']:8.1f} audio-s/s"
    )
    print(f"  {'python -m pipelines.score, new process':<46} {seconds / wall:8.1f} audio-s/s")
    print(f"    wall {wall:.2f} s (CPU {cpu:.2f} s); VGGish alone {figures['floor']:.2f} s")
    print(f"new process / floor         = {figures['floor'] / wall:.2f}   (target >= 0.7)")
    print(f"small job (2 examples, 11 s) = {small_wall:.2f} s wall, {small_cpu:.2f} s CPU   (target <= 8 s)")


def random_weight_models() -> tuple[str, str]:
    """The random-weight VGGish of the test suite, from its fixture cache (written there if missing)."""
    import hashlib

    from tests import conftest

    digest = hashlib.sha256(conftest.RECIPE.read_bytes()).hexdigest()[:16]
    directory = conftest._cache_root() / f"vggish-random-{digest}"
    recipe = conftest.load_recipe()
    ckpt, pca = directory / recipe.CKPT_NAME, directory / recipe.PCA_NAME
    if not (ckpt.exists() and pca.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        recipe.write_pca_npz(str(pca))
        recipe.write_v1_checkpoint(str(ckpt))
    return str(ckpt), str(pca)


def add_model_arguments(parser) -> None:
    """--checkpoint, --pca, --random_weights: the VGGish files a benchmark runs on."""
    parser.add_argument("--checkpoint", help="VGGish checkpoint")
    parser.add_argument("--pca", help="VGGish PCA parameters")
    parser.add_argument(
        "--random_weights", action="store_true", help="use the test suite's random-weight VGGish"
    )


def resolve_models(parser, args) -> None:
    """Sets args.checkpoint/args.pca from --random_weights, or stops with a usage error when missing."""
    if args.random_weights:
        args.checkpoint, args.pca = random_weight_models()
    if not (args.checkpoint and args.pca):
        parser.error("give --checkpoint and --pca, or --random_weights")


def floor_seconds(directory: pathlib.Path, checkpoint: str, precision: str = "fp32") -> tuple[float, int]:
    """Seconds VGGish alone takes on all examples of the recordings (examples computed beforehand)."""
    from gunshot_core import audio
    from gunshot_core.vggish import VGGish

    examples = np.concatenate(
        [e for path in sorted(directory.iterdir()) for _, e in audio.iter_examples(str(path))]
    )
    # the default fixed block, as the pipeline's workers use
    model = VGGish.from_checkpoint(checkpoint, precision=precision)
    model.embed(examples[:1])  # trace once, as the pipeline's worker does
    started = time.perf_counter()
    model.embed(examples)
    return time.perf_counter() - started, examples.shape[0]


def pipeline_seconds(
    inputs: list, checkpoint: str, pca: str, output: pathlib.Path, precision: str = "fp32"
) -> float:
    """Wall seconds of one end-to-end pipeline run over the folders `inputs` (modules already imported;
    the model hashes read from the user's hash cache, as every job after `gunshot models download`)."""
    from gunshot_core import hashes
    from pipelines import score

    hashes.file_sha256(checkpoint)  # in the hash cache, as `gunshot models download` leaves it
    hashes._sha_cache.clear()  # ...and read from there, as by a new process
    started = time.perf_counter()
    argv = [f"--input={d}" for d in inputs] + [
        f"--output={output}",
        f"--checkpoint={checkpoint}",
        f"--pca={pca}",
        f"--precision={precision}",
    ]
    summary = score.run(argv)
    elapsed = time.perf_counter() - started
    if summary["recordings_failed"]:
        raise RuntimeError(f"benchmark recordings failed: {summary}")
    return elapsed


def write_clips(directory: pathlib.Path, clips: int) -> list[str]:
    paths = []
    for i in range(clips):
        path = directory / f"clip{i}.wav"
        t = np.arange(441000) / 44100
        soundfile.write(path, (0.2 * np.sin(2 * np.pi * (300 + 70 * i) * t)).astype(np.float32), 44100)
        paths.append(str(path))
    return paths


def original_process_seconds_per_clip(paths: list, checkpoint: str, pca: str) -> float:
    """Mean seconds per 10-s clip when every clip is scored by its own process (the original CLI usage)."""
    import subprocess

    started = time.perf_counter()
    for path in paths:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gunshot_core.score_cli",
                path,
                f"--checkpoint={checkpoint}",
                f"--pca={pca}",
            ],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
    return (time.perf_counter() - started) / len(paths)


def _original_embed(checkpoint: str, examples: np.ndarray) -> np.ndarray:
    """The original inference_pipeline.py per clip: a new TF1 graph and session, the VGGish slim
    network defined in it, the checkpoint restored with a Saver, one run; float32 [n, 128]."""
    import tensorflow as tf

    v1 = tf.compat.v1
    layers = [("conv1", 64), ("conv2", 128), ("conv3/conv3_1", 256), ("conv3/conv3_2", 256)]
    layers += [("conv4/conv4_1", 512), ("conv4/conv4_2", 512)]
    pool_after = {"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"}
    with tf.Graph().as_default(), v1.Session() as sess:
        features = v1.placeholder(tf.float32, [None, 96, 64], name="vggish/input_features")
        net, channels, variables = tf.reshape(features, [-1, 96, 64, 1]), 1, {}
        for name, out in layers:
            w = v1.get_variable(f"vggish/{name}/weights", [3, 3, channels, out])
            b = v1.get_variable(f"vggish/{name}/biases", [out])
            variables.update({w.op.name: w, b.op.name: b})
            net = tf.nn.relu(tf.nn.conv2d(net, w, 1, "SAME") + b)
            if name in pool_after:
                net = tf.nn.max_pool2d(net, 2, 2, "SAME")
            channels = out
        net = tf.reshape(net, [-1, 6 * 4 * 512])
        for name, size, relu in (("fc1/fc1_1", 4096, True), ("fc1/fc1_2", 4096, True), ("fc2", 128, False)):
            w = v1.get_variable(f"vggish/{name}/weights", [net.shape[-1], size])
            b = v1.get_variable(f"vggish/{name}/biases", [size])
            variables.update({w.op.name: w, b.op.name: b})
            net = tf.matmul(net, w) + b
            net = tf.nn.relu(net) if relu else net
        v1.train.Saver(variables).restore(sess, checkpoint)
        return sess.run(net, {features: examples})


def _keras2_head(h5_path: str):
    """(load, predict) for the head as the original ran it: Keras 2 `load_model` on the .h5 file, then
    `model.predict` (tf_keras, the Keras 2 of TensorFlow 2); None when tf_keras is not installed."""
    try:
        import tf_keras
    except ImportError:
        return None
    return (
        lambda: tf_keras.models.load_model(h5_path),
        lambda model, x: model.predict(x, verbose=0),
    )


def _sequence_example_frames(frames: np.ndarray) -> np.ndarray:
    """The original's round trip of the frames through an AudioSet SequenceExample, padded to 10."""
    import tensorflow as tf

    example = tf.train.SequenceExample(
        feature_lists=tf.train.FeatureLists(
            feature_list={
                "audio_embedding": tf.train.FeatureList(
                    feature=[
                        tf.train.Feature(bytes_list=tf.train.BytesList(value=[f.tobytes()])) for f in frames
                    ]
                )
            }
        )
    )
    rows = [
        np.frombuffer(f.bytes_list.value[0], np.uint8).astype(np.float32)
        for f in example.feature_lists.feature_list["audio_embedding"].feature
    ]
    rows += [np.zeros(128, np.float32)] * (10 - len(rows))
    return np.array([rows])


def original_seconds_per_clip(checkpoint: str, pca: str, clips: int) -> tuple[float, str]:
    """Mean seconds per 10-s clip when every clip runs the original project's inference_pipeline.py
    flow in one process: resampy resampling and log-mel examples, a new TF1 graph and session with
    the VGGish network restored from its checkpoint, the PCA postprocessor, the frames round-tripped
    through a SequenceExample, and the head loaded with Keras and run with `predict`.

    One-off costs are paid before timing (resampy's JIT compilation, TensorFlow's and Keras' first
    use), so what is timed is the steady per-clip cost. Returns (seconds, how the head was run).
    """
    from gunshot_core import audio, features, heads
    from gunshot_core.postprocess import Postprocessor

    keras2 = _keras2_head(heads.DEFAULT_HEAD_PATH)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(pathlib.Path(tmp), clips + 1)
        if keras2 is None:  # the head as a Keras 3 model file instead
            keras_head = pathlib.Path(tmp) / "head"
            heads.import_h5_head(heads.DEFAULT_HEAD_PATH, keras_head)
            load, predict = (lambda: heads.load_head(keras_head)), (lambda model, x: model.predict(x[0]))
            how = "Keras 3 load + predict (tf_keras not installed)"
        else:
            load, predict = keras2
            how = "Keras 2 load_model(.h5) + predict, as the original"

        def one_clip(path):
            examples = features.waveform_to_examples(audio.load_audio(path, resampler="resampy"), 16000)
            postprocessor = Postprocessor.from_npz(pca)
            frames = postprocessor.postprocess(_original_embed(checkpoint, examples))
            predict(load(), _sequence_example_frames(frames))

        one_clip(paths[0])  # first use: resampy's JIT, TF and Keras start-up (paid once per process)
        started = time.perf_counter()
        for path in paths[1:]:
            one_clip(path)
        return (time.perf_counter() - started) / clips, how


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_model_arguments(parser)
    parser.add_argument(
        "--measure",
        choices=("all", "in_process", "new_process"),
        default="all",
        help="which measurements to run (default %(default)s)",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of audio (default %(default)s)")
    parser.add_argument("--original_clips", type=int, default=4, help="10-s clips for the original approach")
    parser.add_argument(
        "--process_minutes",
        type=float,
        default=20.0,
        help="minutes of mono WAV for the new-process run (default %(default)s)",
    )
    parser.add_argument(
        "--process_file_seconds",
        type=float,
        default=150.0,
        help="length of each of those files (default %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="new-process runs; the best is kept (default %(default)s)"
    )
    parser.add_argument(
        "--cpu_isa",
        choices=("avx2", "avx512_core"),
        help="newest instruction set TensorFlow's oneDNN kernels may use, in this process and the "
        "processes it starts (ONEDNN_MAX_CPU_ISA): `avx2` measures, side by side on an AVX-512 machine, "
        "what a machine with AVX2 only gets (default: all the CPU has)",
    )
    parser.add_argument(
        "--precision",
        help="comma-separated precisions (e.g. fp32,bf16,int8): instead of the measurements above, the "
        "--process_minutes job at each precision side by side, interleaved: VGGish alone, the pipeline "
        "in this process and (--measure all|new_process) as a new process; ratios against the first",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.cpu_isa:  # before anything imports TensorFlow; inherited by the pipeline processes
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.cpu_isa.upper()
    resolve_models(parser, args)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.precision:
        from gunshot_core import precision

        for name in args.precision.split(","):
            problem = precision.runtime_problem(name.strip())
            if name.strip() not in precision.CHOICES or problem:
                parser.error(problem or f"--precision: unknown precision {name.strip()!r}")
        with tempfile.TemporaryDirectory() as tmp:
            print_precisions(precision_figures(pathlib.Path(tmp), args), args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if args.measure in ("all", "new_process"):
            figures = new_process_figures(tmp, args)
        if args.measure in ("all", "in_process"):
            in_process(tmp, args)
    if args.measure in ("all", "new_process"):
        print_new_process(figures, args)
    return 0


def in_process(tmp: pathlib.Path, args) -> None:
    """The in-process measurements (pipeline, marginal, original approaches); prints their ratios."""
    first, second = tmp / "first", tmp / "second"
    first.mkdir()
    second.mkdir()
    audio_seconds = write_recordings(first, args.minutes)
    write_recordings(second, args.minutes)
    # Import everything first and run the floor first: module imports and TensorFlow's first-use
    # costs are paid outside every timed region.
    from apache_beam.runners.portability.fn_api_runner import fn_runner  # noqa: F401

    import pipelines.score  # noqa: F401

    floor, examples = floor_seconds(first, args.checkpoint)
    pipeline = pipeline_seconds([first], args.checkpoint, args.pca, tmp / "out1")
    pipeline_twice = pipeline_seconds([first, second], args.checkpoint, args.pca, tmp / "out2")
    per_clip, head_how = original_seconds_per_clip(args.checkpoint, args.pca, args.original_clips)
    clip_dir = tmp / "clips"
    clip_dir.mkdir()
    per_process = original_process_seconds_per_clip(
        write_clips(clip_dir, args.original_clips), args.checkpoint, args.pca
    )
    rates = {
        "floor": ("VGGish.embed alone, examples precomputed", audio_seconds / floor),
        "pipeline": ("pipelines.score end to end, defaults", audio_seconds / pipeline),
        "marginal": (
            "pipelines.score, marginal (2x audio - 1x)",
            audio_seconds / max(pipeline_twice - pipeline, 1e-9),
        ),
        "original": ("original: TF graph + session per 10-s clip", 10.0 / per_clip),
        "process": ("original: one process per 10-s clip", 10.0 / per_process),
    }
    print(
        f"audio: {audio_seconds / 60:.1f} min of mixed 44.1 kHz recordings ({examples} examples); {os.cpu_count()} CPUs"
    )
    print(f"original per clip: head by {head_how}")
    for label, rate in rates.values():
        print(f"  {label:<46} {rate:8.1f} audio-s/s")
    r = {k: v[1] for k, v in rates.items()}
    print(f"pipeline / floor            = {r['pipeline'] / r['floor']:.2f}   (target >= 0.7)")
    print(f"pipeline marginal / floor   = {r['marginal'] / r['floor']:.2f}")
    print(f"pipeline / original in-proc = {r['pipeline'] / r['original']:.1f}   (target >= 20)")
    print(f"pipeline / original per-call= {r['pipeline'] / r['process']:.1f}")


def precision_figures(tmp: pathlib.Path, args) -> dict:
    """{precision: {"floor", "pipeline", "process"}: best seconds} on the --process_minutes job; every
    precision once per round, rounds repeated `args.repeats` times, so a slow phase of a shared
    machine hits all alike. One untimed pipeline run per precision first (the int8 model is built
    into the user's cache then, as on a user's first int8 run)."""
    from gunshot_core import precision as precisions

    chosen = [precisions.resolve(p.strip()) for p in args.precision.split(",") if p.strip()]
    wavs = tmp / "mono"
    wavs.mkdir()
    audio_seconds = write_mono_wavs(wavs, args.process_minutes, args.process_file_seconds)
    examples_glob = str(REPO / "examples" / "*.wav")
    import pipelines.score  # noqa: F401 - imports outside the timed regions

    for p in chosen:
        pipeline_seconds([examples_glob], args.checkpoint, args.pca, tmp / f"warm-{p}", p)
    times = {p: {"floor": [], "pipeline": [], "process": []} for p in chosen}
    frontend = []
    for r in range(args.repeats):
        frontend.append(frontend_seconds(wavs))
        for p in chosen:
            seconds, examples = floor_seconds(wavs, args.checkpoint, p)
            times[p]["floor"].append(seconds)
            times[p]["pipeline"].append(
                pipeline_seconds([str(wavs)], args.checkpoint, args.pca, tmp / f"in-{p}-{r}", p)
            )
            if args.measure in ("all", "new_process"):
                wall, _ = process_seconds([str(wavs)], args.checkpoint, args.pca, tmp / f"proc-{p}-{r}", p)
                times[p]["process"].append(wall)
    best = {p: {k: min(v) if v else None for k, v in t.items()} for p, t in times.items()}
    return {"audio_seconds": audio_seconds, "examples": examples, "best": best, "frontend": min(frontend)}


def frontend_seconds(directory: pathlib.Path) -> float:
    """Seconds of decoding, resampling and the log-mel frontend alone (one thread) on the recordings:
    the share of the job no precision changes."""
    from gunshot_core import audio

    started = time.perf_counter()
    for path in sorted(directory.iterdir()):
        for _ in audio.iter_examples(str(path)):
            pass
    return time.perf_counter() - started


def print_precisions(figures: dict, args) -> None:
    """A table of audio hours per hour for each precision and each measurement, and ratios."""
    from gunshot_core import precision as precisions

    seconds, best = figures["audio_seconds"], figures["best"]
    base = next(iter(best))
    flags = precisions.cpu_flags()
    native = sorted(flags & (precisions.BF16_FLAGS | precisions.INT8_FLAGS)) or ["none"]
    print(
        f"precision: {seconds / 60:.1f} min of 44.1 kHz mono WAV in {args.process_file_seconds:g}-s files "
        f"({figures['examples']} examples), best of {args.repeats}; {os.cpu_count()} CPUs; "
        f"native bf16/int8 flags: {', '.join(native)}"
        + (f"; oneDNN limited to {args.cpu_isa.upper()}" if args.cpu_isa else "")
    )
    columns = [("floor", "VGGish alone"), ("pipeline", "pipeline, in process"), ("process", "new process")]
    columns = [(k, label) for k, label in columns if best[base][k] is not None]
    print(f"  {'audio hours per hour':<22}" + "".join(f"{label:>24}" for _, label in columns))
    print(f"  {'(ratio to ' + base + ')':<22}")
    for p, t in best.items():
        cells = "".join(f"{seconds / t[k]:>15.0f} ({best[base][k] / t[k]:5.2f}x)" for k, _ in columns)
        print(f"  {p:<22}{cells}")
    print("  runtimes: " + "; ".join(f"{p} {precisions.embedding_runtime(p)}" for p in best))
    print(
        f"  decode + resample + log-mel alone (one thread): {seconds / figures['frontend']:.0f} audio-s/s"
        f" ({figures['frontend']:.2f} s)"
    )
    for p, t in best.items():
        share = 1 - t["floor"] / t["pipeline"]
        print(f"  {p}: the pipeline spends {share:.0%} of its wall time outside VGGish's forward passes")


if __name__ == "__main__":
    sys.exit(main())
