"""Planning the segments of a long recording, so several workers can share a file.

Stage: scoring 2 (plan).

A segment is a range of VGGish examples [first, stop) of one recording. Example i depends only on the
16 kHz samples [i * 15360, i * 15360 + 15600), so a segment is decoded by
`gunshot_core.audio.iter_examples(start_example=first, stop_example=stop)`, which reads just that
stretch (plus the resampler's margins of real neighbouring samples). The examples therefore equal
whole-file examples within float rounding (as with any other `--chunk_seconds`).
"""

import dataclasses
import math

from gunshot_core import audio, params

_MARGIN_SECONDS = 0.5  # real samples kept on each side of a block while resampling (as the core)


@dataclasses.dataclass(frozen=True, order=True)
class Segment:
    """Examples [first, stop) of a recording split into `count` segments (stop None: to the end)."""

    index: int
    count: int
    first: int
    stop: int | None


def plan_segments(info: audio.AudioInfo, segment_seconds: float) -> list[Segment]:
    """Splits a recording into segments of about `segment_seconds` (one segment when it is shorter).

    Segments start on example boundaries that fall on whole input samples: any example at rates that
    are multiples of 25 Hz, every 5th or 25th example at other rates (`audio.example_start_step`).

    Args:
      info: the recording's header (gunshot_core.audio.probe).
      segment_seconds: target length of a segment; <= 0 disables splitting.
    """
    whole = [Segment(0, 1, 0, None)]
    if segment_seconds <= 0 or info.duration_seconds <= segment_seconds or info.sample_rate <= 0:
        return whole
    step = audio.example_start_step(info.sample_rate)
    per_segment = max(step, int(segment_seconds / params.FRAME_SECONDS) // step * step)
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
