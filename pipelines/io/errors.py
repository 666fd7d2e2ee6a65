"""Error rows: the one way a DoFn turns bad input into a row of an errors table.

Stage: every stage that can fail on one input. `ErrorReporter` / `error_output(...)` count a named Beam
counter, log a rate-limited warning and emit `TaggedOutput(ERRORS_TAG, row)`, so bad input never
crashes a pipeline and never disappears.
"""

from __future__ import annotations

import collections
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

_LOG = logging.getLogger(__name__)
ERRORS_TAG = "errors"
"""Name of the tagged output that carries error rows (dicts) out of a DoFn."""
MAX_WARNINGS_PER_REASON = 20
"""Warnings logged per DoFn instance and error reason before further ones are only counted."""


class ErrorReporter:
    """Counts, logs and emits error rows for one DoFn (picklable; create it in the DoFn's __init__).

    Each reason gets a Beam counter `errors_<reason>` in `namespace` (plus a total `errors`), and the
    first MAX_WARNINGS_PER_REASON occurrences per reason and DoFn instance are logged as warnings.

    Example:
      self._errors = ErrorReporter("build_subset")
      ...
      yield self._errors.emit({"source": path, "reason": "bad_crc", "detail": "..."})
    """

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._total = Metrics.counter(namespace, "errors")
        self._counters = {}
        self._warned = collections.Counter()

    def __getstate__(self):
        return {"_namespace": self._namespace}

    def __setstate__(self, state):
        self.__init__(state["_namespace"])

    def emit(self, row: dict) -> beam.pvalue.TaggedOutput:
        """Counts and logs `row` (a dict with at least `reason`) and wraps it for the errors output."""
        reason = str(row.get("reason") or "unknown")
        counter = self._counters.get(reason)
        if counter is None:
            counter = self._counters[reason] = Metrics.counter(self._namespace, f"errors_{reason}")
        counter.inc()
        self._total.inc()
        self._warned[reason] += 1
        if self._warned[reason] <= MAX_WARNINGS_PER_REASON:
            _LOG.warning("%s error %s: %s", self._namespace, reason, row)
            if self._warned[reason] == MAX_WARNINGS_PER_REASON:
                _LOG.warning("%s: further %r errors are counted but not logged", self._namespace, reason)
        return beam.pvalue.TaggedOutput(ERRORS_TAG, row)


def error_output(namespace: str, row: dict) -> beam.pvalue.TaggedOutput:
    """One-off form of `ErrorReporter.emit` for code without a DoFn instance (counts, warns, tags)."""
    return ErrorReporter(namespace).emit(row)
