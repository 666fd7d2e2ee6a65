"""`gunshot report`: a static HTML site over one or more scoring runs (python -m pipelines.report).

Stages, one module each:

- `tables`: reads the Parquet tables of scoring runs (local or gs://) with DuckDB and aggregates them
  out of core (summary counts, heatmaps, histograms, top events, error groups).
- `media`: cuts audio clips from recordings (local files, archive members, gs://) through the core's
  decoder and writes them as WAV; shared with `gunshot search`.
- `plots`: small PNG figures (spectrograms, score timelines, heatmaps, histograms), matplotlib Agg.
- `html`: the page template, CSS and pagination of the static site; shared with `gunshot search`.
- `build`: composes the above into `index.html` and one page per top event.

Importing this package imports nothing heavy; each stage imports what it needs.
"""
