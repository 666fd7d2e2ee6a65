"""Finds the windows of an archive's embeddings most like example sounds: `gunshot search` (Beam).

    gunshot search --embeddings scores/ --query shot.wav --query 'site7/rec01.flac@125.3' --top 50 --output hits/
    python -m pipelines.search --embeddings 'gs://b/scores/embeddings-*.parquet' --query ... --output gs://b/hits/ --runner DataflowRunner ...

Reads the embeddings table `gunshot batch --write_embeddings` wrote; writes into --output the tables
hits, queries and errors (Parquet), a Raven selection table per query (raven/), an HTML page with the
hits' spectrograms and audio (index.html) and search.json. See docs/search.md.
"""

import argparse
import logging
import os
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

import gunshot_core
from gunshot_core import arguments, logs
from gunshot_core import options as gunshot_options
from pipelines import options as pipelines_options
from pipelines import schemas
from pipelines.io import counters, embeddings_table
from pipelines.io import files as io_files
from pipelines.io import tables as io_tables
from pipelines.scoring import outputs as staged
from pipelines.search import outputs, scan
from pipelines.search import queries as queries_lib
from pipelines.search.queries import SearchError

_LOG = logging.getLogger(__name__)

DEFAULT_TOP = 20
TABLE_GLOB = "embeddings-*-of-*.parquet"


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "search",
        description=__doc__.split("\n", 1)[0]
        + " Similarity is the cosine of the dequantised uint8 embeddings (the mean of the per-frame cosines "
        "for windows of several frames); on a table of `gunshot batch --embedding_model birdnet` the cosine "
        "of its float32 BirdNET embeddings, on its 3-s frames every hop (the table says which model).",
        epilog="Any other --flag is passed to Apache Beam (e.g. --runner, --direct_num_workers, --project).",
    )
    io_group = parser.add_argument_group("inputs and outputs")
    io_group.add_argument(
        "--embeddings",
        required=True,
        help="output folder of `gunshot batch --write_embeddings` (local or gs://), or a glob of its "
        f"embeddings Parquet files (default pattern in a folder: {TABLE_GLOB})",
    )
    io_group.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="RECORDING[@START]",
        help="an example sound: an audio file, gs:// URI, archive.zip!member or a source of the table, "
        "and the second it starts at (snapped to the recording's 0.96 s frame grid; without @START: the "
        "loudest --query_frames frames of the recording, see the queries table's start_from). Taken from "
        "the table when the recording is in it, else decoded and embedded with --checkpoint/--pca; repeatable",
    )
    io_group.add_argument("--output", required=True, help="output folder (local or gs://)")
    search = parser.add_argument_group("search")
    search.add_argument(
        "--top", type=int, default=DEFAULT_TOP, metavar="K", help="hits per query (%(default)s)"
    )
    search.add_argument(
        "--query_frames",
        type=int,
        default=1,
        metavar="N",
        help="frames of 0.96 s in a query window, compared with every run of N consecutive frames of the "
        "archive by the mean of the per-frame cosines (%(default)s)",
    )
    models = parser.add_argument_group("models (only for queries decoded from audio)")
    gunshot_options.add_vggish_arguments(models, precision_default=None)
    gunshot_options.add_resampler_argument(models, "use the one `gunshot batch` used")
    page = parser.add_argument_group("page")
    page.add_argument(
        "--page_hits",
        type=int,
        default=outputs.DEFAULT_PAGE_HITS,
        metavar="M",
        help="hits shown with spectrogram and audio on each query's page (all K are in the tables; %(default)s)",
    )
    page.add_argument(
        "--clip_padding_seconds",
        type=float,
        default=outputs.DEFAULT_PADDING_SECONDS,
        help="audio before and after each hit in its clip and spectrogram (%(default)s)",
    )
    perf = parser.add_argument_group("performance")
    perf.add_argument(
        "--batch_rows",
        type=int,
        default=scan.DEFAULT_BATCH_ROWS,
        help="embeddings per matrix product (%(default)s)",
    )
    logs.add_logging_flags(parser)
    return parser


def parse_known_args(argv):
    parser = build_parser()
    args, beam_args = pipelines_options.split_args(parser, argv)
    if not args.query:
        parser.error("give at least one --query RECORDING[@START]")
    for name in ("top", "query_frames", "batch_rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.page_hits < 0 or args.clip_padding_seconds < 0:
        parser.error("--page_hits and --clip_padding_seconds must be >= 0")
    try:
        args.specs = [
            queries_lib.parse_query(text, i, args.query_frames) for i, text in enumerate(args.query)
        ]
    except ValueError as e:
        parser.error(str(e))
    return args, beam_args


def table_files(embeddings: str) -> list[str]:
    """The Parquet files of the embeddings table.

    Raises:
      SearchError: nothing matches.
    """
    pattern = embeddings
    if not any(c in embeddings for c in "*?["):
        pattern = FileSystems.join(embeddings.rstrip("/"), TABLE_GLOB)
    try:
        found = staged.existing_files(pattern)
    except Exception:  # noqa: BLE001 - an unlistable location is the same user error
        found = []
    if not found:
        raise SearchError(
            f"no embeddings table in {embeddings!r} (nothing matches {pattern!r}); run `gunshot batch "
            "--write_embeddings --output DIR` first and pass that DIR as --embeddings"
        )
    return found


def resolve_models(args, model=None) -> queries_lib.Models:
    """The model files for queries decoded from audio (a problem instead of an exception when missing).

    `model`: the table's embedding model (None: VGGish, from --checkpoint/--pca)."""
    from gunshot_core import hashes, models
    from gunshot_core.errors import GunshotError

    if model is not None and not model.is_default:
        try:
            digest = ",".join(f"{r}={s}" for r, s in sorted(model.file_hashes().items()))
        except (GunshotError, OSError) as e:
            return queries_lib.Models(problem=str(e))
        return queries_lib.Models(embedding_sha256=digest, precision=args.precision_used)
    try:
        paths = models.resolve_model_paths(args.checkpoint, args.pca)
        checkpoint, pca = paths.checkpoint, paths.pca
        if "://" in checkpoint or "://" in pca:
            from pipelines.scoring.embed import localize

            checkpoint, pca = localize(checkpoint), localize(pca)
        return queries_lib.Models(
            checkpoint,
            pca,
            hashes.file_sha256(checkpoint),
            hashes.file_sha256(pca),
            precision=args.precision_used,
        )
    except (GunshotError, OSError) as e:
        return queries_lib.Models(problem=str(e))


def query_precision(requested: str | None, table: embeddings_table.TableInfo) -> str:
    """The precision queries decoded from audio are embedded at: the table's.

    Embeddings of different precisions differ by a few quantisation levels, so a search never mixes
    them: a table holding several precisions, or a --precision other than the table's, is an error.

    Raises:
      SearchError: the table mixes precisions, or `requested` is not the table's.
    """
    from gunshot_core import precision

    if len(table.precision) > 1:
        raise SearchError(
            f"the embeddings table holds embeddings of precisions {', '.join(table.precision)}; search one "
            f"precision's embeddings at a time (see {precision.DOCS})"
        )
    ours = table.precision[0] if table.precision else precision.DEFAULT_PRECISION
    if requested is not None:
        try:
            chosen = precision.resolve(requested)
        except precision.PrecisionError as e:
            raise SearchError(str(e)) from None
        if chosen != ours:
            raise SearchError(
                f"--precision {requested} ({chosen}) differs from the embeddings' {ours}: queries decoded "
                f"from audio would not match the table; pass --precision {ours} or leave it out"
            )
    elif precision.runtime_problem(ours):
        raise SearchError(f"the embeddings are {ours}: {precision.runtime_problem(ours)}")
    return ours


def build_pipeline(p, args, table: embeddings_table.TableInfo, resolved: list[queries_lib.ResolvedQuery]):
    """Adds the scan and the table writes to pipeline `p` (writing into --output/.staging)."""
    staging = FileSystems.join(args.output, staged.STAGING)
    windows = [
        scan.QueryWindow(r.spec.index, queries_lib.source_key(r.spec.recording), r.spec.frame_index, r.frames)
        for r in resolved
        if r.ok
    ]
    texts = {r.spec.index: r.spec.text for r in resolved}
    hits = (
        p
        | "Files" >> beam.Create(list(table.files) if windows else [])
        | "Nearest"
        >> scan.NearestWindows(
            windows, texts, args.top, args.query_frames, args.batch_rows, table.rows, table.model()
        )
    )
    tables = {
        "hits": hits,
        "queries": p | "Queries" >> beam.Create(outputs.query_rows(resolved)),
        "errors": p | "Errors" >> beam.Create(outputs.error_rows(table)),
    }
    for name, rows in tables.items():
        _ = rows | f"Write{name.title()}" >> io_tables.WriteTable(
            staging, name, schemas.SEARCH_TABLES[name], sort_columns=outputs.SORT_COLUMNS[name]
        )


def run(argv=None, save_main_session=True, test_pipeline=None) -> dict:
    """Runs the search; returns the summary (also in search.json).

    Raises:
      SearchError: no embeddings table, or none of its files can be read.
    """
    args, beam_args = parse_known_args(argv)
    started = time.monotonic()
    files = table_files(args.embeddings)
    table = embeddings_table.inspect_table(files)
    for path, reason, message in table.errors:
        _LOG.warning("skipping %s (%s): %s", path, reason, message)
    if not table.files:
        raise SearchError(
            f"none of the {len(files)} files of the embeddings table in {args.embeddings!r} can be read: "
            + "; ".join(m for _, _, m in table.errors[:3])
        )
    if len(table.embedding_model) > 1:
        raise SearchError(
            f"the embeddings in {args.embeddings!r} mix frames of the embedding models "
            f"{' and '.join(table.embedding_model)}, which cannot be compared; search one model's "
            "embeddings at a time (one `gunshot batch --write_embeddings` output per model)"
        )
    if len(table.embedding_hop_seconds) > 1 or len(table.embedding_sha256) > 1:
        raise SearchError(
            f"the {table.embedding_model[0]} embeddings in {args.embeddings!r} were made with "
            f"{len(table.embedding_sha256)} model files and hops {list(table.embedding_hop_seconds)}; "
            "search one run's settings at a time"
        )
    if len(table.vggish_sha256) > 1 or len(table.pca_sha256) > 1:
        raise SearchError(
            f"the embeddings in {args.embeddings!r} were made with {len(table.vggish_sha256)} VGGish checkpoints "
            f"and {len(table.pca_sha256)} PCA files; search one model's embeddings at a time"
        )
    model = table.model()
    args.precision_used = query_precision(args.precision, table)
    _LOG.info("embeddings table: %d files, %s frames", len(table.files), f"{table.rows:,}")
    resolved = queries_lib.resolve_queries(
        args.specs, table, lambda: resolve_models(args, model), args.resampler
    )
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    staged.clear_staging(args.output)
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, args, table, resolved)
    result = p.run()
    result.wait_until_finish()
    counts = counters.log_counters(result, scan.NAMESPACE)
    moved = staged.finalize_tables(args.output, list(schemas.SEARCH_TABLES))
    hits = io_tables.read_table(args.output, "hits").to_pylist()
    outputs.clear_previous(args.output)
    written = outputs.write_raven_tables(args.output, resolved, hits)
    written += outputs.write_page(args.output, resolved, hits, args, table)
    searched = any(r.ok for r in resolved)
    summary = {
        "queries": len(resolved),
        "queries_failed": sum(1 for r in resolved if not r.ok),
        "queries_from_table": sum(1 for r in resolved if r.origin == queries_lib.ORIGIN_TABLE),
        "queries_from_audio": sum(1 for r in resolved if r.origin == queries_lib.ORIGIN_AUDIO),
        "queries_at_loudest": sum(1 for r in resolved if r.spec.start_from == queries_lib.START_LOUDEST),
        "hits": len(hits),
        "table_frames": table.rows,
        # Frames the scan compared with the queries (0 when no query could be resolved: nothing ran).
        "frames_searched": counts.get(f"{scan.NAMESPACE}/frames_scanned", 0) if searched else 0,
        "table_files": len(table.files),
        "table_files_skipped": len(table.errors),
        "wall_seconds": round(time.monotonic() - started, 2),
    }
    manifest = {
        "arguments": {k: v for k, v in sorted(vars(args).items()) if k != "specs"},
        "beam_args": beam_args,
        "code_version": gunshot_core.__version__,
        "table": {
            "vggish_sha256": list(table.vggish_sha256),
            "pca_sha256": list(table.pca_sha256),
            "precision": list(table.precision),
            "embedding_model": model.name,
            "embedding_hop_seconds": model.hop_seconds,
            "embedding_sha256": list(table.embedding_sha256),
        },
        "precision": args.precision_used,
        "counters": counts,
        "summary": summary,
        "files": sorted(moved + written),
    }
    io_files.write_json(FileSystems.join(args.output, outputs.MANIFEST), manifest)
    # Nothing searched at all deserves more than a progress line.
    (_LOG.info if searched else _LOG.warning)("%s", summary_line(summary, resolved, args.output))
    return summary


def summary_line(summary: dict, resolved, output: str) -> str:
    """The run's last log line: what was searched and found, or why nothing was searched."""
    failed = [r for r in resolved if not r.ok]
    where = f"; see the queries table in {output}"
    if len(failed) == len(resolved):
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return (
            f"no query could be used, so none of the table's {summary['table_frames']:,} frames was searched: "
            f"query {first.spec.index} {first.spec.text!r}: {first.reason}: {first.message}{more}{where}"
        )
    text = (
        f"{summary['queries']} queries ({summary['queries_failed']} failed): {summary['hits']} hits among "
        f"{summary['frames_searched']:,} of the table's {summary['table_frames']:,} frames in "
        f"{summary['wall_seconds']:.1f} s; results in {output}"
    )
    if failed:
        text += "; failed: " + ", ".join(f"query {r.spec.index} ({r.reason})" for r in failed)
    return text


def main(argv=None) -> int:
    """`gunshot search`: exit 0 when every query ran, 1 when some failed (see the queries table),
    2 when the search could not start (the message says why)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        summary = run(argv)
    except SearchError as e:
        return arguments.fail("search", e)
    return 1 if summary["queries_failed"] else 0
