"""Rescoring: an earlier run's stored embeddings -> the same tables with another head (`--from_run`).

Stage: scoring 3 (decode) for `gunshot batch --from_run RUN_DIR --head HEAD`: instead of matching,
decoding and embedding audio, the job reads what an earlier run (the parent, scored with
`--write_embeddings`) stored:

    parent recordings table --ReadRecordings--> ok rows -> (source, RecordingInfo)   (identity as stored)
                                             \\-> failed rows -> recordings rows as they were
    parent embeddings table --ReadFromParquetBatched (one row group at a time)
                            --ChunkFrames--> (source, (first frame index, uint8 [k, 128]))
    CoGroupByKey(info, frames) --ScoreRecordingFn (the head, as in an audio run)--> tables
    parent errors table --CarryErrors--> its rows (but clip exports) as they were

so every table holds the same rows as a run of the head over the original audio (the same sources,
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

from gunshot_core import params
from gunshot_core.errors import GunshotError
from pipelines import schemas
from pipelines.scoring import outputs
from pipelines.scoring.config import FRAMES_TAG, INFO_TAG, NAMESPACE
from pipelines.scoring.decode import RecordingInfo

#: The embedding model of runs whose run.json does not name one (every run before other models).
DEFAULT_EMBEDDING_MODEL = "vggish"
#: Error rows of these stages are not carried over from the parent (this run makes its own exports).
NOT_CARRIED_STAGES = frozenset({"export"})
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

    @property
    def model(self):
        """The gunshot_core.embedding_models.EmbeddingModel of the stored frames (with the run's hop)."""
        from gunshot_core import embedding_models

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


def read_parent_run(directory: str) -> ParentRun:
    """Reads the parent's run.json and finds its tables (no table is read here).

    Raises:
      FromRunError: no run.json, an unreadable one, or no recordings or embeddings table.
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
    hashes = ("vggish_sha256", "pca_sha256") if model_name == DEFAULT_EMBEDDING_MODEL else ("embedding_sha256",)
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


class ChunkFramesFn(beam.DoFn):
    """pyarrow.Table (a row group of the embeddings table) -> (source, (first frame, uint8 [k, 128]))."""

    def __init__(self, model=None):
        self._model = model
        self._frames = Metrics.counter(NAMESPACE, "frames_read")

    def process(self, table):
        self._frames.inc(table.num_rows)
        yield from chunk_frames(table, self._model)


def _carry_error(row: dict):
    if row["stage"] not in NOT_CARRIED_STAGES:
        yield _without_provenance(row)


class ReadParentRun(beam.PTransform):
    """PBegin -> the parent's recordings, frames and error rows, ready for ScoreRecordingFn.

    Returns a dict: `grouped` (source, {INFO_TAG: [RecordingInfo], FRAMES_TAG: [(first frame, uint8
    [k, 128])]}) of every recording the parent scored ok, as `embed_recordings` groups them for an
    audio run; `failed` the parent's recordings rows of failed recordings; `errors` its error rows
    (but those of clip exports). Rows carry no provenance columns.
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
        chunks = [
            pbegin
            | f"ReadEmbeddings{i}"
            >> beam.io.ReadFromParquetBatched(path, columns=["source", "frame_index", "embedding"])
            | f"ChunkFrames{i}" >> beam.ParDo(ChunkFramesFn(None if parent.model.is_default else parent.model))
            for i, path in enumerate(parent.embeddings)
        ]
        frames = chunks | "AllFrames" >> beam.Flatten()
        grouped = {INFO_TAG: recordings.ok, FRAMES_TAG: frames} | "GroupFrames" >> beam.CoGroupByKey()
        if parent.errors:
            errors = read("ReadErrors", parent.errors) | "CarryErrors" >> beam.FlatMap(_carry_error)
        else:
            errors = pbegin | "NoErrors" >> beam.Create([])
        return {"grouped": grouped, "failed": recordings[SplitRecordingsFn.FAILED_TAG], "errors": errors}
