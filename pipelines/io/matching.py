"""Matching input patterns at launch time: local or `gs://` globs -> sorted, de-duplicated files.

Stage: launch (inputs). `expand_patterns(patterns)` returns Beam `FileMetadata` and fails fast, naming
the pattern, when one matches nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from apache_beam.io.filesystems import FileSystems


def expand_patterns(patterns: str | Iterable[str], *, allow_empty: bool = False) -> list:
    """Matches local or `gs://` glob patterns at launch time.

    Args:
      patterns: one pattern or several (a directory is taken as `DIR/*`).
      allow_empty: if False, a pattern that matches nothing raises.
    Returns:
      list of `apache_beam.io.filesystem.FileMetadata` (path, size_in_bytes), sorted by path, without
      duplicates, so the list of inputs is the same on every run.
    Raises:
      FileNotFoundError: a pattern matched no file (the message names the pattern).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    found = {}
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            # A directory (local, or a gs:// prefix that is not an object itself) means every file in it.
            is_local = "://" not in pattern
            if (
                pattern.endswith("/")
                or (is_local and os.path.isdir(pattern))
                or (not is_local and not FileSystems.exists(pattern))
            ):
                pattern = FileSystems.join(pattern.rstrip("/"), "*")
        metadata = FileSystems.match([pattern])[0].metadata_list
        metadata = [m for m in metadata if not m.path.endswith("/")]
        if not metadata and not allow_empty:
            raise FileNotFoundError(f"no file matches input pattern {pattern!r}")
        for m in metadata:
            found[m.path] = m
    return [found[path] for path in sorted(found)]
