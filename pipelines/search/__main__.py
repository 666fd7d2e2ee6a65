"""Entry point of `python -m pipelines.search` (see pipelines.search.pipeline)."""

import logging
import sys

from pipelines.search.pipeline import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
