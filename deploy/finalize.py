"""Finishes the outputs of a detached Dataflow job (flex template or --no_wait_until_finish) once it is done.

    python -m deploy.finalize score --output gs://BUCKET/scores/site7
    python -m deploy.finalize transform --train 'gs://BUCKET/subsets/v1/train/*' --output gs://BUCKET/tft/v1

A launch that waits (deploy/launch.sh --mode container|setup_file, or `python -m ...` with the
DataflowRunner) does this itself. A flex-template launch cannot wait for its job (Dataflow's rule for
flex templates), so the last local steps run here afterwards:

- score: moves the tables the job staged in OUTPUT/.staging into OUTPUT (replacing an older run's
  shards, exactly as a waiting run does) and writes OUTPUT/run.json with the table summary; the job's
  counters are in the Dataflow UI (namespace `score`).
- transform: writes TDIR/transform_info.json (tag counts, frame statistics) that training reads.
  Pass the same --train/--eval/--tags/--positive_tag/--frames as the job.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys

_LOG = logging.getLogger(__name__)


def finalize_score(output: str) -> dict:
    """Moves the staged tables into `output` and writes run.json; returns the run summary."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines import schemas
    from pipelines.io import files
    from pipelines.scoring import outputs, pipeline

    staged = outputs.existing_files(FileSystems.join(output, outputs.STAGING, "*"))
    if not staged:
        raise FileNotFoundError(
            f"nothing staged in {FileSystems.join(output, outputs.STAGING)}: the job has not finished "
            "writing, failed, or was finalized already"
        )
    moved = outputs.finalize_tables(output, list(schemas.SCORE_TABLES))
    summary = pipeline.summarize(output, {}, 0.0)
    manifest = {
        "finalized_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "note": "finalized after a detached Dataflow job; its counters are in the Dataflow job (namespace score)",
        "summary": summary,
        "files": sorted(moved),
    }
    files.write_json(FileSystems.join(output, outputs.RUN_MANIFEST), manifest)
    _LOG.info("moved %d files into %s: %s", len(moved), output, json.dumps(summary, sort_keys=True))
    return summary


def finalize_transform(argv: list[str]) -> dict:
    """Writes transform_info.json of a finished transform job (argv: the job's training.transform flags)."""
    from training import transform

    args, _ = transform.parse_known_args(argv)
    return transform.write_info(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.finalize", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="pipeline", required=True)
    p = sub.add_parser("score", help="move the staged score tables into place and write run.json")
    p.add_argument("--output", required=True, help="the job's --output directory")
    sub.add_parser(
        "transform", help="write transform_info.json; pass the job's training.transform flags", add_help=False
    )
    args, rest = parser.parse_known_args(argv)
    if args.pipeline == "score":
        if rest:
            parser.error(f"unrecognised arguments: {rest}")
        finalize_score(args.output)
    else:
        finalize_transform(rest)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
