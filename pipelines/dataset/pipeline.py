"""The `gunshot dataset` Beam job: annotated recordings -> split AudioSet-format training records.

    python -m pipelines.dataset --audio 'field/**' --annotations field/ --positive gunshot \\
        --negative door --group_pattern 'field/([^/]+)/' --split train=0.7 --split eval=0.3 --output ds/

Stages (one module each in this package): options -> annotation_io (read, match) -> recordings
(decode + embed as `gunshot batch`, or read its embeddings table) -> planning/examples (windows,
records) -> splitting (groups, splits, leakage) -> writing (TFRecords, tables, stats.json).
"""

from __future__ import annotations

import json
import logging
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from gunshot_core.errors import InputError
from pipelines.dataset import annotation_io, examples, options, planning, recordings, splitting, writing
from pipelines.io import counters, files, launch, sharded, tables
from pipelines.scoring import sources

_LOG = logging.getLogger(__name__)
RECORDING_STATS = "recording_stats"
# Error rows shown on the console (all of them are in the errors table).
SHOWN_ERRORS = 5


class _AddSplit:
    """(example row, record) -> the row with its group's split (groups: side-input list)."""

    def __init__(self, splits, seed):
        self._splits = tuple(splits)
        self._seed = seed

    def __call__(self, item, groups):
        assignment = annotation_io.derived(
            groups, "splits", lambda g: splitting.assign_splits(g, self._splits, self._seed)
        )
        row, record = item
        return {**row, "split": assignment[row["group"]]}, record


def _write_summed_stats(handle, items):
    handle.write((json.dumps(writing.sum_stats(items), sort_keys=True) + "\n").encode("utf-8"))


def _globs(config: options.Config) -> tuple[str, ...]:
    return tuple(g for g in config.fully_annotated if g != options.ANNOTATED)


def build_pipeline(p, args, config: options.Config, scoring_config=None):
    """Adds the dataset job to pipeline `p`; every output is a file in args.output."""
    read = (
        p
        | "AnnotationPatterns" >> beam.Create(sorted(set(args.annotations)))
        | "ReadAnnotations"
        >> beam.ParDo(annotation_io.ReadAnnotationFileFn(config.label_column)).with_outputs(
            annotation_io.ERRORS_TAG, annotation_io.COVERED_TAG, main="rows"
        )
    )
    rows, covered = read.rows, read[annotation_io.COVERED_TAG]
    keys = (
        rows | "RowKeys" >> beam.Map(lambda a: a.recording_key),
        covered | "CoveredKeys" >> beam.Map(lambda kv: kv[0]),
    ) | "AllKeys" >> beam.Flatten()
    names = beam.pvalue.AsList(keys)
    globs = _globs(config)
    if args.embeddings:
        recs, rec_errors = p | "FromEmbeddings" >> recordings.FromEmbeddings(
            args.embeddings, names, globs, config.model
        )
    else:
        patterns = list(args.audio)
        for listing in args.audio_list:
            patterns.extend(sources.read_input_list(listing))
        recs, rec_errors = (
            p
            | "AudioPatterns" >> beam.Create(patterns)
            | "FromAudio" >> recordings.FromAudio(scoring_config, names, globs)
        )
    matcher = beam.pvalue.AsList(recs | "SourceKeys" >> beam.Map(lambda kv: kv[0]))
    matched = rows | "Match" >> beam.ParDo(annotation_io.MatchAnnotationFn(), matcher).with_outputs(
        annotation_io.ERRORS_TAG, main="matched"
    )
    covered_sources = (
        covered
        | "MatchCovered" >> beam.FlatMap(annotation_io.match_covered, matcher)
        | "DistinctCovered" >> beam.Distinct()
        | "KeyCovered" >> beam.Map(lambda s: (s, True))
    )
    made = (
        {"recording": recs, "annotations": matched.matched, "covered": covered_sources}
        | "ByRecording" >> beam.CoGroupByKey()
        | "Examples"
        >> beam.ParDo(examples.MakeExamplesFn(config)).with_outputs(
            examples.ERRORS_TAG, examples.STATS_TAG, main="examples"
        )
    )
    split_names = [name for name, _ in config.splits]
    groups = beam.pvalue.AsList(made.examples | "Groups" >> beam.Map(lambda item: item[0]["group"]))
    split = made.examples | "Split" >> beam.Map(_AddSplit(config.splits, config.seed), groups)
    errors = (
        read[annotation_io.ERRORS_TAG],
        matched[annotation_io.ERRORS_TAG],
        rec_errors,
        made[examples.ERRORS_TAG],
    ) | "AllErrors" >> beam.Flatten()
    _ = (split, errors) | "Write" >> writing.WriteDataset(args.output, split_names, config.num_shards)
    _ = made[examples.STATS_TAG] | "WriteStats" >> sharded.WriteSharded(
        FileSystems.join(args.output, RECORDING_STATS), 1, ".jsonl", _write_summed_stats
    )


def _options_summary(args, config: options.Config) -> dict:
    return {
        "audio": sorted(args.audio),
        "audio_list": sorted(args.audio_list),
        "embeddings": args.embeddings,
        "annotations": sorted(args.annotations),
        "positive": sorted(config.plan.positive),
        "negative": sorted(config.plan.negative),
        "label_column": config.label_column,
        "window_frames": config.plan.window_frames,
        "positive_shifts": config.plan.positive_shifts,
        "negatives_per_hour": config.plan.negatives_per_hour,
        "fully_annotated": list(config.fully_annotated),
        "group_pattern": config.group_pattern,
        "splits": [[n, f] for n, f in config.splits],
        "seed": config.seed,
        **(
            {}
            if config.model.is_default
            else {"embedding_model": config.model.name, "embedding_hop_seconds": config.model.hop_seconds}
        ),
        "precision": getattr(
            args, "precision_used", "fp32"
        ),  # of the frames: --precision, or the --embeddings table's
    }


def finish(args, config: options.Config) -> dict:
    """Reads the written tables back and writes stats.json; returns it."""
    example_table = tables.read_table(args.output, writing.EXAMPLES)
    error_table = tables.read_table(args.output, writing.ERRORS)
    stats_path = FileSystems.join(args.output, sharded.shard_name(RECORDING_STATS, 0, 1, ".jsonl"))
    with FileSystems.open(stats_path) as f:
        lines = [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
    FileSystems.delete([stats_path])
    stats = writing.build_stats(
        example_table,
        error_table,
        lines[0] if lines else {},
        _options_summary(args, config),
        [n for n, _ in config.splits],
    )
    files.write_json(FileSystems.join(args.output, writing.STATS), stats)
    return stats


def first_errors(output: str, n: int = SHOWN_ERRORS) -> list[str]:
    """The messages of the first `n` error rows but `ignored` labels (in the table's order: by source,
    file, line): `file:line: ...` for an annotation row, the recording or pattern otherwise."""
    import pyarrow.compute as pc

    table = tables.read_table(output, writing.ERRORS)
    table = table.filter(pc.not_equal(table.column("reason"), planning.IGNORED))
    out = []
    for row in table.slice(0, n).to_pylist():
        message = row["message"]
        where = row.get("annotation_file")
        if where and not message.startswith(where):
            line = row.get("annotation_line")
            message = f"{where}:{line if line is not None else '-'}: {message}"
        out.append(f"{message} ({row['reason']})")
    return out


def empty_dataset_message(args, stats: dict, first: list[str]) -> str:
    """One line saying why no example was made: what was read, the error counts, the first errors."""
    inputs = args.embeddings or ", ".join(sorted(args.audio) + sorted(args.audio_list)) or "-"
    parts = [
        f"no training example was made (output {args.output}): {stats['recordings']['used']} recordings "
        f"used from {inputs}, annotations {', '.join(sorted(args.annotations))}",
    ]
    if stats["errors"]:
        parts.append(f"error rows {stats['errors']}, first: {' | '.join(first[:3])}")
    else:
        parts.append("no annotation file or recording was found")
    parts.append(
        "check the --annotations and --audio/--embeddings paths, the labels (--positive/--negative) "
        "and that annotation file names match the recordings"
    )
    return "; ".join(parts)


def run(argv=None, save_main_session=True, test_pipeline=None):
    """Runs the dataset job; returns the stats.json dict.

    Raises:
      InputError: the run made no example (its tables and stats.json are still written).
    """
    args, beam_args = options.parse_known_args(argv)
    config = options.make_config(args)
    scoring_config = None if args.embeddings else options.scoring_config(args)
    pipeline_options = PipelineOptions(beam_args)
    pipeline_options.view_as(SetupOptions).save_main_session = save_main_session
    started = time.monotonic()
    p = test_pipeline or beam.Pipeline(options=pipeline_options)
    build_pipeline(p, args, config, scoring_config)
    result = p.run()
    if launch.job_detached(result, p.options):
        launch.log_detached(result, p.options, "dataset")
        return {"detached": True, "output": args.output}
    result.wait_until_finish()
    counters.log_counters(result)
    stats = finish(args, config)
    splits = ", ".join(f"{n}: {s['examples']} ({s['tags']})" for n, s in stats["splits"].items())
    _LOG.info(
        "dataset: %d examples (%s); %d error rows %s; %.2f audio hours in %.1f s; written to %s",
        stats["examples"],
        splits,
        sum(stats["errors"].values()),
        stats["errors"],
        stats["recordings"]["audio_hours"],
        time.monotonic() - started,
        args.output,
    )
    first = first_errors(args.output)
    if not stats["examples"]:
        raise InputError(empty_dataset_message(args, stats, first))
    if first:
        _LOG.warning(
            "dataset: %d error rows %s (all in %s/errors-*.parquet); first:",
            sum(stats["errors"].values()),
            stats["errors"],
            args.output,
        )
        for line in first:
            _LOG.warning("  %s", line)
    if stats["leakage"]["groups"] or stats["leakage"]["recording_names"]:
        _LOG.warning("dataset: leakage across splits: %s", stats["leakage"])
    return stats
