"""Every Parquet table the pipelines write, as pyarrow schemas defined once and imported everywhere.

Readers (training, tests, users) import the schemas from here; README.md documents them.
"""

import pyarrow as pa  # noqa: F401

# ---- Subset builder tables (pipelines.build_subset) ------------------------------------------

# ---- Scoring tables (pipelines.score) ----------------------------------------------------------
