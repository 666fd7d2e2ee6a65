"""Rescoring: an earlier run's stored embeddings -> the same tables with another head (`--from_run`).

Stage: scoring 3 (decode) for `gunshot batch --from_run RUN_DIR --head HEAD`: instead of matching,
decoding and embedding audio, the job reads what an earlier run (the parent, scored with
`--write_embeddings`) stored:

    parent recordings table --ReadRecordings--> ok rows -> {source: RecordingInfo}  (side input; identity as stored)
                                             \\-> failed rows -> recordings rows as they were
    parent embeddings table --plan_row_groups (metadata only, at launch)--> (file, row group) work items
        --StreamRecordingsFn--> (source, {info, frames}) per recording, one at a time
        --ScoreRecordingFn (the head, as in an audio run, fused: no shuffle of frames)--> tables
    ok recordings the embeddings table lacks --UnscoredRecordingsFn--> an error row each
    parent errors table --CarryErrors--> its rows (but clip exports) as they were

The embeddings table is written sorted by (source, frame_index) in every file, so a recording's frames
are contiguous; a recording belongs to the row group holding its first frame, whose work item reads
on into the next row groups only for a recording that straddles the boundary. Memory per worker is
one row group (65,536 frames, ~8 MB) and one recording's frames, whatever the archive's length.
The per-frame output tables of an archive of more than MAX_SHARD_FRAMES frames are written in files
by ranges of source cut at row-group boundaries (`plan_shard_bounds`), so that no writer sorts more
than about that many frames' rows in memory either; read in name order, the files are the one-file
table.

Every table holds the same rows as a run of the head over the original audio (the same sources,
files, members, start times, formats and durations; failed recordings keep their error row and
reason); only the head's columns differ. The parent's run.json gives the embedding model (its hashes)
and the window and hop; `check_head` refuses, before any work, a head trained on another embedding
model or window length.
"""

from __future__ import annotations

import dataclasses
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from gunshot_core import embedding_models, params
from gunshot_core.errors import GunshotError, describe
from pipelines import schemas
from pipelines.io import embeddings_table
from pipelines.scoring import outputs
from pipelines.scoring.config import ERRORS_TAG, FRAMES_TAG, INFO_TAG, NAMESPACE
from pipelines.scoring.decode import RecordingInfo, recording_stub
from pipelines.scoring.reporting import error_row, error_text

#: The embedding model of runs whose run.json does not name one (every run before other models).
DEFAULT_EMBEDDING_MODEL = "vggish"
#: Error rows of these stages are not carried over from the parent (this run makes its own exports).
NOT_CARRIED_STAGES = frozenset({"export"})
#: error_reason of an ok recording of the parent whose frames its embeddings table does not hold.
NO_FRAMES_REASON = "no_stored_frames"
#: Frames per file of a rescored run's per-frame tables (windows, frames, embeddings): two row groups
#: of the embeddings table, 36 hours of VGGish frames; larger archives give several files.
MAX_SHARD_FRAMES = 2 * outputs.ROW_GROUP_ROWS["embeddings"]
#: Embedding bytes per file at most when the rescored run also writes embeddings: fewer frames per
#: file for models with large frames (BirdNET's 4 kB: 16,384 frames), none fewer for VGGish's 128 B.
MAX_SHARD_EMBEDDING_BYTES = 64 << 20
_PROVENANCE = tuple(f.name for f in schemas.PROVENANCE_FIELDS + schemas.EMBEDDING_MODEL_FIELDS)


class FromRunError(GunshotError):
    """`--from_run` cannot rescore the given run (no run.json, no embeddings table, unreadable)."""


class HeadMismatchError(FromRunError):
    """The head was trained on another embedding model or window length than the run's frames."""


@dataclasses.dataclass(frozen=True)
class ParentRun:
    """What a rescoring job needs from the earlier run (read once, at launch).

    Attributes:
      directory: the parent's output directory (local or gs://), as given.
      manifest: its run.json.
      provenance: its provenance columns (model hashes, window, hop, threshold, head).
      embedding_model: the model that made the stored frames ("vggish" unless run.json says otherwise).
      window_frames, hop_frames: the parent's head window and hop in 0.96 s frames.
      recordings, embeddings, errors: the Parquet files of those tables.
      row_groups: the work items of the embeddings table (`plan_row_groups`).
      shard_bounds: ranges of `source` for the files of the per-frame output tables
        (`plan_shard_bounds`; empty: as many files as `--num_shards`).
    """

    directory: str
    manifest: dict
    provenance: dict
    embedding_model: str
    window_frames: int
    hop_frames: int
    recordings: tuple[str, ...]
    embeddings: tuple[str, ...]
    errors: tuple[str, ...]
    row_groups: tuple[tuple[str, int, str | None], ...] = ()
    shard_bounds: tuple[str, ...] = ()

    @property
    def model(self):
        """The gunshot_core.embedding_models.EmbeddingModel of the stored frames (with the run's hop)."""

        model = embedding_models.get(self.embedding_model)
        return model if model.is_default else model.with_hop(self.provenance.get("embedding_hop_seconds"))

    @property
    def vggish_sha256(self) -> str:
        return self.provenance["vggish_sha256"]

    @property
    def pca_sha256(self) -> str:
        return self.provenance["pca_sha256"]

    def summary(self) -> dict:
        """The parent as this run's run.json names it."""
        return {
            "directory": self.directory,
            "run_utc": self.manifest.get("run_utc"),
            "embedding_model": self.embedding_model,
            "models": self.manifest.get("models"),
            "provenance": self.provenance,
            "window_frames": self.window_frames,
            "hop_frames": self.hop_frames,
            "arguments": self.manifest.get("arguments"),
        }


def shard_frames(model, write_embeddings: bool) -> int:
    """Frames per file of a rescored run's per-frame tables (MAX_SHARD_FRAMES; with write_embeddings
    at most MAX_SHARD_EMBEDDING_BYTES of `model`'s stored frames, an EmbeddingModel)."""
    if not write_embeddings:
        return MAX_SHARD_FRAMES
    return min(MAX_SHARD_FRAMES, MAX_SHARD_EMBEDDING_BYTES // model.frame_bytes)


def read_parent_run(
    directory: str, max_shard_frames: int | None = None, write_embeddings: bool = False
) -> ParentRun:
    """Reads the parent's run.json and finds its tables (only their metadata is read here).

    Args:
      directory: the parent's output directory.
      max_shard_frames: frames per file of the per-frame output tables (default MAX_SHARD_FRAMES,
        and with write_embeddings at most MAX_SHARD_EMBEDDING_BYTES of the model's frames).
      write_embeddings: whether the rescored run writes an embeddings table too.

    Raises:
      FromRunError: no run.json, an unreadable one, no recordings or embeddings table, or an
        embeddings table not sorted by source.
    """
    manifest_path = FileSystems.join(directory, outputs.RUN_MANIFEST)
    try:
        with FileSystems.open(manifest_path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except Exception as e:  # noqa: BLE001 - any failure to read it is the same user error
        raise FromRunError(
            f"--from_run {directory}: no readable {outputs.RUN_MANIFEST} there ({type(e).__name__}); "
            "give the output directory of a finished `gunshot batch` run"
        ) from None
    provenance = manifest.get("provenance") or {}
    model_name = str(manifest.get("embedding_model") or DEFAULT_EMBEDDING_MODEL)
    hashes = (
        ("vggish_sha256", "pca_sha256") if model_name == DEFAULT_EMBEDDING_MODEL else ("embedding_sha256",)
    )
    missing = [k for k in hashes if not provenance.get(k)]
    if missing or "window_frames" not in manifest or "hop_frames" not in manifest:
        raise FromRunError(
            f"--from_run {directory}: its {outputs.RUN_MANIFEST} lacks the model hashes or window "
            "(written by another version?); score the audio again"
        )

    def files(name):
        return tuple(outputs.existing_files(outputs.table_pattern(directory, name)))

    embeddings = files("embeddings")
    if not embeddings:
        raise FromRunError(
            f"--from_run {directory}: the run has no embeddings table (embeddings-*.parquet); only a "
            "run scored with --write_embeddings can be rescored: score the audio once with "
            "--write_embeddings"
        )
    recordings = files("recordings")
    if not recordings:
        raise FromRunError(f"--from_run {directory}: the run has no recordings table (recordings-*.parquet)")
    groups = read_row_groups(embeddings)
    max_shard_frames = max_shard_frames or shard_frames(embedding_models.get(model_name), write_embeddings)
    return ParentRun(
        directory=directory,
        manifest=manifest,
        provenance=dict(provenance),
        embedding_model=str(manifest.get("embedding_model") or DEFAULT_EMBEDDING_MODEL),
        window_frames=int(manifest["window_frames"]),
        hop_frames=int(manifest["hop_frames"]),
        recordings=recordings,
        embeddings=embeddings,
        errors=files("errors"),
        row_groups=plan_row_groups(embeddings, groups),
        shard_bounds=plan_shard_bounds(groups, max_shard_frames),
    )


def check_head(head, parent: ParentRun) -> None:
    """Refuses a head that cannot score the parent's frames, naming both sides.

    Args:
      head: a loaded gunshot_core.heads.Head.
      parent: the run being rescored.
    Raises:
      HeadMismatchError: the head's card names another embedding model, VGGish checkpoint or PCA
        parameters than those that made the stored frames, or the head takes a fixed number of frames
        other than the run's window.
    """
    card = head.card
    where = f"head {head.head_id!r} ({head.source_path})"
    fix = "choose a head trained on these embeddings, or score the audio with the head's own models"
    if card is not None:
        model = (
            card.extra.get("embedding_model")
            or (card.training or {}).get("embedding_model")
            or getattr(card, "embedding_model", None)
        )
        if model and str(model) != parent.embedding_model:
            raise HeadMismatchError(
                f"{where} was trained on {model} embeddings; the frames of --from_run "
                f"{parent.directory} are {parent.embedding_model} embeddings: {fix}"
            )
        for label, ours, theirs in (
            ("VGGish checkpoint", card.vggish_checkpoint_sha256, parent.vggish_sha256),
            ("PCA parameters", card.pca_params_sha256, parent.pca_sha256),
        ):
            if ours and ours != theirs:
                raise HeadMismatchError(
                    f"{where} was trained on embeddings of the {label} {ours[:12]}..., the frames of "
                    f"--from_run {parent.directory} come from {theirs[:12]}...: {fix}"
                )
    if head.frames is not None and head.frames != parent.window_frames:
        raise HeadMismatchError(
            f"{where} takes windows of {head.frames} frames ({head.frames * params.FRAME_SECONDS:.2f} s); "
            f"--from_run {parent.directory} was scored with windows of {parent.window_frames} frames: "
            "choose a head of that window length"
        )


def _without_provenance(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in _PROVENANCE}


class SplitRecordingsFn(beam.DoFn):
    """Parent recordings rows -> (source, RecordingInfo) of each ok recording (main output), and the
    failed ones' rows as they were, without provenance (tagged 'failed')."""

    FAILED_TAG = "failed"

    def process(self, row):
        if row["status"] != "ok":
            yield beam.pvalue.TaggedOutput(self.FAILED_TAG, _without_provenance(row))
            return
        info = RecordingInfo.from_recordings_row(row, int(row["frames"] or 0))
        yield row["source"], info


def chunk_frames(table: pa.Table, model=None):
    """One row group of an embeddings table -> its recordings' frames, a chunk per run of consecutive
    frames of one recording.

    Args:
      table: columns source, frame_index and embedding (fixed_size_binary(128), or the frame bytes of
        `model`), rows in file order (sorted by source and frame_index, as WriteTable writes them).
      model: the gunshot_core.embedding_models.EmbeddingModel of the frames (None: VGGish).
    Yields:
      (source, (first frame index, [k, d] frames: uint8 [k, 128] VGGish, float32 [k, 1024] BirdNET)):
      the chunk index is the first frame's index, so a recording's chunks (from several row groups)
      concatenate in order.
    """
    if table.num_rows == 0:
        return
    import pyarrow.compute as pc

    source = table.column("source").combine_chunks()
    index = table.column("frame_index").to_numpy().astype(np.int64)
    embedding = table.column("embedding").combine_chunks()
    width = params.EMBEDDING_SIZE if model is None else model.frame_bytes
    offset = embedding.offset * width
    raw = np.frombuffer(embedding.buffers()[1], np.uint8)
    frames = raw[offset : offset + table.num_rows * width].reshape(-1, width)
    if model is not None:
        frames = model.frames_from_bytes(frames.reshape(-1)).astype(model.dtype)
    changed = pc.not_equal(source.slice(1), source.slice(0, len(source) - 1)).to_numpy(zero_copy_only=False)
    breaks = np.flatnonzero(changed | (index[1:] != index[:-1] + 1)) + 1
    bounds = [0, *breaks.tolist(), table.num_rows]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        yield source[a].as_py(), (int(index[a]), frames[a:b].copy())


_FRAME_COLUMNS = ["source", "frame_index", "embedding"]


def _source_range(parquet, index: int) -> tuple[str, str] | None:
    """(first, last) source of a row group: from its statistics, else read (None when it is empty)."""
    group = parquet.metadata.row_group(index)
    if group.num_rows == 0:
        return None
    column = parquet.schema_arrow.get_field_index("source")
    stats = group.column(column).statistics
    if stats is not None and stats.has_min_max and isinstance(stats.min, str):
        return stats.min, stats.max
    sources = parquet.read_row_group(index, columns=["source"]).column("source")
    return sources[0].as_py(), sources[len(sources) - 1].as_py()


def read_row_groups(paths) -> tuple[tuple[str, int, str, str, int], ...]:
    """The row groups of an embeddings table, from the files' metadata.

    Args:
      paths: the table's Parquet files.
    Returns:
      (path, row group index, first source, last source, rows) per non-empty row group, in file
      order (row-group statistics of `source`; the column itself is read where they are absent).
    Raises:
      FromRunError: a file is unreadable.
    """
    groups = []
    for path in paths:
        try:
            parquet = embeddings_table.open_parquet(path)
            ranges = [_source_range(parquet, i) for i in range(parquet.metadata.num_row_groups)]
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
        except Exception as e:  # noqa: BLE001 - any failure to read it is the same user error
            raise FromRunError(
                f"--from_run: cannot read the embeddings file {path} ({describe(e)})"
            ) from None
        for i, (bounds, rows) in enumerate(zip(ranges, sizes, strict=True)):
            if bounds is not None:
                groups.append((path, i, bounds[0], bounds[1], rows))
    return tuple(groups)


def plan_row_groups(paths, groups=None) -> tuple[tuple[str, int, str | None], ...]:
    """The work items of a rescoring job: one per row group of the embeddings table.

    Each file of the table holds its recordings' frames sorted by (source, frame_index) (as WriteTable
    writes it), so every recording's frames are contiguous, possibly across row groups. A recording
    belongs to the row group holding its first frame: the item of row group i names the last source
    of the row groups before it (`after`), whose frames at the start of row group i are not its own.
    Only metadata is read (row-group statistics of `source`; the column itself where they are absent).

    Args:
      paths: the embeddings table's Parquet files.
      groups: `read_row_groups(paths)`, when already read.
    Returns:
      (path, row group index, after: str or None) per non-empty row group, in file order.
    Raises:
      FromRunError: a file is unreadable, or its rows are not sorted by source.
    """
    items, previous, after = [], None, None
    for path, i, first, last, _ in read_row_groups(paths) if groups is None else groups:
        if path != previous:
            previous, after = path, None
        if after is not None and first < after:
            raise FromRunError(
                f"--from_run: the embeddings file {path} is not sorted by source (row group {i} starts "
                f"with {first!r} after {after!r}); rescoring reads the table as `gunshot batch "
                "--write_embeddings` writes it: score the audio again with --write_embeddings"
            )
        items.append((path, i, after))
        after = last
    return tuple(items)


def plan_shard_bounds(groups, max_frames: int) -> tuple[str, ...]:
    """Ranges of `source` that split the per-frame output tables into files of about `max_frames`.

    Cuts fall after the last source of a row group of the embeddings table, once the row groups since
    the previous cut hold `max_frames` frames (a range holds at most those row groups plus, per file
    of the table, the start of the next one), so the files' writers need memory for about
    `max_frames` frames each, whatever the archive's length; a recording is never split. No cut
    (one file, as for every table) while the whole table holds at most `max_frames` frames.

    Args:
      groups: `read_row_groups` of the embeddings table.
      max_frames: frames per output file (windows are at most as many, `hop_frames` >= 1).
    Returns:
      sorted, distinct sources for `WriteTable(shard_bounds=...)`: file i holds the recordings whose
      source s has bounds[i - 1] < s <= bounds[i].
    """
    bounds, frames, last = [], 0, None
    for _, _, _, group_last, rows in sorted(groups, key=lambda g: (g[3], g[0], g[1])):
        if frames and frames + rows > max_frames and group_last != last:
            bounds.append(last)
            frames = 0
        frames += rows
        last = group_last
    return tuple(bounds)


def _leading_rows(table: pa.Table, source: str) -> int:
    """How many rows at the start of `table` belong to `source`."""
    import pyarrow.compute as pc

    other = pc.not_equal(table.column("source"), source).to_numpy(zero_copy_only=False)
    return int(np.argmax(other)) if other.any() else table.num_rows


def owned_recordings(path: str, index: int, after: str | None, model=None):
    """The recordings whose first frame is in row group `index` of `path`, each with all its frames.

    Reads that row group, then - only for its last recording, when it goes on - the following row
    groups up to that recording's last frame. Memory: one row group (65,536 frames, ~8 MB) plus one
    recording's frames, whatever the length of the table.

    Args:
      path: an embeddings Parquet file.
      index: the row group.
      after: the last source of the row groups before it (see `plan_row_groups`), or None.
      model: the EmbeddingModel of the frames (None: VGGish), as for `chunk_frames`.
    Yields:
      (source, [(first frame index, [k, d] frames)]) in file order, one per recording; the chunks
      are contiguous runs of frames in frame order.
    """
    parquet = embeddings_table.open_parquet(path)
    table = parquet.read_row_group(index, columns=_FRAME_COLUMNS)
    current, chunks = None, []
    for source, chunk in chunk_frames(table, model):
        if after is not None and source <= after:
            continue  # the end of a recording that belongs to an earlier row group
        if source != current:
            if current is not None:
                yield current, chunks
            current, chunks = source, []
        chunks.append(chunk)
    if current is None:
        return
    del table
    for following in range(index + 1, parquet.metadata.num_row_groups):
        bounds = _source_range(parquet, following)
        if bounds is None:
            continue
        if bounds[0] != current:
            break
        table = parquet.read_row_group(following, columns=_FRAME_COLUMNS)
        rows = _leading_rows(table, current)
        chunks.extend(chunk for _, chunk in chunk_frames(table.slice(0, rows), model))
        if rows < table.num_rows:
            break
    yield current, chunks


class StreamRecordingsFn(beam.DoFn):
    """(path, row group index, after) -> (source, {INFO_TAG: [RecordingInfo], FRAMES_TAG: chunks}) of
    every recording whose first frame is in that row group, one at a time (as `embed_recordings`
    groups an audio run's frames, but without a shuffle: ScoreRecordingFn runs fused behind it).

    Side input `infos`: {source: RecordingInfo} of the parent's ok recordings. Tagged STREAMED_TAG:
    the source of every recording streamed (to find ok recordings without frames).
    """

    STREAMED_TAG = "streamed"

    def __init__(self, model=None):
        self._model = model
        self._frames = Metrics.counter(NAMESPACE, "frames_read")

    def process(self, item, infos):
        path, index, after = item
        for source, chunks in owned_recordings(path, index, after, self._model):
            self._frames.inc(sum(len(c[1]) for c in chunks))
            info = infos.get(source)
            yield beam.pvalue.TaggedOutput(self.STREAMED_TAG, (source, True))
            yield source, {INFO_TAG: [info] if info is not None else [], FRAMES_TAG: chunks}


class UnscoredRecordingsFn(beam.DoFn):
    """(source, {INFO_TAG: [RecordingInfo], STREAMED_TAG: [...]}) -> for an ok recording of the parent
    whose frames are not in its embeddings table: a failed recordings row (main) and an error row
    (tagged ERRORS_TAG), so that no recording disappears."""

    def __init__(self, directory: str):
        self._directory = directory
        self._failed = Metrics.counter(NAMESPACE, "recordings_failed")

    def process(self, element):
        source, grouped = element
        if grouped[StreamRecordingsFn.STREAMED_TAG] or not grouped[INFO_TAG]:
            return
        info = grouped[INFO_TAG][0]
        self._failed.inc()
        message = error_text(
            source,
            f"the embeddings table of --from_run {self._directory} holds none of its "
            f"{info.num_examples} frames",
        )
        yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_row(source, "score", NO_FRAMES_REASON, message))
        row = recording_stub(info)
        row.update(status="error", error_reason=NO_FRAMES_REASON, error_message=message)
        yield row


def _carry_error(row: dict):
    if row["stage"] not in NOT_CARRIED_STAGES:
        yield _without_provenance(row)


class ReadParentRun(beam.PTransform):
    """PBegin -> the parent's recordings, frames and error rows, ready for ScoreRecordingFn.

    Returns a dict: `grouped` (source, {INFO_TAG: [RecordingInfo], FRAMES_TAG: [(first frame, uint8
    [k, 128])]}) of every recording in the parent's embeddings table, as `embed_recordings` groups
    them for an audio run, but streamed row group by row group without a shuffle (`owned_recordings`);
    `failed` the parent's recordings rows of failed recordings (and of ok ones without stored
    frames); `errors` its error rows (but those of clip exports, and one per ok recording without
    stored frames). Rows carry no provenance columns.
    """

    def __init__(self, parent: ParentRun):
        super().__init__()
        self._parent = parent

    def expand(self, pbegin):
        parent = self._parent

        def read(label, paths, **kwargs):
            reads = [
                pbegin | f"{label}{i}" >> beam.io.ReadFromParquet(path, **kwargs)
                for i, path in enumerate(paths)
            ]
            return reads | f"{label}All" >> beam.Flatten()

        recordings = read("ReadRecordings", parent.recordings) | "SplitRecordings" >> beam.ParDo(
            SplitRecordingsFn()
        ).with_outputs(SplitRecordingsFn.FAILED_TAG, main="ok")
        streamed = (
            pbegin
            | "RowGroups" >> beam.Create(parent.row_groups)
            | "StreamRecordings"
            >> beam.ParDo(
                StreamRecordingsFn(None if parent.model.is_default else parent.model),
                infos=beam.pvalue.AsDict(recordings.ok),
            ).with_outputs(StreamRecordingsFn.STREAMED_TAG, main="grouped")
        )
        unscored = (
            {
                INFO_TAG: recordings.ok,
                StreamRecordingsFn.STREAMED_TAG: streamed[StreamRecordingsFn.STREAMED_TAG],
            }
            | "MatchStreamed" >> beam.CoGroupByKey()
            | "Unscored"
            >> beam.ParDo(UnscoredRecordingsFn(parent.directory)).with_outputs(ERRORS_TAG, main="rows")
        )
        errors = [unscored[ERRORS_TAG]]
        if parent.errors:
            errors.append(read("ReadErrors", parent.errors) | "CarryErrors" >> beam.FlatMap(_carry_error))
        failed = (recordings[SplitRecordingsFn.FAILED_TAG], unscored.rows) | "Failed" >> beam.Flatten()
        return {
            "grouped": streamed.grouped,
            "failed": failed,
            "errors": errors | "AllErrors" >> beam.Flatten(),
        }
