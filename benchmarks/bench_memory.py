"""Peak memory of the scoring pipeline on one 2-hour recording vs. one 10-minute recording.

Each recording (44.1 kHz mono 16-bit WAV of a chirp with noise) is scored by `pipelines.score` in a
fresh process on the DirectRunner with default settings; the process reports its own peak resident
set size (ru_maxrss), which includes Python, TensorFlow and the VGGish weights. Recordings are read,
resampled and embedded in bounded chunks, so the peak should hardly grow with duration.

    python benchmarks/bench_memory.py --random_weights      # or --checkpoint ... --pca ...

Prints both peaks and the growth (target: under 25 %).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import soundfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_score import add_model_arguments, resolve_models  # noqa: E402

CHILD = """
import json, resource, sys
from pipelines import score
summary = score.run(sys.argv[1:])
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "summary": summary}))
"""


def write_recording(path: pathlib.Path, seconds: float, rate: int = 44100) -> None:
    """Writes a mono 16-bit WAV block by block (the generator's own memory stays small)."""
    rng = np.random.default_rng(0)
    block = rate * 60
    total = int(seconds * rate)
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16", format="WAV") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / rate
            f.write(0.2 * np.sin(2 * np.pi * (250 + 30 * np.sin(t / 7)) * t) + 0.05 * rng.standard_normal(n))


def peak_kb(recording: pathlib.Path, output: pathlib.Path, checkpoint: str, pca: str) -> dict:
    argv = [f"--input={recording}", f"--output={output}", f"--checkpoint={checkpoint}", f"--pca={pca}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], cwd=REPO, env=env, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_model_arguments(parser)
    parser.add_argument("--short_minutes", type=float, default=10.0)
    parser.add_argument("--long_minutes", type=float, default=120.0)
    args = parser.parse_args(argv)
    resolve_models(parser, args)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, minutes in (("short", args.short_minutes), ("long", args.long_minutes)):
            recording = tmp / f"{name}.wav"
            write_recording(recording, minutes * 60)
            results[name] = peak_kb(recording, tmp / f"out_{name}", args.checkpoint, args.pca)
            recording.unlink()
            summary = results[name]["summary"]
            print(
                f"{minutes:6.1f} min recording: peak RSS {results[name]['peak_kb'] / 1024:8.1f} MB, "
                f"{summary['recordings_ok']} ok / {summary['recordings_failed']} failed"
            )
    growth = results["long"]["peak_kb"] / results["short"]["peak_kb"] - 1
    print(
        f"peak memory growth {args.long_minutes:g} min vs {args.short_minutes:g} min = {growth * 100:+.1f} %  (target < 25 %)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
