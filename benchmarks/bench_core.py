"""Core-library benchmarks, each a ratio of two things measured side by side in this one run.

1. VGGish.embed (TF2/Keras, compiled) vs. the official TF1 graph (tf.compat.v1 graph of the
   vggish_slim architecture restored from the same checkpoint with a Saver and run in a Session),
   on the same examples.
2. `gunshot score` on one 10-s clip: cold (new process: imports + model loading + scoring) and warm
   (models loaded, one more clip), vs. the original project's ~7 s per clip.
3. Frontend + resampling cost as a fraction of the CNN cost, for 10 minutes of 44.1 kHz audio,
   with the default resampler (soxr) and the reference one (resampy).

Usage: python benchmarks/bench_core.py [--checkpoint CKPT --pca NPZ]
Without model paths it writes the random-weight checkpoint of ../shared/golden (same shapes and
cost as the real one) into a temporary directory.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gunshot_core import (  # noqa: E402
    audio,  # noqa: E402
    features,
    params,
    resample,  # noqa: E402
)
from gunshot_core.vggish import LAYERS, VGGish  # noqa: E402

ORIGINAL_SECONDS_PER_CLIP = 7.0  # the original project's reported CPU inference time per clip


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def official_tf1_embedder(checkpoint):
    """The reference inference path: a TF1 graph with the slim variable names, restored by a Saver."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(
            tf.float32, [None, params.NUM_FRAMES, params.NUM_BANDS], name="vggish/input_features"
        )
        net = tf.reshape(x, [-1, params.NUM_FRAMES, params.NUM_BANDS, 1])
        for scope, kind, shape in LAYERS:
            with v1.variable_scope(scope):
                w = v1.get_variable("weights", shape)
                b = v1.get_variable("biases", shape[-1:])
            if kind == "conv":
                net = tf.nn.relu(tf.nn.conv2d(net, w, 1, "SAME") + b)
                if scope.endswith(("conv1", "conv2", "conv3_2", "conv4_2")):
                    net = tf.nn.max_pool2d(net, 2, 2, "SAME")
            else:
                if scope.endswith("fc1_1"):
                    net = tf.reshape(net, [-1, 12288])
                net = tf.matmul(net, w) + b
                if not scope.endswith("fc2"):
                    net = tf.nn.relu(net)
        embedding = tf.identity(net, name="vggish/embedding")
        session = v1.Session(graph=graph)
        v1.train.Saver().restore(session, checkpoint)
    return lambda examples: session.run(embedding, {x: examples})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--pca")
    parser.add_argument("--examples", type=int, default=320, help="examples per embedding timing")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench_core_")
    if not args.checkpoint:
        sys.path.insert(0, str(REPO.parent / "shared" / "golden"))
        import vggish_random_weights as recipe

        args.checkpoint = recipe.write_v1_checkpoint(os.path.join(tmp, recipe.CKPT_NAME))
        args.pca = os.path.join(tmp, recipe.PCA_NAME)
        recipe.write_pca_npz(args.pca)

    rng = np.random.default_rng(0)
    examples = rng.normal(-2.0, 2.0, (args.examples, params.NUM_FRAMES, params.NUM_BANDS)).astype(np.float32)

    # 1. embedding throughput, same examples, same process
    ours = VGGish.from_checkpoint(args.checkpoint)
    official = official_tf1_embedder(args.checkpoint)
    ours.embed(examples[:64])
    official(examples[:64])  # warm both
    np.testing.assert_allclose(ours.embed(examples[:8]), official(examples[:8]), atol=1e-4)
    # Interleaved rounds, so both see the same machine load; the official graph is fed the same
    # fixed-size batches VGGish.embed runs (its own default block) and, separately, all at once.
    block = ours.batch_size

    def run_official(size):
        return np.concatenate([official(examples[i : i + size]) for i in range(0, len(examples), size)])

    rounds = {"ours": [], "official_same_blocks": [], "official_one_batch": []}
    for _ in range(5):
        rounds["ours"].append(best_of(lambda: ours.embed(examples), repeats=1))
        rounds["official_same_blocks"].append(best_of(lambda: run_official(block), repeats=1))
        rounds["official_one_batch"].append(best_of(lambda: run_official(len(examples)), repeats=1))
    t_ours = float(np.median(rounds["ours"]))
    for name in ("official_same_blocks", "official_one_batch"):
        t_official = float(np.median(rounds[name]))
        print(
            f"[embed] {args.examples} examples, median of 5 interleaved rounds: VGGish.embed (blocks of {block}) "
            f"{args.examples / t_ours:.1f} ex/s vs official TF1 graph ({name.replace('_', ' ')}) "
            f"{args.examples / t_official:.1f} ex/s -> ours/official = {t_official / t_ours:.2f}x"
        )

    # 3. frontend + resampling vs CNN on 10 minutes of 44.1 kHz audio
    seconds = 600
    rate = 44100
    t = np.arange(seconds * rate) / rate
    waveform = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    wav = os.path.join(tmp, "ten_minutes.wav")
    import soundfile

    soundfile.write(wav, np.stack([waveform, waveform * 0.5], axis=1), rate, subtype="PCM_16")
    ex16 = features.waveform_to_examples(audio.load_audio(wav))
    t_cnn = best_of(lambda: ours.embed(ex16), repeats=1)
    for resampler in resample.RESAMPLERS:
        t_decode = best_of(lambda r=resampler: audio.load_audio(wav, resampler=r), repeats=2)
        w16 = audio.load_audio(wav, resampler=resampler)
        t_front = best_of(lambda w=w16: features.waveform_to_examples(w), repeats=2)
        print(
            f"[frontend] 10 min 44.1 kHz stereo, resampler={resampler}: decode+resample {t_decode:.2f} s, "
            f"log-mel {t_front:.2f} s, CNN {t_cnn:.2f} s -> (decode+resample+log-mel)/CNN = "
            f"{(t_decode + t_front) / t_cnn:.3f}"
        )

    # 2. the CLI: cold (fresh process) and warm (models already loaded)
    clip = str(REPO / "examples" / "pistol_shot.wav")
    cmd = [
        sys.executable,
        "-m",
        "gunshot_core.cli",
        "score",
        clip,
        "--checkpoint",
        args.checkpoint,
        "--pca",
        args.pca,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    t_cold = time.perf_counter() - start
    from gunshot_core.models import resolve_model_paths
    from gunshot_core.score_cli import Scorer

    scorer = Scorer(args.checkpoint, args.pca, resolve_model_paths(args.checkpoint, args.pca).head)
    scorer.score(clip, 10, 5)
    t_warm = best_of(lambda: scorer.score(clip, 10, 5))
    print(
        f"[cli] one 10-s clip: cold {t_cold:.2f} s ({ORIGINAL_SECONDS_PER_CLIP / t_cold:.1f}x faster than the "
        f"original's ~7 s), warm {t_warm:.3f} s ({ORIGINAL_SECONDS_PER_CLIP / t_warm:.0f}x)"
    )


if __name__ == "__main__":
    main()
