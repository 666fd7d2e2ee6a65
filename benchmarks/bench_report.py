"""Time and peak memory of `gunshot report` on synthetic tables of 10 M windows / 100 k recordings.

Writes the tables of a synthetic scoring run with pyarrow, chunk by chunk (so the generator's own
memory stays small): `windows` (100 windows per recording, 10 shards), `recordings`, `events` (runs
of consecutive detected windows), `errors` and `run.json`; half of the recordings have a UTC start,
recordings sit in 100 site folders. Then, each in a fresh process that reports its own peak resident
set size (ru_maxrss, Python and imports included):

- `report`: `python -m pipelines.report` with its defaults (DuckDB memory_limit 1GB, --top 200; the
  recordings do not exist, so every event page says so, and the score timelines are still drawn);
- `load`: what the tables cost held in memory: `pipelines.io.tables.read_table` of `windows` (pyarrow,
  decoded), the way the scoring job's summary reads tables.

    python benchmarks/bench_report.py                    # 10 M windows / 100 k recordings
    python benchmarks/bench_report.py --recordings 10000 # smaller, quicker

Prints the size of the tables, each process's wall time and peak RSS, and the ratios
(report peak / Parquet bytes, report peak / load peak). Target: report peak under 2 GB.
"""

import argparse
import datetime
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines import schemas  # noqa: E402

WINDOWS_PER_RECORDING = 100
SHARDS = 10
PROVENANCE = {
    "model_id": "0123456789abcdef",
    "head_name": "1LayerLSTM__Loss=BinCE_20Epochs_july02",
    "vggish_sha256": "a" * 64,
    "pca_sha256": "b" * 64,
    "head_sha256": "c" * 64,
    "code_version": "0.1.0",
    "window_seconds": 9.6,
    "hop_seconds": 4.8,
    "threshold": 0.4,
}
EPOCH = datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC)


def _with_provenance(columns: dict, n: int, schema: pa.Schema) -> pa.Table:
    for key, value in PROVENANCE.items():
        columns[key] = (
            pa.array(np.full(n, value)) if isinstance(value, float) else pa.array([value] * n, pa.string())
        )
    return pa.Table.from_pydict(columns, schema=schema)


def generate(directory: pathlib.Path, recordings: int, seed: int = 0) -> int:
    """Writes the synthetic run; returns the bytes of its Parquet files."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_shard = recordings // SHARDS
    writers = {}
    for shard in range(SHARDS):
        ids = np.arange(shard * per_shard, (shard + 1) * per_shard)
        names = [f"/archive/site{i % 100:03d}/rec{i:06d}.wav" for i in ids]
        timed = ids % 2 == 0
        starts_utc = [
            EPOCH + datetime.timedelta(minutes=int(i) * 7) if t else None
            for i, t in zip(ids, timed, strict=True)
        ]
        n = per_shard * WINDOWS_PER_RECORDING
        scores = rng.beta(0.6, 6.0, n).astype(np.float32)
        detected = scores >= PROVENANCE["threshold"]
        index = np.tile(np.arange(WINDOWS_PER_RECORDING, dtype=np.int32), per_shard)
        start = index * 4.8
        rec_of = np.repeat(np.arange(per_shard), WINDOWS_PER_RECORDING)
        utc_ms = np.array([int(s.timestamp() * 1000) if s else -1 for s in starts_utc], np.int64)[rec_of] + (
            start * 1000
        ).astype(np.int64)
        utc_mask = ~np.repeat(timed, WINDOWS_PER_RECORDING)
        windows = _with_provenance(
            {
                "source": pa.DictionaryArray.from_arrays(
                    pa.array(rec_of.astype(np.int32)), pa.array(names)
                ).cast(pa.string()),
                "window_index": index,
                "start_seconds": start,
                "end_seconds": start + 9.6,
                "start_utc": pa.array(utc_ms, pa.timestamp("ms", tz="UTC"), mask=utc_mask),
                "score": scores,
                "detected": detected,
            },
            n,
            schemas.SCORE_WINDOWS,
        )
        # Events: runs of consecutive detected windows within a recording.
        det = detected.reshape(per_shard, WINDOWS_PER_RECORDING)
        prev = np.concatenate([np.zeros((per_shard, 1), bool), det[:, :-1]], axis=1)
        nxt = np.concatenate([det[:, 1:], np.zeros((per_shard, 1), bool)], axis=1)
        first_r, first_w = np.nonzero(det & ~prev)
        last_r, last_w = np.nonzero(det & ~nxt)
        sc = scores.reshape(per_shard, WINDOWS_PER_RECORDING)
        peaks = np.array(
            [sc[r, a : b + 1].max() for r, a, b in zip(first_r, first_w, last_w, strict=True)], np.float32
        )
        peak_at = np.array(
            [a + int(np.argmax(sc[r, a : b + 1])) for r, a, b in zip(first_r, first_w, last_w, strict=True)]
        )
        k = len(first_r)
        event_utc = [starts_utc[r] for r in first_r]
        events = _with_provenance(
            {
                "source": pa.array([names[r] for r in first_r], pa.string()),
                "event_index": np.zeros(k, np.int32),
                "start_seconds": first_w * 4.8,
                "end_seconds": last_w * 4.8 + 9.6,
                "peak_score": peaks,
                "peak_seconds": peak_at * 4.8,
                "num_windows": (last_w - first_w + 1).astype(np.int32),
                "start_utc": pa.array(
                    [
                        u + datetime.timedelta(seconds=float(w) * 4.8) if u else None
                        for u, w in zip(event_utc, first_w, strict=True)
                    ],
                    pa.timestamp("ms", tz="UTC"),
                ),
                "end_utc": pa.array([None] * k, pa.timestamp("ms", tz="UTC")),
            },
            k,
            schemas.SCORE_EVENTS,
        )
        ok = np.ones(per_shard, bool)
        ok[::97] = False  # about 1 % fail
        rec_rows = {
            "source": pa.array(names, pa.string()),
            "file": pa.array(names, pa.string()),
            "member": pa.array([None] * per_shard, pa.string()),
            "input_kind": pa.array(["audio"] * per_shard, pa.string()),
            "format": pa.array(["WAV"] * per_shard, pa.string()),
            "sample_rate": np.full(per_shard, 16000, np.int32),
            "channels": np.ones(per_shard, np.int32),
            "duration_seconds": np.full(per_shard, 99 * 4.8 + 9.6),
            "frames": np.full(per_shard, 500, np.int32),
            "windows": np.full(per_shard, WINDOWS_PER_RECORDING, np.int32),
            "max_score": sc.max(axis=1),
            "max_score_start_seconds": sc.argmax(axis=1) * 4.8,
            "mean_score": sc.mean(axis=1).astype(np.float32),
            "detected": det.any(axis=1),
            "events": np.bincount(first_r, minlength=per_shard).astype(np.int32),
            "start_utc": pa.array(starts_utc, pa.timestamp("ms", tz="UTC")),
            "status": pa.array(np.where(ok, "ok", "error").tolist(), pa.string()),
            "error_reason": pa.array([None if o else "corrupt" for o in ok], pa.string()),
            "error_message": pa.array([None if o else "cannot decode audio" for o in ok], pa.string()),
        }
        recs = _with_provenance(rec_rows, per_shard, schemas.SCORE_RECORDINGS)
        bad = [names[i] for i in np.nonzero(~ok)[0]]
        errors = _with_provenance(
            {
                "source": pa.array(bad, pa.string()),
                "stage": pa.array(["decode"] * len(bad), pa.string()),
                "reason": pa.array(["corrupt"] * len(bad), pa.string()),
                "message": pa.array([f"{b}: cannot decode audio" for b in bad], pa.string()),
            },
            len(bad),
            schemas.SCORE_ERRORS,
        )
        for name, table in (
            ("windows", windows),
            ("events", events),
            ("recordings", recs),
            ("errors", errors),
        ):
            pq.write_table(table, directory / f"{name}-{shard:05d}-of-{SHARDS:05d}.parquet")
        del windows, events, recs, errors
        print(f"  shard {shard + 1}/{SHARDS} written", file=sys.stderr, flush=True)
    manifest = {"run_utc": "2024-03-01T00:00:00+00:00", "arguments": {"input": ["/archive"]}, "provenance": PROVENANCE,
                "summary": {"wall_seconds": 0.0}}  # fmt: skip
    (directory / "run.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    del writers
    return sum(p.stat().st_size for p in directory.glob("*.parquet"))


def measure(mode: str, run_dir: str, out_dir: str) -> dict:
    """Runs one measured step in this process; returns wall seconds and peak RSS."""
    started = time.monotonic()
    if mode == "report":
        from pipelines.report import build

        build.run(["--scores", run_dir, "--output", out_dir])
        extra = {}
    else:
        from pipelines.io import tables

        table = tables.read_table(run_dir, "windows")
        extra = {"rows": table.num_rows, "arrow_bytes": table.nbytes}
    wall = time.monotonic() - started
    return {
        "wall_seconds": wall,
        "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **extra,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recordings", type=int, default=100_000)
    parser.add_argument(
        "--dir", default=None, help="where to keep the synthetic run (default: a temp folder)"
    )
    parser.add_argument("--measure", choices=("report", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--run_dir", help=argparse.SUPPRESS)
    parser.add_argument("--out_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.run_dir, args.out_dir)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
        run_dir = pathlib.Path(args.dir or scratch) / f"run-{args.recordings}"
        marker = run_dir / "run.json"
        started = time.monotonic()
        if not marker.exists():
            print(
                f"writing {args.recordings:,} recordings x {WINDOWS_PER_RECORDING} windows to {run_dir}",
                file=sys.stderr,
            )
            generate(run_dir, args.recordings)
        table_bytes = sum(p.stat().st_size for p in run_dir.glob("*.parquet"))
        windows_bytes = sum(p.stat().st_size for p in run_dir.glob("windows-*.parquet"))
        print(f"tables ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        results = {}
        for mode in ("report", "load"):
            out = subprocess.run(
                [sys.executable, __file__, "--measure", mode, "--run_dir", str(run_dir), "--out_dir", os.path.join(scratch, "site")],
                check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        site = pathlib.Path(scratch) / "site"
        pages = list(site.glob("*.html"))
        largest = max(p.stat().st_size for p in pages)
        site_bytes = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    report, load = results["report"], results["load"]
    rows = args.recordings * WINDOWS_PER_RECORDING
    print(f"synthetic run: {rows:,} windows, {args.recordings:,} recordings")
    print(f"Parquet tables: {table_bytes / 2**20:,.1f} MiB (windows {windows_bytes / 2**20:,.1f} MiB);"
          f" windows decoded in memory (arrow): {load['arrow_bytes'] / 2**20:,.1f} MiB")  # fmt: skip
    print(
        f"report (DuckDB, memory_limit 1GB): {report['wall_seconds']:7.1f} s  peak RSS {report['peak_bytes'] / 2**20:8.1f} MiB"
    )
    print(
        f"load windows (pyarrow):            {load['wall_seconds']:7.1f} s  peak RSS {load['peak_bytes'] / 2**20:8.1f} MiB"
    )
    print(f"ratio report peak / Parquet bytes:  {report['peak_bytes'] / table_bytes:.2f}")
    print(f"ratio report peak / arrow windows:  {report['peak_bytes'] / load['arrow_bytes']:.2f}")
    print(f"ratio report peak / load peak:      {report['peak_bytes'] / load['peak_bytes']:.2f}")
    print(f"site: {len(pages)} pages, largest {largest / 1024:.0f} KiB, {site_bytes / 2**20:.1f} MiB in all")
    print(f"target: report peak under 2 GiB -> {'met' if report['peak_bytes'] < 2 * 2**30 else 'MISSED'}")


if __name__ == "__main__":
    main()
