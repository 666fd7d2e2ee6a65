"""Dataset stage 3, window planning: where the examples of one recording lie (pure Python, no Beam).

A recording of n frames (frame i covers [i hop, i hop + frame_seconds] s: VGGish's 0.96 s frames back
to back, BirdNET's 3 s frames every hop, from `PlanConfig`) gets examples of `window` frames:

- an annotation with a --positive label: the window whose centre is nearest the event's centre
  among those holding the whole event (tag gunshot, origin `annotation`), plus up to
  `positive_shifts` other windows that also hold it, picked by a seeded hash (shift 1, 2, ...);
- an annotation with a --negative label: the same centred window (tag no_gunshot, origin
  `confuser`), moved to the nearest window that still holds the event but overlaps no positive
  event; none such: reason `overlaps_positive`;
- in a fully annotated recording, background windows (tag no_gunshot, origin `background`) on the
  grid 0, window, 2 window, ... that overlap no annotation at all, `negatives_per_hour` per hour of
  audio (the fraction drawn by a seeded hash), the lowest seeded hash ranks first.

An event longer than the window gets the window over its middle (no shifts). A recording of at
most `window` frames is one window of all its frames. Every window is the example of one plan only:
an annotation whose best window is taken gets the nearest free window that holds its event (none:
reason `duplicate_window`); shifted copies are placed after every centred window. Annotations whose
times lie past the recording's end get `beyond_end`, labels that are neither positive nor negative
`ignored`. Every annotation of the recording ends as an example plan or one of these rejections,
in a deterministic order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from gunshot_core import params
from gunshot_core.annotations import Annotation
from pipelines.io.sharded import stable_hash

POSITIVE_TAG = "gunshot"
NEGATIVE_TAG = "no_gunshot"
ORIGIN_ANNOTATION = "annotation"
ORIGIN_CONFUSER = "confuser"
ORIGIN_BACKGROUND = "background"

IGNORED = "ignored"
BEYOND_END = "beyond_end"
OVERLAPS_POSITIVE = "overlaps_positive"
DUPLICATE_WINDOW = "duplicate_window"

END_TOLERANCE_SECONDS = 0.5
"""An event may end this much past the recording's end (rounding in annotation tools)."""

_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """Settings of window planning (small, picklable).

    Attributes:
      window_frames: frames per example (the head's input size).
      positive: labels (lower case) made gunshot examples; negative: labels made confuser examples.
      positive_shifts: extra shifted windows per positive annotation.
      negatives_per_hour: background windows per hour of fully annotated audio.
      seed: seed of every hash draw.
      frame_seconds, hop_seconds: the embedding model's frame length and hop (frame i covers
        [i hop, i hop + frame_seconds]; default VGGish's 0.96 s frames back to back).
    """

    window_frames: int = params.HEAD_FRAMES
    positive: frozenset = frozenset({"gunshot"})
    negative: frozenset = frozenset()
    positive_shifts: int = 0
    negatives_per_hour: float = 60.0
    seed: int = 0
    frame_seconds: float = params.FRAME_SECONDS
    hop_seconds: float = params.FRAME_SECONDS

    @property
    def back_to_back(self) -> bool:
        """Whether frames do not overlap (VGGish): times are then exactly `frame * hop`."""
        return self.hop_seconds == self.frame_seconds

    def span_seconds(self, first: int, count: int) -> tuple[float, float]:
        """(start, end) seconds of frames [first, first + count) (count >= 1)."""
        if self.back_to_back:
            f = self.hop_seconds
            return first * f, (first + count) * f
        return first * self.hop_seconds, (first + count - 1) * self.hop_seconds + self.frame_seconds


@dataclasses.dataclass(frozen=True, order=True)
class WindowPlan:
    """One planned example: frames [first_frame, first_frame + num_frames) of `source`."""

    first_frame: int
    num_frames: int
    tag: str
    origin: str
    shift: int = 0
    label: str | None = None
    annotation: Annotation | None = None


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An annotation that gave no example, and why (`reason`, deterministic `message`)."""

    annotation: Annotation
    reason: str
    message: str


_DEFAULT_PLAN = PlanConfig()


def label_kind(label: str, config: PlanConfig) -> str | None:
    """`POSITIVE_TAG`, `NEGATIVE_TAG` or None for an annotation label (case-insensitive, stripped)."""
    key = label.strip().lower()
    if key in config.positive:
        return POSITIVE_TAG
    if key in config.negative:
        return NEGATIVE_TAG
    return None


def _holding_range(
    start: float, end: float, window: int, num_frames: int, config: PlanConfig
) -> tuple[int, int]:
    """(lo, hi) first frames of windows holding [start, end] entirely; lo > hi when none does."""
    h = config.hop_seconds
    if config.back_to_back:
        lo = max(0, math.ceil(end / h - _EPS) - window)
    else:  # the window's last frame must end at or after `end`
        lo = max(0, math.ceil((end - config.frame_seconds) / h - _EPS) - (window - 1))
    hi = min(num_frames - window, math.floor(start / h + _EPS))
    return lo, hi


def _centred(start: float, end: float, window: int, lo: int, hi: int, config: PlanConfig) -> int:
    if config.back_to_back:
        centre = (start + end) / 2 / config.hop_seconds - window / 2
    else:
        w0, w1 = config.span_seconds(0, window)
        centre = ((start + end) / 2 - (w1 - w0) / 2) / config.hop_seconds
    return min(max(int(math.floor(centre + 0.5)), lo), hi)


def _overlaps(
    first: int, window: int, start: float, end: float, config: PlanConfig | None = None
) -> bool:
    """Whether frames [first, first + window) overlap [start, end] (a point event counts); frame times
    of `config` (default: VGGish's)."""
    w0, w1 = (config or _DEFAULT_PLAN).span_seconds(first, window)
    return start < w1 - _EPS and end > w0 + _EPS or (start == end and w0 <= start < w1)


def _rank(seed: int, *parts) -> int:
    return stable_hash((seed, *parts))


def plan_recording(
    source: str,
    num_frames: int,
    duration_seconds: float | None,
    annotations: Sequence[Annotation],
    fully_annotated: bool,
    config: PlanConfig,
) -> tuple[list[WindowPlan], list[Rejection], dict]:
    """Plans the examples of one recording.

    Args:
      source: the recording's key (hash draws depend on it, not on where it is read from).
      num_frames: frames the recording embedded to (>= 1).
      duration_seconds: decoded length (None: the end of the last frame).
      annotations: the recording's annotations (any order).
      fully_annotated: sample background windows from it.
      config: PlanConfig.
    Returns:
      (plans sorted by (first_frame, priority), rejections in annotation order, counts dict with
      `background_wanted` and `background_available`).
    """
    window = config.window_frames
    frames_end = config.span_seconds(0, num_frames)[1]
    duration = frames_end if duration_seconds is None else float(duration_seconds)
    ordered = sorted(annotations, key=lambda a: (a.annotation_file, a.line, a.start_seconds, a.end_seconds))
    rejections: list[Rejection] = []
    usable: list[Annotation] = []
    for a in ordered:
        if (
            a.start_seconds >= min(duration, frames_end) - _EPS
            or a.end_seconds > duration + END_TOLERANCE_SECONDS
        ):
            rejections.append(
                Rejection(
                    a,
                    BEYOND_END,
                    f"{a.annotation_file}:{a.line}: event {a.start_seconds:g}-{a.end_seconds:g} s lies past the "
                    f"end of {source} ({duration:.3f} s, {num_frames} complete {config.frame_seconds:g} s frames)",
                )
            )
            continue
        usable.append(a)
    positives = [a for a in usable if label_kind(a.label, config) == POSITIVE_TAG]
    taken: set[int] = set()
    plans: list[WindowPlan] = []
    shift_requests = []
    for a in usable:
        kind = label_kind(a.label, config)
        if kind is None:
            rejections.append(
                Rejection(
                    a,
                    IGNORED,
                    f"{a.annotation_file}:{a.line}: label {a.label!r} is neither --positive nor --negative",
                )
            )
            continue
        end = min(a.end_seconds, frames_end)
        width = min(window, num_frames)
        lo, hi = _holding_range(a.start_seconds, end, width, num_frames, config)
        holds = lo <= hi
        if not holds:  # longer than a window: the windows over its middle
            lo, hi = 0, num_frames - width
        base = _centred(a.start_seconds, end, width, lo, hi, config)
        candidates = sorted(range(lo, hi + 1), key=lambda k: (abs(k - base), k))
        if kind == NEGATIVE_TAG:
            candidates = [
                k
                for k in candidates
                if not any(_overlaps(k, width, p.start_seconds, p.end_seconds, config) for p in positives)
            ]
            if not candidates:
                rejections.append(
                    Rejection(
                        a,
                        OVERLAPS_POSITIVE,
                        f"{a.annotation_file}:{a.line}: every window holding the {a.label!r} event "
                        "also holds a positive event",
                    )
                )
                continue
        free = [k for k in candidates if k not in taken]
        if not free:
            rejections.append(
                Rejection(
                    a,
                    DUPLICATE_WINDOW,
                    f"{a.annotation_file}:{a.line}: every window holding the event "
                    f"(first frames {lo}-{hi}) is already the example of another annotation",
                )
            )
            continue
        taken.add(free[0])
        origin = ORIGIN_ANNOTATION if kind == POSITIVE_TAG else ORIGIN_CONFUSER
        plans.append(WindowPlan(free[0], width, kind, origin, 0, a.label, a))
        if kind == POSITIVE_TAG and holds and config.positive_shifts:
            shift_requests.append((a, width, free[1:]))
    for a, width, others in shift_requests:  # after every centred window has its place
        others = [k for k in others if k not in taken]
        others.sort(key=lambda k: _rank(config.seed, source, a.annotation_file, a.line, k))
        for i, k in enumerate(sorted(others[: config.positive_shifts]), start=1):
            taken.add(k)
            plans.append(WindowPlan(k, width, POSITIVE_TAG, ORIGIN_ANNOTATION, i, a.label, a))
    counts = {"background_wanted": 0, "background_available": 0}
    if fully_annotated and num_frames >= window:
        expected = config.negatives_per_hour * duration / 3600.0
        wanted = int(math.floor(expected))
        if _rank(config.seed, source, "background") / 2.0**64 < expected - wanted:
            wanted += 1
        grid = [
            k
            for k in range(0, num_frames - window + 1, window)
            if k not in taken
            and not any(_overlaps(k, window, a.start_seconds, a.end_seconds, config) for a in usable)
        ]
        grid.sort(key=lambda k: _rank(config.seed, source, "background", k))
        counts = {"background_wanted": wanted, "background_available": len(grid)}
        for k in grid[:wanted]:
            plans.append(WindowPlan(k, window, NEGATIVE_TAG, ORIGIN_BACKGROUND))
    plans.sort(key=_plan_order)
    rejections.sort(key=lambda r: (r.annotation.annotation_file, r.annotation.line, r.reason))
    return plans, rejections, counts


def _plan_order(plan: WindowPlan):
    a = plan.annotation
    return (
        plan.first_frame,
        plan.num_frames,
        plan.shift,
        "" if a is None else a.annotation_file,
        -1 if a is None else a.line,
    )
