"""What a finished run reports: its Beam counters; and the picklability check runners need.

Stage: end of run. `counter_values(result)` / `log_counters(result)` read the committed counters of a
finished PipelineResult; `is_picklable` tells whether a DoFn or its state survives pickling (what
multi-process runners need).
"""

from __future__ import annotations

import collections
import logging
import pickle
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

_LOG = logging.getLogger(__name__)


def counter_values(result, namespace: str | None = None) -> dict[str, int]:
    """Committed counter values of a finished run: {"namespace/name": value}, sorted by name."""
    metric_filter = MetricsFilter()
    if namespace:
        metric_filter = metric_filter.with_namespace(namespace)
    values = collections.Counter()
    for counter in result.metrics().query(metric_filter)["counters"]:
        key = f"{counter.key.metric.namespace}/{counter.key.metric.name}"
        value = counter.committed if counter.committed is not None else counter.attempted
        values[key] += value or 0
    return dict(sorted(values.items()))


def log_counters(result, namespace: str | None = None) -> dict[str, int]:
    """Waits for `result` to finish, logs every counter at INFO and returns them (see counter_values)."""
    result.wait_until_finish()
    values = counter_values(result, namespace)
    for key, value in values.items():
        _LOG.info("counter %s = %d", key, value)
    return values


def is_picklable(obj: Any) -> bool:
    """True if `obj` survives pickling (what multi-process runners need of DoFns and their state)."""
    try:
        pickle.loads(pickle.dumps(obj))
    except Exception:
        return False
    return True
