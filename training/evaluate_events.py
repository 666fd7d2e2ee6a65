"""Entry point of `gunshot evaluate-events`: `python -m training.evaluate_events`.

    python -m training.evaluate_events --scores old=scores/default --scores new=scores/retrained \\
        --annotations 'heldout/**/*.selections.txt' --output eval/heldout

Event-level recall, precision and false alarms per hour of scoring runs against annotations. The
job itself is the package `training.events`, one module per stage (see its docstring for what is
evaluated and what is written); `main` is `training.events.job.main`. Guide: docs/adapt.md.
"""

import sys

from gunshot_core import logs, startup
from training.events.figures import events_at
from training.events.inputs import Recording, Run, load_run
from training.events.job import evaluate_events, main, parse_args
from training.events.matching import match_events, overlaps
from training.events.outputs import FALSE_ALARM_LABEL, MISS_LABEL

__all__ = [
    "FALSE_ALARM_LABEL",
    "MISS_LABEL",
    "Recording",
    "Run",
    "evaluate_events",
    "events_at",
    "load_run",
    "main",
    "match_events",
    "overlaps",
    "parse_args",
]

if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    startup.exit_process(main())  # a finished run ends without the interpreter's teardown
