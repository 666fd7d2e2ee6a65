"""Scoring: a recording's frames -> windows / recordings / events / errors rows; the composite transform.

Stage: scoring 6 (score), and `ScoreRecordings`, the composite of stages 2-6:

    Source --PlanFn--> work items --DecodeFn--> (key, chunk of network inputs) + (key, RecordingInfo)
           --RunInference(EmbeddingModelHandler)--> (key, (chunk index, [k, d] frames))
           --CoGroupByKey(info, frames)--> ScoreRecordingFn --> windows / recordings / events / errors rows

Every frame is embedded once; head windows are views over a recording's frame sequence
(`gunshot_core.windows`, the same windows the `gunshot score` CLI uses); per recording only the
frames are grouped (VGGish: uint8, 128 bytes per 0.96 s; BirdNET: float32, 4 kB per hop). What
differs between embedding models (inputs, network, frame times, dtype) comes from the run's
`gunshot_core.embedding_models` description (`ScoringConfig.model`).
"""

import dataclasses
import logging

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from gunshot_core import windows
from gunshot_core.errors import describe
from pipelines.scoring import sources
from pipelines.scoring.config import (
    CLIPS_TAG,
    EMBEDDINGS_TAG,
    ERRORS_TAG,
    EVENTS_TAG,
    FRAME_SCORES_TAG,
    FRAMES_TAG,
    INFO_TAG,
    NAMESPACE,
    RECORDINGS_TAG,
    WINDOWS_TAG,
    ScoringConfig,
)
from pipelines.scoring.decode import DecodeFn, RecordingInfo, add_seconds, recording_stub
from pipelines.scoring.embed import _failed_batch_errors, localize, make_model_handler
from pipelines.scoring.events import merge_events, merge_frame_events
from pipelines.scoring.plan import PlanFn
from pipelines.scoring.reporting import _Progress, error_row, error_text

_LOG = logging.getLogger(__name__)


def assemble_recording(
    key: str, grouped: dict, model=None
) -> tuple[RecordingInfo, np.ndarray | None, tuple | None]:
    """One recording's decode results and embedded chunks -> its info and frames, or why it failed.

    Args:
      key: the source key.
      grouped: {INFO_TAG: [RecordingInfo per segment], FRAMES_TAG: [(chunk index, [k, d] frames)]},
        as `embed_recordings` groups them.
      model: the gunshot_core.embedding_models.EmbeddingModel of the frames (None: VGGish).
    Returns:
      (info, frames [n, d] with n >= 1 (VGGish uint8 [n, 128], BirdNET float32 [n, 1024]), None) for a
      usable recording, else (info, None, (stage, reason, message)).
    """
    if model is None:
        from gunshot_core import embedding_models

        model = embedding_models.get()
    infos = sorted(grouped[INFO_TAG], key=lambda i: i.segment_index)
    chunks = sorted(grouped[FRAMES_TAG], key=lambda c: c[0])
    expected = infos[0].segment_count if infos else 1
    if [i.segment_index for i in infos] != list(range(expected)):
        info = infos[0] if infos else RecordingInfo(key, key, None, "unknown")
        message = f"{len(infos)} decode results for {key!r}, expected {expected}"
        return info, None, ("score", "internal", message)
    failed = [i for i in infos if i.status != "ok"]
    if failed:
        info = failed[0]
        return info, None, (info.stage or "decode", info.error_reason, info.error_message)
    info = dataclasses.replace(infos[0], num_examples=sum(i.num_examples for i in infos))
    frames = np.concatenate([c[1] for c in chunks]) if chunks else model.empty_frames()
    if frames.shape[0] != info.num_examples:
        message = f"embedded {frames.shape[0]} of {info.num_examples} frames (a {model.display_name} batch failed)"
        return info, None, ("embed", "embed_failed", message)
    if frames.shape[0] == 0:
        return info, None, ("decode", "too_short", model.too_short_message(info.duration_seconds or 0))
    return info, frames, None


def load_scoring_head(config: ScoringConfig):
    """The run's head, checked against its embedding model: a built-in head of the model (e.g.
    BirdNET's "birdnet-gun") or a head file/directory (local copy on workers).

    Raises:
      EmbeddingModelMismatchError: the head was made for another model's frames.
    """
    from gunshot_core import embedding_models
    from gunshot_core.heads import load_head

    model = config.model
    if config.head in model.builtin_heads:
        return embedding_models.load_head(model, config.head)
    embedding_models.check_head_name(model, config.head)
    head = load_head(localize(config.head))
    embedding_models.check_head(model, head)
    return head


class ScoreRecordingFn(beam.DoFn):
    """(key, {'info': [RecordingInfo], 'frames': [(chunk index, uint8 [k, 128])]}) -> table rows.

    Main output: recordings rows (exactly one per recording). Tagged: WINDOWS_TAG, EVENTS_TAG,
    ERRORS_TAG, EMBEDDINGS_TAG (when configured), CLIPS_TAG (clip requests, when configured) and
    FRAME_SCORES_TAG (frames-table rows, when the head has frame scores).
    """

    def __init__(self, config: ScoringConfig):
        self._config = config
        self._ok = Metrics.counter(NAMESPACE, "recordings_scored")
        self._failed = Metrics.counter(NAMESPACE, "recordings_failed")
        self._detected = Metrics.counter(NAMESPACE, "recordings_detected")
        self._events = Metrics.counter(NAMESPACE, "events")
        self._windows = Metrics.counter(NAMESPACE, "windows_scored")
        self._audio_ms = Metrics.counter(NAMESPACE, "audio_milliseconds")
        self._head = None

    def setup(self):
        self._model = self._config.model
        self._head = load_scoring_head(self._config)
        if self._config.frame_events and not self._head.has_frame_scores:
            raise ValueError(f"frame_events is set but head {self._head.head_id!r} has no frame scores")

    def _fail(self, info: RecordingInfo, stage: str, reason: str, message: str):
        self._failed.inc()
        _Progress.add(failed=1)
        row = recording_stub(info)
        message = error_text(info.source, message)
        row.update(status="error", error_reason=reason, error_message=message)
        yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_row(info.source, stage, reason, message))
        yield row

    def process(self, element):
        key, grouped = element
        info, frames, failure = assemble_recording(key, grouped, self._model)
        if failure is not None:
            yield from self._fail(info, *failure)
            return
        if info.timestamp_missing:
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG,
                error_row(
                    key,
                    "timestamp",
                    "no_timestamp",
                    f"--timestamp_pattern {self._config.timestamp_pattern!r} not found in the name",
                ),
            )
        try:
            outputs = list(self._score(info, frames))  # all or nothing: no partial rows on a failure
        except Exception as e:  # noqa: BLE001 - one recording's failure must not stop the job
            _LOG.exception("scoring %s failed", key)
            yield from self._fail(info, "score", "score_failed", describe(e))
            return
        yield from outputs

    def _score(self, info: RecordingInfo, frames: np.ndarray):
        config, model = self._config, self._model
        n = frames.shape[0]
        scored = windows.score_frames(self._head, frames, config.window_frames, config.hop_frames)
        starts, scores = scored.starts, scored.scores
        # times from the model's frames (VGGish: 0.96 s frames back to back; BirdNET: 3 s every hop)
        start_s, end_s = model.frame_start_seconds(scored.starts), model.span_end_seconds(scored.ends)
        detected = scores >= config.threshold
        for i in range(len(starts)):
            yield beam.pvalue.TaggedOutput(
                WINDOWS_TAG,
                {
                    "source": info.source,
                    "window_index": i,
                    "start_seconds": float(start_s[i]),
                    "end_seconds": float(end_s[i]),
                    "start_utc": add_seconds(info.start_utc, start_s[i]),
                    "score": float(scores[i]),
                    "detected": bool(detected[i]),
                },
            )
        if config.frame_events:
            frame_scores = self._head.frame_scores(frames)
            frame_starts = model.frame_start_seconds(np.arange(n))
            frame_ends = model.span_end_seconds(np.arange(1, n + 1))  # VGGish: (i + 1) * 0.96, as ever
            # events end at start + frame length (VGGish: i * 0.96 + 0.96, as they always did)
            events = merge_frame_events(
                frame_scores,
                scored.starts,
                scored.ends,
                config.threshold,
                frame_starts,
                model.frame_end_seconds(np.arange(n)),
            )
            for i in range(n):
                yield beam.pvalue.TaggedOutput(
                    FRAME_SCORES_TAG,
                    {
                        "source": info.source,
                        "frame_index": i,
                        "start_seconds": float(frame_starts[i]),
                        "end_seconds": float(frame_ends[i]),
                        "score": float(frame_scores[i]),
                        "detected": bool(frame_scores[i] >= config.threshold),
                    },
                )
        else:
            events = merge_events(scores, start_s, end_s, config.threshold)
        for i, event in enumerate(events):
            yield beam.pvalue.TaggedOutput(
                EVENTS_TAG,
                {
                    "source": info.source,
                    "event_index": i,
                    "start_seconds": event.start_seconds,
                    "end_seconds": event.end_seconds,
                    "peak_score": event.peak_score,
                    "peak_seconds": event.peak_seconds,
                    "num_windows": event.num_windows,
                    "start_utc": add_seconds(info.start_utc, event.start_seconds),
                    "end_utc": add_seconds(info.start_utc, event.end_seconds),
                },
            )
        if config.write_embeddings:
            stored = frames.astype(np.dtype(model.dtype).newbyteorder("<"), copy=False)  # little-endian
            for i in range(n):
                yield beam.pvalue.TaggedOutput(
                    EMBEDDINGS_TAG,
                    {
                        "source": info.source,
                        "frame_index": i,
                        "start_seconds": float(model.frame_start_seconds(i)),
                        "embedding": stored[i].tobytes(),
                    },
                )
        if config.export_clips and events and info.input_kind != sources.KIND_TFRECORD:
            top = sorted(range(len(events)), key=lambda i: (-events[i].peak_score, i))[: config.export_clips]
            yield beam.pvalue.TaggedOutput(CLIPS_TAG, (info, [(i, events[i]) for i in sorted(top)]))
        best = int(np.argmax(scores))
        row = recording_stub(info)
        row.update(
            frames=n,
            windows=len(starts),
            max_score=float(scores[best]),
            max_score_start_seconds=float(start_s[best]),
            mean_score=float(np.mean(scores)),
            detected=bool(detected.any()),
            events=len(events),
            status="ok",
        )
        seconds = (
            info.duration_seconds if info.duration_seconds is not None else float(model.span_end_seconds(n))
        )
        self._ok.inc()
        self._windows.inc(len(starts))
        self._events.inc(len(events))
        self._detected.inc(int(row["detected"]))
        self._audio_ms.inc(int(round(seconds * 1000)))
        _Progress.add(finished=1, seconds=seconds)
        yield row


def embed_recordings(srcs, config: ScoringConfig):
    """Plan -> Decode -> Embed (RunInference) -> group: the frames of every recording, as scoring sees them.

    Applied inside a composite (its steps keep the labels Plan, Spread, Decode, Embed, EmbedErrors,
    AllFrames, GroupFrames), so jobs other than scoring embed exactly as `gunshot batch` does.

    Args:
      srcs: PCollection[Source] (from MatchSources).
      config: decoding and model settings (the head and window fields are not used here).
    Returns:
      (grouped, embed_errors): PCollection of (source key, {INFO_TAG: [RecordingInfo],
      FRAMES_TAG: [(chunk index, uint8 [k, 128])]}) - pass it to `assemble_recording` - and
      PCollection[dict] error rows of VGGish batches that failed.
    """
    planned = srcs | "Plan" >> beam.ParDo(PlanFn(config)) | "Spread" >> beam.Reshuffle()
    decoded = planned | "Decode" >> beam.ParDo(DecodeFn(config)).with_outputs(
        INFO_TAG, FRAMES_TAG, main="chunks"
    )
    embedded, dead_letters = (
        decoded.chunks | "Embed" >> RunInference(make_model_handler(config)).with_exception_handling()
    )
    embed_errors = dead_letters.failed_inferences | "EmbedErrors" >> beam.FlatMap(_failed_batch_errors)
    frames = (embedded, decoded[FRAMES_TAG]) | "AllFrames" >> beam.Flatten()
    grouped = {INFO_TAG: decoded[INFO_TAG], FRAMES_TAG: frames} | "GroupFrames" >> beam.CoGroupByKey()
    return grouped, embed_errors


class ScoreRecordings(beam.PTransform):
    """PCollection[Source] -> dict of PCollections of dict rows (tables before provenance columns).

    Keys: recordings, windows, events, errors, embeddings (empty unless write_embeddings), frames
    (empty unless frame_events) and clips ((RecordingInfo, [(event index, Event)]) requests, empty
    unless export_clips).

    Decodes (in bounded chunks), embeds with RunInference (one VGGish per worker, batched across
    recordings), groups the frames of each recording, scores head windows over them and emits the
    rows of the windows, recordings, events, errors (and embeddings) tables plus clip requests.
    """

    def __init__(self, config: ScoringConfig):
        super().__init__()
        self._config = config

    def expand(self, srcs):
        grouped, embed_errors = embed_recordings(srcs, self._config)
        return score_grouped(grouped, self._config, [embed_errors])


def score_grouped(grouped, config: ScoringConfig, more_errors=(), more_recordings=()) -> dict:
    """Applies ScoreRecordingFn (label "Score") to grouped frames; returns ScoreRecordings' dict.

    Args:
      grouped: PCollection of (source, {INFO_TAG: [RecordingInfo], FRAMES_TAG: [(chunk index,
        uint8 [k, 128])]}).
      config: scoring settings.
      more_errors, more_recordings: PCollections of rows flattened into the errors / recordings.
    """
    scored = grouped | "Score" >> beam.ParDo(ScoreRecordingFn(config)).with_outputs(
        WINDOWS_TAG,
        EVENTS_TAG,
        ERRORS_TAG,
        EMBEDDINGS_TAG,
        CLIPS_TAG,
        FRAME_SCORES_TAG,
        main=RECORDINGS_TAG,
    )
    errors = (scored[ERRORS_TAG], *more_errors) | "ScoreErrors" >> beam.Flatten()
    recordings = scored[RECORDINGS_TAG]
    if more_recordings:
        recordings = (recordings, *more_recordings) | "AllRecordings" >> beam.Flatten()
    return {
        "recordings": recordings,
        "windows": scored[WINDOWS_TAG],
        "events": scored[EVENTS_TAG],
        "errors": errors,
        "embeddings": scored[EMBEDDINGS_TAG],
        "frames": scored[FRAME_SCORES_TAG],
        "clips": scored[CLIPS_TAG],
    }


class RescoreRecordings(beam.PTransform):
    """PBegin -> ScoreRecordings' dict of row PCollections, from a parent run's stored frames
    (`--from_run`; see pipelines.scoring.from_run): the parent's recordings keep their identity, its
    failed recordings their rows and its error rows are carried over."""

    def __init__(self, config: ScoringConfig, parent):
        super().__init__()
        self._config = config
        self._parent = parent

    def expand(self, pbegin):
        from pipelines.scoring.from_run import ReadParentRun

        parent = pbegin | "ReadParent" >> ReadParentRun(self._parent)
        return score_grouped(parent["grouped"], self._config, [parent["errors"]], [parent["failed"]])
