"""`python -m pipelines.report`: the `gunshot report` command (see pipelines.report.build)."""

import sys

from gunshot_core import logs
from pipelines.report import build

if __name__ == "__main__":
    argv = sys.argv[1:]
    logs.configure_logging(logs.flags_from_argv(argv))
    sys.exit(build.main(argv))
