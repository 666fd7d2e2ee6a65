"""Search stage 1: query specs -> the uint8 VGGish frames of each query window (runs at launch).

A query is `RECORDING[@START_SECONDS]` (the last `@number` is always START, so a source that
itself ends in `@30.000` is queried as `x@30.000@0`; TFRecord sources are `f.tfrecord!vid:30000`). Without `@START` the
query window is the loudest N frames of the recording (the most energy on its 0.96 s frame grid,
found by decoding it once), so a clip with a shot somewhere in it queries the shot, not its first
0.96 s; when the audio cannot be read for that (a table source whose file is gone), the window is
the recording's first N frames. The queries table says which (`start_from`: given | loudest |
first_frames).
RECORDING is a local path, a `gs://` URI, an archive member `archive.zip!member.wav`, or any
`source` of the embeddings table.

The query window is `--query_frames` N consecutive 0.96 s frames (default 1) starting with the frame
of the recording's own frame grid that holds START: frame floor(START / 0.96), the frames
`gunshot batch` embeds. Taking the grid frame (rather than audio starting exactly at START) makes a
query the same vectors whether it is taken from the table or decoded again, so the archive is
compared like with like. To query a sound at an exact time, cut a file starting there and query
FILE (START 0).

Each query is resolved, in this order:

1. from the embeddings table, when the recording is one of its sources and holds the N frames
   (found through the Parquet row-group statistics of the sorted `source` column: only row groups
   that can hold the recording are read);
2. else by decoding the recording and running VGGish -> PCA -> uint8, the stages and defaults of
   `gunshot batch` (`gunshot_core.audio.iter_examples`, `VGGish.embed`, `Postprocessor`), after
   checking that the checkpoint and PCA files are the ones the table was made with (same sha256).

A query that cannot be resolved (unreadable file, START beyond its end, other models, ...) becomes
a `queries` row with status `error`, a reason and a message; the other queries still run.
"""

import contextlib
import dataclasses
import logging
import math
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from gunshot_core import params
from gunshot_core.errors import InputError, describe
from pipelines.io.embeddings_table import TableInfo, open_parquet, text

_LOG = logging.getLogger(__name__)
#: The embedding model of tables without an `embedding_model` column (gunshot_core.embedding_models).
DEFAULT_MODEL = "vggish"

ORIGIN_TABLE = "table"
ORIGIN_AUDIO = "audio"
#: Where a query window's START came from (the queries table's `start_from`).
START_GIVEN = "given"
START_LOUDEST = "loudest"
START_FIRST_FRAMES = "first_frames"
_SPEC = re.compile(r"^(?P<path>.+)@(?P<start>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)$")


class SearchError(InputError):
    """A problem with the job's own inputs (no embeddings, bad flags): reported as one clear message."""


@dataclasses.dataclass(frozen=True)
class QuerySpec:
    """One `--query` as given.

    Attributes:
      index: 0-based position among the --query flags.
      text: the flag's value.
      recording: the recording (path, gs:// URI, archive!member or table source).
      start_seconds: START as given, or the start of the loudest window when none was given.
      frames: N, frames in the query window.
      start_from: START_GIVEN, START_LOUDEST (no @START: the loudest N frames) or START_FIRST_FRAMES
        (no @START and the audio could not be read to find the loudest frames).
    """

    index: int
    text: str
    recording: str
    start_seconds: float
    frames: int = 1
    start_from: str = START_GIVEN
    # The embedding model's frame grid (gunshot_core.embedding_models): VGGish 0.96 s frames back to
    # back; BirdNET 3-s frames every hop. Set from the embeddings table (`for_model`).
    grid_seconds: float = params.FRAME_SECONDS
    frame_seconds: float = params.FRAME_SECONDS

    @property
    def frame_index(self) -> int:
        """First frame of the query window on the recording's frame grid (frames start every
        `grid_seconds`)."""
        return frame_of(self.start_seconds, self.grid_seconds)

    def window_seconds(self, rounded: bool = True) -> tuple[float, float]:
        """(start, end) of the audio the query window's frames cover (rounded to microseconds)."""
        return window_span(self.frame_index, self.frames, self.grid_seconds, self.frame_seconds, rounded)

    def for_model(self, model) -> "QuerySpec":
        """This query on the frame grid of embedding `model`."""
        return dataclasses.replace(self, grid_seconds=model.hop_seconds, frame_seconds=model.frame_seconds)


def window_span(
    first: int, count: int, grid_seconds: float, frame_seconds: float, rounded: bool = True
) -> tuple[float, float]:
    """(start, end) seconds of frames [first, first + count) on a grid of frames `frame_seconds` long
    starting every `grid_seconds` (back to back, as VGGish's: exactly (first + count) * grid)."""
    start = first * grid_seconds
    if grid_seconds == frame_seconds:
        end = (first + count) * grid_seconds
    else:
        end = (first + count - 1) * grid_seconds + frame_seconds
    return (round(start, 6), round(end, 6)) if rounded else (start, end)


@dataclasses.dataclass(frozen=True)
class ResolvedQuery:
    """A query and its frames, or why it has none.

    Attributes:
      spec: the query.
      frames: [N, d] frames as bytes, as the embeddings table stores them (VGGish uint8 [N, 128],
        BirdNET float32 [N, 1024] little-endian) (None on error).
      origin: ORIGIN_TABLE or ORIGIN_AUDIO (None on error).
      reason, message: why the query failed (None when it did not).
    """

    spec: QuerySpec
    frames: bytes | None = None
    origin: str | None = None
    reason: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.frames is not None

    def array(self) -> np.ndarray:
        """uint8 [N, 128]."""
        return np.frombuffer(self.frames, np.uint8).reshape(-1, params.EMBEDDING_SIZE)


def frame_of(seconds: float, grid_seconds: float = params.FRAME_SECONDS) -> int:
    """Index of the frame starting at or before `seconds` on a grid of frames every `grid_seconds`
    (VGGish: the 0.96 s frame holding it; tolerant to float noise on frame boundaries)."""
    return int(math.floor(seconds / grid_seconds + 1e-6))


def parse_query(text: str, index: int, frames: int = 1) -> QuerySpec:
    """`RECORDING[@START]` -> QuerySpec.

    Raises:
      ValueError: empty recording, or a negative or non-finite START.
    """
    match = _SPEC.match(text)
    recording, start = (match["path"], float(match["start"])) if match else (text, 0.0)
    if not recording.strip():
        raise ValueError(f"--query {text!r}: no recording before '@'")
    if not math.isfinite(start) or start < 0:
        raise ValueError(f"--query {text!r}: START must be a number of seconds >= 0, got {start}")
    return QuerySpec(index, text, recording, start, frames, START_GIVEN if match else START_LOUDEST)


def loudest_frames(frame_energy: np.ndarray, n: int) -> int:
    """First frame of the `n` consecutive frames with the most energy (the earliest on ties).

    Args:
      frame_energy: float64 [frames] energy (sum of squares) of each 0.96 s frame.
      n: frames in the window.
    Returns:
      frame index in [0, frames - n] (0 when there are fewer than n frames).
    """
    if frame_energy.size <= n:
        return 0
    sums = np.convolve(frame_energy, np.ones(n), mode="valid")
    return int(np.argmax(sums))


def frame_energy(recording: str, model=None) -> np.ndarray:
    """float64 [frames]: energy of the recording in each step of its frame grid (VGGish: each 0.96 s
    frame; BirdNET: each hop, the stretch its frame starts with), for the frames `gunshot batch`
    embeds, decoded block by block at the recording's own rate.

    Raises:
      FileNotFoundError, AudioDecodeError, MediaError, OSError, ValueError: the audio cannot be read.
    """
    from gunshot_core import audio

    with open_recording(recording) as target:
        info = audio.probe(target)
        rate = info.sample_rate
        available, grid = _available_frames(info, model)
        energy = np.zeros(available, np.float64)
        position = 0
        for block in audio.iter_waveform(target, rate):
            frame = (position + np.arange(block.size)) * (1.0 / (rate * grid))
            index = np.floor(frame + 1e-9).astype(np.int64)
            keep = index < available
            if keep.any():  # a block spans a few consecutive frames: add them into that stretch
                first = int(index[keep][0])
                sums = np.bincount(index[keep] - first, weights=np.square(block[keep].astype(np.float64)))
                energy[first : first + sums.size] += sums
            position += block.size
    return energy


def _available_frames(info, model=None) -> tuple[int, float]:
    """(frames `gunshot batch` embeds of a recording with header `info`, seconds between frame starts)."""
    if model is not None and not model.is_default:
        return model.frame_count(info), model.hop_seconds
    samples = int(info.frames * params.SAMPLE_RATE / info.sample_rate) if info.sample_rate else 0
    available = (
        0
        if samples < params.MIN_SAMPLES_FOR_ONE_EXAMPLE
        else 1 + (samples - params.MIN_SAMPLES_FOR_ONE_EXAMPLE) // params.EXAMPLE_HOP_SAMPLES
    )
    return available, params.FRAME_SECONDS


def place_unstarted(spec: QuerySpec, model=None) -> QuerySpec:
    """A query given without @START -> the same query on the loudest N frames of its recording (or its
    first N frames, START_FIRST_FRAMES, when the audio cannot be read); other queries unchanged."""
    from gunshot_core.errors import AudioDecodeError
    from pipelines.report.media import MediaError

    if spec.start_from != START_LOUDEST:
        return spec
    try:
        energy = frame_energy(spec.recording, model)
    except (FileNotFoundError, AudioDecodeError, MediaError, OSError, ValueError) as e:
        _LOG.info("query %d %r: no @START and the audio cannot be read to find its loudest frames (%s); "
                  "using its first %d frame(s)", spec.index, spec.text, describe(e), spec.frames)  # fmt: skip
        return dataclasses.replace(spec, start_seconds=0.0, start_from=START_FIRST_FRAMES)
    first = loudest_frames(energy, spec.frames)
    start = round(first * spec.grid_seconds, 6)
    _LOG.info(
        "query %d %r: no @START; using the loudest %.2f s of the recording, from %.2f s (frame %d of %d)",
        spec.index, spec.text, spec.frames * spec.grid_seconds, start, first, energy.size,
    )  # fmt: skip
    return dataclasses.replace(spec, start_seconds=start)


def source_key(source: str) -> str:
    """The form under which two names of one recording compare equal: URIs as they are, local paths
    made absolute and normalised (so `./a.wav`, `a.wav` and `/data/a.wav` run from /data match)."""
    if "://" in source:
        return source
    return os.path.normpath(os.path.abspath(source))


def _name_variants(recording: str) -> set[str]:
    """Spellings of a recording that the table's `source` column may hold."""
    if "://" in recording:
        return {recording}
    return {recording, os.path.normpath(recording), source_key(recording)}


# ---- Table inspection and lookup -------------------------------------------------------------------


def lookup_table_frames(files, specs: list[QuerySpec]) -> tuple[dict[int, bytes], dict[str, int]]:
    """Frames of the queries whose recording is a source of the table.

    Reads only row groups whose `source` min/max statistics can hold one of the queried recordings.

    Returns:
      ({query index: [N, d] frames as bytes} for the windows the table holds whole,
       {source_key: frames the table holds} for every queried recording found in it).
    """
    wanted = {}  # source key -> [(spec, frame indices)]
    variants = set()
    for spec in specs:
        wanted.setdefault(source_key(spec.recording), []).append(spec)
        variants |= _name_variants(spec.recording)
    found: dict[tuple[str, int], bytes] = {}
    for path in files:
        pf = open_parquet(path)
        metadata = pf.metadata
        index = metadata.schema.names.index("source")
        for rg in range(metadata.num_row_groups):
            stats = metadata.row_group(rg).column(index).statistics
            if stats is not None and stats.has_min_max:
                low, high = text(stats.min), text(stats.max)
                if not any(low <= v <= high for v in variants):
                    continue
            table = pf.read_row_group(rg, columns=["source", "frame_index", "embedding"])
            table = table.filter(pc.is_in(table.column("source"), value_set=pa.array(sorted(variants))))
            table_sources = table.column("source").to_pylist()
            frame_indices = table.column("frame_index").to_pylist()
            embeddings = table.column("embedding")
            keys = {s: source_key(s) for s in set(table_sources)}
            for i, (s, f) in enumerate(zip(table_sources, frame_indices, strict=True)):
                key = keys[s]
                if key in wanted:
                    found[(key, f)] = embeddings[i].as_py()
    counts: dict[str, int] = {}
    for key, f in found:
        counts[key] = max(counts.get(key, 0), f + 1)
    out = {}
    for key, key_specs in wanted.items():
        for spec in key_specs:
            chunks = [found.get((key, spec.frame_index + o)) for o in range(spec.frames)]
            if all(c is not None for c in chunks):
                out[spec.index] = b"".join(chunks)
    return out, counts


# ---- Decoding and embedding ------------------------------------------------------------------------


@contextlib.contextmanager
def open_recording(recording: str):
    """Yields what soundfile opens for a recording (local path, gs:// file object, or archive member
    `archive!member`), through the report's readers (`pipelines.report.media`).

    Raises:
      FileNotFoundError: no such file (or archive).
      MediaError: the archive or member cannot be read.
    """
    from pipelines.report import media

    ref = media.AudioRef.from_source(recording)
    if not FileSystems.exists(ref.file):
        raise FileNotFoundError(f"{ref.file}: no such file")
    with media.open_recording(ref) as target:
        yield target


class QueryEmbedder:
    """VGGish + PCA loaded on first use; embeds the frames of query windows as `gunshot batch` does.

    With `model` (an EmbeddingModel other than the default) that model's network instead."""

    def __init__(self, checkpoint: str, pca: str, resampler: str, precision: str = "fp32", model=None):
        self._checkpoint = checkpoint
        self._pca = pca
        self._resampler = resampler
        self._precision = precision
        self._models = None
        self._model = model if model is not None and not model.is_default else None
        self._embedder = None

    def _model_frames(self, spec: QuerySpec) -> np.ndarray:
        """The frames of a non-default model: the recording embedded whole (streamed), as `gunshot
        batch` embeds it, then the window's rows."""
        from gunshot_core import audio

        model = self._model
        with open_recording(spec.recording) as target:
            info = audio.probe(target)
            available = model.frame_count(info)
            first, n = spec.frame_index, spec.frames
            _check_range(spec, info, available, first, n)
            if self._embedder is None:
                _LOG.info("loading %s to embed queries from audio", model.display_name)
                try:
                    self._embedder = model.load(resampler=self._resampler)
                except Exception as e:  # noqa: BLE001 - every query that needs the model says why
                    raise ModelLoadError(f"cannot load {model.display_name}: {describe(e)}") from e
            frames = self._embedder.frames(target)
        if frames.shape[0] < first + n:
            raise QueryRangeError(
                "too_short", f"{spec.recording}: {frames.shape[0]} frames, the query window needs {first + n}"
            )
        return np.ascontiguousarray(frames[first : first + n].astype(np.dtype(model.dtype).newbyteorder("<")))

    def _load(self):
        if self._models is None:
            from gunshot_core.postprocess import Postprocessor
            from gunshot_core.vggish import VGGish

            _LOG.info("loading VGGish to embed queries from audio")
            try:
                self._models = (
                    VGGish.from_checkpoint(self._checkpoint, precision=self._precision),
                    Postprocessor.from_npz(self._pca),
                )
            except Exception as e:  # noqa: BLE001 - every query that needs the models says why
                raise ModelLoadError(
                    f"cannot load VGGish ({self._checkpoint}) and PCA ({self._pca}): {describe(e)}"
                ) from e
        return self._models

    def frames(self, spec: QuerySpec) -> np.ndarray:
        """uint8 [N, 128], frames spec.frame_index .. + N - 1 of the recording.

        Raises:
          AudioDecodeError: the recording cannot be decoded.
          FileNotFoundError: no such recording.
          QueryRangeError: START beyond the end, or fewer than N frames after it.
        """
        from gunshot_core import audio

        if self._model is not None:
            return self._model_frames(spec)
        with open_recording(spec.recording) as target:
            info = audio.probe(target)
            available, _ = _available_frames(info)
            first, n = spec.frame_index, spec.frames
            _check_range(spec, info, available, first, n)
            # Decoding may only start on an input sample: at the nearest such frame before `first`.
            begin = first - first % audio.example_start_step(info.sample_rate)
            chunks = [
                examples
                for _, examples in audio.iter_examples(
                    target, resampler=self._resampler, start_example=begin, stop_example=first + n
                )
            ]
        examples = np.concatenate(chunks)[first - begin :]
        network, postprocessor = self._load()
        return postprocessor.postprocess(network.embed(examples))


def _check_range(spec: QuerySpec, info, available: int, first: int, n: int) -> None:
    """Raises QueryRangeError when frames [first, first + n) are not all among `available`."""
    if first >= available:
        what = "complete 0.96 s frame" if spec.grid_seconds == spec.frame_seconds else "frame"
        raise QueryRangeError(
            "start_beyond_end",
            f"{spec.recording}: START {spec.start_seconds:g} s is beyond the last {what} "
            f"of the recording ({info.duration_seconds:.3f} s, {available} frames)",
        )
    if first + n > available:
        raise QueryRangeError(
            "too_short",
            f"{spec.recording}: {n} frames from START {spec.start_seconds:g} s run past the end of the "
            f"recording ({info.duration_seconds:.3f} s, {available} frames)",
        )


class ModelLoadError(Exception):
    """VGGish or the PCA parameters could not be loaded to embed a query."""


class QueryRangeError(Exception):
    """The query window does not lie within the recording."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Models:
    """Model files for queries decoded from audio, or why there are none.

    Attributes:
      checkpoint, pca: local paths (None when they could not be resolved).
      vggish_sha256, pca_sha256: their hashes.
      problem: why decoding queries is impossible (None when it is possible).
      precision: how VGGish runs for them (the embeddings table's precision).
      embedding_sha256: for a non-default embedding model, "role=sha256,..." of its files (as the
        tables' `embedding_sha256`).
    """

    checkpoint: str | None = None
    pca: str | None = None
    vggish_sha256: str | None = None
    pca_sha256: str | None = None
    problem: str | None = None
    precision: str = "fp32"
    embedding_sha256: str | None = None


def resolve_queries(
    specs: list[QuerySpec], table: TableInfo, models_fn, resampler: str
) -> list[ResolvedQuery]:
    """Frames for every query: from the table where it holds them, else decoded (see the module doc).

    Args:
      specs: the queries.
      table: the embeddings table's footers (`pipelines.io.embeddings_table.inspect_table`).
      models_fn: () -> Models, called once, only when a query has to be decoded from audio.
      resampler: gunshot_core.audio resampler for decoded queries.
    """
    from gunshot_core.errors import AudioDecodeError
    from pipelines.report.media import MediaError

    model = table.model()
    specs = [place_unstarted(spec.for_model(model), model) for spec in specs]
    from_table, in_table = lookup_table_frames(table.files, specs) if specs else ({}, {})
    embedder = models = None
    resolved = []
    for spec in specs:
        if spec.index in from_table:
            resolved.append(ResolvedQuery(spec, from_table[spec.index], ORIGIN_TABLE))
            continue
        held = in_table.get(source_key(spec.recording))
        if held is not None:  # the table has the recording, but not the whole window
            reason = "start_beyond_end" if spec.frame_index >= held else "too_short"
            message = (
                f"{spec.recording}: the embeddings table holds frames 0-{held - 1} of this recording "
                f"({window_span(0, held, spec.grid_seconds, spec.frame_seconds)[1]:.2f} s); the query window needs frames "
                f"{spec.frame_index}-{spec.frame_index + spec.frames - 1} (START {spec.start_seconds:g} s)"
            )
            resolved.append(ResolvedQuery(spec, reason=reason, message=message))
            continue
        if models is None:
            models = models_fn()
        failure = _model_problem(models, table)
        if failure is not None:
            reason, message = failure
            resolved.append(ResolvedQuery(spec, reason=reason, message=f"{spec.text}: {message}"))
            continue
        if embedder is None:
            embedder = QueryEmbedder(models.checkpoint, models.pca, resampler, models.precision, model)
        try:
            frames = embedder.frames(spec)
        except QueryRangeError as e:
            resolved.append(ResolvedQuery(spec, reason=e.reason, message=str(e)))
        except AudioDecodeError as e:
            resolved.append(ResolvedQuery(spec, reason=e.reason, message=_decode_message(spec.recording, e)))
        except ModelLoadError as e:
            resolved.append(ResolvedQuery(spec, reason="model_error", message=str(e)))
        except FileNotFoundError as e:
            message = (
                f"{e.args[0] if e.args else spec.recording}; not a source of the embeddings table either"
            )
            resolved.append(ResolvedQuery(spec, reason="not_found", message=message))
        except MediaError as e:
            resolved.append(ResolvedQuery(spec, reason=e.reason, message=str(e)))
        except (OSError, ValueError) as e:
            resolved.append(
                ResolvedQuery(spec, reason="unreadable", message=f"{spec.recording}: {describe(e)}")
            )
        else:
            resolved.append(ResolvedQuery(spec, frames.tobytes(), ORIGIN_AUDIO))
    for r in resolved:
        if r.ok:
            _LOG.info(
                "query %d %r: %d frames from the %s", r.spec.index, r.spec.text, r.spec.frames, r.origin
            )
        else:
            _LOG.warning("query %d %r failed (%s): %s", r.spec.index, r.spec.text, r.reason, r.message)
    return resolved


def _decode_message(recording: str, error) -> str:
    """The decoder's message for a local file (it names the path); for a file object (gs://, archive
    member) one that names the recording, since the object's repr could hold a memory address."""
    from pipelines.report import media

    if "://" not in recording and media.AudioRef.from_source(recording).member is None:
        return str(error)
    return f"{recording}: cannot decode audio ({error.reason})"


def _model_problem(models: Models, table: TableInfo) -> tuple[str, str] | None:
    if models.problem:
        return "models_missing", models.problem
    if table.embedding_sha256:  # a non-default embedding model: its files' hashes
        if models.embedding_sha256 not in table.embedding_sha256:
            return (
                "model_mismatch",
                f"the installed {table.model().name} model files ({models.embedding_sha256}) are not the "
                f"ones the embeddings were made with ({', '.join(table.embedding_sha256)})",
            )
        return None
    for name, ours, theirs in (
        ("VGGish checkpoint", models.vggish_sha256, table.vggish_sha256),
        ("PCA parameters", models.pca_sha256, table.pca_sha256),
    ):
        if theirs and ours not in theirs:
            return (
                "model_mismatch",
                f"the {name} (sha256 {ours[:12]}...) is not the one the embeddings were made with "
                f"({', '.join(t[:12] + '...' for t in theirs)}); pass the same --checkpoint/--pca as `gunshot batch`",
            )
    return None
