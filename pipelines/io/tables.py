"""Parquet tables: dict rows -> `{output_dir}/{name}-SSSSS-of-NNNNN.parquet` with a fixed schema, and back.

Stage: output. `WriteTable(output_dir, name, schema, sort_key=... | sort_columns=[...], num_shards=1,
batched=False, shard_key=None, shard_bounds=None)` writes deterministic files (rows assigned to files
by a stable hash of their shard key, or by ranges of it, sorted within each file, every file written
even when empty); `sort_columns` moves rows as Arrow batches and sorts with Arrow (cheaper for big
tables). `read_table` reads all shards of such a table as one pyarrow.Table. The schemas live in
`pipelines.schemas`.
"""

from __future__ import annotations

import bisect
import collections
import io
import logging
from collections.abc import Callable

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.io.matching import expand_patterns
from pipelines.io.sharded import WriteSharded, _group_by_shard, shard_name, stable_hash

_LOG = logging.getLogger(__name__)


class _ParquetWriter:
    """write_fn for WriteSharded: dict rows -> one Parquet file with `schema` (picklable)."""

    def __init__(self, schema: pa.Schema):
        self._schema_bytes = schema.serialize().to_pybytes()

    def __call__(self, handle, rows):
        schema = pa.ipc.read_schema(pa.py_buffer(self._schema_bytes))
        table = pa.Table.from_pylist(list(rows), schema=schema)
        buffer = io.BytesIO()
        # No timestamps or writer-dependent metadata beyond the library version: stable bytes.
        pq.write_table(table, buffer, compression="zstd")
        handle.write(buffer.getvalue())


_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


class _AssignTableShard(beam.DoFn):
    """Rows (or lists of rows) -> (shard, Arrow IPC bytes of the rows of that shard).

    The shard of a row: `bisect_left(shard_bounds, shard_key(row))` with bounds (ranges of the key),
    else the stable hash of its key modulo `num_shards`.
    """

    def __init__(
        self, schema: pa.Schema, num_shards: int, shard_key: Callable, batched: bool, shard_bounds=None
    ):
        self._schema_bytes = schema.serialize().to_pybytes()
        self._num_shards = num_shards
        self._shard_key = shard_key
        self._batched = batched
        self._shard_bounds = list(shard_bounds) if shard_bounds else None

    def _shard(self, row) -> int:
        if self._shard_bounds is not None:
            return bisect.bisect_left(self._shard_bounds, self._shard_key(row))
        return stable_hash(self._shard_key(row)) % self._num_shards if self._num_shards > 1 else 0

    def setup(self):
        self._schema = pa.ipc.read_schema(pa.py_buffer(self._schema_bytes))

    def process(self, element):
        rows = element if self._batched else [element]
        parts = collections.defaultdict(list)
        for row in rows:
            parts[self._shard(row)].append(row)
        for shard, part in parts.items():
            batch = pa.RecordBatch.from_pylist(part, schema=self._schema)
            sink = pa.BufferOutputStream()
            # Compressed: what crosses the shuffle (and the DirectRunner holds in memory until the
            # writer runs) shrinks ~10x, most columns (provenance) being one value repeated.
            with pa.ipc.new_stream(sink, self._schema, options=_IPC_OPTIONS) as writer:
                writer.write_batch(batch)
            yield shard, sink.getvalue().to_pybytes()


class _WriteTableShard(beam.DoFn):
    """(shard, [Arrow IPC blobs]) -> one Parquet file sorted by columns."""

    def __init__(self, path_prefix, num_shards, schema: pa.Schema, sort_columns, row_group_rows=None):
        self._path_prefix = path_prefix
        self._row_group_rows = row_group_rows
        self._num_shards = num_shards
        self._schema_bytes = schema.serialize().to_pybytes()
        self._sort_columns = list(sort_columns)
        self._rows_written = Metrics.counter("write", "rows_written")

    def process(self, keyed):
        shard, blobs = keyed
        schema = pa.ipc.read_schema(pa.py_buffer(self._schema_bytes))
        # Sorting the blobs first makes the concatenation order, and so the order of rows that tie on
        # the sort columns, independent of arrival order.
        tables = [pa.ipc.open_stream(pa.py_buffer(b)).read_all() for b in sorted(blobs) if b]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        if table.num_rows:
            table = table.sort_by([(c, "ascending") for c in self._sort_columns])
        path = shard_name(self._path_prefix, shard, self._num_shards, ".parquet")
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd", row_group_size=self._row_group_rows)
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(buffer.getvalue())
        self._rows_written.inc(table.num_rows)
        _LOG.debug("wrote %d rows to %s", table.num_rows, path)
        yield path


class _ColumnsKey:
    """shard_key of WriteTable(sort_columns=...): the tuple of the sort columns' values (picklable)."""

    def __init__(self, columns):
        self._columns = tuple(columns)

    def __call__(self, row):
        return tuple(row.get(c) for c in self._columns)


class WriteTable(beam.PTransform):
    """Writes dict rows as Parquet `{output_dir}/{name}-SSSSS-of-NNNNN.parquet` with a fixed schema.

    Input: PCollection of dict rows whose keys are the schema's field names (missing keys -> null).
    Output: PCollection of str, the written file paths.

    Deterministic: rows are spread over `num_shards` files by a stable hash of `sort_key(row)` and
    sorted by it within each file; every shard is written, even empty ones (readers always find the
    table, with the schema, also when a run produced no row). Read the whole table back with
    `pyarrow.parquet.read_table(output_dir, ...)` or `read_table(output_dir, name)` below.

    Args:
      output_dir: directory, local or gs://.
      name: table name (file prefix), e.g. "tagged".
      schema: pyarrow schema (from pipelines.schemas).
      sort_key: module-level function row -> sortable key (default: canonical JSON of the row).
        Use `operator.itemgetter(...)` of the table's natural key for readable order.
      num_shards: number of files (1 is right for tables up to a few million rows).
      batched: the input elements are lists of dict rows (see WriteSharded).
      shard_key: module-level function row -> key whose hash picks the row's file (default: sort_key);
        use it to keep incidental columns (e.g. where a row was read from) out of the file choice.
      sort_columns: instead of sort_key, column names to sort each file by, which together identify a
        row. Rows then cross the shuffle as Arrow record batches and are sorted by Arrow: several times
        cheaper for large tables. Columns of list type cannot be sort columns.
      row_group_rows: with sort_columns, rows per Parquet row group (default: pyarrow's, 1Mi rows);
        smaller groups let readers stream a large table in bounded memory.
      shard_bounds: with sort_columns, instead of num_shards: sorted, distinct values of shard_key
        that split the table into len(shard_bounds) + 1 files by ranges of the key: file i holds the
        rows whose key k has shard_bounds[i - 1] < k <= shard_bounds[i] (no lower bound for the first
        file, no upper one for the last). When shard_key gives the first sort column, the files read
        in name order are the rows of a one-file table in the same order, and each file's writer
        holds only its own range in memory.
    """

    def __init__(
        self,
        output_dir: str,
        name: str,
        schema: pa.Schema,
        sort_key=None,
        num_shards: int = 1,
        batched: bool = False,
        shard_key=None,
        sort_columns=None,
        row_group_rows=None,
        shard_bounds=None,
    ):
        super().__init__()
        self._row_group_rows = row_group_rows
        if sort_columns is not None and sort_key is not None:
            raise ValueError("give sort_key or sort_columns, not both")
        if shard_bounds is not None:
            bounds = list(shard_bounds)
            if sort_columns is None or num_shards != 1:
                raise ValueError("shard_bounds needs sort_columns and replaces num_shards")
            if any(a >= b for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
                raise ValueError(f"shard_bounds must be sorted and distinct, got {bounds[:5]}...")
            num_shards = len(bounds) + 1
        self._shard_bounds = tuple(shard_bounds) if shard_bounds else None
        missing = [c for c in sort_columns or () if c not in schema.names]
        if missing:
            raise ValueError(f"sort_columns {missing} are not in the schema {schema.names}")
        self._sort_columns = list(sort_columns) if sort_columns is not None else None
        self._prefix = FileSystems.join(output_dir, name)
        self._shard_key = shard_key
        self._schema = schema
        self._sort_key = sort_key
        self._num_shards = num_shards
        self._batched = batched

    def expand(self, pcoll):
        if self._sort_columns is not None:
            shard_key = self._shard_key or _ColumnsKey(self._sort_columns)
            keyed = pcoll | "ToArrow" >> beam.ParDo(
                _AssignTableShard(
                    self._schema, self._num_shards, shard_key, self._batched, self._shard_bounds
                )
            )
            return _group_by_shard(keyed, self._num_shards) | "Write" >> beam.ParDo(
                _WriteTableShard(
                    self._prefix, self._num_shards, self._schema, self._sort_columns, self._row_group_rows
                )
            )
        return pcoll | WriteSharded(
            self._prefix,
            self._num_shards,
            ".parquet",
            _ParquetWriter(self._schema),
            sort_key=self._sort_key,
            shard_key=self._shard_key,
            batched=self._batched,
        )


def read_table(output_dir: str, name: str):
    """Reads a table written by WriteTable (all shards, in shard order) into one pyarrow.Table."""
    paths = [m.path for m in expand_patterns(FileSystems.join(output_dir, f"{name}-*-of-*.parquet"))]
    tables = []
    for path in paths:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            tables.append(pq.read_table(io.BytesIO(handle.read())))
    return pa.concat_tables(tables)
