"""`gunshot review`: draw a sample of scored windows, review it in the browser, export the verdicts.

    gunshot review sample --scores RUN_DIR --output REVIEW_DIR --size 100      # sample.csv, clips
    gunshot review serve REVIEW_DIR --reviewer ana                             # http://127.0.0.1:8765
    gunshot review export REVIEW_DIR                                           # Raven selection table

Modules: `frame` (the windows offered for review, read from scoring runs with DuckDB), `sample`
(drawing the sample, cutting clips and spectrograms), `verdicts` (the verdicts.csv file: locked
appends, supersession, Raven export), `server` (the Flask review app), `cli` (the command). The
statistics are in `gunshot_core.review_stats`; the file formats in docs/review.md.
"""
