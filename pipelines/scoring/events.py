"""Events: runs of consecutive above-threshold windows (or frames, for a frame-pooling head), merged
(pure numpy, no Beam).

Stage: scoring 5 (events, used by the score stage and the clip exports).
"""

import dataclasses

import numpy as np

from gunshot_core import params


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


def merge_frame_events(
    frame_scores: np.ndarray,
    window_starts: np.ndarray,
    window_ends: np.ndarray,
    threshold: float,
    frame_start_seconds: np.ndarray | None = None,
    frame_end_seconds: np.ndarray | None = None,
) -> list[Event]:
    """Events of a head with frame scores: runs of consecutive frames scoring >= threshold.

    Args:
      frame_scores: float [n] per-frame scores of one recording.
      window_starts, window_ends: int [w] frame range [start, end) of each scored window.
      threshold: detection threshold.
      frame_start_seconds, frame_end_seconds: float [n] times of each frame (None: 0.96 s VGGish
        frames back to back; BirdNET's 3-s frames every hop overlap).
    Returns:
      events in time order on frame boundaries: start of the run's first frame, end of its last
      frame, the peak frame score and the start of the (first) peak frame; `num_windows` counts the
      windows that overlap the event.
    """
    n = len(frame_scores)
    if frame_start_seconds is None:
        frame_start_seconds = np.arange(n) * params.FRAME_SECONDS
        frame_end_seconds = frame_start_seconds + params.FRAME_SECONDS
    events = merge_events(frame_scores, frame_start_seconds, frame_end_seconds, threshold)
    out = []
    for event in events:
        first = int(np.searchsorted(frame_start_seconds, event.start_seconds))
        last = first + event.num_windows  # one past the event's last frame
        overlapping = int(np.count_nonzero((window_starts < last) & (window_ends > first)))
        out.append(dataclasses.replace(event, num_windows=overlapping))
    return out
