"""Resampling mono audio to VGGish's 16 kHz: soxr (default) or resampy.

Stage: audio (resampling). Used by `gunshot_core.audio` (block-wise decoding) and
`gunshot_core.features` (whole waveforms at another rate); it imports neither.
"""

import numpy as np

#: Resamplers: 'soxr' (libsoxr very-high-quality) or 'resampy' (kaiser_best, the official
#: reference's). The default was chosen by measurement: through 'soxr', every golden clip's score
#: stays within 0.005 of the reference for all five original heads (largest: 4.5e-3, the two-layer
#: LSTM; tests/test_core_parity.py holds it under 0.01), while decoding and resampling
#: cost ~35x less CPU (benchmarks/bench_core.py: 0.18 s vs 6.6 s per 10 minutes of 44.1 kHz stereo),
#: far less than the VGGish CNN instead of more.
RESAMPLERS = ("soxr", "resampy")
DEFAULT_RESAMPLER = "soxr"


def resample(waveform: np.ndarray, sr_in: int, sr_out: int, resampler: str = DEFAULT_RESAMPLER) -> np.ndarray:
    """Resamples mono audio.

    Args:
      waveform: float32 [num_samples] mono audio at `sr_in` Hz.
      sr_in, sr_out: rates in Hz; equal rates return the input unchanged.
      resampler: one of RESAMPLERS.
    Returns:
      float32 [int(num_samples * sr_out / sr_in)] (soxr's and resampy's length convention).
    """
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    waveform = np.asarray(waveform, dtype=np.float32)
    if sr_in == sr_out:
        return waveform
    if resampler == "resampy":
        import resampy  # imported lazily: numba compilation costs seconds on first import

        out = resampy.resample(waveform, sr_in, sr_out)
    else:
        import soxr

        out = soxr.resample(waveform, sr_in, sr_out, quality="VHQ")
    return np.asarray(out, dtype=np.float32)
