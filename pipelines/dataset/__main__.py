"""Entry point of `python -m pipelines.dataset` (see pipelines.dataset.pipeline)."""

import logging
import sys

from gunshot_core import logs, startup
from gunshot_core.errors import GunshotError

if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    from pipelines.dataset.pipeline import run

    try:
        run()
    except (FileNotFoundError, GunshotError) as e:  # missing inputs or model files: a message, not a trace
        logging.getLogger("pipelines.dataset").error("%s", e)
        sys.exit(2 if isinstance(e, GunshotError) else 1)
    startup.exit_process(0)  # a finished run ends without the interpreter's teardown
