"""Speed of `gunshot dataset`: from audio vs. `gunshot batch`, and from embeddings vs. from audio.

Measured side by side in one run, on the same synthetic field recordings (tests/field_sites.py:
sites of coloured noise, chirps and rain with gunshots and confusers inserted, 16 and 44.1 kHz,
WAV and FLAC, one Raven table per recording), every job on the DirectRunner with its defaults:

- batch: `pipelines.score.run` over the recordings (decode, embed, score, write tables);
- dataset from audio: `pipelines.dataset.pipeline.run --audio` over the same recordings (decode and
  embed by the same steps, then windows, records, tables) - the same work, so the target is a
  ratio >= 0.9;
- dataset from embeddings: `--embeddings DIR` on the output of `gunshot batch --write_embeddings` over
  the same recordings (no audio decoded) - target >= 20x the audio path.

A small warm-up run of each job comes first (imports, TensorFlow's first use); each timed job runs
`--repeats` times and the fastest run counts.

    python benchmarks/bench_dataset.py --random_weights              # the test suite's VGGish
    python benchmarks/bench_dataset.py --checkpoint vggish_model.ckpt --pca vggish_pca_params.npz
"""

import argparse
import logging
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_score import add_model_arguments, resolve_models  # noqa: E402

NEGATIVE = ("speech", "footsteps", "click", "branch")


def make_field(root: pathlib.Path, sites: int, recordings: int, minutes: float) -> float:
    """Writes the field sites; returns the seconds of audio."""
    from tests import field_sites

    names = tuple(f"site{chr(ord('A') + i)}" for i in range(sites))
    field_sites.make_sites(root, sites=names, recordings_per_site=recordings, minutes=minutes, seed=11)
    os.remove(root / field_sites.GROUND_TRUTH)
    return sum(field_sites.recording_seconds(root).values())


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_model_arguments(parser)
    parser.add_argument("--sites", type=int, default=3, help="(%(default)s)")
    parser.add_argument("--recordings", type=int, default=2, help="recordings per site (%(default)s)")
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes per recording (%(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each timed job; the fastest counts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    resolve_models(parser, args)

    from pipelines import score
    from pipelines.dataset import pipeline

    models = [f"--checkpoint={args.checkpoint}", f"--pca={args.pca}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        field, warm = tmp / "field", tmp / "warm"
        audio_seconds = make_field(field, args.sites, args.recordings, args.minutes)
        make_field(warm, 2, 1, 0.5)
        labels = ["--negative", *NEGATIVE, "--group_pattern", r"/(site[A-Z])/"]

        def batch(inputs, output, *extra):
            return lambda: score.run([f"--input={inputs}", f"--output={output}", *models, *extra])

        def dataset(output, *source):
            return lambda: pipeline.run(
                [*source, f"--annotations={field}", f"--output={output}", *labels, *models]
            )

        # Warm-up: imports, TensorFlow's first use, the DirectRunner's first pipeline.
        score.run([f"--input={warm}", f"--output={tmp / 'warm_batch'}", "--write_embeddings", *models])
        pipeline.run(
            [f"--audio={warm}", f"--annotations={warm}", f"--output={tmp / 'warm_ds'}", *labels, *models]
        )
        pipeline.run(
            [
                f"--embeddings={tmp / 'warm_batch'}",
                f"--annotations={warm}",
                f"--output={tmp / 'warm_ds2'}",
                *labels,
            ]
        )

        t_batch = timed(batch(field, tmp / "batch"), args.repeats)
        t_audio = timed(dataset(tmp / "ds_audio", f"--audio={field}"), args.repeats)
        batch(field, tmp / "embeddings", "--write_embeddings")()  # the --embeddings input (not timed)
        t_embeddings = timed(
            dataset(tmp / "ds_embeddings", f"--embeddings={tmp / 'embeddings'}"), args.repeats
        )
        same = all(
            (tmp / "ds_audio" / p.relative_to(tmp / "ds_embeddings")).read_bytes() == p.read_bytes()
            for p in sorted((tmp / "ds_embeddings").rglob("*"))
            if p.is_file() and p.name != "stats.json"
        )
    rate = {
        name: audio_seconds / t for name, t in (("batch", t_batch), ("audio", t_audio), ("emb", t_embeddings))
    }
    print(
        f"audio: {audio_seconds / 60:.1f} min in {args.sites * args.recordings} field recordings "
        f"({args.sites} sites); {os.cpu_count()} CPUs; fastest of {args.repeats} runs"
    )
    print(f"  gunshot batch                      {t_batch:8.2f} s  {rate['batch']:8.1f} audio-s/s")
    print(f"  gunshot dataset --audio            {t_audio:8.2f} s  {rate['audio']:8.1f} audio-s/s")
    print(f"  gunshot dataset --embeddings       {t_embeddings:8.2f} s  {rate['emb']:8.1f} audio-s/s")
    print(f"dataset from audio / batch          = {rate['audio'] / rate['batch']:.2f}   (target >= 0.9)")
    print(f"dataset from embeddings / from audio = {rate['emb'] / rate['audio']:.1f}   (target >= 20)")
    print(f"examples from embeddings identical to those from audio: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
