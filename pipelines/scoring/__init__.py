"""The scoring job, one module per stage in data-flow order (each imports only modules above it).

    config.py        ScoringConfig, defaults, counter namespace, output tags
    reporting.py     error rows, rate-limited warnings, progress lines
    sources.py       what is read: inputs, archives member by member, file names to times
    match.py         1 match    patterns -> Source per file (error row when nothing matches)
    segments.py         plan    ranges of VGGish examples of one long recording
    plan.py          2 plan     Source -> work items (whole file, segment, archive part)
    records.py          decode  embedding TFRecords read record by record (no VGGish needed)
    from_run.py         decode  --from_run: an earlier run's recordings and stored frames (no VGGish)
    decode_ahead.py     decode  decoding ahead of VGGish on spare cores
    decode.py        3 decode   work item -> chunks of network inputs (the embedding model's) + RecordingInfo
    model_cache.py      embed   local copies of gs:// model files, once per worker
    embed.py         4 embed    RunInference(EmbeddingModelHandler) -> [k, d] frames
    events.py        5 events   runs of above-threshold windows (frames, for a frame-pooling head)
    score.py         6 score    frames -> windows / recordings / events / errors (/ frames) rows;
                                embed_recordings (stages 2-4 for other jobs); ScoreRecordings
    provenance.py    7 outputs  the provenance columns of every row
    outputs.py       7 outputs  table names, sort keys, staged writes, finalize
    rerun.py         7 outputs  --skip_existing: carry the previous run's rows over
    exports.py       8 exports  embeddings TFRecords, events.csv, Raven selection table
    clips.py         8 exports  WAV clips around events
    pipeline.py        the job  options -> config -> the stages above -> tables, run.json

A head with frame scores (a frame-pooling head, `Head.has_frame_scores`) also scores every frame:
its events are runs of above-threshold frames, starting and ending on frame boundaries (VGGish 0.96 s
frames; BirdNET 3-s frames every hop), and a `frames` table holds the frame scores.

Every stage takes what differs between embedding models (`--embedding_model vggish|birdnet`) from the
run's description (`ScoringConfig.model`, gunshot_core.embedding_models).

`python -m pipelines.score` (`pipelines/score.py`) is the entry point; docs/scoring.md the guide.
"""
