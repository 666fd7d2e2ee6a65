"""Beam plumbing shared by every job, one concern a module.

    matching.py   input patterns (local, gs://, globs) -> files, at launch time
    files.py      compressed inputs in, JSON run manifests out
    errors.py     error rows: counter + rate-limited warning + TaggedOutput(ERRORS_TAG, row)
    sharded.py    deterministic sharded writing (stable names, stable bytes)
    tables.py     Parquet tables with a fixed schema (pipelines.schemas), written and read back
    counters.py   the counters of a finished run
    launch.py     whether run() may wait for the job it started (templates, dry runs, no-wait)

Option parsing shared by the jobs is `pipelines.options`; table schemas are `pipelines.schemas`.
"""
