"""The scoring job: options -> config -> match, plan, decode, embed, score -> tables, exports, run.json.

Stage: scoring (the whole job). `run(argv)` parses the options (`build_parser`), resolves and hashes
the model files once (`make_config`), builds the pipeline (`build_pipeline`: `MatchSources` ->
`ScoreRecordings` -> provenance -> staged `WriteTable`s and exports), waits for the job, finalizes
the tables and writes run.json. `python -m pipelines.score` and `gunshot batch` call `run`.

    python -m pipelines.score --input 'recordings/**' --output scores/ [options] [Beam options]
    python -m pipelines.score --from_run scores/ --head heads/site7/ --output rescored/   (no VGGish)
    python -m pipelines.score --input 'recordings/**' --output scores/ --embedding_model birdnet   (BirdNET V2.4)

With --from_run, the stored embeddings of an earlier run (scored with --write_embeddings) are scored
with another head instead (`pipelines.scoring.from_run`): the same tables, the same recordings.

Writes the tables windows, recordings, events and errors (and embeddings with --write_embeddings)
as Parquet into --output, plus events.csv, a Raven selection table and run.json; see docs/scoring.md.
"""

import argparse
import dataclasses
import datetime
import logging
import os
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.runners.runner import PipelineState

import gunshot_core
from gunshot_core import arguments, logs, options, precision, startup, windows
from gunshot_core.errors import InputError, describe
from pipelines import options as pipelines_options
from pipelines import schemas
from pipelines.io import counters, files, launch
from pipelines.io import errors as io_errors
from pipelines.io import tables as io_tables
from pipelines.scoring import (
    clips,
    embed,
    exports,
    from_run,
    match,
    outputs,
    rerun,
    score,
    shard_plan,
    sources,
)
from pipelines.scoring import config as scoring_config
from pipelines.scoring import provenance as scoring_provenance

_LOG = logging.getLogger(__name__)
# Rows of the per-window and per-frame tables go to the writer in lists of this many (per bundle).
# The written files do not depend on it: each file is sorted by its rows' key columns.
WRITE_BATCH_ROWS = 4096


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "batch",
        description=__doc__.split("\n", 1)[0],
        epilog="Any other --flag is passed to Apache Beam (e.g. --runner, --direct_num_workers, --project). "
        "To re-derive a scored run's detections and events at the per-site thresholds of `gunshot "
        "calibrate`, from its tables (no audio, no network): gunshot batch --thresholds "
        "CAL_DIR/calibration.json --scores RUN_DIR --output NEW_DIR (options: gunshot batch --thresholds "
        "--help).",
    )
    io_group = parser.add_argument_group("inputs and outputs")
    io_group.add_argument(
        "--input",
        action="append",
        default=[],
        help="file, folder, glob (** recurses) or gs:// path of recordings (wav/flac/ogg/mp3/... , "
        "zip/tar(.gz) archives) or embedding TFRecords; repeatable",
    )
    io_group.add_argument(
        "--input_list",
        action="append",
        default=[],
        help="text file (local or gs://) with one --input per line",
    )
    io_group.add_argument(
        "--from_run",
        metavar="RUN_DIR",
        help="instead of --input: score the embeddings table of the earlier run in RUN_DIR (one scored "
        "with --write_embeddings) with --head; the tables keep that run's recordings (sources, start "
        "times, formats, failures) and no network runs; window, hop and embedding model are that run's",
    )
    io_group.add_argument("--output", required=True, help="output directory (local or gs://)")
    pipelines_options.add_switch(
        io_group,
        "--skip_existing",
        help="keep the rows of files a previous run in --output scored, and score only the rest",
    )
    io_group.add_argument(
        "--timestamp_pattern",
        help="strptime pattern of the recording start in file names, e.g. %%Y%%m%%d_%%H%%M%%S (UTC unless %%z)",
    )
    models_group = parser.add_argument_group("models")
    options.add_model_arguments(models_group)
    options.add_embedding_model_arguments(models_group)
    options.add_scoring_arguments(parser.add_argument_group("scoring"))
    perf = parser.add_argument_group("performance")
    scoring_config.add_decoding_arguments(perf)
    perf.add_argument(
        "--num_shards",
        type=shard_plan.parse_num_shards,
        default=shard_plan.AUTO,
        help="Parquet files of the windows/embeddings/frames tables, or `auto` (%(default)s): as many as "
        f"keep a file at about {from_run.MAX_SHARD_FRAMES:,} frames (~35 h of VGGish frames; with "
        f"--write_embeddings at most {from_run.MAX_SHARD_EMBEDDING_BYTES >> 20} MB of embeddings), from "
        "an upper bound of the audio hours that the input files' sizes and formats give at launch; "
        "small runs get one file. With --from_run, an archive of more frames gets files of about "
        "that many by ranges of source instead",
    )
    extra = parser.add_argument_group("exports")
    extra.add_argument(
        "--export_clips",
        type=int,
        default=0,
        metavar="K",
        help="write WAV clips of the top-K events per recording",
    )
    extra.add_argument(
        "--clip_padding_seconds", type=float, default=1.0, help="audio around each clip (%(default)s)"
    )
    pipelines_options.add_switch(
        extra,
        "--write_embeddings",
        help="also write the frames: the embeddings table (VGGish: 128 bytes per frame, plus AudioSet-format "
        "TFRecords, one SequenceExample per recording; BirdNET: 1024 float32 little-endian), so the network "
        "never has to run on them again (gunshot search reads the table)",
    )
    logs.add_logging_flags(parser)
    return parser


def parse_known_args(argv):
    parser = build_parser()
    args, beam_args = pipelines_options.split_args(parser, argv)
    if args.from_run:
        given = [
            f"--{n}"
            for n in ("input", "input_list", "skip_existing", "timestamp_pattern")
            if getattr(args, n)
        ]
        if given:
            parser.error(f"--from_run reads the recordings of an earlier run: it takes no {', '.join(given)}")
    elif not args.input and not args.input_list:
        parser.error("give at least one --input or --input_list (or --from_run RUN_DIR)")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.export_clips < 0:
        parser.error(f"--export_clips must be >= 0, got {args.export_clips}")
    if args.archive_part_mb < 0:
        parser.error(f"--archive_part_mb must be >= 0, got {args.archive_part_mb}")
    if not args.chunk_seconds > 1:
        parser.error(f"--chunk_seconds must be > 1, got {args.chunk_seconds}")
    if args.timestamp_pattern:
        try:
            sources.compile_timestamp_pattern(args.timestamp_pattern)
        except ValueError as e:
            parser.error(str(e))
    try:
        args.precision_used = precision.resolve(args.precision)  # `auto`: this machine's CPU
    except precision.PrecisionError as e:
        parser.error(str(e))
    return args, beam_args


def check_inputs(args) -> None:
    """Refuses, before any model loads or the job starts, inputs that hold nothing to score.

    Every --input_list must be readable and list something. When every pattern is local, at least one
    must match a recording, archive or TFRecord (listing stops at the first match); patterns on
    Cloud Storage are matched by the workers, and a run in which nothing matched ends with the same
    error. Patterns that match nothing beside ones that do become error rows (stage 'match').

    Raises:
      InputError: naming the inputs and what to give instead.
    """
    patterns = list(args.input)
    for listing in args.input_list:
        try:
            listed = sources.read_input_list(listing)
        except Exception as e:  # noqa: BLE001 - Beam's file systems raise several kinds
            raise InputError(f"--input_list {listing}: cannot be read ({describe(e)})") from e
        if not listed:
            raise InputError(f"--input_list {listing} lists no inputs (one file, folder or glob per line)")
        patterns.extend(listed)
    if any("://" in pattern for pattern in patterns):
        return
    for item in sources.expand_patterns(patterns):
        if isinstance(item, sources.Source):
            return
    raise InputError(_nothing_matched(patterns))


def _nothing_matched(patterns) -> str:
    shown = ", ".join(repr(p) for p in patterns[:3]) + (
        f" and {len(patterns) - 3} more" if len(patterns) > 3 else ""
    )
    return (
        f"no recordings to score: nothing matches {shown}; give --input a recording, a folder or glob of "
        "recordings (wav, flac, ogg, mp3, ...), a zip/tar archive or embedding TFRecords"
    )


def _model_files(args, model) -> tuple[dict, str, dict]:
    """({role: path} of the embedding model's files, the head (path or built-in name), {role: sha256}).

    The default model (VGGish) resolves --checkpoint/--pca/--head as it always did (environment
    variables, downloaded files, the bundled head); another model its own files and, without --head,
    its default head.
    """
    from gunshot_core import embedding_models, hashes, models

    embedding_models.check_head_name(model, args.head)
    if model.is_default:
        paths = models.resolve_model_paths(args.checkpoint, args.pca, args.head)
        files = {"checkpoint": paths.checkpoint, "pca": paths.pca}
        return files, paths.head, {role: hashes.file_sha256(embed.localize(p)) for role, p in files.items()}
    files = model.file_paths()
    return files, args.head or model.default_head, model.file_hashes()


def make_config(args) -> tuple[scoring_config.ScoringConfig, scoring_provenance.Provenance]:
    """Resolves the embedding model, its files and the head, and the settings (hashing the models
    once, at launch).

    Raises:
      EmbeddingModelError, EmbeddingModelMismatchError: an unknown model or hop, a precision the
        model does not run at, a head made for another model's frames.
    """
    from gunshot_core import embedding_models

    model = embedding_models.get(args.embedding_model, hop_seconds=args.embedding_hop_seconds)
    used_precision = model.check_precision(args.precision, args.precision_used)
    files, head_spec, file_hashes = _model_files(args, model)
    window = model.seconds_to_frames(args.window_seconds, name="--window_seconds")
    hop = model.seconds_to_frames(args.hop_seconds, name="--hop_seconds")
    batch_size = args.batch_size
    if batch_size == scoring_config.DEFAULT_BATCH_SIZE:  # not given: the model's own batch
        batch_size = model.batch_inputs
    config = scoring_config.ScoringConfig(
        checkpoint=files.get("checkpoint", ""),
        pca=files.get("pca", ""),
        head=head_spec,
        embedding_model=model.name,
        embedding_hop_seconds=None if model.is_default else model.hop_seconds,
        window_frames=window,
        hop_frames=hop,
        batch_size=batch_size,
        precision=used_precision,
    )
    head = score.load_scoring_head(config)
    threshold = head.threshold if args.threshold is None else float(args.threshold)
    provenance = scoring_provenance.for_model(
        model,
        file_hashes,
        head_name=head.head_id,
        head_sha256=head.sha256,
        code_version=gunshot_core.__version__,
        window_seconds=round(float(model.span_end_seconds(window)), 6),
        hop_seconds=round(hop * model.hop_seconds, 6),
        threshold=threshold,
        precision=used_precision,
        embedding_runtime=model.runtime(used_precision),
    )
    config = dataclasses.replace(
        config,
        threshold=threshold,
        chunk_seconds=args.chunk_seconds,
        split_seconds=args.split_seconds,
        archive_part_bytes=int(args.archive_part_mb * (1 << 20)),
        resampler=args.resampler,
        timestamp_pattern=args.timestamp_pattern,
        write_embeddings=args.write_embeddings,
        export_clips=args.export_clips,
        clip_dir=beam.io.filesystems.FileSystems.join(args.output, outputs.CLIPS_DIR),
        clip_padding_seconds=args.clip_padding_seconds,
        frame_events=head.has_frame_scores,
    )
    return config, provenance


def make_rescore_config(args, parent: from_run.ParentRun):
    """`make_config` for --from_run: the parent's embedding model and window, the new head.

    Raises:
      from_run.HeadMismatchError: the head cannot score the parent's frames (before any work).
      from_run.FromRunError: --window_seconds / --hop_seconds other than the parent's.
    """
    from gunshot_core import embedding_models, heads
    from gunshot_core import models as core_models

    model = parent.model
    for flag, value, default, frames in (
        ("--window_seconds", args.window_seconds, windows.DEFAULT_WINDOW_SECONDS, parent.window_frames),
        ("--hop_seconds", args.hop_seconds, windows.DEFAULT_HOP_SECONDS, parent.hop_frames),
    ):
        if value != default and model.seconds_to_frames(value, name=flag) != frames:
            raise from_run.FromRunError(
                f"{flag} {value}: a rescored run keeps the window and hop of --from_run {parent.directory} "
                f"({frames} frames); leave {flag} out"
            )
    models = parent.manifest.get("models") or {}
    if args.embedding_model not in (embedding_models.DEFAULT, model.name):
        raise from_run.FromRunError(
            f"--embedding_model {args.embedding_model}: the frames of --from_run {parent.directory} are "
            f"{model.name} embeddings; leave --embedding_model out"
        )
    if model.is_default:
        head_path = args.head or os.environ.get(core_models.ENV_HEAD) or str(heads.DEFAULT_HEAD_PATH)
    else:
        head_path = args.head or model.default_head
    embedding_models.check_head_name(model, head_path)
    if head_path in model.builtin_heads:
        head = embedding_models.load_head(model, head_path)
    else:
        head = heads.load_head(embed.localize(head_path))
    from_run.check_head(head, parent)
    embedding_models.check_head(model, head)
    threshold = head.threshold if args.threshold is None else float(args.threshold)
    provenance = scoring_provenance.Provenance(
        head_name=head.head_id,
        vggish_sha256=parent.vggish_sha256,
        pca_sha256=parent.pca_sha256,
        head_sha256=head.sha256,
        code_version=gunshot_core.__version__,
        window_seconds=round(float(model.span_end_seconds(parent.window_frames)), 6),
        hop_seconds=round(parent.hop_frames * model.hop_seconds, 6),
        threshold=threshold,
        embedding_model=parent.provenance.get("embedding_model"),
        embedding_hop_seconds=parent.provenance.get("embedding_hop_seconds"),
        embedding_sha256=parent.provenance.get("embedding_sha256"),
        # the stored frames were made at the parent's precision; rescoring keeps saying so
        precision=parent.provenance.get("precision") or precision.DEFAULT_PRECISION,
        embedding_runtime=parent.provenance.get("embedding_runtime") or "",
    )
    config = scoring_config.ScoringConfig(
        precision=provenance.precision,
        checkpoint=models.get("checkpoint") or "",
        pca=models.get("pca") or "",
        head=head_path,
        embedding_model=model.name,
        embedding_hop_seconds=None if model.is_default else model.hop_seconds,
        window_frames=parent.window_frames,
        hop_frames=parent.hop_frames,
        threshold=threshold,
        write_embeddings=args.write_embeddings,
        export_clips=args.export_clips,
        clip_dir=beam.io.filesystems.FileSystems.join(args.output, outputs.CLIPS_DIR),
        clip_padding_seconds=args.clip_padding_seconds,
        frame_events=head.has_frame_scores,
    )
    return config, provenance


def _add_columns(row, columns):
    return scoring_provenance.with_provenance(row, columns)


def input_patterns(args) -> list[str]:
    """The --input patterns and the lines of the --input_list files (read at launch)."""
    patterns = list(args.input)
    for listing in args.input_list:
        patterns.extend(sources.read_input_list(listing))
    return patterns


def plan_shards(args, config, parent=None) -> shard_plan.ShardPlan:
    """The files of the per-frame tables: --num_shards as given, or chosen for `auto`.

    `auto` sizes an audio run from its inputs (`shard_plan.plan_num_shards`); a rescored run's tables
    follow the parent's ranges of source (`from_run.plan_shard_bounds`; one file up to
    MAX_SHARD_FRAMES frames), and its TFRecord exports get as many files.
    """
    if args.num_shards != shard_plan.AUTO:
        return shard_plan.ShardPlan(num_shards=args.num_shards)
    if parent is not None:
        return shard_plan.ShardPlan(num_shards=len(parent.shard_bounds) + 1)
    return shard_plan.plan_num_shards(input_patterns(args), config.model, args.write_embeddings)


def build_pipeline(p, args, config, provenance, previous, parent=None, num_shards=None):
    """Adds the scoring steps to pipeline `p`; returns nothing (all outputs are files).

    With `parent` (a from_run.ParentRun, --from_run) the parent's stored frames are scored instead
    of matched inputs. `num_shards`: files of the per-frame tables (default: `plan_shards`).
    """
    if num_shards is None:
        num_shards = plan_shards(args, config, parent).num_shards
    staging = beam.io.filesystems.FileSystems.join(args.output, outputs.STAGING)
    if parent is not None:
        tables = p | "Rescore" >> score.RescoreRecordings(config, parent)
        extra_errors = []
    else:
        patterns = input_patterns(args)
        srcs, match_errors = p | "Patterns" >> beam.Create(patterns) | "Match" >> match.MatchSources()
        if previous.done_files:
            done = previous.done_files
            srcs = srcs | "SkipDone" >> beam.Filter(lambda s, done=done: s.path not in done)
        tables = srcs | "Score" >> score.ScoreRecordings(config)
        extra_errors = [match_errors]
    names = ["windows", "recordings", "events", "errors"] + (["embeddings"] if args.write_embeddings else [])
    names += ["frames"] if config.frame_events else []
    columns = provenance.columns()
    if config.export_clips:
        exported = tables["clips"] | "ExportClips" >> beam.ParDo(
            clips.ExportClipsFn(config.clip_dir, config.clip_padding_seconds)
        ).with_outputs(io_errors.ERRORS_TAG, main="done")
        extra_errors.append(exported[io_errors.ERRORS_TAG])
    final = {}
    for name in names:
        parts = [tables[name]] + (extra_errors if name == "errors" else [])
        if previous.done_sources:
            parts.append(
                p | f"Previous{name.title()}" >> rerun.CarryOver(args.output, name, previous.done_sources)
            )
        rows = parts | f"All{name.title()}" >> beam.Flatten() if len(parts) > 1 else parts[0]
        final[name] = rows
        per_frame = name in ("windows", "embeddings", "frames")
        rows = rows | f"Provenance{name.title()}" >> beam.Map(_add_columns, columns)
        if per_frame:
            # Rows cross the shuffle to the writer in Arrow batches of up to WRITE_BATCH_ROWS (not
            # one small Arrow stream each): the shuffle holds ~150 bytes per window instead of ~2.4 kB.
            rows = rows | f"Batch{name.title()}" >> beam.BatchElements(
                min_batch_size=WRITE_BATCH_ROWS, max_batch_size=WRITE_BATCH_ROWS
            )
        # A rescored archive of more frames than one file should hold: files by ranges of source.
        by_ranges = per_frame and parent is not None and bool(parent.shard_bounds)
        _ = rows | f"Write{name.title()}" >> io_tables.WriteTable(
            staging,
            name,
            schemas.score_tables(config.model)[name],
            num_shards=num_shards if per_frame and not by_ranges else 1,
            batched=per_frame,
            shard_key=outputs.source_key,
            sort_columns=outputs.SORT_COLUMNS[name],
            row_group_rows=outputs.row_group_rows(name, config.model),
            shard_bounds=parent.shard_bounds if by_ranges else None,
        )
    _ = final["events"] | "Exports" >> exports.WriteEventExports(staging)
    if args.write_embeddings and config.model.audioset_records:  # AudioSet format: uint8 [n, 128] only
        _ = final["embeddings"] | "EmbeddingRecords" >> exports.WriteEmbeddingRecords(staging, num_shards)


def staging_dir(args) -> str:
    return beam.io.filesystems.FileSystems.join(args.output, outputs.STAGING)


def _wait(result) -> None:
    """Waits for the job, logging its counters once a minute while it runs (remote runners)."""
    while True:
        try:
            state = result.wait_until_finish(duration=60_000)
        except TypeError:  # runners whose wait takes no duration
            state = result.wait_until_finish()
        if state is None or PipelineState.is_terminal(state):
            break
        counts = counters.counter_values(result, scoring_config.NAMESPACE)
        _LOG.info(
            "progress: matched %d, finished %d, failed %d, %.2f audio hours",
            counts.get("score/files_matched", 0),
            counts.get("score/recordings_scored", 0),
            counts.get("score/recordings_failed", 0),
            counts.get("score/audio_milliseconds", 0) / 3.6e6,
        )
    if result.state != PipelineState.DONE:
        raise RuntimeError(f"scoring pipeline ended in state {result.state}")


def summarize(output_dir: str, counts: dict, wall_seconds: float) -> dict:
    """Run summary from the final tables (including rows carried over by --skip_existing)."""
    recordings = io_tables.read_table(output_dir, "recordings")
    errors = io_tables.read_table(output_dir, "errors")
    events = io_tables.read_table(output_dir, "events")
    status = recordings.column("status").to_pylist()
    durations = recordings.column("duration_seconds").to_pylist()
    detected = recordings.column("detected").to_pylist()
    audio_hours = sum(d or 0.0 for d, s in zip(durations, status, strict=True) if s == "ok") / 3600
    new_hours = counts.get("score/audio_milliseconds", 0) / 3.6e6
    return {
        "recordings": len(status),
        "recordings_ok": status.count("ok"),
        "recordings_failed": len(status) - status.count("ok"),
        "recordings_detected": sum(1 for d in detected if d),
        "events": events.num_rows,
        "errors": errors.num_rows,
        "audio_hours": round(audio_hours, 4),
        "audio_hours_this_run": round(new_hours, 4),
        "wall_seconds": round(wall_seconds, 2),
        "audio_hours_per_hour": round(new_hours / (wall_seconds / 3600), 2) if wall_seconds > 0 else None,
    }


def _manifest_models(config) -> dict:
    """run.json's "models": the files that made the frames and the head."""
    if config.model.is_default:
        return {"checkpoint": config.checkpoint, "pca": config.pca, "head": config.head}
    return {**config.model.file_paths(), "head": config.head}


def _manifest_embedding(config, provenance) -> dict:
    """run.json's "embedding": the embedding model's description and its files' sha256."""
    model = config.model
    out = model.info()
    out.pop("description", None)
    out["runtime"] = provenance.embedding_runtime
    if model.is_default:
        out["files_sha256"] = {"checkpoint": provenance.vggish_sha256, "pca": provenance.pca_sha256}
    else:
        out["files_sha256"] = dict(item.split("=", 1) for item in provenance.embedding_sha256.split(","))
    return out


def run(argv=None, save_main_session=True, test_pipeline=None):
    """Runs the scoring job; returns the run summary dict (also written to run.json)."""
    args, beam_args = parse_known_args(argv)
    parent = None
    if args.from_run:
        parent = from_run.read_parent_run(args.from_run, write_embeddings=args.write_embeddings)
        config, provenance = make_rescore_config(args, parent)
    else:
        check_inputs(args)
        config, provenance = make_config(args)
    previous = rerun.PreviousRun(frozenset(), frozenset())
    if args.skip_existing:
        previous = rerun.read_previous_run(args.output, provenance)
        _LOG.info("--skip_existing: %d files already scored in %s", len(previous.done_files), args.output)
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    in_process = test_pipeline is None and parent is None and launch.runs_in_this_process(options)
    if in_process and precision.uses_tensorflow(config.precision):  # OpenVINO runs need no TensorFlow
        embed.import_tensorflow_ahead()
    started = time.monotonic()
    run_utc = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    outputs.clear_staging(args.output)
    with startup.no_ipython_probe():  # Beam's notebook check, ~0.1-0.25 s, answers no anyway
        p = test_pipeline or beam.Pipeline(options=options)
        shards = plan_shards(args, config, parent)
        build_pipeline(p, args, config, provenance, previous, parent, num_shards=shards.num_shards)
        result = p.run()
    if launch.job_detached(result, p.options):  # template / flex-template launch, dry run, no-wait
        launch.log_detached(result, p.options, "score")
        _LOG.info(
            "the job writes its tables to %s; they are moved into %s when it is finalized",
            staging_dir(args),
            args.output,
        )
        return {"detached": True, "output": args.output}
    _wait(result)
    counts = counters.log_counters(result)  # logs every counter (namespace/name = value)
    moved = outputs.finalize_tables(args.output, list(schemas.SCORE_TABLES))
    wall = time.monotonic() - started
    summary = summarize(args.output, counts, wall)
    manifest = {
        "run_utc": run_utc,
        "arguments": {k: v for k, v in sorted(vars(args).items())},
        "beam_args": beam_args,
        "models": _manifest_models(config),
        "provenance": provenance.columns(),
        "precision": config.precision,
        "embedding_runtime": provenance.embedding_runtime,
        "window_frames": config.window_frames,
        "hop_frames": config.hop_frames,
        "events_from": "frames" if config.frame_events else "windows",
        "embedding_model": parent.embedding_model if parent else config.embedding_model,
        "embedding": None if parent else _manifest_embedding(config, provenance),
        "parent_run": parent.summary() if parent else None,
        "files_skipped_as_done": len(previous.done_files),
        # files of the per-frame tables; for `--num_shards auto`, what the count was chosen from
        "num_shards": shards.num_shards,
        "num_shards_plan": shards.summary() if args.num_shards == shard_plan.AUTO else None,
        "counters": counts,
        "summary": summary,
        "files": sorted(moved),
    }
    files.write_json(beam.io.filesystems.FileSystems.join(args.output, outputs.RUN_MANIFEST), manifest)
    # With --skip_existing the counts are the tables' (kept rows included), the audio hours this run's.
    kept = len(previous.done_files)
    _LOG.info(
        "scored %d recordings (%d failed, %d with detections, %d events%s), %.2f audio hours%s in %.1f s"
        " (%.1f audio hours/hour); %d error rows; tables in %s",
        summary["recordings"],
        summary["recordings_failed"],
        summary["recordings_detected"],
        summary["events"],
        f"; {kept} file{'s' if kept != 1 else ''} kept from the previous run" if kept else "",
        summary["audio_hours_this_run"],
        " this run" if kept else "",
        wall,
        summary["audio_hours_per_hour"] or 0.0,
        summary["errors"],
        args.output,
    )
    if parent is None and not counts.get("score/files_matched"):
        raise InputError(
            _nothing_matched(list(args.input) + list(args.input_list)) + f" (errors table in {args.output})"
        )
    return summary
