"""Measures local pipeline throughput and turns it into Dataflow time and cost estimates (docs/dataflow.md).

    python deploy/throughput.py [--records 20000] [--audio_minutes 20] [--skip_score]

Runs, on the DirectRunner in this process (in_memory, one bundle at a time):
1. pipelines.build_subset on synthetic AudioSet shards carrying the real clip ids and label sets of
   ../shared/audioset (tests/fixtures_audioset.py), default 20,000 records in 8 shards;
2. pipelines.score on generated 44.1 kHz stereo WAV recordings with the random-weight VGGish of
   ../shared/golden (same architecture and cost as the real checkpoint).

For each it prints wall time and process CPU time (user+sys, so all cores TensorFlow used count) and
the rate per CPU-hour, then scales to full AudioSet (2,084,320 clips) and to 1,000 hours of audio with
the Dataflow prices given as options (defaults: the us-central1 batch list prices we looked up; verify
them before you rely on the numbers). Local DirectRunner overhead is included, so the per-CPU rates are
conservative for Dataflow workers.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AUDIOSET_CLIPS = 2_084_320  # clips in the AudioSet release (balanced + unbalanced train + eval)
SCORE_HOURS = 1000.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def measure(fn):
    wall, cpu = time.monotonic(), cpu_seconds()
    result = fn()
    return result, time.monotonic() - wall, cpu_seconds() - cpu


def subset_throughput(tmp: pathlib.Path, records: int) -> dict:
    from pipelines import build_subset
    from tests import fixtures_audioset
    from tests.conftest import AUDIOSET

    segments = fixtures_audioset.read_segments(AUDIOSET / "balanced_train_segments.csv")
    segments += fixtures_audioset.read_segments(AUDIOSET / "eval_segments.csv")
    segments = segments[:records]
    fixtures_audioset.write_shards(tmp / "shards", segments, num_shards=8)
    argv = [f"--input={tmp / 'shards'}/*.tfrecord", f"--output={tmp / 'subset'}"]
    _, wall, cpu = measure(lambda: build_subset.run(argv))
    return {
        "records": len(segments),
        "wall_s": wall,
        "cpu_s": cpu,
        "records_per_cpu_hour": len(segments) / cpu * 3600,
    }


def score_throughput(tmp: pathlib.Path, minutes: float) -> dict:
    from pipelines import score
    from tests import score_inputs
    from tests.conftest import load_recipe

    recipe = load_recipe()
    models = tmp / "models"
    models.mkdir()
    ckpt = recipe.write_v1_checkpoint(str(models / recipe.CKPT_NAME))
    pca = str(models / recipe.PCA_NAME)
    recipe.write_pca_npz(pca)
    audio = tmp / "audio"
    audio.mkdir()
    files = 4
    for i in range(files):
        score_inputs.write_wav(audio / f"rec{i}.wav", minutes * 60 / files, 44100, 2, seed=i)
    argv = [f"--input={audio}/*.wav", f"--output={tmp / 'scores'}", f"--checkpoint={ckpt}", f"--pca={pca}"]
    summary, wall, cpu = measure(lambda: score.run(argv))
    hours = summary["audio_hours_this_run"]
    return {
        "audio_hours": hours,
        "wall_s": wall,
        "cpu_s": cpu,
        "audio_hours_per_cpu_hour": hours / cpu * 3600,
    }


def estimate(
    rate_per_cpu_hour: float, amount: float, vcpus: int, memory_gb: float, workers: int, prices
) -> dict:
    """CPU-hours, wall hours on `workers` machines of `vcpus`, and the worker cost (CPU + memory + disk)."""
    cpu_hours = amount / rate_per_cpu_hour
    machine_hours = cpu_hours / vcpus
    wall_hours = machine_hours / workers
    cost = machine_hours * (
        vcpus * prices["vcpu_hour"] + memory_gb * prices["gb_hour"] + prices["disk_gb_hour"] * 25
    )
    return {"cpu_hours": cpu_hours, "wall_hours": wall_hours, "worker_cost_usd": cost}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20000, help="records for the subset measurement")
    parser.add_argument("--audio_minutes", type=float, default=20.0, help="audio for the scoring measurement")
    parser.add_argument("--skip_score", action="store_true")
    parser.add_argument("--skip_subset", action="store_true")
    parser.add_argument(
        "--vcpu_hour", type=float, default=0.056, help="Dataflow batch price per vCPU-hour (USD)"
    )
    parser.add_argument(
        "--gb_hour", type=float, default=0.003557, help="Dataflow batch price per GB-hour (USD)"
    )
    parser.add_argument("--disk_gb_hour", type=float, default=0.000054, help="standard PD price per GB-hour")
    args = parser.parse_args(argv)
    prices = {"vcpu_hour": args.vcpu_hour, "gb_hour": args.gb_hour, "disk_gb_hour": args.disk_gb_hour}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="throughput_"))
    report = {"cpus_here": os.cpu_count(), "prices": prices}
    if not args.skip_subset:
        measured = subset_throughput(tmp, args.records)
        report["build_subset"] = measured
        report["build_subset_full_audioset_n1_standard_4_x10"] = estimate(
            measured["records_per_cpu_hour"], AUDIOSET_CLIPS, 4, 15.0, 10, prices
        )
    if not args.skip_score:
        measured = score_throughput(tmp, args.audio_minutes)
        report["score"] = measured
        report["score_1000h_n1_standard_4_x10"] = estimate(
            measured["audio_hours_per_cpu_hour"], SCORE_HOURS, 4, 15.0, 10, prices
        )
    print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
