"""NumPy activations shared by both head formats (Keras 2 semantics, float32 in and out).

Stage: heads (forward pass). `_sigmoid` is the output of every head; `_NP_ACTIVATIONS` are the
activations the Keras 2 `.h5` reader accepts, with Keras 2.2.4's `hard_sigmoid` = clip(0.2 x + 0.5, 0, 1).
"""

from __future__ import annotations

import numpy as np


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """Keras 2 hard sigmoid: clip(0.2 x + 0.5, 0, 1)."""
    return np.clip(np.float32(0.2) * x + np.float32(0.5), np.float32(0.0), np.float32(1.0))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic sigmoid in float64 (saturates to exactly 0/1 without overflow warnings), as float32."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))).astype(np.float32)


_NP_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, np.float32(0.0)),
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "tanh": np.tanh,
}
