"""Dataset stage 2, recordings: the frames of each recording, from audio or from a scoring run.

From audio, recordings are matched, planned, decoded and embedded by the scoring pipeline's own
steps (`match.MatchSources`, `score.embed_recordings`, `score.assemble_recording`), so their
frames are the frames `gunshot batch` scores. From `--embeddings DIR` (a `gunshot batch
--write_embeddings` output), the embeddings table gives the frames and the recordings table the
duration and status, and no audio is decoded: the same `RecordingFrames` come out.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.dataset import annotation_io
from pipelines.scoring import config as scoring_config
from pipelines.scoring import match, score, sources

NAMESPACE = "dataset"


@dataclasses.dataclass(frozen=True)
class RecordingFrames:
    """One recording, ready for window planning.

    Attributes:
      source: the recording's key (path, or archive!member).
      file: the matched file (the archive for members); member: path inside it, or None.
      duration_seconds: decoded length (None when unknown).
      frames: [n, d] frames of the run's embedding model (n >= 1; VGGish uint8 [n, 128] postprocessed,
        BirdNET float32 [n, 1024]), or None when it failed.
      failure: (stage, reason, message) when the recording could not be used, else None.
    """

    source: str
    file: str
    member: str | None
    duration_seconds: float | None
    frames: np.ndarray | None = None
    failure: tuple[str, str, str] | None = None


def _from_assembled(element, model=None):
    key, grouped = element
    info, frames, failure = score.assemble_recording(key, grouped, model)
    return key, RecordingFrames(
        info.source or key, info.file, info.member, info.duration_seconds, frames, failure
    )


def _keep_source(source, names, globs) -> bool:
    # Archives and TFRecords hold recordings whose names are known only once read.
    if source.kind != sources.KIND_AUDIO:
        return True
    return annotation_io.may_be_meant(source.path, names, globs)


class FromAudio(beam.PTransform):
    """PCollection[str] patterns -> ((source, RecordingFrames), error rows), as `gunshot batch` embeds.

    Audio files whose name no annotation names (and that no --fully_annotated glob covers) are
    not decoded (`names`: side-input list of every annotation's recording key).
    """

    def __init__(self, config: scoring_config.ScoringConfig, names, globs: tuple[str, ...]):
        super().__init__()
        self._config = config
        self._names = names
        self._globs = globs

    def expand(self, patterns):
        srcs, match_errors = patterns | "Match" >> match.MatchSources()
        wanted = srcs | "Annotated" >> beam.Filter(_keep_source, self._names, self._globs)
        grouped, embed_errors = embed_recordings_in(wanted, self._config)
        model = None if self._config.model.is_default else self._config.model
        frames = grouped | "Assemble" >> beam.Map(_from_assembled, model)
        errors = (
            (match_errors, embed_errors)
            | "AllErrors" >> beam.Flatten()
            | "AsDatasetErrors" >> beam.Map(_scoring_error)
        )
        return frames, errors


def embed_recordings_in(srcs, config):
    return score.embed_recordings(srcs, config)


def _scoring_error(row: dict) -> dict:
    return annotation_io.error_row(row["source"], row["stage"], row["reason"], row["message"])


# ---- From a scoring run's embeddings table ---------------------------------------------------------


class _EmbeddingBatchFn(beam.DoFn):
    """Arrow batch of the embeddings table -> (source, (frame indices int64 [k], frames [k, d] of the
    model's dtype))."""

    def __init__(self, model):
        self._model = model

    def process(self, table: pa.Table, names, globs):
        if table.num_rows == 0:
            return
        sources = table.column("source")
        for source in pc.unique(sources).to_pylist():
            if not annotation_io.may_be_meant(source, names, globs):
                continue
            part = table.filter(pc.equal(sources, source))
            index = part.column("frame_index").to_numpy().astype(np.int64)
            blob = b"".join(part.column("embedding").to_pylist())
            frames = self._model.frames_from_bytes(blob).astype(self._model.dtype)
            yield source, (index, frames)


def _recording_info(row: dict, names, globs):
    if annotation_io.may_be_meant(row["source"], names, globs):
        yield row["source"], row


class _AssembleEmbeddingsFn(beam.DoFn):
    """(source, {'info': [recordings row], 'frames': [(indices, frames [k, d])]}) -> RecordingFrames."""

    def __init__(self, model):
        self._model = model
        self._recordings = Metrics.counter(NAMESPACE, "recordings_from_embeddings")

    def process(self, element):
        source, grouped = element
        infos = grouped["info"]
        if not infos:  # frames without a recordings row: not from one scoring run
            message = f"{source}: embeddings without a row in the recordings table"
            yield (
                source,
                RecordingFrames(source, source, None, None, None, ("read", "no_recording_row", message)),
            )
            return
        info = infos[0]
        base = (source, info["file"] or source, info["member"], info["duration_seconds"])
        if info["status"] != "ok":
            failure = ("decode", info["error_reason"] or "error", info["error_message"] or "scoring failed")
            yield source, RecordingFrames(*base, None, failure)
            return
        parts = grouped["frames"]
        index = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        frames = (
            np.concatenate([p[1] for p in parts]) if parts else self._model.empty_frames()
        )
        order = np.argsort(index, kind="stable")
        index, frames = index[order], frames[order]
        expected = info.get("frames")
        if not np.array_equal(index, np.arange(len(index))) or (
            expected is not None and expected != len(index)
        ):
            message = f"{source}: the embeddings table holds {len(index)} frames, the recordings table says {expected}"
            yield source, RecordingFrames(*base, None, ("read", "incomplete_embeddings", message))
            return
        self._recordings.inc()
        yield source, RecordingFrames(*base, np.ascontiguousarray(frames), None)


def embeddings_table_files(directory: str, name: str) -> str:
    """The glob of one table of a scoring output folder."""
    return FileSystems.join(directory, f"{name}-*-of-*.parquet")


class FromEmbeddings(beam.PTransform):
    """PBegin -> ((source, RecordingFrames), error rows) from a `gunshot batch --write_embeddings` folder."""

    def __init__(self, directory: str, names, globs: tuple[str, ...], model=None):
        super().__init__()
        if model is None:
            from gunshot_core import embedding_models

            model = embedding_models.get()
        self._model = model
        self._directory = directory
        self._names = names
        self._globs = globs

    def expand(self, pbegin):
        embedding_files = _table_files(self._directory, "embeddings")
        recording_files = _table_files(self._directory, "recordings")
        frames = (
            pbegin
            | "EmbeddingFiles" >> beam.Create(embedding_files)
            | "ReadEmbeddings" >> beam.ParDo(_ReadParquetFn(["source", "frame_index", "embedding"]))
            | "BySource" >> beam.ParDo(_EmbeddingBatchFn(self._model), self._names, self._globs)
        )
        infos = (
            pbegin
            | "RecordingFiles" >> beam.Create(recording_files)
            | "ReadRecordings" >> beam.ParDo(_ReadParquetFn(RECORDING_COLUMNS))
            | "Rows" >> beam.FlatMap(lambda table: table.to_pylist())
            | "Wanted" >> beam.FlatMap(_recording_info, self._names, self._globs)
        )
        recordings = (
            {"info": infos, "frames": frames}
            | "Group" >> beam.CoGroupByKey()
            | "Assemble" >> beam.ParDo(_AssembleEmbeddingsFn(self._model))
        )
        errors = pbegin | "NoErrors" >> beam.Create([])
        return recordings, errors


RECORDING_COLUMNS = [
    "source",
    "file",
    "member",
    "duration_seconds",
    "frames",
    "status",
    "error_reason",
    "error_message",
]


def _table_files(directory: str, name: str) -> list[str]:
    """The Parquet files of one table of a scoring output folder (at launch; FileNotFoundError if none)."""
    from pipelines.io import matching

    try:
        return [m.path for m in matching.expand_patterns(embeddings_table_files(directory, name))]
    except FileNotFoundError:
        hint = " (was it scored with --write_embeddings?)" if name == "embeddings" else ""
        raise FileNotFoundError(f"--embeddings {directory}: no {name} table{hint}") from None


class _ReadParquetFn(beam.DoFn):
    """Parquet file path -> pyarrow Tables of `columns`, one per row group (local or gs://)."""

    def __init__(self, columns):
        self._columns = list(columns)

    def process(self, path: str):
        import pyarrow.parquet as pq
        from apache_beam.io.filesystem import CompressionTypes

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            parquet = pq.ParquetFile(handle)
            for i in range(parquet.num_row_groups):
                yield parquet.read_row_group(i, columns=self._columns)
