"""Entry point of `python -m pipelines.dataset` (see pipelines.dataset.pipeline)."""

import sys

from gunshot_core import arguments, logs, startup

if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    from pipelines.dataset.pipeline import run

    # Missing inputs or model files: one line and status 2, not a traceback (as `gunshot dataset`).
    startup.exit_process(arguments.run_program("dataset", run))
