"""Rescoring stored embeddings (`gunshot batch --from_run`) vs. scoring the same audio, in audio hours
per wall hour, and the rescoring job's peak memory on 10, 40 and more hours of embeddings.

Measured side by side in one run, every job a new `python -m pipelines.score` process on the
DirectRunner with default settings (as a user runs it; the one-off costs of importing Beam, building
the pipeline and loading models included):

- audio: `--audio_minutes` (default 4) and twice that of 44.1 kHz mono WAV in 60-s files, scored
  with `--write_embeddings`; whole-job rate = audio / wall, steady-state rate = the extra audio of the
  larger job / its extra wall time (free of the start-up);
- rescore: parent runs of `--hours` (default 10) and 4x that many hours of embeddings, synthesised
  (seeded random uint8 frames in 1-hour recordings, written as the pipeline writes the embeddings and
  recordings tables, in row groups of 65,536 frames, with the run.json of the audio job above), rescored with the same head by
  `--from_run`; whole-job and steady-state rates as above, and each process's own peak resident set
  size (VmHWM of that process, read as it exits).

    python benchmarks/bench_rescore.py --random_weights       # or --checkpoint ... --pca ...

Prints the rates, the ratios rescore/audio (steady state, target >= 200; whole job, of the smaller
job and of every job), every job's peak and its number of windows files. `--more_hours 100,200`
adds rescoring jobs of 100 and 200 hours: archives of more than `from_run.MAX_SHARD_FRAMES` frames
(~35 hours) are written in several files by ranges of source, and from there on the peak should stay
flat. `--one_file` also rescores every archive into one file per table (the writer then sorts the
whole table in memory), for comparison.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_memory import write_recording  # noqa: E402
from benchmarks.bench_score import add_model_arguments, resolve_models  # noqa: E402

FRAMES_PER_HOUR = int(3600 / 0.96)


# Runs `pipelines.score` as __main__ and, at exit, writes the process's VmHWM (kB) to argv[1]. Not
# ru_maxrss: Linux carries the parent's peak RSS into a child started by vfork+exec (as subprocess
# does), so a benchmark that synthesised a large table would be measured instead of the job. argv[2],
# when not empty, replaces the frames per file of a rescored run's per-frame tables (the DirectRunner
# plans the job in this process).
_CHILD = """
import atexit, runpy, sys
peak_file = sys.argv.pop(1)
shard_frames = sys.argv.pop(1)
if shard_frames:
    from pipelines.scoring import from_run
    from_run.MAX_SHARD_FRAMES = int(shard_frames)

def _peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM"))
    with open(peak_file, "w") as out:
        out.write(peak)

atexit.register(_peak)
sys.argv[0] = "pipelines.score"
runpy.run_module("pipelines.score", run_name="__main__", alter_sys=True)
"""

#: MAX_SHARD_FRAMES of `--one_file` jobs: more frames than any benchmarked archive (one file per table).
ONE_FILE = 1 << 40


def run_job(argv: list[str], shard_frames: int | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in kB) of one `python -m pipelines.score` process (its own VmHWM)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with tempfile.TemporaryFile() as stderr, tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, peak.name, str(shard_frames or ""), *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        wall = time.perf_counter() - started
        if child.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"pipelines.score {argv} failed:\n{stderr.read().decode()[-3000:]}")
        return wall, int(peak.read())


def write_audio(directory: pathlib.Path, minutes: float) -> float:
    directory.mkdir(parents=True)
    for i in range(int(round(minutes))):
        write_recording(directory / f"rec{i:03d}.wav", 60.0)
    return 60.0 * int(round(minutes))


def synthesise_parent(audio_run: pathlib.Path, target: pathlib.Path, hours: int) -> None:
    """A parent run of `hours` 1-hour recordings of random frames, tables as the pipeline writes them
    (written one row group at a time: the benchmark's own memory stays small)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines import schemas
    from pipelines.scoring import outputs

    target.mkdir(parents=True)
    manifest = json.loads((audio_run / "run.json").read_text())
    provenance = manifest["provenance"]
    rng = np.random.default_rng(0)
    sources = np.array(sorted(f"/archive/site{i % 7}/rec{i:04d}.wav" for i in range(hours)), dtype=object)
    recordings = []
    for source in sources:
        row = {"source": source, "file": source, "input_kind": "audio", "format": "WAV"}
        row.update(
            sample_rate=44100, channels=1, duration_seconds=3600.0, frames=FRAMES_PER_HOUR, status="ok"
        )
        recordings.append({**row, **provenance})
    total, group = hours * FRAMES_PER_HOUR, outputs.ROW_GROUP_ROWS["embeddings"]
    path = target / "embeddings-00000-of-00001.parquet"
    with pq.ParquetWriter(path, schemas.SCORE_EMBEDDINGS, compression="zstd") as writer:
        for start in range(0, total, group):
            row = np.arange(start, min(start + group, total))
            n = len(row)
            frames = rng.integers(0, 256, n * 128, dtype=np.uint8)
            table = pa.table(
                {
                    "source": sources[row // FRAMES_PER_HOUR].tolist(),
                    "frame_index": (row % FRAMES_PER_HOUR).astype(np.int32),
                    "start_seconds": (row % FRAMES_PER_HOUR) * 0.96,
                    "embedding": pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(128), n, [None, pa.py_buffer(frames)]
                    ),
                    **{k: [v] * n for k, v in provenance.items()},
                },
                schema=schemas.SCORE_EMBEDDINGS,
            )
            writer.write_table(table, row_group_size=group)
    pq.write_table(
        pa.Table.from_pylist(recordings, schema=schemas.SCORE_RECORDINGS),
        target / "recordings-00000-of-00001.parquet",
        compression="zstd",
    )
    pq.write_table(schemas.SCORE_ERRORS.empty_table(), target / "errors-00000-of-00001.parquet")
    (target / "run.json").write_text(json.dumps(manifest))


def _hours_list(text: str) -> list[int]:
    return [int(h) for h in text.split(",") if h.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_model_arguments(parser)
    parser.add_argument("--head", help="head (default: the bundled one)")
    parser.add_argument("--audio_minutes", type=float, default=4.0, help="audio of the smaller audio job")
    parser.add_argument("--hours", type=int, default=10, help="embeddings of the smaller rescoring job")
    parser.add_argument(
        "--more_hours",
        type=_hours_list,
        nargs="*",
        default=[],
        help="further rescoring jobs of these many hours, e.g. 100,200 (their peak memory is reported too)",
    )
    parser.add_argument(
        "--one_file",
        action="store_true",
        help="also rescore every archive writing each table as one file (no ranges of source), for comparison",
    )
    args = parser.parse_args(argv)
    resolve_models(parser, args)
    head = [f"--head={args.head}"] if args.head else []
    models = [f"--checkpoint={args.checkpoint}", f"--pca={args.pca}", *head]
    sizes = sorted({args.hours, 4 * args.hours, *(h for hs in args.more_hours for h in hs)})
    with tempfile.TemporaryDirectory(prefix="bench-rescore-") as tmp:
        root = pathlib.Path(tmp)
        small, large = args.audio_minutes, 2 * args.audio_minutes
        seconds = {m: write_audio(root / f"audio{m:g}", m) for m in (small, large)}
        # One untimed job first: model hashes and the checkpoint's converted copy are then cached.
        run_job([f"--input={root / f'audio{small:g}'}", f"--output={root / 'warm'}", *models])
        audio = {}
        for m in (small, large):
            out = root / f"run{m:g}"
            wall, peak = run_job(
                [f"--input={root / f'audio{m:g}'}", f"--output={out}", "--write_embeddings", *models]
            )
            audio[m] = (seconds[m] / 3600, wall, peak)
        rescore, one_file, files = {}, {}, {}
        for hours in sizes:
            parent = root / f"parent{hours}"
            synthesise_parent(root / f"run{small:g}", parent, hours)
            output = root / f"rescored{hours}"
            wall, peak = run_job([f"--from_run={parent}", f"--output={output}", *head])
            rescore[hours] = (float(hours), wall, peak)
            files[hours] = len(list(output.glob("windows-*.parquet")))
            if args.one_file:
                wall, peak = run_job([f"--from_run={parent}", f"--output={root / 'one'}", *head], ONE_FILE)
                one_file[hours] = (float(hours), wall, peak)
                shutil.rmtree(root / "one")
            shutil.rmtree(parent)
            shutil.rmtree(output)

    def rates(d):
        (h1, w1, _), (h2, w2, _) = sorted(d.values())[0], sorted(d.values())[-1]
        return h1 / (w1 / 3600), (h2 - h1) / ((w2 - w1) / 3600)

    audio_whole, audio_steady = rates(audio)
    rescore_whole, rescore_steady = rates(rescore)
    jobs = {}
    for hours, (h, w, p) in rescore.items():
        jobs[f"{h:g} h"] = {
            "wall_s": round(w, 2),
            "peak_mb": round(p / 1024),
            "windows_files": files[hours],
            "audio_hours_per_hour": round(h / (w / 3600), 1),
            "ratio_whole_job": round(h / (w / 3600) / audio_whole, 1),
        }
        if hours in one_file:
            jobs[f"{h:g} h"].update(
                one_file_wall_s=round(one_file[hours][1], 2), one_file_peak_mb=round(one_file[hours][2] / 1024)
            )
    # From the first archive written in several files on, the writers' memory no longer grows.
    split = [h for h in sizes if files[h] > 1]
    bounded = [rescore[h][2] / 1024 for h in sizes if split and h >= split[0]]
    report = {
        "audio_jobs": {
            f"{h * 60:g} min": {"wall_s": round(w, 2), "peak_mb": round(p / 1024)}
            for h, w, p in audio.values()
        },
        "rescore_jobs": jobs,
        "audio_hours_per_hour": {"whole_job": round(audio_whole, 1), "steady_state": round(audio_steady, 1)},
        "rescore_hours_per_hour": {
            "whole_job": round(rescore_whole, 1),
            "steady_state": round(rescore_steady, 1),
        },
        "ratio_steady_state": round(rescore_steady / audio_steady, 1),
        "ratio_whole_job": round(rescore_whole / audio_whole, 1),
        "peak_growth_4x_hours": round(rescore[4 * args.hours][2] / rescore[args.hours][2] - 1, 3),
    }
    print(json.dumps(report, indent=2))
    peaks = ", ".join(f"{h} h {round(rescore[h][2] / 1024)} MB ({files[h]} files)" for h in sizes)
    print(
        f"rescore/audio: {report['ratio_steady_state']}x steady state (target >= 200), "
        f"{report['ratio_whole_job']}x whole job; peak memory: {peaks}"
    )
    if len(bounded) > 1:
        print(
            f"from {split[0]} h (several files) to {sizes[-1]} h: peak {min(bounded):.0f}-{max(bounded):.0f} MB "
            f"({max(bounded) / min(bounded) - 1:+.1%} for {sizes[-1] / split[0]:g}x the hours)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
