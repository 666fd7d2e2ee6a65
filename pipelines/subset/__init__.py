"""The subset builder, one module per stage in data-flow order (each imports only modules above it).

    config.py     the flags and the picklable Config of one run
    tag.py      1 read and tag   AudioSet shards -> one tagged row (tag, selection rank) per clip, or an error row
    balance.py  2 balance        per (split, tag): rank threshold, quota, class weight; leaked videos dropped
    stats.py    3 stats          counts per split, tag and class -> OUTPUT/stats.json
    write.py    4 write          shard and sort keys of the subset TFRecords and the tagged table
    pipeline.py   the job        options -> the stages above -> subset TFRecords + tagged/errors tables + stats

`python -m pipelines.build_subset` (`pipelines/build_subset.py`) is the entry point;
docs/build_subset.md the guide.
"""
