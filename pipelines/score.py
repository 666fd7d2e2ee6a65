"""Entry point of the scoring job: `python -m pipelines.score` (and `gunshot batch`, the flex template).

    python -m pipelines.score --input 'recordings/**' --output scores/ [options] [Beam options]
    gunshot batch --input 'gs://bucket/site7/*.flac' --output gs://bucket/scores/ --runner DataflowRunner ...

The job itself is the package `pipelines.scoring`, one module per stage (see its docstring);
`run` is `pipelines.scoring.pipeline.run`. Options and outputs: docs/scoring.md.
"""

import sys

from gunshot_core import logs, startup

# Beam and the scoring modules create ~300,000 long-lived objects: no garbage collection meanwhile,
# and, run as a command, none over them later (see gunshot_core.startup).
with startup.imports_without_gc(freeze=__name__ == "__main__"):
    from pipelines.scoring.pipeline import run

__all__ = ["main", "run"]


def main(argv=None) -> int:
    """Runs the job; a GunshotError (a user error such as a --from_run without embeddings) is one
    line on stderr and exit status 2."""
    from gunshot_core.errors import GunshotError, describe

    try:
        run(argv)
    except GunshotError as e:
        print(f"gunshot batch: {describe(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    startup.exit_process(main())
