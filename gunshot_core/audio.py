"""Audio decoding for VGGish: any soundfile-readable recording -> 16 kHz mono float32, in bounded blocks.

Decoding uses soundfile (libsndfile: WAV/FLAC/OGG/MP3 and more; integer and float subtypes). Channels
are averaged to mono before resampling, as the official reference does. Long recordings are read,
resampled and framed block by block, so memory does not grow with duration, and the blocks join
into the samples whole-file resampling gives, within float rounding: every block is resampled with
a margin of real neighbouring samples on both sides, and block edges fall on sample positions that
map to whole output samples.
"""

import dataclasses
import itertools
import math
import os
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import soundfile

from gunshot_core import features, params
from gunshot_core.errors import AudioDecodeError
from gunshot_core.resample import DEFAULT_RESAMPLER, RESAMPLERS, resample

PathOrFile = str | os.PathLike | BinaryIO


#: Seconds of audio read, resampled and framed at a time by the block readers.
DEFAULT_BLOCK_SECONDS = 60.0
#: Real samples kept on each side of a block while resampling (far longer than either filter).
_MARGIN_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a recording holds, as stored (before mixing down and resampling)."""

    sample_rate: int
    channels: int
    frames: int  # samples per channel
    format: str  # container, e.g. 'WAV', 'FLAC', 'OGG', 'MP3'
    subtype: str  # sample encoding, e.g. 'PCM_16', 'FLOAT', 'VORBIS'

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _rewind(source: PathOrFile) -> None:
    if hasattr(source, "seek"):
        source.seek(0)


def _open(source: PathOrFile) -> soundfile.SoundFile:
    """Opens a recording for reading, turning every decoder failure into an AudioDecodeError."""
    name = getattr(source, "name", source)
    if isinstance(source, str | os.PathLike):
        if not os.path.exists(source):
            raise AudioDecodeError(f"{name}: no such file", reason="unreadable")
        if os.path.getsize(source) == 0:
            raise AudioDecodeError(f"{name}: file is empty (0 bytes)", reason="empty")
    else:
        _rewind(source)
        if not source.read(1):
            raise AudioDecodeError(f"{name}: file is empty (0 bytes)", reason="empty")
        _rewind(source)
    try:
        return soundfile.SoundFile(source)
    except soundfile.LibsndfileError as e:
        text = str(e)
        reason = "unsupported" if "format" in text.lower() else "corrupt"
        raise AudioDecodeError(f"{name}: cannot decode audio: {text}", reason=reason) from e
    except (RuntimeError, TypeError, ValueError, OSError) as e:
        raise AudioDecodeError(f"{name}: cannot decode audio: {e}", reason="corrupt") from e


def probe(source: PathOrFile) -> AudioInfo:
    """Reads a recording's header.

    Raises:
      AudioDecodeError: unreadable, empty, corrupt or unsupported input.
    """
    with _open(source) as f:
        return AudioInfo(f.samplerate, f.channels, f.frames, f.format, f.subtype)


def _mono(block: np.ndarray) -> np.ndarray:
    """float32 [n, channels] -> float32 [n], the mean over channels (the reference's mix-down).

    Adds the channel columns in order and divides once: the same values as
    `block.mean(axis=1, dtype=np.float32)` for up to 8 channels, at ~1/15 of its cost (numpy's
    reduction across a short contiguous axis is slow, and was 60% of decoding a stereo WAV).
    """
    channels = block.shape[1]
    if channels == 1:
        return block[:, 0]
    total = block[:, 0] + block[:, 1]
    for c in range(2, channels):
        total += block[:, c]
    total /= np.float32(channels)
    return total


def iter_waveform(
    source: PathOrFile,
    target_sr: int = params.SAMPLE_RATE,
    *,
    resampler: str = DEFAULT_RESAMPLER,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[np.ndarray]:
    """Decodes a recording (or a stretch of it) block by block into mono float32 audio at `target_sr`.

    The concatenated blocks equal whole-file mix-down and resampling: each block of about
    `block_seconds` is resampled together with half a second of real neighbouring samples on each
    side, and its edges fall on input positions whose output positions are whole samples. The
    results agree with whole-file resampling within float rounding (the filters see the same
    samples; only the order of float operations may differ), whatever the block size.

    Args:
      source: a path or a seekable binary file object.
      target_sr: output rate in Hz.
      resampler: one of RESAMPLERS.
      block_seconds: input seconds per block; memory use is proportional to it, not to duration.
      start, stop: the output samples [start, stop) to produce (stop None: to the end). `start` must
        map to a whole input sample (see `starts_on_input_sample`), so that several workers can each
        decode a stretch of one long file and join into the whole.
    Yields:
      float32 [m] consecutive blocks of the mono `target_sr` waveform.
    Raises:
      AudioDecodeError: unreadable, empty, corrupt or unsupported input (also mid-file).
      ValueError: a bad resampler, or a `start` that falls between input samples.
    """
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
    with _open(source) as f:
        sr_in, total = f.samplerate, f.frames
        if total <= 0 or f.channels <= 0:
            raise AudioDecodeError(f"{f.name}: recording holds no audio samples", reason="empty")
        if not starts_on_input_sample(start, sr_in, target_sr):
            raise ValueError(f"{f.name}: output sample {start} falls between input samples at {sr_in} Hz")
        # Input samples per whole number of output samples.
        period = sr_in // math.gcd(sr_in, target_sr)
        block = max(1, math.ceil(block_seconds * sr_in / period)) * period
        margin = 0 if sr_in == target_sr else math.ceil(_MARGIN_SECONDS * sr_in / period) * period
        out_total = int(total * target_sr / sr_in)
        out_stop = out_total if stop is None else min(stop, out_total)
        position = start * sr_in // target_sr  # input index where the next emitted block starts
        buffer_start = max(0, position - margin)  # input index of buffer[0]
        if buffer_start:
            f.seek(buffer_start)
        buffer = np.zeros(0, np.float32)
        emitted = start  # output index of the next sample to emit
        exhausted = False
        while emitted < out_stop:
            while not exhausted and buffer_start + buffer.size < position + block + margin:
                try:
                    data = f.read(block, dtype="float32", always_2d=True)
                except (soundfile.LibsndfileError, RuntimeError) as e:
                    raise AudioDecodeError(f"{f.name}: decoding failed mid-file: {e}") from e
                if data.shape[0] == 0:
                    exhausted = True
                    break
                buffer = np.concatenate([buffer, _mono(data)])
            buffer_end = buffer_start + buffer.size
            if buffer_end <= position:  # the header promised more samples than the file holds
                break
            segment_start = max(0, position - margin)
            segment_end = min(buffer_end, position + block + margin)
            resampled = resample(
                buffer[segment_start - buffer_start : segment_end - buffer_start], sr_in, target_sr, resampler
            )
            offset = (position - segment_start) * target_sr // sr_in
            last = segment_end >= buffer_end and exhausted
            count = out_total - emitted if last else min(block * target_sr // sr_in, out_total - emitted)
            count = min(count, out_stop - emitted)
            out = resampled[offset : offset + count]
            if out.size:
                yield out
            emitted += out.size
            position += block
            if out.size < count:
                break
            keep_from = max(0, position - margin)
            buffer = buffer[keep_from - buffer_start :]
            buffer_start = keep_from
        if emitted == start and start == 0:
            raise AudioDecodeError(f"{f.name}: no audio samples could be decoded", reason="empty")


def starts_on_input_sample(output_sample: int, sr_in: int, target_sr: int = params.SAMPLE_RATE) -> bool:
    """Whether output sample `output_sample` at `target_sr` lies exactly on an input sample at `sr_in`."""
    return sr_in > 0 and (output_sample * sr_in) % target_sr == 0


def example_boundaries_on_input_samples(sr_in: int) -> bool:
    """Whether every 0.96 s example starts on an input sample, so a recording can be decoded in
    stretches that start at any example boundary (true for rates that are multiples of 25 Hz)."""
    return starts_on_input_sample(params.EXAMPLE_HOP_SAMPLES, sr_in)


def example_start_step(sr_in: int) -> int:
    """The smallest k such that every k-th example starts on an input sample at rate `sr_in`: 1 for
    rates that are multiples of 25 Hz, else 5 or 25 (example i starts at input sample i * 0.96 * sr_in).
    """
    if sr_in <= 0:
        raise ValueError(f"sample rate must be positive, got {sr_in}")
    return params.SAMPLE_RATE // math.gcd(params.EXAMPLE_HOP_SAMPLES * sr_in, params.SAMPLE_RATE)


def load_audio(
    path: PathOrFile, target_sr: int = params.SAMPLE_RATE, resampler: str = DEFAULT_RESAMPLER
) -> np.ndarray:
    """Decodes a whole recording to mono float32 at `target_sr` (16 kHz for VGGish).

    Integer PCM is scaled to [-1, 1) (int16 by 1/32768, as the reference); float data is used as is;
    channels are averaged; other rates are resampled with `resampler` ('resampy' reproduces the
    official reference exactly; the default 'soxr' is within the golden tolerances and far cheaper).

    Returns:
      float32 [num_samples] mono waveform.
    Raises:
      AudioDecodeError: corrupt, empty, unsupported or unreadable input, with `.reason` set.
    """
    blocks = list(iter_waveform(path, target_sr, resampler=resampler))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def iter_examples(
    source: PathOrFile,
    *,
    resampler: str = DEFAULT_RESAMPLER,
    chunk_seconds: float = DEFAULT_BLOCK_SECONDS,
    start_example: int = 0,
    stop_example: int | None = None,
    chunk_multiple: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """VGGish examples of a recording, produced chunk by chunk in bounded memory.

    Equal to `features.waveform_to_examples(load_audio(source))` within float rounding (for any
    `chunk_seconds`): example i is computed from the 16 kHz samples [i * 15360, i * 15360 + 15600)
    only, so chunks carry just the unconsumed tail. `start_example`/`stop_example` select examples
    [start, stop) and decode only the audio they need (plus the resampler's margins), so several
    workers can share one long recording; the start must lie on an input sample
    (`example_boundaries_on_input_samples`).

    Args:
      source: a path or a seekable binary file object.
      resampler: one of RESAMPLERS.
      chunk_seconds: seconds of audio decoded per step.
      start_example, stop_example: the range of examples to produce (stop None: to the end).
      chunk_multiple: every chunk but the last holds a multiple of this many examples (callers that
        run VGGish in fixed blocks pass the block size, so concatenated chunks need no padding).
    Yields:
      (index of the first example in the chunk, float32 [k, 96, 64]) with k >= 1.
    Raises:
      AudioDecodeError: as load_audio.
    """
    if chunk_multiple < 1:
        raise ValueError(f"chunk_multiple must be at least 1, got {chunk_multiple}")
    hop, need = params.EXAMPLE_HOP_SAMPLES, params.MIN_SAMPLES_FOR_ONE_EXAMPLE
    stop_sample = None if stop_example is None else (stop_example - 1) * hop + need
    carry = np.zeros(0, np.float32)
    next_index = start_example
    blocks = iter_waveform(
        source, resampler=resampler, block_seconds=chunk_seconds, start=start_example * hop, stop=stop_sample
    )
    for block in itertools.chain(blocks, [None]):
        if block is not None:
            carry = np.concatenate([carry, block]) if carry.size else block
        if carry.size < need:
            continue
        count = 1 + (carry.size - need) // hop
        if block is not None:
            count -= count % chunk_multiple  # the rest waits for the next block
            if not count:
                continue
        used = (count - 1) * hop + need
        yield next_index, features.waveform_to_examples(carry[:used], params.SAMPLE_RATE)
        next_index += count
        carry = carry[count * hop :].copy()
