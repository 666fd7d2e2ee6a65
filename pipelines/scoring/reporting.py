"""Error rows, rate-limited warnings and progress lines of the scoring stages.

Stage: scoring (every stage). `error_row` is the scoring errors-table row, `_warn` logs at most
MAX_WARNINGS_PER_KIND warnings per kind and process (counters keep the full count), `_Progress`
logs finished/failed recordings and audio hours at most once a minute per process.
"""

import logging
import threading
import time

from pipelines.scoring.config import PROGRESS_SECONDS

_LOG = logging.getLogger(__name__)


def error_row(source: str, stage: str, reason: str, message: str) -> dict:
    return {"source": source, "stage": stage, "reason": reason, "message": message}


MAX_WARNINGS_PER_KIND = 20
_warned: dict = {}
_warned_lock = threading.Lock()


def _warn(kind: str, message: str, *args) -> None:
    """A warning, at most MAX_WARNINGS_PER_KIND per kind and process (counters keep the full count)."""
    with _warned_lock:
        count = _warned[kind] = _warned.get(kind, 0) + 1
    if count <= MAX_WARNINGS_PER_KIND:
        _LOG.warning(message, *args)
        if count == MAX_WARNINGS_PER_KIND:
            _LOG.warning("further %r warnings are only counted (see the Beam counters)", kind)


class _Progress:
    """Per-process progress log: finished/failed recordings and audio hours, at most once a minute."""

    _lock = threading.Lock()
    _state = {"started": None, "last": 0.0, "finished": 0, "failed": 0, "seconds": 0.0, "matched": 0}

    @classmethod
    def add(cls, *, matched=0, finished=0, failed=0, seconds=0.0):
        with cls._lock:
            s = cls._state
            now = time.monotonic()
            if s["started"] is None:
                s["started"], s["last"] = now, now
            s["matched"] += matched
            s["finished"] += finished
            s["failed"] += failed
            s["seconds"] += seconds
            if now - s["last"] >= PROGRESS_SECONDS:
                minutes = max((now - s["started"]) / 60.0, 1e-9)
                _LOG.info(
                    "progress (this worker): matched %d, finished %d, failed %d, %.2f audio hours"
                    " (%.2f audio hours/min)",
                    s["matched"],
                    s["finished"],
                    s["failed"],
                    s["seconds"] / 3600,
                    s["seconds"] / 3600 / minutes,
                )
                s["last"] = now
