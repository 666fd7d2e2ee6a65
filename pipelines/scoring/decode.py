"""Decoding: a work item -> chunks of network inputs, plus one RecordingInfo per recording.

Stage: scoring 3 (decode). `DecodeFn`: (Source, Segment or ArchivePart) -> (key, chunk of network
inputs: VGGish float32 [k, 96, 64] log-mel examples, BirdNET float32 [k, 144000] 3-s frames) and
(key, RecordingInfo). Recordings are decoded, resampled and framed in bounded chunks (the embedding
model's `iter_inputs`: `gunshot_core.audio.iter_examples` for VGGish), ahead of the network on spare cores
(`pipelines.scoring.decode_ahead`); embedding TFRecords (`pipelines.scoring.records`) skip VGGish and
emit their uint8 frames directly.
"""

import dataclasses
import datetime
import functools
import logging
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from gunshot_core.errors import describe
from pipelines.scoring import decode_ahead, sources
from pipelines.scoring.config import FRAMES_TAG, INFO_TAG, NAMESPACE, ScoringConfig
from pipelines.scoring.plan import WHOLE
from pipelines.scoring.reporting import _warn

_LOG = logging.getLogger(__name__)


def add_seconds(when: datetime.datetime | None, seconds: float) -> datetime.datetime | None:
    return None if when is None else when + datetime.timedelta(seconds=float(seconds))


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

    @classmethod
    def from_recordings_row(cls, row: dict, num_examples: int) -> "RecordingInfo":
        """The identity a `recordings` table row of an earlier run stored (for its stored frames)."""
        return cls(
            source=row["source"],
            file=row["file"],
            member=row["member"],
            input_kind=row["input_kind"],
            format=row["format"],
            sample_rate=row["sample_rate"],
            channels=row["channels"],
            duration_seconds=row["duration_seconds"],
            num_examples=num_examples,
            start_utc=row["start_utc"],
        )


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


@dataclasses.dataclass(frozen=True)
class _Count:
    """A counter increment produced while decoding in the look-ahead thread; applied on the bundle's
    thread, where Beam's metrics are recorded."""

    counter: str
    n: int = 1


def _output_bytes(item) -> int:
    """Bytes an item decoded ahead holds (the examples of a chunk; everything else is small)."""
    return int(item[2].nbytes) if isinstance(item, tuple) and len(item) == 3 else 0


#: One gate and one byte budget per worker process (see pipelines.scoring.decode_ahead).
COMPUTE_GATE = decode_ahead.ComputeGate()
DECODE_BUDGET = decode_ahead.ProcessBudget(decode_ahead.DEFAULT_BUDGET_BYTES)


def _classify_exception(e: Exception) -> tuple[str, str]:
    """(reason, message) of a decoding failure; the message is deterministic (errors.describe)."""
    from gunshot_core.errors import AudioDecodeError

    if isinstance(e, AudioDecodeError):
        return e.reason, describe(e)
    if isinstance(e, FileNotFoundError | PermissionError):
        return "unreadable", describe(e)
    if isinstance(e, MemoryError):
        return "unreadable", "out of memory while decoding"
    return "corrupt", describe(e)


class DecodeFn(beam.DoFn):
    """(Source, Segment) -> chunks of VGGish examples for RunInference, plus one RecordingInfo per recording.

    Main output: (source key, chunk index, float32 [k, 96, 64] examples), in recording order.
    Output INFO_TAG: (source key, RecordingInfo), exactly one per recording, status 'error' with the
    reason when decoding failed (chunks already emitted for it are then discarded by the scorer).
    Output FRAMES_TAG: (source key, (chunk index, uint8 [n, 128])) for embedding TFRecords.

    Decoding runs in a look-ahead thread (pipelines.scoring.decode_ahead) across the bundle's elements, in
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
        from gunshot_core import audio, resample

        start_utc, missing = self._start_utc(member or file)
        if missing:
            yield _Count("_timestamp_missing")
        base = {"source": key, "file": file, "member": member, "input_kind": kind}
        base.update(start_utc=start_utc, timestamp_missing=missing)
        if not isinstance(target, str):  # messages name an archive member or remote file by its key
            target = audio.NamedFile(target, key)
        info = None
        count = 0
        try:
            info = audio.probe(target)
            resampler = self._config.resampler or resample.DEFAULT_RESAMPLER
            chunks = self._config.model.iter_inputs(  # VGGish: log-mel examples; BirdNET: 3-s frames
                target,
                resampler=resampler,
                chunk_seconds=self._config.chunk_seconds,
                start_frame=segment.first,
                stop_frame=segment.stop,
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
            message = f"cannot read archive {source.path} after {members} members: {describe(e)}"
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
                    message = f"{sources.member_source_id(source.path, name)}: cannot read member: {describe(error)}"
                    yield from self._archive_error(source, "unreadable", message, member=name)
        except Exception as e:  # noqa: BLE001 - the archive itself failed: the rest of the part fails
            message = f"cannot read archive {source.path}: {describe(e)}"
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
        from pipelines.scoring import records

        start_utc, missing = self._start_utc(source.path)
        if missing:
            yield _Count("_timestamp_missing")
        known = records.run_recordings(source.path)
        try:
            for record in records.iter_embedding_records(source.path):
                row = known.get(record.context.video_id) if record.context is not None else None
                if row is not None and record.context.start_time == 0:  # written by --write_embeddings
                    yield _Count("_recordings")
                    yield from self._known_recording(row, record.frames)
                    continue
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

    def _known_recording(self, row: dict, frames) -> Iterator:
        """The frames of a record that `--write_embeddings` wrote for a recording of its run: the
        recording keeps its identity from that run's recordings table (`row`)."""
        key = row["source"]
        info = RecordingInfo.from_recordings_row(row, int(frames.shape[0]))
        yield beam.pvalue.TaggedOutput(FRAMES_TAG, (key, ((0, 0), frames)))
        yield beam.pvalue.TaggedOutput(INFO_TAG, (key, info))

    def _outputs(self, element) -> Iterator:
        """Everything one (Source, Segment) element decodes to, in order."""
        source, segment = element
        if isinstance(segment, sources.ArchivePart):
            yield from self._decode_archive_part(source, segment)
        elif source.kind == sources.KIND_ARCHIVE:
            yield from self._decode_archive(source)
        elif source.kind == sources.KIND_TFRECORD and not self._config.model.audioset_records:
            model = self._config.model.name
            yield from self._archive_error(
                source,
                "unsupported",
                f"{source.path}: embedding TFRecords hold VGGish frames, which --embedding_model {model} "
                f"cannot score; give the recordings themselves",
            )
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
