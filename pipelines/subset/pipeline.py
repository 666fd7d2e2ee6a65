"""The subset job: options -> read and tag -> balance -> subset TFRecords + tagged table + stats.json.

Stage: subset (the whole job). `run(argv)` parses the options, matches the input shards
(`resolve_inputs`), builds the pipeline (`build_pipeline`), waits for it and logs a summary.
`python -m pipelines.build_subset` and `gunshot subset` call `run`.

    python -m pipelines.build_subset --input 'audioset_v1_embeddings/eval/*.tfrecord' --output out/
    python -m pipelines.build_subset --split eval='.../eval/*' --split train='.../bal_train/*' \\
        --output gs://bucket/subsets/v1 --runner DataflowRunner ...

Reads official AudioSet SequenceExample shards (local or gs://, plain or gzip), tags each clip exclusively
(gunshot / no_gunshot by default, or N named tags), balances each split by a seeded hash rank and writes,
per split, `OUTPUT/<split>/subset-SSSSS-of-NNNNN.tfrecord` (selected records, byte for byte), plus
`OUTPUT/tagged-*.parquet`, `OUTPUT/errors-*.parquet` (schemas in pipelines.schemas) and
`OUTPUT/stats.json`. docs/build_subset.md explains every option and output.
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from gunshot_core.errors import InputError
from pipelines import options as pipelines_options
from pipelines import schemas
from pipelines.io import counters, launch, matching, sharded, tables
from pipelines.io import errors as io_errors
from pipelines.subset.balance import (
    ComputeThresholds,
    Select,
    _eligible_ranks,
    _leak_entry,
    _rows_of,
    _selected_in,
    _video_splits,
)
from pipelines.subset.config import NAMESPACE, Config, build_parser
from pipelines.subset.stats import STATS_FILE, RowStats, WriteStats
from pipelines.subset.tag import ReadAndTag, parse_segment_line
from pipelines.subset.write import (
    SUBSET_PREFIX,
    TAGGED_SORT_COLUMNS,
    _subset_shard_key,
    _subset_sort_key,
    _tagged_shard_key,
    _write_payloads,
)

_LOG = logging.getLogger(__name__)


def build_pipeline(p: beam.Pipeline, config: Config, inputs: list[tuple[str, str]]):
    """Adds the subset builder to pipeline `p`.

    Args:
      p: the pipeline.
      config: resolved settings.
      inputs: [(split, shard path)] in a stable order.
    Returns:
      dict of the main PCollections: rows (lists of tagged rows, one per input shard), errors (error
      rows), stats (one dict).
    """
    segments = None
    if config.label_source != "records":
        mid_to_index = {mid: i for i, mid in config.class_mids.items()}
        segments = (
            p
            | "SegmentsCsv" >> beam.Create(config.segments_csv)
            | "ReadSegments" >> beam.io.ReadAllFromText()
            | "ParseSegments"
            >> beam.FlatMap(lambda line, m: [x for x in [parse_segment_line(line, m)] if x], mid_to_index)
        )
    read = (
        p
        | "Shards" >> beam.Create(inputs)
        | "Spread" >> beam.Reshuffle()
        | "ReadAndTag"
        >> beam.ParDo(
            ReadAndTag(config), segments=beam.pvalue.AsDict(segments) if segments is not None else None
        ).with_outputs("stats", io_errors.ERRORS_TAG, main="clips")
    )
    clips = read.clips

    split_order = list(config.split_names)
    if len(split_order) > 1:
        leaked = (
            clips
            | "VideoSplit" >> beam.FlatMap(_video_splits)
            | "DistinctVideoSplit" >> beam.Distinct()
            | "GroupVideo" >> beam.GroupByKey()
            | "Leaks" >> beam.FlatMap(_leak_entry, split_order)
        )
    else:  # one split cannot leak
        leaked = p | "NoLeaks" >> beam.Create([])
    leaked_dict = beam.pvalue.AsDict(leaked)

    # Every (split, tag) gets a threshold entry, also when it has no eligible clip (quota 0).
    per_split = (
        clips
        | "EligibleRanks" >> beam.FlatMap(_eligible_ranks, config.drop_leakage, leaked_dict)
        | "GroupTag" >> beam.GroupByKey()
        | "PerSplit" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], [r for part in kv[1] for r in part])))
    )
    empty = p | "AllSplitTags" >> beam.Create(
        [(s, (t, [])) for s in config.split_names for t in config.tag_names]
    )
    thresholds = (
        (per_split, empty)
        | "WithEmpty" >> beam.Flatten()
        | "GroupSplit" >> beam.GroupByKey()
        | "Thresholds" >> beam.ParDo(ComputeThresholds(config))
    )
    thresholds_dict = beam.pvalue.AsDict(thresholds)

    selected = clips | "Select" >> beam.ParDo(Select(config), thresholds_dict, leaked_dict)
    rows = selected | "Rows" >> beam.Map(_rows_of)

    output = config.output
    for split in config.split_names:
        (
            selected
            | f"Keep_{split}" >> beam.FlatMap(_selected_in, split)
            | f"WriteSubset_{split}"
            >> sharded.WriteSharded(
                FileSystems.join(output, split, SUBSET_PREFIX),
                config.num_shards,
                ".tfrecord",
                _write_payloads,
                sort_key=_subset_sort_key,
                shard_key=_subset_shard_key,
                batched=True,
            )
        )
    rows | "WriteTagged" >> tables.WriteTable(
        output,
        "tagged",
        schemas.SUBSET_TAGGED,
        sort_columns=TAGGED_SORT_COLUMNS,
        shard_key=_tagged_shard_key,
        num_shards=config.table_shards,
        batched=True,
    )
    errors = read[io_errors.ERRORS_TAG]
    errors | "WriteErrors" >> tables.WriteTable(output, "errors", schemas.SUBSET_ERRORS, num_shards=1)

    stat_pairs = (
        read.stats,
        rows | "RowStats" >> beam.ParDo(RowStats(config)),
        errors | "ErrorStats" >> beam.Map(lambda r: (("error", r["split"], r["reason"]), 1)),
    ) | "AllStats" >> beam.Flatten()
    stats = (
        stat_pairs
        | "SumStats" >> beam.CombinePerKey(sum)
        | "CollectStats" >> beam.combiners.ToList()
        | "WriteStats"
        >> beam.ParDo(
            WriteStats(config, FileSystems.join(output, STATS_FILE)),
            thresholds_dict,
            beam.pvalue.AsList(leaked),
        )
    )
    return {"rows": rows, "errors": errors, "stats": stats}


def resolve_inputs(config: Config) -> list[tuple[str, str]]:
    """[(split, path)] of every matched shard, sorted; fails fast on a pattern that matches nothing.

    Also sets `config.input_bytes`, the shards' total size (which `--fast_read auto` looks at).
    """
    inputs = []
    config.input_bytes = 0
    for split, patterns in config.splits.items():
        for meta in matching.expand_patterns(patterns):
            inputs.append((split, meta.path))
            config.input_bytes += meta.size_in_bytes or 0
        _LOG.info("split %s: %d shards", split, sum(1 for s, _ in inputs if s == split))
    return inputs


def run(argv=None, save_main_session=True, test_pipeline=None):
    """Runs the subset builder; returns the finished PipelineResult (see module docstring)."""
    parser = build_parser()
    args, beam_args = pipelines_options.split_args(parser, argv)
    try:
        config = Config(args)
        inputs = resolve_inputs(config)
    except FileNotFoundError as e:  # an input, not a flag: one line (gunshot_core.cli), no usage
        raise InputError(str(e)) from e
    except ValueError as e:
        parser.error(str(e))
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    _LOG.info("tags: %s", json.dumps(config.summary()["tags"]))
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, config, inputs)
    result = p.run()
    if launch.job_detached(result, p.options):  # template / flex-template launch, dry run, no-wait
        launch.log_detached(result, p.options, NAMESPACE)
        return result
    counters.log_counters(result, NAMESPACE)
    _log_summary(FileSystems.join(config.output, STATS_FILE))
    return result


def _log_summary(path: str) -> None:
    try:
        with FileSystems.open(path) as handle:
            stats = json.loads(handle.read())
    except Exception as e:  # the pipeline failed before writing it, or the runner is asynchronous
        _LOG.warning("no stats at %s yet: %s", path, e)
        return
    for split, entry in stats["splits"].items():
        after = {t: v["after"] for t, v in entry["tags"].items()}
        _LOG.info(
            "split %s: read %d, tagged %s, other %d, errors %d, selected %s",
            split,
            entry["records_read"],
            entry["tagged"],
            entry["other"],
            entry["errors_total"],
            after,
        )
    if stats["leakage"]["video_ids"]:
        _LOG.warning(
            "leakage: %d video ids in several splits %s",
            stats["leakage"]["video_ids"],
            stats["leakage"]["by_splits"],
        )
