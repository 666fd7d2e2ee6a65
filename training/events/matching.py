"""Stage 2 of `gunshot evaluate-events`: one-to-one matching of detected to annotated events.

Pure numpy/scipy over (start, end) seconds; the rule is in the `training.events` docstring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def match_events(
    events: Sequence[tuple[float, float]], truths: Sequence[tuple[float, float]], tolerance: float
) -> list[tuple[int, int]]:
    """One-to-one matching of detected events to annotated events (see `training.events`).

    Args:
      events: detected (start, end) seconds.
      truths: annotated (start, end) seconds.
      tolerance: seconds each annotation is widened by on both sides.
    Returns:
      sorted (event index, truth index) pairs: as many as possible, then the largest total overlap.
    """
    if not len(events) or not len(truths):
        return []
    from scipy.optimize import linear_sum_assignment

    ev = np.asarray(events, np.float64).reshape(-1, 2)
    tr = np.asarray(truths, np.float64).reshape(-1, 2)
    allowed = (ev[:, None, 0] <= tr[None, :, 1] + tolerance) & (ev[:, None, 1] >= tr[None, :, 0] - tolerance)
    if not allowed.any():
        return []
    overlap = np.clip(
        np.minimum(ev[:, None, 1], tr[None, :, 1]) - np.maximum(ev[:, None, 0], tr[None, :, 0]), 0.0, None
    )
    big = 1.0 + float(np.sum(tr[:, 1] - tr[:, 0]))
    weight = np.where(allowed, big + overlap, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c])


def overlaps(
    span: tuple[float, float], others: Sequence[tuple[float, float]], tolerance: float
) -> np.ndarray:
    """bool [len(others)]: which of `others`, widened by `tolerance`, the closed span touches."""
    if not len(others):
        return np.zeros(0, bool)
    o = np.asarray(others, np.float64).reshape(-1, 2)
    return (span[0] <= o[:, 1] + tolerance) & (span[1] >= o[:, 0] - tolerance)
