"""The `gunshot` command: a thin dispatcher over the library's entry points.

    gunshot score FILE...        score recordings in the terminal (gunshot_core.score_cli)
    gunshot models download|list|info   fetch and inspect VGGish/PCA/head files (gunshot_core.models)
    gunshot subset ...           build balanced AudioSet subsets (Beam: pipelines.build_subset)
    gunshot batch ...            score archives of recordings into Parquet tables (Beam: pipelines.score)
    gunshot report ...           static HTML site over scoring runs (pipelines.report; DuckDB)
    gunshot search ...           find windows like example sounds in batch embeddings (Beam: pipelines.search)
    gunshot dataset ...          training records from annotated recordings (Beam: pipelines.dataset)
    gunshot transform|train|evaluate|analyze ...   training jobs (training.*; train --model framepool ...)
    gunshot review sample|serve|export ...   review detections in the browser (pipelines.review)
    gunshot calibrate ...        per-site thresholds and counts with 90 % intervals from verdicts
    gunshot evaluate-events ...  event recall and false alarms/hour of scoring runs vs. annotations

Subcommands are imported only when used, so `gunshot score` never imports Beam. Logging is set up
here for every command (gunshot_core.logs: quiet by default, `--verbose` / `--log_level LEVEL`).
"""

import importlib
import os
import signal
import sys

# name -> (module, callable taking argv, one-line help)
COMMANDS = {
    "score": ("gunshot_core.score_cli", "main", "score recordings and print gunshot scores"),
    "models": ("gunshot_core.models", "main", "download, list and inspect model files"),
    "subset": ("pipelines.build_subset", "run", "build balanced AudioSet subsets (Beam)"),
    "batch": ("pipelines.score", "run", "score folders/archives of recordings into Parquet (Beam)"),
    "report": ("pipelines.report.build", "main", "static HTML report of scoring runs: events, audio, errors"),
    "search": ("pipelines.search.pipeline", "main", "find windows like example sounds in embeddings (Beam)"),
    "dataset": (
        "pipelines.dataset.pipeline",
        "run",
        "build training records from annotated recordings (Beam)",
    ),
    "transform": ("training.transform", "run", "tf.Transform preprocessing of subsets (Beam)"),
    "train": (
        "training.train",
        "main",
        "train a head: lstm, logreg, mlp, or framepool (scores each 0.96 s frame: finds the shot)",
    ),
    "evaluate": ("training.evaluate", "main", "evaluate a trained head: metrics, plots, report"),
    "analyze": ("training.analyze", "main", "PCA and t-SNE views of embeddings"),
    "review": (
        "pipelines.review.cli",
        "main",
        "draw a review sample, review it in the browser, export verdicts",
    ),
    "calibrate": (
        "training.calibrate",
        "main",
        "per-site thresholds and gunshot counts with intervals from review verdicts",
    ),
    "evaluate-events": (
        "training.evaluate_events",
        "main",
        "event recall and false alarms per hour: scoring runs vs. annotations",
    ),
}


def _usage() -> str:
    lines = ["usage: gunshot COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += [
        "",
        "Run `gunshot COMMAND --help` for the options of one command. Exit status: 0 done; 1 done, but",
        "some inputs failed (see the error rows); 2 nothing done: a usage error, a missing or empty",
        "input, or missing model files (one line says which; --verbose adds the traceback).",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    # Run as the `gunshot` program (argv from the command line), the process ends with the command:
    # its imports and objects can be frozen out of the garbage collector's way. Called from Python
    # (tests, notebooks) with an argv, the process goes on, so nothing is frozen.
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from gunshot_core import __version__

        print(f"gunshot-spotter {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from gunshot_core import arguments

        guess = arguments.suggest(name, COMMANDS)
        hint = f"; did you mean {guess!r}?" if guess else " (`gunshot --help` lists the commands)"
        print(
            f"usage: gunshot COMMAND [ARGS...]\ngunshot: error: unknown command {name!r}{hint}",
            file=sys.stderr,
        )
        return 2
    module_name, func_name, _ = COMMANDS[name]
    # Before the command's module (and TensorFlow) is imported: quiet unless --verbose/--log_level.
    from gunshot_core import arguments, logs

    logs.configure_logging(logs.flags_from_argv(rest))
    from gunshot_core import startup

    # The error line goes to the terminal's stderr even while a background import of TensorFlow has
    # file descriptor 2 redirected to filter its start-up lines (gunshot_core.logs.filtered_stderr).
    errors_to = arguments.own_stderr() if as_program else None
    try:
        with startup.imports_without_gc(freeze=as_program):  # Beam, TensorFlow: see gunshot_core.startup
            module = importlib.import_module(module_name)
        result = getattr(module, func_name)(rest)
        # Beam `run` functions return a PipelineResult or a summary; the other mains an exit code.
        status = result if isinstance(result, int) else 0
    except BrokenPipeError:  # `gunshot models info | head`: the reader left; no traceback about it
        if not as_program:
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush into
        status = 128 + signal.SIGPIPE  # what a shell reports for a program ended by SIGPIPE
    except Exception as e:  # noqa: BLE001 - user errors become one line; anything else is re-raised
        if not arguments.is_user_error(e):
            raise
        status = arguments.fail(name, e, file=errors_to)
    if as_program:
        startup.exit_process(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
