"""`gunshot review sample|serve|export`: the review command (see the package docstring)."""

from __future__ import annotations

import argparse
import os
import re
import sys

from gunshot_core import arguments, logs


def _sample_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "review sample",
        description="Draw a review sample of scored windows from scoring runs (gunshot batch outputs) and "
        "write REVIEW_DIR/sample.csv with a clip and a spectrogram per item. The default stratified "
        "sample (equal numbers per score bin) lets `gunshot calibrate` estimate precision and counts "
        "without bias.",
    )
    parser.add_argument(
        "--scores", action="append", required=True, metavar="RUN_DIR", help="scoring run (repeat for several)"
    )
    parser.add_argument("--output", required=True, metavar="REVIEW_DIR", help="local folder for the sample")
    parser.add_argument("--size", type=int, required=True, help="items to draw")
    parser.add_argument(
        "--strategy",
        choices=("stratified", "top", "margin", "random"),
        default="stratified",
        help="stratified over score bins (default; unbiased counts), top scores, margin around the "
        "threshold (--threshold), or simple random",
    )
    parser.add_argument(
        "--items",
        choices=("windows", "events"),  # pipelines.review.frame.ITEM_KINDS
        default="windows",
        help="what is reviewed: scored windows (default), or the runs' events (the detections a user "
        "is shown, scored by their peak; calibrating on events sets thresholds for false alarms per "
        "hour, and can only raise the run's threshold)",
    )
    parser.add_argument("--bins", type=int, default=10, help="equal-width score bins (default 10)")
    parser.add_argument(
        "--per_group", action="store_true", help="stratify by group too: each group gets its share"
    )
    parser.add_argument(
        "--group_pattern",
        help="regex over `source` whose first group (or whole match) names the group (site), e.g. "
        "'/(site[^/]+)/'; default: the top folder below the folder common to all recordings",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same sample")
    parser.add_argument(
        "--min_score",
        type=float,
        default=0.0,
        help="offer only windows scoring at least this (default 0: all); counts then cover only them",
    )
    parser.add_argument("--threshold", type=float, help="centre of --strategy margin (default: the run's)")
    parser.add_argument(
        "--margin_seconds", type=float, default=0.5, help="audio kept on each side of a window (default 0.5)"
    )
    parser.add_argument("--workers", type=int, help="threads cutting clips (default: CPUs, at most 8)")
    logs.add_logging_flags(parser)
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "review serve",
        description="Review a sample in the browser at http://127.0.0.1:PORT/ (local only, works offline). "
        "Keys: y gunshot, n not, u unsure, l label, r replay, arrows back/forward, s show score. Each "
        "answer is appended to REVIEW_DIR/verdicts.csv at once; reopening resumes where you stopped.",
    )
    parser.add_argument("review_dir", metavar="REVIEW_DIR")
    parser.add_argument(
        "--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 = any free)"
    )
    parser.add_argument(
        "--reviewer",
        default=os.environ.get("USER") or "reviewer",
        help="your name, written with every verdict (default: $USER)",
    )
    logs.add_logging_flags(parser)
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "review export",
        description="Write the latest verdicts of REVIEW_DIR as a Raven selection table.",
    )
    parser.add_argument("review_dir", metavar="REVIEW_DIR")
    parser.add_argument("--output", help="the table to write (default: REVIEW_DIR/verdicts.selections.txt)")
    logs.add_logging_flags(parser)
    return parser


def run_sample(argv) -> int:
    from pipelines.review import frame as frame_io
    from pipelines.review import sample

    parser = _sample_parser()
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size must be >= 1, got {args.size}")
    if args.bins < 1:
        parser.error(f"--bins must be >= 1, got {args.bins}")
    if "://" in args.output:
        parser.error(f"--output must be a local folder (got {args.output})")
    if args.group_pattern:
        try:
            re.compile(args.group_pattern)
        except re.error as e:
            parser.error(f"--group_pattern {args.group_pattern!r} is not a valid regex: {e}")
    frame = frame_io.read_frame(
        args.scores, group_pattern=args.group_pattern, min_score=args.min_score, items=args.items
    )
    picked, pi, strata = sample.draw(
        frame,
        size=args.size,
        strategy=args.strategy,
        bins=args.bins,
        per_group=args.per_group,
        seed=args.seed,
        threshold=args.threshold,
    )
    parameters = {
        "scores": args.scores,
        "strategy": args.strategy,
        "item_kind": args.items,
        "bins": args.bins,
        "per_group": args.per_group,
        "group_pattern": args.group_pattern,
        "seed": args.seed,
        "min_score": args.min_score,
        "threshold": args.threshold,
        "size": args.size,
    }
    rows = sample.write_sample(
        frame,
        picked,
        pi,
        strata,
        args.output,
        parameters=parameters,
        margin=args.margin_seconds,
        workers=args.workers,
    )
    failed = sum(1 for r in rows if r["media_error"])
    print(
        f"{len(rows)} items of {len(frame)} {args.items} -> {os.path.join(args.output, sample.SAMPLE_CSV)}"
        + (f" ({failed} without audio: see media_error)" if failed else "")
        + f"\nreview them: gunshot review serve {args.output}"
    )
    return 0


def run_serve(argv) -> int:
    from pipelines.review import server

    args = _serve_parser().parse_args(argv)
    server.serve(args.review_dir, reviewer=args.reviewer, port=args.port)
    return 0


def run_export(argv) -> int:
    from pipelines.review import verdicts

    args = _export_parser().parse_args(argv)
    rows = verdicts.read_verdicts(args.review_dir)
    if not rows:
        raise verdicts.ReviewInputError(
            f"{os.path.join(args.review_dir, verdicts.VERDICTS_CSV)} holds no verdicts yet; review first"
        )
    output = args.output or os.path.join(args.review_dir, verdicts.RAVEN_EXPORT)
    with open(output, "w", encoding="utf-8", newline="") as f:
        f.write(verdicts.raven_table(rows))
    print(f"{len(verdicts.latest(rows))} answers -> {output}")
    return 0


SUBCOMMANDS = {"sample": run_sample, "serve": run_serve, "export": run_export}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        print(
            "usage: gunshot review {sample|serve|export} ...\n\n"
            "  sample  draw a review sample of scored windows (clips + spectrograms)\n"
            "  serve   review the sample in the browser; verdicts go to REVIEW_DIR/verdicts.csv\n"
            "  export  write the verdicts as a Raven selection table\n\n"
            "Run `gunshot review COMMAND --help` for its options.",
            file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout,
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return SUBCOMMANDS[argv[0]](argv[1:])
    except Exception as e:  # noqa: BLE001 - user errors become one line; anything else is re-raised
        if not arguments.is_user_error(e):
            raise
        return arguments.fail(f"review {argv[0]}", e)


if __name__ == "__main__":
    sys.exit(main())
