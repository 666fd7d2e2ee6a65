"""Flex-template entry file of training.transform (FLEX_TEMPLATE_PYTHON_PY_FILE of the launch image)."""

import logging

from training import transform

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    transform.run()
