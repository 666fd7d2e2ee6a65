"""Search stage 2 (Beam): embeddings table -> the K nearest windows of every query.

    Parquet row groups (pyarrow.Table, parquetio.ReadAllFromParquetBatched)
      [--query_frames > 1: regrouped per recording, sorted by frame]
      --ScanFn--> (query index, candidate) for the best K windows of each query in each batch
      --Top.SmallestPerKey(K)--> (query index, [K candidates]) --> ranked hit rows

The table is never held in memory: each row group is scanned in batches of `batch_rows` frames,
one float32 matrix product per batch against all query frames (`gunshot_core.similarity`), and
only K candidates per query and batch go on to the combiner, which keeps K per query. Candidates
compare as (-similarity, source, frame index): the best first, ties broken by recording and time,
so the result does not depend on how the runner splits the table. A query's own window (same
recording, overlapping frames) is never a candidate.
"""

import dataclasses
import logging
import math
import threading
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from gunshot_core import params, similarity
from pipelines.search import queries as queries_lib

_LOG = logging.getLogger(__name__)

NAMESPACE = "search"
#: Frames per matrix product: ~8 MB of float32 frames, large enough that numpy's per-call costs vanish.
DEFAULT_BATCH_ROWS = 16384
READ_COLUMNS = ["source", "frame_index", "start_seconds", "embedding"]
PROGRESS_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class QueryWindow:
    """What the scan needs of one resolved query (small and picklable).

    Attributes:
      index: query index.
      source_key: `queries.source_key` of the query's recording (to exclude its own window).
      frame_index: first frame of the query window.
      frames: [N, d] frames as the table stores them (VGGish uint8 [N, 128], BirdNET float32 [N, 1024]), as bytes.
    """

    index: int
    source_key: str
    frame_index: int
    frames: bytes


@dataclasses.dataclass(frozen=True, order=True)
class Candidate:
    """One window of the archive near a query; orders best first (then by recording and time)."""

    neg_similarity: float
    source: str
    frame_index: int
    start_seconds: float

    @property
    def similarity(self) -> float:
        return -self.neg_similarity


def frames_of(table: pa.Table, model=None) -> np.ndarray:
    """[n, d] view of the `embedding` column of a table: VGGish uint8 [n, 128] (fixed_size_binary[128]),
    or the frames of embedding `model` (BirdNET float32 [n, 1024] from fixed_size_binary[4096])."""
    if model is None:
        from gunshot_core import embedding_models

        model = embedding_models.get()
    column = table.column("embedding")
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if array.null_count:
        raise ValueError(f"{array.null_count} null embeddings")
    width = array.type.byte_width
    if width != model.frame_bytes:
        raise ValueError(f"embeddings are {width} bytes wide, expected {model.frame_bytes} ({model.name})")
    data = np.frombuffer(array.buffers()[1], np.uint8)
    return model.frames_from_bytes(data[array.offset * width : (array.offset + len(array)) * width])


class _Progress:
    """Per-process progress log of the scan: frames scanned and their rate, at most every 30 s."""

    _lock = threading.Lock()
    _state = {"started": None, "last": 0.0, "rows": 0}

    @classmethod
    def add(cls, rows: int, total: int):
        with cls._lock:
            s = cls._state
            now = time.monotonic()
            if s["started"] is None:
                s["started"], s["last"] = now, now
            s["rows"] += rows
            if now - s["last"] >= PROGRESS_SECONDS:
                rate = s["rows"] / max(now - s["started"], 1e-9)
                share = f" of {total:,} ({100.0 * s['rows'] / total:.1f}%)" if total else ""
                _LOG.info(
                    "search progress (this worker): %s frames scanned%s, %.0f frames/s",
                    f"{s['rows']:,}",
                    share,
                    rate,
                )
                s["last"] = now


class ScanFn(beam.DoFn):
    """pyarrow.Table of embedding rows -> (query index, Candidate) for each query's best K in each batch.

    With `width` N > 1 every input table must hold whole recordings sorted by (source, frame_index)
    (see GroupBySource); windows are runs of N consecutive frames of one recording.
    """

    def __init__(
        self, windows: list[QueryWindow], k: int, width: int, batch_rows: int, total_rows: int = 0, model=None
    ):
        if model is None:
            from gunshot_core import embedding_models

            model = embedding_models.get()
        self._model = model
        # Frames after a frame that share audio with it: 0 for VGGish, ceil(3 / hop) - 1 for BirdNET.
        self._overlap = max(0, math.ceil(model.frame_seconds / model.hop_seconds - 1e-9) - 1)
        self._windows = list(windows)
        self._k = k
        self._width = width
        self._batch_rows = batch_rows
        self._total_rows = total_rows
        self._scanned = Metrics.counter(NAMESPACE, "frames_scanned")
        self._batches = Metrics.counter(NAMESPACE, "batches")
        self._null = Metrics.counter(NAMESPACE, "null_embeddings_skipped")

    def setup(self):
        model = self._model
        stacked = (
            np.concatenate([model.frames_from_bytes(w.frames) for w in self._windows])
            if self._windows
            else model.empty_frames()
        )
        self._queries = similarity.comparable(stacked)  # [Q * N, d]
        self._query_norms = similarity.squared_norms(self._queries)

    def process(self, table: pa.Table):
        if not self._windows or table.num_rows == 0:
            return
        if self._width > 1:  # whole recordings: never split (windows would be cut)
            yield from self._scan(table)
        else:
            for offset in range(0, table.num_rows, self._batch_rows):
                yield from self._scan(table.slice(offset, self._batch_rows))

    def _scan(self, batch: pa.Table):
        if batch.column("embedding").null_count:  # not written by gunshot batch; never comparable
            valid_rows = pc.is_valid(batch.column("embedding"))
            self._null.inc(batch.num_rows - pc.sum(valid_rows.cast(pa.int64())).as_py())
            batch = batch.filter(valid_rows)
        width, n = self._width, batch.num_rows
        frames = frames_of(batch, self._model)
        # Recordings as integer codes: names compared once per distinct recording, not per row.
        encoded = pc.dictionary_encode(batch.column("source")).combine_chunks()
        names = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.empty(len(names), np.int64)
        order[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
        name_rank = order[codes]  # lexicographic rank of each row's recording: the tie-breaker
        name_keys = [queries_lib.source_key(name) for name in names]
        frame_index = batch.column("frame_index").to_numpy().astype(np.int64)
        start_seconds = batch.column("start_seconds").to_numpy()
        a = similarity.comparable(frames)
        cosines = similarity.cosine_from_centred(
            a, similarity.squared_norms(a), self._queries, self._query_norms
        )
        count = max(n - width + 1, 0)
        valid = np.ones(count, bool)
        if width > 1 and count:
            last = np.arange(width - 1, n)
            valid = (codes[:count] == codes[last]) & (frame_index[last] - frame_index[:count] == width - 1)
        for q, window in enumerate(self._windows):
            columns = cosines[:, q * width : (q + 1) * width]
            scores = columns[:, 0] if width == 1 else similarity.window_similarity(columns)
            mask = valid
            same = [i for i, key in enumerate(name_keys) if key == window.source_key]
            if same:  # windows sharing audio with the query's own (BirdNET's 3-s frames overlap)
                own = np.isin(codes[:count], same) & (
                    np.abs(frame_index[:count] - window.frame_index) < width + self._overlap
                )
                mask = valid & ~own
            rows = np.flatnonzero(mask)
            top = rows[similarity.rank_top_k(scores[rows], self._k, name_rank[rows], frame_index[rows])]
            for i in top:
                yield (
                    window.index,
                    Candidate(
                        -float(scores[i]), names[codes[i]], int(frame_index[i]), float(start_seconds[i])
                    ),
                )
        self._scanned.inc(n)
        self._batches.inc()
        _Progress.add(n, self._total_rows)


def _split_by_source(table: pa.Table):
    """Table -> (source, Arrow IPC bytes of its rows) per recording in it."""
    sources = table.column("source")
    for source in sorted(pc.unique(sources).to_pylist()):
        part = table.filter(pc.equal(sources, source))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
        yield source, sink.getvalue().to_pybytes()


def _join_source(grouped) -> pa.Table:
    """(source, [Arrow IPC bytes]) -> one table of the recording, sorted by frame index."""
    _, blobs = grouped
    tables = [pa.ipc.open_stream(pa.py_buffer(b)).read_all() for b in sorted(blobs)]
    return pa.concat_tables(tables).sort_by([("frame_index", "ascending")])


class GroupBySource(beam.PTransform):
    """PCollection[pyarrow.Table] -> PCollection[pyarrow.Table], one per recording, sorted by frame.

    Needed for windows of several frames, which must not be cut where a row group ends. Costs one
    shuffle of the table.
    """

    def expand(self, tables):
        return (
            tables
            | "Split" >> beam.FlatMap(_split_by_source)
            | "Group" >> beam.GroupByKey()
            | "Join" >> beam.Map(_join_source)
        )


def _hit_rows(element, width: int, texts: dict, model=None):
    """(query index, [Candidate]) -> hits-table rows, ranked from 1."""
    index, candidates = element
    span = width * params.FRAME_SECONDS if model is None else float(model.span_end_seconds(width))
    for rank, c in enumerate(sorted(candidates), start=1):
        yield {
            "query_index": index,
            "query": texts[index],
            "rank": rank,
            "source": c.source,
            "frame_index": c.frame_index,
            "start_seconds": c.start_seconds,
            "end_seconds": round(c.start_seconds + span, 6),
            "similarity": c.similarity,
        }


class NearestWindows(beam.PTransform):
    """PCollection[str] Parquet paths of an embeddings table -> PCollection[dict] hits-table rows.

    Args:
      windows: the resolved queries.
      texts: {query index: the query as given}.
      k: hits per query.
      width: frames per window (N).
      batch_rows: frames per matrix product.
      total_rows: rows in the table (for the progress log).
    """

    def __init__(
        self,
        windows,
        texts,
        k: int,
        width: int,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        total_rows: int = 0,
        model=None,
    ):
        super().__init__()
        self._model = model
        self._windows = list(windows)
        self._texts = dict(texts)
        self._k = k
        self._width = width
        self._batch_rows = batch_rows
        self._total_rows = total_rows

    def expand(self, paths):
        tables = paths | "Read" >> beam.io.ReadAllFromParquetBatched(columns=READ_COLUMNS)
        if self._width > 1:
            tables = tables | "BySource" >> GroupBySource()
        return (
            tables
            | "Scan"
            >> beam.ParDo(
                ScanFn(self._windows, self._k, self._width, self._batch_rows, self._total_rows, self._model)
            )
            | "TopK" >> beam.combiners.Top.SmallestPerKey(self._k)
            | "Rank" >> beam.FlatMap(_hit_rows, self._width, self._texts, self._model)
        )
