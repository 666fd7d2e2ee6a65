"""Flex-template entry file of pipelines.score (FLEX_TEMPLATE_PYTHON_PY_FILE of the launch image)."""

import logging

from pipelines import score

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    score.run()
