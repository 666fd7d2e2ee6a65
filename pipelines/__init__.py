"""Beam jobs over gunshot_core, one package per job whose modules are its stages in data-flow order.

    score.py / build_subset.py   entry points (python -m ..., gunshot batch / subset, flex templates)
    scoring/                     the scoring job: recordings or embedding TFRecords -> Parquet tables
    subset/                      the subset builder: AudioSet TFRecords -> balanced subsets
    io/                          Beam plumbing shared by the jobs (matching, files, errors, writers, ...)
    options.py                   option parsing shared by the jobs
    schemas.py                   every table schema (the single home)

docs/architecture.md draws the tree and the data flow through it.
"""
