"""Dataset stage 3 (Beam side): a recording's frames and annotations -> example rows and records.

`MakeExamplesFn` takes the co-grouped recording, its matched annotations and whether an annotation
file covers it, plans its windows (`planning.plan_recording`) and cuts each window's frames into a
training record (`records.encode_embedding_record`: AudioSet format for VGGish frames; BirdNET's
float frames with the model in the context) (video_id = the source, start/end = the window's seconds, no
AudioSet labels: the tag is in the examples table). Annotations of recordings that failed to decode,
and annotations the planner rejects, become error rows.
"""

from __future__ import annotations

import fnmatch
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from gunshot_core import records
from pipelines.dataset import annotation_io, planning, splitting
from pipelines.dataset.options import ANNOTATED, Config

_LOG = logging.getLogger(__name__)
NAMESPACE = "dataset"
ERRORS_TAG = "errors"
STATS_TAG = "stats"

RECORDING_FAILED = "recording_failed"
NO_GROUP = "no_group"


def example_row(
    source: str, recording, plan: planning.WindowPlan, group: str, config: planning.PlanConfig | None = None
) -> dict:
    """The examples-table row of one planned window (without `split`); times from the embedding
    model's frames in `config` (default: VGGish's 0.96 s frames)."""
    config = config or planning.PlanConfig()
    start, end = config.span_seconds(plan.first_frame, plan.num_frames)
    a = plan.annotation
    return {
        "video_id": source,
        "start_time_seconds": start,
        "end_time_seconds": end,
        "tag": plan.tag,
        "origin": plan.origin,
        "label": plan.label,
        "group": group,
        "source": source,
        "member": recording.member,
        "start_seconds": start,
        "end_seconds": end,
        "first_frame": plan.first_frame,
        "num_frames": plan.num_frames,
        "shift": plan.shift,
        "event_start_seconds": None if a is None else a.start_seconds,
        "event_end_seconds": None if a is None else a.end_seconds,
        "annotation_file": None if a is None else a.annotation_file,
        "annotation_line": None if a is None else a.line,
    }


class MakeExamplesFn(beam.DoFn):
    """(source, {'recording': [RecordingFrames], 'annotations': [Annotation], 'covered': [source]})
    -> (example row without split, serialized SequenceExample); ERRORS_TAG rows; STATS_TAG counts."""

    def __init__(self, config: Config):
        self._config = config
        self._model = config.model
        self._examples_written = Metrics.counter(NAMESPACE, "examples")
        self._recordings = Metrics.counter(NAMESPACE, "recordings_used")
        self._failed = Metrics.counter(NAMESPACE, "recordings_failed")

    def _fully_annotated(self, source: str, covered: bool) -> bool:
        for glob in self._config.fully_annotated:
            if glob == ANNOTATED:
                if covered:
                    return True
            elif fnmatch.fnmatchcase(source, glob):
                return True
        return False

    def process(self, element):
        yield from self._examples(element)

    def _examples(self, element):
        source, grouped = element
        found = grouped["recording"]
        rows = sorted(grouped["annotations"], key=lambda a: (a.annotation_file, a.line))
        covered = bool(grouped["covered"])
        if not found:
            return  # annotations of unknown recordings were reported by the matcher
        recording = found[0]
        fully = self._fully_annotated(source, covered)
        if recording.failure is not None:
            # Stage "recording" whether the failure was seen decoding here or read from a scoring run.
            _, reason, message = recording.failure
            if rows or fully:
                self._failed.inc()
            for a in rows:
                text = f"{a.annotation_file}:{a.line}: recording {source} unusable ({reason}): {message}"
                yield beam.pvalue.TaggedOutput(
                    ERRORS_TAG,
                    annotation_io.error_row(
                        a.annotation_file, "recording", RECORDING_FAILED, text, a, source
                    ),
                )
            if fully and not rows:  # declared annotated, nothing to report it with: its own row
                yield beam.pvalue.TaggedOutput(
                    ERRORS_TAG,
                    annotation_io.error_row(source, "recording", reason, message, recording=source),
                )
            return
        if not rows and not fully:
            return  # neither annotated nor declared fully annotated: not part of the dataset
        group = splitting.group_of(source, self._config.group_pattern)
        if group is None:
            group = source
            message = (
                f"--group_pattern {self._config.group_pattern!r} does not match {source}; "
                "the recording is its own group"
            )
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, annotation_io.error_row(source, "split", NO_GROUP, message, recording=source)
            )
        frames = recording.frames
        plans, rejections, counts = planning.plan_recording(
            source, frames.shape[0], recording.duration_seconds, rows, fully, self._config.plan
        )
        self._recordings.inc()
        for r in rejections:
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG,
                annotation_io.error_row(
                    r.annotation.annotation_file, "plan", r.reason, r.message, r.annotation, source
                ),
            )
        seconds = recording.duration_seconds or self._config.plan.span_seconds(0, frames.shape[0])[1]
        yield beam.pvalue.TaggedOutput(
            STATS_TAG,
            {
                "recordings": 1,
                "fully_annotated_recordings": int(fully),
                "audio_seconds": float(seconds),
                "fully_annotated_seconds": float(seconds) if fully else 0.0,
                **counts,
            },
        )
        for plan in plans:
            row = example_row(source, recording, plan, group, self._config.plan)
            window = frames[plan.first_frame : plan.first_frame + plan.num_frames]
            record = records.encode_embedding_record(
                source, row["start_time_seconds"], row["end_time_seconds"], [], window, self._model
            )
            self._examples_written.inc()
            yield row, record
