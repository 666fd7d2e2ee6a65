"""Entry point of the scoring job: `python -m pipelines.score` (and `gunshot batch`, the flex template).

    python -m pipelines.score --input 'recordings/**' --output scores/ [options] [Beam options]
    gunshot batch --input 'gs://bucket/site7/*.flac' --output gs://bucket/scores/ --runner DataflowRunner ...

The job itself is the package `pipelines.scoring`, one module per stage (see its docstring);
`run` is `pipelines.scoring.pipeline.run`. Options and outputs: docs/scoring.md.
"""

import sys

from gunshot_core import arguments, logs, startup

# Beam and the scoring modules create ~300,000 long-lived objects: no garbage collection meanwhile,
# and, run as a command, none over them later (see gunshot_core.startup).
with startup.imports_without_gc(freeze=__name__ == "__main__"):
    from pipelines.scoring.pipeline import run as _run_pipeline

__all__ = ["main", "run"]


def main(argv=None) -> int:
    """Runs the job; a user error (a missing input, a --from_run without embeddings, a head of another
    model) is one line on stderr and exit status 2."""
    return arguments.run_program("batch", run, argv)



def run(argv=None, *args, **kwargs):
    """The scoring job; with `--thresholds calibration.json`, re-derives an existing run's detections
    and events at per-group thresholds instead (pipelines.scoring.rethreshold: no audio, no VGGish)."""
    given = sys.argv[1:] if argv is None else argv
    if any(a == "--thresholds" or a.startswith("--thresholds=") for a in given):
        from pipelines.scoring import rethreshold

        return rethreshold.run(list(given))
    return _run_pipeline(argv, *args, **kwargs)


if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    startup.exit_process(main())
