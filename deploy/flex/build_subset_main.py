"""Flex-template entry file of pipelines.build_subset (FLEX_TEMPLATE_PYTHON_PY_FILE of the launch image)."""

import logging

from pipelines import build_subset

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    build_subset.run()
