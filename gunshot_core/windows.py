"""Windows of a recording's frame sequence, as fed to a head: views, never recomputed embeddings.

A recording of n postprocessed frames (0.96 s each) is scored in windows of `window` frames every
`hop` frames. A recording no longer than one window is a single window holding all its frames (the
head zero-pads it to its input length, as the original project fed 10-second clips), so a 10-second
clip gets exactly the original project's score. Longer recordings get windows at 0, hop, 2*hop, ...
plus one window ending at the last frame when the hops do not land there, so no frame is unscored.
"""

import dataclasses

import numpy as np

from gunshot_core import params

#: The default window: the 10 frames (~10 s) the original heads were trained on.
DEFAULT_WINDOW_SECONDS = 10.0
#: The default hop: half a window, so every event falls well inside at least one window.
DEFAULT_HOP_SECONDS = 4.8


def seconds_to_frames(seconds: float, *, name: str = "seconds") -> int:
    """Whole 0.96 s frames closest to `seconds` (at least 1)."""
    if not seconds > 0:
        raise ValueError(f"{name} must be positive, got {seconds}")
    return max(1, int(round(seconds / params.FRAME_SECONDS)))


def window_starts(num_frames: int, window: int, hop: int) -> np.ndarray:
    """int64 [w] first frame of every window; one window (start 0) when num_frames <= window."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive frame counts, got {window} and {hop}")
    if num_frames <= window:
        return np.zeros(1, np.int64)
    starts = np.arange(0, num_frames - window + 1, hop, dtype=np.int64)
    if starts[-1] != num_frames - window:
        starts = np.append(starts, num_frames - window)
    return starts


@dataclasses.dataclass(frozen=True)
class WindowScores:
    """Scores of the windows of one recording.

    Attributes:
      starts: int64 [w] first frame of each window; ends: int64 [w] one past its last frame.
      scores: float32 [w] head output per window.
    """

    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray

    @property
    def start_seconds(self) -> np.ndarray:
        return self.starts * params.FRAME_SECONDS

    @property
    def end_seconds(self) -> np.ndarray:
        return self.ends * params.FRAME_SECONDS

    def peak(self) -> tuple[int, float]:
        """(index of the highest-scoring window, its score); the first one on ties."""
        i = int(np.argmax(self.scores))
        return i, float(self.scores[i])


def window_view(frames: np.ndarray, window: int) -> np.ndarray:
    """Every run of min(n, window) consecutive frames, as a read-only view of `frames` (no copy).

    Args:
      frames: [n, d] frames of one recording (n may be 0): uint8 [n, 128] postprocessed VGGish
        frames, or another embedding model's (float32 [n, 1024] BirdNET).
    Returns:
      [max(1, n - window + 1), min(n, window), d]; row s is the window starting at frame s.
    """
    frames = np.asarray(frames)
    if frames.ndim != 2:
        raise ValueError(f"frames must be [n, {params.EMBEDDING_SIZE}] (or [n, d]), got shape {frames.shape}")
    length = min(frames.shape[0], window)
    view = np.lib.stride_tricks.sliding_window_view(frames, length, axis=0)  # [n-length+1, 128, length]
    return view.transpose(0, 2, 1)


def score_frames(head, frames: np.ndarray, window: int, hop: int, *, batch_size: int = 1024) -> WindowScores:
    """Scores every window of one recording with `head` (anything with `.predict([b, t, 128])`).

    Args:
      head: a gunshot_core.heads.Head.
      frames: uint8 [n, 128] postprocessed frames.
      window, hop: in frames (see seconds_to_frames).
    Returns:
      WindowScores; a recording with 0 frames gets one window of zero padding, like the original.
    """
    view = window_view(frames, window)
    starts = window_starts(frames.shape[0], window, hop)
    scores = np.empty(starts.size, np.float32)
    for i in range(0, starts.size, batch_size):  # gather one batch of windows at a time
        scores[i : i + batch_size] = np.asarray(head.predict(view[starts[i : i + batch_size]])).reshape(-1)
    ends = np.minimum(starts + window, frames.shape[0])
    return WindowScores(starts, ends, scores)
