"""Entry point of `python -m pipelines.search` (see pipelines.search.pipeline)."""

import sys

from gunshot_core import logs, startup

if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    from pipelines.search.pipeline import main

    startup.exit_process(main())  # a finished run ends without the interpreter's teardown
