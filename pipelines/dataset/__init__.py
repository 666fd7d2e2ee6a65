"""`gunshot dataset`: a training set of AudioSet-format records from a team's own annotated recordings.

    python -m pipelines.dataset --audio 'field/**' --annotations field/ --positive gunshot \\
        --negative door thunder --group_pattern 'field/([^/]+)/' --split train=0.7 --split eval=0.3 \\
        --output dataset/

One module per stage (see docs/dataset.md):

- `options`: the command line and the resolved `Config`;
- `annotation_io` (1): annotation files -> `Annotation` rows, matched to recordings;
- `recordings` (2): recordings -> their frames (of --embedding_model), by the scoring pipeline's own
  decode and embedding steps, or from the embeddings table a `gunshot batch --write_embeddings` run wrote;
- `planning` (3, pure Python): where the examples of one recording lie;
- `splitting` (4): groups (e.g. sites) and the split of each group, the leakage report;
- `writing` (5): TFRecords per split, the examples and errors tables, stats.json;
- `pipeline`: the Beam job composing them (`run(argv)`).
"""
