"""Beam transforms of the scoring pipeline: decode -> embed (RunInference) -> windows -> score tables.

    Source --Decode--> (key, chunk of float32 [k, 96, 64] examples)  + (key, RecordingInfo)
           --RunInference(VGGishModelHandler)--> (key, (chunk index, uint8 [k, 128] frames))
           --CoGroupByKey(info, frames)--> ScoreRecordingFn --> windows / recordings / events / errors rows

Every 0.96 s frame is embedded once; head windows are views over a recording's frame sequence
(`gunshot_core.windows`, the same windows the `gunshot score` CLI uses).
VGGish runs batched across recordings (RunInference batches chunks up to `batch_size` examples) with
one model per worker; a recording is decoded, resampled and framed in bounded chunks
(`gunshot_core.audio.iter_examples`), so memory does not grow with its length: per recording only
the uint8 frames (128 bytes per 0.96 s) are grouped. Embedding TFRecords skip VGGish and feed their
frames straight into the same grouping.
"""

import dataclasses
import datetime
import functools
import logging
import threading
import time
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.transforms.window import GlobalWindows

from gunshot_core import params, vggish, windows
from pipelines import decode_ahead
from pipelines import scoring_segments as segments
from pipelines import scoring_sources as sources

_LOG = logging.getLogger(__name__)

NAMESPACE = "score"
# Examples per RunInference batch (every batch but a bundle's last is filled to it; VGGish.embed runs
# it in fixed-shape blocks). Few large batches: between two forward passes the decoding of the next
# batch evicts the network's weights from the CPU caches, which costs the next pass ~0.05 s, so
# batches of one 60-s chunk ran ~20% below the network's own speed; batches of 512 run within ~4%.
DEFAULT_BATCH_SIZE = 512
DEFAULT_CHUNK_SECONDS = 60.0
DEFAULT_SPLIT_SECONDS = 1800.0  # longer recordings are decoded as segments on several workers
DEFAULT_ARCHIVE_PART_BYTES = 64 << 20  # zip and plain tar archives are decoded in parts of this size
SPLIT_MIN_BYTES = 8 << 20  # smaller files are never probed for splitting
PROGRESS_SECONDS = 60.0

# Tags of the multi-output steps.
INFO_TAG = "info"
FRAMES_TAG = "frames"
ERRORS_TAG = "errors"
WINDOWS_TAG = "windows"
RECORDINGS_TAG = "recordings"
EVENTS_TAG = "events"
EMBEDDINGS_TAG = "embeddings"
CLIPS_TAG = "clips"


# ---- Windows over frames and events (pure numpy) ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    """A run of consecutive above-threshold windows (seconds from the recording start)."""

    start_seconds: float
    end_seconds: float
    peak_score: float
    peak_seconds: float
    num_windows: int


def merge_events(
    scores: np.ndarray, start_seconds: np.ndarray, end_seconds: np.ndarray, threshold: float
) -> list[Event]:
    """Merges runs of consecutive windows whose score is >= threshold into events.

    Args:
      scores: float [m] window scores in window order; start_seconds, end_seconds: float [m].
      threshold: detection threshold.
    Returns:
      events in time order: start of the run's first window, end of its last window, the peak score
      and the start of the (first) peak window.
    """
    above = np.asarray(scores) >= threshold
    events = []
    i, m = 0, len(above)
    while i < m:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < m and above[j + 1]:
            j += 1
        peak = i + int(np.argmax(scores[i : j + 1]))
        events.append(
            Event(
                float(start_seconds[i]),
                float(np.max(end_seconds[i : j + 1])),
                float(scores[peak]),
                float(start_seconds[peak]),
                j - i + 1,
            )
        )
        i = j + 1
    return events


def add_seconds(when: datetime.datetime | None, seconds: float) -> datetime.datetime | None:
    return None if when is None else when + datetime.timedelta(seconds=float(seconds))


# ---- Configuration and elements --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """Everything the scoring DoFns need (small and picklable).

    Attributes:
      checkpoint, pca, head: model files (local or gs://).
      window_frames, hop_frames: head window and hop in 0.96 s frames.
      threshold: a window with score >= threshold is a detection.
      batch_size: examples per VGGish batch (RunInference batches chunks up to this many examples).
      chunk_seconds: seconds of audio decoded per chunk.
      split_seconds: recordings longer than this are decoded in segments of about this length,
        which the runner can spread over workers (0: never split).
      archive_part_bytes: zip and uncompressed tar archives are decoded in parts of about this many
        stored bytes of audio members, which the runner can spread over workers (0: one member each).
      resampler: gunshot_core.audio resampler name.
      timestamp_pattern: strptime pattern finding the start time in file names, or None.
      write_embeddings: also emit one row per frame for the embeddings table.
      export_clips: top-K events per recording to cut as audio clips (0: none).
      clip_dir: where clips go.
      clip_padding_seconds: audio kept before and after each event in a clip.
    """

    checkpoint: str
    pca: str
    head: str
    window_frames: int = params.HEAD_FRAMES
    hop_frames: int = 5
    threshold: float = 0.5
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS
    split_seconds: float = DEFAULT_SPLIT_SECONDS
    archive_part_bytes: int = DEFAULT_ARCHIVE_PART_BYTES
    resampler: str | None = None
    timestamp_pattern: str | None = None
    write_embeddings: bool = False
    export_clips: int = 0
    clip_dir: str = ""
    clip_padding_seconds: float = 1.0


@dataclasses.dataclass(frozen=True)
class RecordingInfo:
    """What decoding learned about one recording (one per recording, always emitted).

    `num_examples` is the number of frames the decoder sent to VGGish (or, for TFRecords, found in the
    record); the scorer checks it against the frames it receives.
    """

    source: str
    file: str
    member: str | None
    input_kind: str
    format: str | None = None
    subtype: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration_seconds: float | None = None
    num_examples: int = 0
    start_utc: datetime.datetime | None = None
    timestamp_missing: bool = False
    status: str = "ok"
    stage: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    segment_index: int = 0  # which segment of a split recording this decode result is about
    segment_count: int = 1


def recording_stub(info: RecordingInfo) -> dict:
    """The recordings-table columns known from decoding alone."""
    return {
        "source": info.source,
        "file": info.file,
        "member": info.member,
        "input_kind": info.input_kind,
        "format": info.format,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "duration_seconds": info.duration_seconds,
        "start_utc": info.start_utc,
    }


def error_row(source: str, stage: str, reason: str, message: str) -> dict:
    return {"source": source, "stage": stage, "reason": reason, "message": message}


MAX_WARNINGS_PER_KIND = 20
_warned: dict = {}
_warned_lock = threading.Lock()


def _warn(kind: str, message: str, *args) -> None:
    """A warning, at most MAX_WARNINGS_PER_KIND per kind and process (counters keep the full count)."""
    with _warned_lock:
        count = _warned[kind] = _warned.get(kind, 0) + 1
    if count <= MAX_WARNINGS_PER_KIND:
        _LOG.warning(message, *args)
        if count == MAX_WARNINGS_PER_KIND:
            _LOG.warning("further %r warnings are only counted (see the Beam counters)", kind)


class _Progress:
    """Per-process progress log: finished/failed recordings and audio hours, at most once a minute."""

    _lock = threading.Lock()
    _state = {"started": None, "last": 0.0, "finished": 0, "failed": 0, "seconds": 0.0, "matched": 0}

    @classmethod
    def add(cls, *, matched=0, finished=0, failed=0, seconds=0.0):
        with cls._lock:
            s = cls._state
            now = time.monotonic()
            if s["started"] is None:
                s["started"], s["last"] = now, now
            s["matched"] += matched
            s["finished"] += finished
            s["failed"] += failed
            s["seconds"] += seconds
            if now - s["last"] >= PROGRESS_SECONDS:
                minutes = max((now - s["started"]) / 60.0, 1e-9)
                _LOG.info(
                    "progress (this worker): matched %d, finished %d, failed %d, %.2f audio hours"
                    " (%.2f audio hours/min)",
                    s["matched"],
                    s["finished"],
                    s["failed"],
                    s["seconds"] / 3600,
                    s["seconds"] / 3600 / minutes,
                )
                s["last"] = now


# ---- Matching ---------------------------------------------------------------------------------------


class MatchFn(beam.DoFn):
    """pattern -> Source per matched file; a pattern matching nothing -> error row (stage 'match')."""

    def __init__(self):
        self._matched = Metrics.counter(NAMESPACE, "files_matched")
        self._unmatched = Metrics.counter(NAMESPACE, "patterns_unmatched")

    def process(self, pattern):
        for item in sources.expand_pattern(pattern):
            if isinstance(item, sources.MatchError):
                self._unmatched.inc()
                _warn("match", "input %s", item.message)
                yield beam.pvalue.TaggedOutput(
                    ERRORS_TAG, error_row(item.pattern, "match", item.reason, item.message)
                )
            else:
                self._matched.inc()
                _Progress.add(matched=1)
                yield item


def _first_source(kv):
    return min(kv[1])


class MatchSources(beam.PTransform):
    """PCollection[str] patterns -> (PCollection[Source], PCollection[dict] error rows).

    Each file appears once even when several patterns match it; sources are redistributed so decoding
    spreads over workers.
    """

    def expand(self, patterns):
        matched = patterns | "Expand" >> beam.ParDo(MatchFn()).with_outputs(ERRORS_TAG, main="sources")
        unique = (
            matched.sources
            | "KeyByPath" >> beam.Map(lambda s: (s.path, s))
            | "Dedupe" >> beam.GroupByKey()
            | "First" >> beam.Map(_first_source)
        )
        return unique, matched[ERRORS_TAG]


# ---- Decoding --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Count:
    """A counter increment produced while decoding in the look-ahead thread; applied on the bundle's
    thread, where Beam's metrics are recorded."""

    counter: str
    n: int = 1


def _output_bytes(item) -> int:
    """Bytes an item decoded ahead holds (the examples of a chunk; everything else is small)."""
    return int(item[2].nbytes) if isinstance(item, tuple) and len(item) == 3 else 0


#: One gate and one byte budget per worker process (see pipelines.decode_ahead).
COMPUTE_GATE = decode_ahead.ComputeGate()
DECODE_BUDGET = decode_ahead.ProcessBudget(decode_ahead.DEFAULT_BUDGET_BYTES)


def _classify_exception(e: Exception) -> tuple[str, str]:
    """(reason, message) of a decoding failure."""
    from gunshot_core.errors import AudioDecodeError

    if isinstance(e, AudioDecodeError):
        return e.reason, str(e)
    if isinstance(e, FileNotFoundError | PermissionError):
        return "unreadable", f"{type(e).__name__}: {e}"
    if isinstance(e, MemoryError):
        return "unreadable", "out of memory while decoding"
    return "corrupt", f"{type(e).__name__}: {e}"


WHOLE = segments.Segment(0, 1, 0, None)


class PlanFn(beam.DoFn):
    """Source -> (Source, Segment or ArchivePart): work items the runner can spread over workers.

    Long audio files become several segments, and zip and uncompressed tar archives parts of about
    `archive_part_bytes` of members; everything else is one item. Only audio files of at least SPLIT_MIN_BYTES are probed
    (one header read); a file whose header or archive index cannot be read stays whole, and decoding
    reports the problem.
    """

    def __init__(self, config: ScoringConfig):
        self._split_seconds = config.split_seconds
        self._part_bytes = config.archive_part_bytes
        self._split = Metrics.counter(NAMESPACE, "recordings_split")
        self._archives_split = Metrics.counter(NAMESPACE, "archives_split")
        self._skipped_members = Metrics.counter(NAMESPACE, "archive_members_skipped")

    def process(self, source):
        if source.kind == sources.KIND_ARCHIVE and sources.splits_into_parts(source.path):
            yield from self._plan_archive(source)
            return
        if (
            source.kind != sources.KIND_AUDIO
            or self._split_seconds <= 0
            or 0 <= source.size_bytes < SPLIT_MIN_BYTES
        ):
            yield source, WHOLE
            return
        from gunshot_core import audio

        try:
            with sources.readable(source.path) as target:
                plan = segments.plan_segments(audio.probe(target), self._split_seconds)
        except Exception:  # noqa: BLE001 - decoding will report it
            plan = [WHOLE]
        if len(plan) > 1:
            self._split.inc()
            _LOG.info("%s: decoding in %d segments", source.path, len(plan))
        for segment in plan:
            yield source, segment

    def _plan_archive(self, source):
        try:
            members, skipped = sources.list_archive_members(source.path)
        except Exception:  # noqa: BLE001 - decoding the whole archive in one pass will report it
            members = []
        if not members:  # unreadable, sparse or without audio: the one-pass path gives the rows
            yield source, WHOLE
            return
        if skipped:
            self._skipped_members.inc(len(skipped))
            _LOG.info("%s: skipped %d non-audio members, e.g. %s", source.path, len(skipped), skipped[:3])
        parts = sources.plan_archive_parts(members, self._part_bytes)
        if len(parts) > 1:
            self._archives_split.inc()
            _LOG.info("%s: %d audio members in %d parts", source.path, len(members), len(parts))
        for part in parts:
            yield source, part


class DecodeFn(beam.DoFn):
    """(Source, Segment) -> chunks of VGGish examples for RunInference, plus one RecordingInfo per recording.

    Main output: (source key, chunk index, float32 [k, 96, 64] examples), in recording order.
    Output INFO_TAG: (source key, RecordingInfo), exactly one per recording, status 'error' with the
    reason when decoding failed (chunks already emitted for it are then discarded by the scorer).
    Output FRAMES_TAG: (source key, (chunk index, uint8 [n, 128])) for embedding TFRecords.

    Decoding runs in a look-ahead thread (pipelines.decode_ahead) across the bundle's elements, in
    the time VGGish leaves a core idle (mostly while the model loads); outputs keep element order.
    """

    def __init__(self, config: ScoringConfig):
        self._config = config
        self._recordings = Metrics.counter(NAMESPACE, "recordings_decoded")
        self._decode_errors = Metrics.counter(NAMESPACE, "decode_errors")
        self._examples = Metrics.counter(NAMESPACE, "examples_decoded")
        self._skipped_members = Metrics.counter(NAMESPACE, "archive_members_skipped")
        self._timestamp_missing = Metrics.counter(NAMESPACE, "timestamps_unparsed")
        self._ahead = None

    def __getstate__(self):
        return {**self.__dict__, "_ahead": None}

    # -- the bundle's thread ------------------------------------------------------------------------

    def start_bundle(self):
        self._close_ahead()
        self._ahead = decode_ahead.Lookahead(
            budget=DECODE_BUDGET, gate=COMPUTE_GATE, size_of=_output_bytes, name="decode-ahead"
        )

    def process(self, element):
        producer = functools.partial(self._outputs, element)
        while not self._ahead.offer(producer):  # the previous element has not started decoding yet
            if COMPUTE_GATE.is_loading() and not self._ahead.stalled:
                # Emitting now would only block on the model: feed the decoder instead.
                self._ahead.wait_for_slot(0.05)
            else:
                yield from self._emit(self._ahead.step())
        if not COMPUTE_GATE.is_loading():
            yield from self._emit(self._ahead.ready())

    def finish_bundle(self):
        for output in self._emit(self._ahead.drain()):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(output.tag, GlobalWindows.windowed_value(output.value))
            else:
                yield GlobalWindows.windowed_value(output)
        self._close_ahead()

    def teardown(self):
        self._close_ahead()

    def _close_ahead(self):
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def _emit(self, items: Iterable) -> Iterator:
        for item in items:
            if isinstance(item, _Count):
                getattr(self, item.counter).inc(item.n)
            else:
                yield item

    # -- the look-ahead thread: outputs and _Count markers, no Beam metrics calls ----------------------

    def _start_utc(self, name: str):
        if not self._config.timestamp_pattern:
            return None, False
        when = sources.parse_timestamp(name, self._config.timestamp_pattern)
        return when, when is None

    def _decode(self, key: str, file: str, member: str | None, kind: str, target, segment=WHOLE) -> Iterator:
        """Decodes one recording or one segment of it (`target`: a local path or a seekable file object)."""
        from gunshot_core import audio

        start_utc, missing = self._start_utc(member or file)
        if missing:
            yield _Count("_timestamp_missing")
        base = {"source": key, "file": file, "member": member, "input_kind": kind}
        base.update(start_utc=start_utc, timestamp_missing=missing)
        info = None
        count = 0
        try:
            info = audio.probe(target)
            resampler = self._config.resampler or audio.DEFAULT_RESAMPLER
            chunks = audio.iter_examples(
                target,
                resampler=resampler,
                chunk_seconds=self._config.chunk_seconds,
                chunk_multiple=vggish.DEFAULT_BATCH_SIZE,  # chunks fill VGGish's blocks: no padding
                start_example=segment.first,
                stop_example=segment.stop,
            )
            for chunk_index, (_, examples) in enumerate(chunks):
                count += examples.shape[0]
                yield (key, (segment.index, chunk_index), examples)
            status = {}
        except Exception as e:  # noqa: BLE001 - every failure becomes a row, never a crash
            reason, message = _classify_exception(e)
            yield _Count("_decode_errors")
            _warn(reason, "cannot decode %s (%s): %s", key, reason, message)
            status = {"status": "error", "stage": "decode", "error_reason": reason, "error_message": message}
        header = {}
        if info is not None:
            header = {
                "format": info.format,
                "subtype": info.subtype,
                "sample_rate": info.sample_rate,
                "channels": info.channels,
                "duration_seconds": info.duration_seconds,
            }
        if segment.index == 0:
            yield _Count("_recordings")
        yield _Count("_examples", count)
        split = {"segment_index": segment.index, "segment_count": segment.count}
        yield beam.pvalue.TaggedOutput(
            INFO_TAG, (key, RecordingInfo(**base, **header, num_examples=count, **status, **split))
        )

    def _decode_archive(self, source: sources.Source) -> Iterator:
        skipped: list[str] = []
        members = 0
        try:
            for member in sources.iter_archive_members(source.path, skipped):
                members += 1
                key = sources.member_source_id(source.path, member.name)
                yield from self._decode(key, source.path, member.name, sources.KIND_MEMBER, member.fileobj)
        except Exception as e:  # noqa: BLE001 - a broken archive is one error row
            reason = "unreadable" if isinstance(e, OSError) and not members else "corrupt"
            message = f"cannot read archive {source.path} after {members} members: {type(e).__name__}: {e}"
            yield from self._archive_error(source, reason, message)
            return
        if skipped:
            yield _Count("_skipped_members", len(skipped))
            _LOG.info("%s: skipped %d non-audio members, e.g. %s", source.path, len(skipped), skipped[:3])
        if not members:
            yield from self._archive_error(source, "empty", f"archive {source.path} holds no audio member")

    def _decode_archive_part(self, source: sources.Source, part: sources.ArchivePart) -> Iterator:
        """Decodes some members of an archive; every member ends as a recording or an error row."""
        done = set()
        try:
            for item in sources.iter_part_members(source.path, part):
                if isinstance(item, sources.Member):
                    done.add(item.name)
                    key = sources.member_source_id(source.path, item.name)
                    yield from self._decode(key, source.path, item.name, sources.KIND_MEMBER, item.fileobj)
                else:
                    name, error = item
                    done.add(name)
                    message = f"cannot read member {name!r}: {error}"
                    yield from self._archive_error(source, "unreadable", message, member=name)
        except Exception as e:  # noqa: BLE001 - the archive itself failed: the rest of the part fails
            message = f"cannot read archive {source.path}: {type(e).__name__}: {e}"
            for entry in part.members:
                if entry.name not in done:
                    yield from self._archive_error(source, "unreadable", message, member=entry.name)

    def _archive_error(self, source, reason, message, member: str | None = None) -> Iterator:
        """One error row (stage 'read') for a whole file, or for one `member` of an archive."""
        yield _Count("_decode_errors")
        _warn(reason, "%s", message)
        if member is None:
            key, kind = source.path, source.kind
        else:
            key, kind = sources.member_source_id(source.path, member), sources.KIND_MEMBER
        info = RecordingInfo(
            key,
            source.path,
            member,
            kind,
            status="error",
            stage="read",
            error_reason=reason,
            error_message=message,
        )
        yield beam.pvalue.TaggedOutput(INFO_TAG, (key, info))

    def _decode_tfrecord(self, source) -> Iterator:
        from pipelines import scoring_records

        start_utc, missing = self._start_utc(source.path)
        if missing:
            yield _Count("_timestamp_missing")
        try:
            for record in scoring_records.iter_embedding_records(source.path):
                key = sources.member_source_id(source.path, record.member)
                base = {"source": key, "file": source.path, "member": record.member}
                base.update(input_kind=sources.KIND_TFRECORD, format="TFRECORD", timestamp_missing=missing)
                yield _Count("_recordings")
                if record.frames is None:
                    yield _Count("_decode_errors")
                    message = f"bad record in {source.path}: {record.detail}"
                    _warn(record.reason, "%s (%s)", message, record.reason)
                    info = RecordingInfo(
                        **base,
                        status="error",
                        stage="decode",
                        error_reason=record.reason,
                        error_message=message,
                    )
                    yield beam.pvalue.TaggedOutput(INFO_TAG, (key, info))
                    continue
                context = record.context
                info = RecordingInfo(
                    **base,
                    duration_seconds=float(context.end_time - context.start_time),
                    num_examples=int(record.frames.shape[0]),
                    start_utc=add_seconds(start_utc, context.start_time),
                )
                yield beam.pvalue.TaggedOutput(FRAMES_TAG, (key, ((0, 0), record.frames)))
                yield beam.pvalue.TaggedOutput(INFO_TAG, (key, info))
        except Exception as e:  # noqa: BLE001 - an unreadable file is one error row
            _, message = _classify_exception(e)
            yield from self._archive_error(
                source, "unreadable", f"cannot read TFRecord {source.path}: {message}"
            )

    def _outputs(self, element) -> Iterator:
        """Everything one (Source, Segment) element decodes to, in order."""
        source, segment = element
        if isinstance(segment, sources.ArchivePart):
            yield from self._decode_archive_part(source, segment)
        elif source.kind == sources.KIND_ARCHIVE:
            yield from self._decode_archive(source)
        elif source.kind == sources.KIND_TFRECORD:
            yield from self._decode_tfrecord(source)
        else:
            try:
                with sources.readable(source.path) as target:
                    yield from self._decode(
                        source.path, source.path, None, sources.KIND_AUDIO, target, segment
                    )
            except Exception as e:  # noqa: BLE001 - opening a remote file failed
                reason, message = _classify_exception(e)
                info = RecordingInfo(
                    source.path,
                    source.path,
                    None,
                    sources.KIND_AUDIO,
                    status="error",
                    stage="read",
                    error_reason="unreadable",
                    error_message=message,
                )
                yield beam.pvalue.TaggedOutput(INFO_TAG, (source.path, info))


# ---- Embedding (RunInference) ----------------------------------------------------------------------


def localize(path: str, directory: str | None = None) -> str:
    """A local path for a model file or head directory: the path itself, or the worker's cached copy
    of a gs:// object (downloaded once per worker and reused by every process; see pipelines.model_cache).
    """
    from pipelines import model_cache

    return model_cache.local_copy(path, directory)


class ModelLoadError(BaseException):
    """VGGish could not be loaded on a worker.

    A BaseException on purpose: RunInference's dead-letter handling catches Exception, and a model
    that cannot load must fail the job loudly, not turn every recording into an error row.
    """


class _Embedder:
    """VGGish + the PCA postprocessor of one worker (what VGGishModelHandler.load_model returns).

    The model is built in a background thread started at construction, so decoding the first chunks
    overlaps with reading the checkpoint and building the network; the first call waits for it.
    """

    def __init__(self, checkpoint: str, pca: str):
        self._checkpoint = checkpoint
        self._pca = pca
        self._models = None
        self._error = None
        COMPUTE_GATE.load_started()  # before the thread starts: decoders see it at once
        self._loader = threading.Thread(target=self._load, name="vggish-load", daemon=True)
        self._loader.start()

    def _load(self):
        try:
            self._load_models()
        finally:
            COMPUTE_GATE.load_finished()

    def _load_models(self):
        try:
            from gunshot_core import startup

            with startup.imports_without_gc(freeze=True):  # TensorFlow: ~250,000 long-lived objects
                import tensorflow  # noqa: F401

            from gunshot_core.postprocess import Postprocessor
            from gunshot_core.vggish import VGGish

            # VGGish.embed runs fixed-shape blocks, so embeddings (and every table) are identical
            # however RunInference groups chunks into batches.
            network = VGGish.from_checkpoint(localize(self._checkpoint))
            network.trace()  # compiled here, in the loader thread, not in the first batch
            self._models = (network, Postprocessor.from_npz(localize(self._pca)))
        except BaseException as e:  # noqa: BLE001 - re-raised on first use
            self._error = e

    def __call__(self, examples: np.ndarray) -> np.ndarray:
        """float32 [n, 96, 64] -> uint8 [n, 128], independent of n and of the other examples."""
        self._loader.join()
        if self._error is not None:
            raise ModelLoadError(f"cannot load VGGish ({self._checkpoint}, {self._pca}): {self._error!r}")
        network, postprocessor = self._models
        with COMPUTE_GATE.busy():  # decoders of this process hold back meanwhile
            return postprocessor.postprocess(network.embed(examples))


def _chunk_examples(chunk) -> int:
    return max(1, int(chunk[2].shape[0]))


class VGGishModelHandler(ModelHandler):
    """RunInference handler: (key, chunk index, float32 [k, 96, 64]) -> (key, (chunk index, uint8 [k, 128])).

    One VGGish per worker process (load_model); chunks of several recordings are embedded in one call,
    batched up to `batch_size` examples. The examples are not kept in the output.
    """

    def __init__(self, checkpoint: str, pca: str, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self._checkpoint = checkpoint
        self._pca = pca
        self._batch_size = batch_size

    def load_model(self) -> _Embedder:
        return _Embedder(self._checkpoint, self._pca)

    def run_inference(self, batch, model: _Embedder, inference_args=None) -> Iterable:
        if not batch:  # BatchElements can emit an empty batch when sizing by weight
            return []
        sizes = [chunk[2].shape[0] for chunk in batch]
        examples = batch[0][2] if len(batch) == 1 else np.concatenate([chunk[2] for chunk in batch])
        frames = model(examples)
        out, offset = [], 0
        for (key, chunk_index, _), size in zip(batch, sizes, strict=True):
            out.append((key, (chunk_index, frames[offset : offset + size])))
            offset += size
        return out

    def batch_elements_kwargs(self):
        return {
            "min_batch_size": self._batch_size,
            "max_batch_size": self._batch_size,
            "element_size_fn": _chunk_examples,
        }

    def get_num_bytes(self, batch) -> int:
        return sum(chunk[2].nbytes for chunk in batch)

    def get_metrics_namespace(self) -> str:
        return "VGGish"


def _failed_batch_errors(failure) -> Iterator[dict]:
    """Error rows for a batch RunInference could not embed (its recordings then fail the frame check).

    Args:
      failure: Beam's dead letter (batch of chunks, (exception type, message, traceback)).
    """
    batch, details = failure
    message = ": ".join(str(d) for d in details[:2]) if isinstance(details, tuple | list) else str(details)
    seen = set()
    for chunk in batch if isinstance(batch, list | tuple) else [batch]:
        key = chunk[0]
        if key not in seen:
            seen.add(key)
            yield error_row(key, "embed", "embed_failed", message)


# ---- Scoring ---------------------------------------------------------------------------------------


class ScoreRecordingFn(beam.DoFn):
    """(key, {'info': [RecordingInfo], 'frames': [(chunk index, uint8 [k, 128])]}) -> table rows.

    Main output: recordings rows (exactly one per recording). Tagged: WINDOWS_TAG, EVENTS_TAG,
    ERRORS_TAG, EMBEDDINGS_TAG (when configured) and CLIPS_TAG (clip requests, when configured).
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
        from gunshot_core.heads import load_head

        self._head = load_head(localize(self._config.head))

    def _fail(self, info: RecordingInfo, stage: str, reason: str, message: str):
        self._failed.inc()
        _Progress.add(failed=1)
        row = recording_stub(info)
        row.update(status="error", error_reason=reason, error_message=message)
        yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_row(info.source, stage, reason, message))
        yield row

    def process(self, element):
        key, grouped = element
        infos = sorted(grouped[INFO_TAG], key=lambda i: i.segment_index)
        chunks = sorted(grouped[FRAMES_TAG], key=lambda c: c[0])
        expected = infos[0].segment_count if infos else 1
        if [i.segment_index for i in infos] != list(range(expected)):
            info = infos[0] if infos else RecordingInfo(key, key, None, "unknown")
            message = f"{len(infos)} decode results for {key!r}, expected {expected}"
            yield from self._fail(info, "score", "internal", message)
            return
        failed = [i for i in infos if i.status != "ok"]
        if failed:
            info = failed[0]
            yield from self._fail(info, info.stage or "decode", info.error_reason, info.error_message)
            return
        info = dataclasses.replace(infos[0], num_examples=sum(i.num_examples for i in infos))
        frames = (
            np.concatenate([c[1] for c in chunks])
            if chunks
            else np.zeros((0, params.EMBEDDING_SIZE), np.uint8)
        )
        if frames.shape[0] != info.num_examples:
            message = f"embedded {frames.shape[0]} of {info.num_examples} frames (a VGGish batch failed)"
            yield from self._fail(info, "embed", "embed_failed", message)
            return
        if frames.shape[0] == 0:
            message = (
                f"{info.duration_seconds or 0:.3f} s of audio holds no complete 0.96 s frame"
                f" ({params.MIN_SAMPLES_FOR_ONE_EXAMPLE} samples at 16 kHz)"
            )
            yield from self._fail(info, "decode", "too_short", message)
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
            yield from self._fail(info, "score", "score_failed", f"{type(e).__name__}: {e}")
            return
        yield from outputs

    def _score(self, info: RecordingInfo, frames: np.ndarray):
        config = self._config
        n = frames.shape[0]
        scored = windows.score_frames(self._head, frames, config.window_frames, config.hop_frames)
        starts, scores = scored.starts, scored.scores
        start_s, end_s = scored.start_seconds, scored.end_seconds
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
            for i in range(n):
                yield beam.pvalue.TaggedOutput(
                    EMBEDDINGS_TAG,
                    {
                        "source": info.source,
                        "frame_index": i,
                        "start_seconds": i * params.FRAME_SECONDS,
                        "embedding": frames[i].tobytes(),
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
        seconds = info.duration_seconds if info.duration_seconds is not None else n * params.FRAME_SECONDS
        self._ok.inc()
        self._windows.inc(len(starts))
        self._events.inc(len(events))
        self._detected.inc(int(row["detected"]))
        self._audio_ms.inc(int(round(seconds * 1000)))
        _Progress.add(finished=1, seconds=seconds)
        yield row


# ---- The composite -----------------------------------------------------------------------------------


class ScoreRecordings(beam.PTransform):
    """PCollection[Source] -> dict of PCollections of dict rows (tables before provenance columns).

    Keys: recordings, windows, events, errors, embeddings (empty unless write_embeddings) and clips
    ((RecordingInfo, [(event index, Event)]) requests, empty unless export_clips).

    Decodes (in bounded chunks), embeds with RunInference (one VGGish per worker, batched across
    recordings), groups the frames of each recording, scores head windows over them and emits the
    rows of the windows, recordings, events, errors (and embeddings) tables plus clip requests.
    """

    def __init__(self, config: ScoringConfig):
        super().__init__()
        self._config = config

    def expand(self, srcs):
        config = self._config
        planned = srcs | "Plan" >> beam.ParDo(PlanFn(config)) | "Spread" >> beam.Reshuffle()
        decoded = planned | "Decode" >> beam.ParDo(DecodeFn(config)).with_outputs(
            INFO_TAG, FRAMES_TAG, main="chunks"
        )
        embedded, dead_letters = (
            decoded.chunks
            | "Embed"
            >> RunInference(
                VGGishModelHandler(config.checkpoint, config.pca, config.batch_size)
            ).with_exception_handling()
        )
        embed_errors = dead_letters.failed_inferences | "EmbedErrors" >> beam.FlatMap(_failed_batch_errors)
        frames = (embedded, decoded[FRAMES_TAG]) | "AllFrames" >> beam.Flatten()
        scored = (
            {INFO_TAG: decoded[INFO_TAG], FRAMES_TAG: frames}
            | "GroupFrames" >> beam.CoGroupByKey()
            | "Score"
            >> beam.ParDo(ScoreRecordingFn(config)).with_outputs(
                WINDOWS_TAG, EVENTS_TAG, ERRORS_TAG, EMBEDDINGS_TAG, CLIPS_TAG, main=RECORDINGS_TAG
            )
        )
        errors = (scored[ERRORS_TAG], embed_errors) | "ScoreErrors" >> beam.Flatten()
        return {
            "recordings": scored[RECORDINGS_TAG],
            "windows": scored[WINDOWS_TAG],
            "events": scored[EVENTS_TAG],
            "errors": errors,
            "embeddings": scored[EMBEDDINGS_TAG],
            "clips": scored[CLIPS_TAG],
        }
