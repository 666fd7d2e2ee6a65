"""`python -m pipelines.report`: the `gunshot report` command (see pipelines.report.build)."""

import sys

from gunshot_core import logs, startup
from pipelines.report import build

if __name__ == "__main__":
    argv = sys.argv[1:]
    logs.configure_logging(logs.flags_from_argv(argv))
    startup.exit_process(build.main(argv))  # a finished run ends without the interpreter's teardown
