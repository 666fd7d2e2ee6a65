"""`gunshot search`: find the windows of an archive most like example sounds (python -m pipelines.search).

Stages, one module each:

- `queries`: `--query RECORDING[@START]` -> the uint8 VGGish frames of each query window, from the
  embeddings table when it holds them, else decoded and embedded as `gunshot batch` does (at launch).
- `scan` (Beam): the embeddings table (Parquet, `parquetio`) -> cosine similarity in batches (one
  matrix product per batch, `gunshot_core.similarity`) -> top-K per query (`Top.SmallestPerKey`),
  excluding each query's own window.
- `outputs`: queries/errors table rows, a Raven selection table per query, and the HTML pages with
  spectrograms and audio of the hits (the report's building blocks, `pipelines.report`).
- `pipeline`: the command line, `run(argv)` and `main(argv)`.

Importing this package imports nothing heavy.
"""
