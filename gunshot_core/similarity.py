"""Cosine similarity between quantised VGGish frames, exact and independent of batching (search stage).

Dequantisation. An AudioSet uint8 value q stands for the centre of its quantisation bin,
x = (q + 0.5) * 4 / 255 - 2 = 4 * (q - 127) / 255 (the convention of the YouTube-8M readers). Cosine
is scale-invariant, so it is computed on the integers a = q - 127 in [-127, 128]: every product and
every partial sum of a 128-term dot product of them is an integer below 2**24, hence exact in
float32 whatever order BLAS adds them in, and the similarity dot / sqrt(|a|^2 |b|^2) is formed in
float64 from exact integers. The same frames give the same bits in any batch, on any machine, runner
or worker count, so nearest-neighbour ranks and ties are reproducible.

A frame of all 127s (x = 0) has no direction; its similarity to anything is defined as 0.

Windows of several frames. A query of N consecutive frames is compared with every run of N
consecutive frames of a recording; the window's similarity is the mean of the N per-frame cosines
(frame o of the query against frame o of the window). It stays in [-1, 1], every frame weighs the
same whatever its loudness, and it is computed from the same exact per-frame cosines.
"""

import numpy as np

from gunshot_core import params

#: The quantised value of 0.0 after dequantisation (the centre of the uint8 range).
QUANT_ZERO = 127


def dequantize(frames: np.ndarray) -> np.ndarray:
    """Bin-centre dequantisation of AudioSet uint8 frames.

    Args:
      frames: uint8 [n, 128].
    Returns:
      float64 [n, 128] in [-2, 2]: (q + 0.5) * 4 / 255 - 2.
    """
    frames = _check_frames(frames)
    span = params.QUANTIZE_MAX_VAL - params.QUANTIZE_MIN_VAL
    return (frames.astype(np.float64) + 0.5) * (span / 255.0) + params.QUANTIZE_MIN_VAL


def centred(frames: np.ndarray) -> np.ndarray:
    """uint8 [n, 128] -> float32 [n, 128] holding the integers q - 127 (exact; see the module doc)."""
    frames = _check_frames(frames)
    out = frames.astype(np.float32)
    out -= np.float32(QUANT_ZERO)
    return out


def comparable(frames: np.ndarray) -> np.ndarray:
    """Frames as the cosine takes them: uint8 AudioSet frames -> `centred` (exact integers, see the
    module doc); float frames (e.g. BirdNET float32 [n, 1024]) -> float64 [n, d] as they are.

    The cosine of float frames is formed from float64 dot products: equal in any batch within ~1e-15
    (BLAS may add in another order), not bit for bit as the uint8 path is.
    """
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return centred(frames)
    if frames.ndim != 2:
        raise ValueError(f"frames must be [n, d], got shape {frames.shape}")
    return frames.astype(np.float64)


def squared_norms(centred_frames: np.ndarray) -> np.ndarray:
    """float32 [n, 128] centred frames -> float64 [n] exact squared lengths."""
    c = np.asarray(centred_frames, dtype=np.float64)
    return np.einsum("ij,ij->i", c, c)


def cosine_matrix(frames: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine similarity of every frame with every query frame, on dequantised values.

    Args:
      frames: uint8 [n, 128].
      queries: uint8 [m, 128].
    Returns:
      float64 [n, m] in [-1, 1]; 0 where either frame is all 127s. The values do not depend on n, m,
      the other rows or the BLAS library (see the module doc).
    """
    a, b = centred(frames), centred(queries)
    return cosine_from_centred(a, squared_norms(a), b, squared_norms(b))


def cosine_from_centred(a: np.ndarray, a_norms: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """cosine_matrix for frames already centred (lets a caller centre its queries once).

    Args:
      a: float32 [n, 128] centred frames; a_norms: float64 [n] their squared norms.
      b: float32 [m, 128] centred frames; b_norms: float64 [m] their squared norms.
    Returns:
      float64 [n, m].
    """
    dots = (a @ b.T).astype(np.float64)  # exact integers (module doc)
    denominator = np.sqrt(np.outer(a_norms, b_norms))
    out = np.zeros_like(dots)
    np.divide(dots, denominator, out=out, where=denominator > 0)
    return out


def window_similarity(per_frame: np.ndarray) -> np.ndarray:
    """Mean over the diagonal of every N-frame window: frame o of the query against frame j + o.

    Args:
      per_frame: float64 [n, N], cosine of frame i with query frame o (n consecutive frames of one
        recording, in time order).
    Returns:
      float64 [max(n - N + 1, 0)]: the similarity of the window starting at each frame.
    """
    n, width = per_frame.shape
    count = n - width + 1
    if count <= 0:
        return np.zeros(0, np.float64)
    total = np.zeros(count, np.float64)
    for o in range(width):  # fixed order: the same sum for the same frames
        total += per_frame[o : o + count, o]
    return total / width


def rank_top_k(scores: np.ndarray, k: int, *tie_breakers: np.ndarray) -> np.ndarray:
    """Indices of the k highest scores, best first; ties broken by the tie-breaker arrays, ascending.

    Args:
      scores: float [n]; NaN is not allowed (mask rows out before ranking instead).
      k: how many to keep (fewer when n < k).
      tie_breakers: arrays [n] (numbers or strings) compared in the order given, smallest first,
        when scores are equal; together with the scores they should identify a row.
    Returns:
      int64 [min(k, n)].
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.zeros(0, np.int64)
    if k < n:
        kth = np.partition(-scores, k - 1)[k - 1]
        candidates = np.flatnonzero(-scores <= kth)  # the k best plus every tie of the k-th
    else:
        candidates = np.arange(n)
    keys = [_sortable(np.asarray(t)[candidates]) for t in reversed(tie_breakers)] + [-scores[candidates]]
    order = np.lexsort(keys)
    return candidates[order[:k]].astype(np.int64)


def _sortable(values: np.ndarray) -> np.ndarray:
    """Strings (or other objects) -> int64 ranks in sorted order, which np.lexsort can compare."""
    if values.dtype.kind in "biuf":
        return values
    return np.unique(values.astype(str), return_inverse=True)[1].astype(np.int64)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 2 or frames.shape[1] != params.EMBEDDING_SIZE:
        raise ValueError(
            f"frames must be uint8 [n, {params.EMBEDDING_SIZE}], got {frames.dtype} {list(frames.shape)}"
        )
    return frames
