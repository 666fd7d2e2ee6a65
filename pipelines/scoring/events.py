"""Events: runs of consecutive above-threshold windows, merged (pure numpy, no Beam).

Stage: scoring 5 (events, used by the score stage and the clip exports).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Event:
    """A run of consecutive above-threshold windows (seconds from the recording start)."""

    start_seconds: float
    end_seconds: float
    peak_score: float
    peak_seconds: float
    num_windows: int


def merge_events(
    scores: np.ndarray, start_seconds: np.ndarray, end_seconds: np.ndarray, threshold: float
) -> list[Event]:
    """Merges runs of consecutive windows whose score is >= threshold into events.

    Args:
      scores: float [m] window scores in window order; start_seconds, end_seconds: float [m].
      threshold: detection threshold.
    Returns:
      events in time order: start of the run's first window, end of its last window, the peak score
      and the start of the (first) peak window.
    """
    above = np.asarray(scores) >= threshold
    events = []
    i, m = 0, len(above)
    while i < m:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < m and above[j + 1]:
            j += 1
        peak = i + int(np.argmax(scores[i : j + 1]))
        events.append(
            Event(
                float(start_seconds[i]),
                float(np.max(end_seconds[i : j + 1])),
                float(scores[peak]),
                float(start_seconds[peak]),
                j - i + 1,
            )
        )
        i = j + 1
    return events
