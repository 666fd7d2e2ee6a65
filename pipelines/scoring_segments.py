"""Decoding one segment of a long recording, so several workers can share a file.

A segment is a range of VGGish examples [first, stop) of one recording. Example i depends only on the
16 kHz samples [i * 15360, i * 15360 + 15600), so a segment needs just that stretch of the 16 kHz
waveform. It is decoded the way `gunshot_core.audio.iter_waveform` decodes a whole file: blocks of
input samples are mixed down and resampled with half a second of real neighbouring samples on each
side, starting at an input position that maps to a whole output sample. The examples therefore equal
whole-file examples within float rounding (as with any other `--chunk_seconds`).

This mirrors the block loop of `gunshot_core.audio.iter_waveform` with a start position; it belongs
in the core (`iter_examples(..., start_example=, stop_example=)`) once the core offers it.
"""

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import soundfile

from gunshot_core import audio, features, params

_MARGIN_SECONDS = 0.5  # real samples kept on each side of a block while resampling (as the core)


@dataclasses.dataclass(frozen=True, order=True)
class Segment:
    """Examples [first, stop) of a recording split into `count` segments (stop None: to the end)."""

    index: int
    count: int
    first: int
    stop: int | None


def splittable(sample_rate: int) -> bool:
    """True when example boundaries (every 0.96 s) fall on whole input samples, so segments can start there."""
    return sample_rate > 0 and (params.EXAMPLE_HOP_SAMPLES * sample_rate) % params.SAMPLE_RATE == 0


def plan_segments(info: audio.AudioInfo, segment_seconds: float) -> list[Segment]:
    """Splits a recording into segments of about `segment_seconds` (one segment when it is shorter).

    Args:
      info: the recording's header (gunshot_core.audio.probe).
      segment_seconds: target length of a segment; <= 0 disables splitting.
    """
    whole = [Segment(0, 1, 0, None)]
    if segment_seconds <= 0 or info.duration_seconds <= segment_seconds or not splittable(info.sample_rate):
        return whole
    per_segment = max(1, int(segment_seconds / params.FRAME_SECONDS))
    out_total = int(info.frames * params.SAMPLE_RATE / info.sample_rate)
    examples = (
        0
        if out_total < params.MIN_SAMPLES_FOR_ONE_EXAMPLE
        else 1 + (out_total - params.MIN_SAMPLES_FOR_ONE_EXAMPLE) // params.EXAMPLE_HOP_SAMPLES
    )
    count = math.ceil(examples / per_segment) if examples else 1
    if count <= 1:
        return whole
    return [
        Segment(i, count, i * per_segment, None if i == count - 1 else (i + 1) * per_segment)
        for i in range(count)
    ]


def iter_segment_waveform(
    source, first: int, stop: int | None, *, resampler: str, block_seconds: float
) -> Iterator[np.ndarray]:
    """The 16 kHz mono waveform needed for examples [first, stop), block by block.

    Yields float32 blocks whose concatenation is the whole-file waveform's samples
    [first * 15360, min(end, (stop - 1) * 15360 + 15600)).
    """
    target_sr = params.SAMPLE_RATE
    with soundfile.SoundFile(source) as f:
        sr_in, total = f.samplerate, f.frames
        if not splittable(sr_in):
            raise ValueError(f"{f.name}: cannot start a segment at an example boundary at {sr_in} Hz")
        out_total = int(total * target_sr / sr_in)
        out_start = first * params.EXAMPLE_HOP_SAMPLES
        out_stop = out_total
        if stop is not None:
            out_stop = min(
                out_total, (stop - 1) * params.EXAMPLE_HOP_SAMPLES + params.MIN_SAMPLES_FOR_ONE_EXAMPLE
            )
        period = sr_in // math.gcd(sr_in, target_sr)
        block = max(1, math.ceil(block_seconds * sr_in / period)) * period
        margin = 0 if sr_in == target_sr else math.ceil(_MARGIN_SECONDS * sr_in / period) * period
        position = out_start * sr_in // target_sr  # a multiple of `period` (see splittable)
        buffer_start = max(0, position - margin)
        f.seek(buffer_start)
        buffer = np.zeros(0, np.float32)
        emitted = out_start
        exhausted = False
        while emitted < out_stop:
            while not exhausted and buffer_start + buffer.size < position + block + margin:
                data = f.read(block, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    exhausted = True
                    break
                mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
                buffer = np.concatenate([buffer, mono])
            buffer_end = buffer_start + buffer.size
            if buffer_end <= position:
                break
            segment_start = max(0, position - margin)
            segment_end = min(buffer_end, position + block + margin)
            resampled = audio.resample(
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


def iter_segment_examples(
    source, first: int, stop: int | None, *, resampler: str, chunk_seconds: float
) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the first example in the chunk, float32 [k, 96, 64]) for examples [first, stop)."""
    carry = np.zeros(0, np.float32)
    next_index = first
    blocks = iter_segment_waveform(source, first, stop, resampler=resampler, block_seconds=chunk_seconds)
    for block in blocks:
        carry = np.concatenate([carry, block]) if carry.size else block
        if carry.size < params.MIN_SAMPLES_FOR_ONE_EXAMPLE:
            continue
        count = 1 + (carry.size - params.MIN_SAMPLES_FOR_ONE_EXAMPLE) // params.EXAMPLE_HOP_SAMPLES
        if stop is not None:
            count = min(count, stop - next_index)
        if count <= 0:
            break
        used = (count - 1) * params.EXAMPLE_HOP_SAMPLES + params.MIN_SAMPLES_FOR_ONE_EXAMPLE
        yield next_index, features.waveform_to_examples(carry[:used], params.SAMPLE_RATE)
        next_index += count
        carry = carry[count * params.EXAMPLE_HOP_SAMPLES :].copy()
