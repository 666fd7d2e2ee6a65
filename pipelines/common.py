"""Shared Beam plumbing of the pipelines: argument splitting, file matching, error rows, writers, counters.

Every pipeline module (`pipelines.build_subset`, `pipelines.score`) builds on these pieces:

- `split_args(parser, argv)`: our flags vs. Beam's (`parse_known_args`), with a loud error on typos
  of our own flags that Beam would otherwise swallow.
- `expand_patterns(patterns)`: match local or `gs://` glob patterns at launch time (sorted, de-duplicated
  `FileMetadata`), failing fast with the pattern when nothing matches.
- `ErrorReporter` / `error_output(...)`: the one way a DoFn turns bad input into an error row: a named
  Beam counter, a rate-limited warning and a `TaggedOutput(ERRORS_TAG, row)`.
- `WriteTable(output_dir, name, schema, sort_key=... | sort_columns=[...], num_shards=1, batched=False,
  shard_key=None)`: dict rows (or lists of them, `batched=True`) -> Parquet files
  `{output_dir}/{name}-SSSSS-of-NNNNN.parquet` with deterministic names and content (rows assigned to
  files by a stable hash of their shard key, sorted within each file, every file written even when
  empty). `sort_columns` moves rows as Arrow batches and sorts with Arrow (cheaper for big tables).
- `read_table(output_dir, name)`: all files of such a table as one pyarrow.Table.
- `WriteSharded(...)`: the generic form of the same (used for TFRecord shards).
- `write_json(path, obj)`, `counter_values(result)` / `log_counters(result)`: end-of-run reporting.

All DoFns and functions here are module level and keep only small picklable state, so they work on
the DirectRunner in multi_processing mode and on Dataflow.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import logging
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

_LOG = logging.getLogger(__name__)

ERRORS_TAG = "errors"
"""Name of the tagged output that carries error rows (dicts) out of a DoFn."""

MAX_WARNINGS_PER_REASON = 20
"""Warnings logged per DoFn instance and error reason before further ones are only counted."""


# ---- Arguments ----------------------------------------------------------------------------------


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_switch(value: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, on/off, any case) -> bool; anything else is an argparse error."""
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_switch(group, flag: str, *, help: str) -> None:
    """A boolean option: `--flag` alone, or `--flag=true|false`, the form Dataflow flex-template
    parameters arrive in (so a template job can turn it on)."""
    group.add_argument(
        flag, nargs="?", const=True, default=False, type=parse_switch, metavar="true|false", help=help
    )


def split_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, list]:
    """Parses our flags with `parser` and returns (args, remaining Beam flags).

    Beam accepts unknown `--flags`, so a misspelt flag of ours (e.g. `--positive_class`) would silently
    go to Beam. Flags that neither we nor Beam know are rejected here with the list of our flags.

    Args:
      parser: the pipeline's own argument parser.
      argv: command-line arguments without the program name (None: sys.argv[1:]).
    Returns:
      (args, beam_args): the parsed namespace and the list of arguments left for PipelineOptions.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    args, beam_args = parser.parse_known_args(argv)
    known_beam = set()
    classes, stack = [], list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        classes.append(cls)
        stack.extend(cls.__subclasses__())
    for cls in classes:
        probe = argparse.ArgumentParser(add_help=False)
        try:
            cls._add_argparse_args(probe)
        except Exception:  # an options class of an optional extra that cannot register its flags
            continue
        for action in probe._actions:
            known_beam.update(action.option_strings)
    unknown = []
    for item in beam_args:
        if item.startswith("--"):
            flag = item.split("=", 1)[0]
            if flag not in known_beam:
                unknown.append(flag)
    if unknown:
        parser.error(
            f"unrecognised flags {unknown}; neither {parser.prog} nor Apache Beam knows them "
            f"(our flags: {sorted(s for a in parser._actions for s in a.option_strings if s.startswith('--'))})"
        )
    return args, beam_args


# ---- Files ------------------------------------------------------------------------------------


def expand_patterns(patterns: str | Iterable[str], *, allow_empty: bool = False) -> list:
    """Matches local or `gs://` glob patterns at launch time.

    Args:
      patterns: one pattern or several (a directory is taken as `DIR/*`).
      allow_empty: if False, a pattern that matches nothing raises.
    Returns:
      list of `apache_beam.io.filesystem.FileMetadata` (path, size_in_bytes), sorted by path, without
      duplicates, so the list of inputs is the same on every run.
    Raises:
      FileNotFoundError: a pattern matched no file (the message names the pattern).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    found = {}
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            # A directory (local, or a gs:// prefix that is not an object itself) means every file in it.
            is_local = "://" not in pattern
            if (
                pattern.endswith("/")
                or (is_local and os.path.isdir(pattern))
                or (not is_local and not FileSystems.exists(pattern))
            ):
                pattern = FileSystems.join(pattern.rstrip("/"), "*")
        metadata = FileSystems.match([pattern])[0].metadata_list
        metadata = [m for m in metadata if not m.path.endswith("/")]
        if not metadata and not allow_empty:
            raise FileNotFoundError(f"no file matches input pattern {pattern!r}")
        for m in metadata:
            found[m.path] = m
    return [found[path] for path in sorted(found)]


def open_maybe_compressed(path: str):
    """Opens a local or `gs://` file for reading, decompressing gzip transparently.

    Compression is taken from the file name (`.gz`, `.gzip`, ...) or, failing that, from the gzip magic
    bytes, so gzip-compressed shards named `*.tfrecord` are read too.

    Returns:
      a binary file object (the caller closes it).
    """
    compression = CompressionTypes.detect_compression_type(path)
    if compression == CompressionTypes.UNCOMPRESSED:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as probe:
            magic = probe.read(2)
        if magic == b"\x1f\x8b":
            compression = CompressionTypes.GZIP
    return FileSystems.open(path, compression_type=compression)


def stable_hash(value: Any) -> int:
    """A 64-bit hash of `value` that is the same in every process and run.

    blake2b (8-byte digest, big-endian) of the bytes, of the UTF-8 text of a str, or of `repr(value)`
    for anything else whose repr is stable (tuples of str/int/float/bytes).

    Python's `hash` is salted per process; this one is not, so it can assign rows to shards and rank
    rows for sampling identically on every worker and runner.
    """
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode("utf-8")
    else:
        data = repr(value).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


# ---- Errors -----------------------------------------------------------------------------------


class ErrorReporter:
    """Counts, logs and emits error rows for one DoFn (picklable; create it in the DoFn's __init__).

    Each reason gets a Beam counter `errors_<reason>` in `namespace` (plus a total `errors`), and the
    first MAX_WARNINGS_PER_REASON occurrences per reason and DoFn instance are logged as warnings.

    Example:
      self._errors = ErrorReporter("build_subset")
      ...
      yield self._errors.emit({"source": path, "reason": "bad_crc", "detail": "..."})
    """

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._total = Metrics.counter(namespace, "errors")
        self._counters = {}
        self._warned = collections.Counter()

    def __getstate__(self):
        return {"_namespace": self._namespace}

    def __setstate__(self, state):
        self.__init__(state["_namespace"])

    def emit(self, row: dict) -> beam.pvalue.TaggedOutput:
        """Counts and logs `row` (a dict with at least `reason`) and wraps it for the errors output."""
        reason = str(row.get("reason") or "unknown")
        counter = self._counters.get(reason)
        if counter is None:
            counter = self._counters[reason] = Metrics.counter(self._namespace, f"errors_{reason}")
        counter.inc()
        self._total.inc()
        self._warned[reason] += 1
        if self._warned[reason] <= MAX_WARNINGS_PER_REASON:
            _LOG.warning("%s error %s: %s", self._namespace, reason, row)
            if self._warned[reason] == MAX_WARNINGS_PER_REASON:
                _LOG.warning("%s: further %r errors are counted but not logged", self._namespace, reason)
        return beam.pvalue.TaggedOutput(ERRORS_TAG, row)


def error_output(namespace: str, row: dict) -> beam.pvalue.TaggedOutput:
    """One-off form of `ErrorReporter.emit` for code without a DoFn instance (counts, warns, tags)."""
    return ErrorReporter(namespace).emit(row)


# ---- Deterministic sharded writing ------------------------------------------------------------


def shard_name(prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    """`{prefix}-SSSSS-of-NNNNN{suffix}`, the file name of one output shard."""
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def _default_sort_key(row: Any):
    """Sort key for rows without an explicit one: canonical JSON (total order, stable across runs)."""
    if isinstance(row, bytes):
        return row
    return json.dumps(row, sort_keys=True, default=str)


class _AssignShard(beam.DoFn):
    def __init__(self, num_shards: int, shard_key: Callable, batched: bool = False):
        self._num_shards = num_shards
        self._shard_key = shard_key
        self._batched = batched

    def process(self, element):
        # Each part travels as one pickled blob: Beam then shuffles bytes, not thousands of small
        # Python objects (which its in-process runners decode and re-encode at every step).
        if not self._batched:
            shard = stable_hash(self._shard_key(element)) % self._num_shards
            yield shard, pickle.dumps([element], protocol=pickle.HIGHEST_PROTOCOL)
            return
        if self._num_shards == 1:
            if element:
                yield 0, pickle.dumps(list(element), protocol=pickle.HIGHEST_PROTOCOL)
            return
        parts = collections.defaultdict(list)
        for item in element:
            parts[stable_hash(self._shard_key(item)) % self._num_shards].append(item)
        for shard, part in parts.items():
            yield shard, pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)


class _WriteShard(beam.DoFn):
    def __init__(self, path_prefix, num_shards, suffix, sort_key, write_fn):
        self._path_prefix = path_prefix
        self._num_shards = num_shards
        self._suffix = suffix
        self._sort_key = sort_key
        self._write_fn = write_fn
        self._rows_written = Metrics.counter("write", "rows_written")

    def process(self, keyed):
        shard, blobs = keyed
        rows = sorted((row for blob in blobs if blob for row in pickle.loads(blob)), key=self._sort_key)
        path = shard_name(self._path_prefix, shard, self._num_shards, self._suffix)
        # Writing in place is idempotent: a retried bundle rewrites the same bytes to the same name.
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            self._write_fn(handle, rows)
        self._rows_written.inc(len(rows))
        _LOG.debug("wrote %d rows to %s", len(rows), path)
        yield path


def _group_by_shard(keyed, num_shards: int):
    """(shard id, payload) -> (shard id, payloads), with every shard id present, also without rows.

    An empty blob per shard id joins the grouping, so each of the `num_shards` files is written
    (empty ones too) and output file names never depend on the data. Step labels: ShardIds,
    WithShardIds, Group (in the calling transform's scope).
    """
    shards = keyed.pipeline | "ShardIds" >> beam.Create([(i, b"") for i in range(num_shards)])
    return (keyed, shards) | "WithShardIds" >> beam.Flatten() | "Group" >> beam.GroupByKey()


class WriteSharded(beam.PTransform):
    """Writes a PCollection into a fixed number of files with deterministic names and content.

    Input: PCollection of elements (rows, bytes, ...). Output: PCollection of str, the written paths
    (exactly `num_shards`, each shard is written even if it receives no element).

    Each element goes to shard `stable_hash(shard_key(element)) % num_shards`; within a shard elements
    are sorted by `sort_key`. The same elements therefore give the same files on any runner, worker
    count or input order. Elements cross the shuffle as pickled blobs (one per input element or batch
    part), so they need to be picklable, not to have a Beam coder.

    Args:
      path_prefix: path (local or gs://) without the shard suffix, e.g. `out/train/subset`.
      num_shards: number of files.
      suffix: file name suffix, e.g. `.tfrecord`.
      write_fn: `write_fn(binary_file, sorted_elements)` writes one shard (module-level function).
      sort_key: module-level function giving a total, run-independent order of elements.
      shard_key: module-level function whose stable hash picks an element's shard (default: sort_key);
        give a cheaper or narrower key than sort_key when that one holds large or incidental values.
      batched: the input elements are lists of rows (e.g. one list per input file) instead of rows;
        the output is the same, but Beam moves one element per list, which is much cheaper than one
        per row when rows are small and many.
    """

    def __init__(
        self,
        path_prefix: str,
        num_shards: int,
        suffix: str,
        write_fn: Callable,
        sort_key=None,
        shard_key=None,
        batched: bool = False,
    ):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self._path_prefix = path_prefix
        self._num_shards = num_shards
        self._suffix = suffix
        self._write_fn = write_fn
        self._sort_key = sort_key or _default_sort_key
        self._shard_key = shard_key or self._sort_key
        self._batched = batched

    def expand(self, pcoll):
        keyed = pcoll | "AssignShard" >> beam.ParDo(
            _AssignShard(self._num_shards, self._shard_key, self._batched)
        )
        return _group_by_shard(keyed, self._num_shards) | "Write" >> beam.ParDo(
            _WriteShard(self._path_prefix, self._num_shards, self._suffix, self._sort_key, self._write_fn)
        )


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


class _AssignTableShard(beam.DoFn):
    """Rows (or lists of rows) -> (shard, Arrow IPC bytes of the rows of that shard)."""

    def __init__(self, schema: pa.Schema, num_shards: int, shard_key: Callable, batched: bool):
        self._schema_bytes = schema.serialize().to_pybytes()
        self._num_shards = num_shards
        self._shard_key = shard_key
        self._batched = batched

    def setup(self):
        self._schema = pa.ipc.read_schema(pa.py_buffer(self._schema_bytes))

    def process(self, element):
        rows = element if self._batched else [element]
        parts = collections.defaultdict(list)
        for row in rows:
            parts[stable_hash(self._shard_key(row)) % self._num_shards if self._num_shards > 1 else 0].append(
                row
            )
        for shard, part in parts.items():
            batch = pa.RecordBatch.from_pylist(part, schema=self._schema)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, self._schema) as writer:
                writer.write_batch(batch)
            yield shard, sink.getvalue().to_pybytes()


class _WriteTableShard(beam.DoFn):
    """(shard, [Arrow IPC blobs]) -> one Parquet file sorted by columns."""

    def __init__(self, path_prefix, num_shards, schema: pa.Schema, sort_columns):
        self._path_prefix = path_prefix
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
        pq.write_table(table, buffer, compression="zstd")
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
    ):
        super().__init__()
        if sort_columns is not None and sort_key is not None:
            raise ValueError("give sort_key or sort_columns, not both")
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
                _AssignTableShard(self._schema, self._num_shards, shard_key, self._batched)
            )
            return _group_by_shard(keyed, self._num_shards) | "Write" >> beam.ParDo(
                _WriteTableShard(self._prefix, self._num_shards, self._schema, self._sort_columns)
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


# ---- Small outputs and counters ----------------------------------------------------------------


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as sorted, indented JSON to a local or gs:// path (stable bytes for equal input)."""
    data = (json.dumps(obj, sort_keys=True, indent=2, default=str) + "\n").encode("utf-8")
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(data)


def counter_values(result, namespace: str | None = None) -> dict[str, int]:
    """Committed counter values of a finished run: {"namespace/name": value}, sorted by name."""
    metric_filter = MetricsFilter()
    if namespace:
        metric_filter = metric_filter.with_namespace(namespace)
    values = collections.Counter()
    for counter in result.metrics().query(metric_filter)["counters"]:
        key = f"{counter.key.metric.namespace}/{counter.key.metric.name}"
        value = counter.committed if counter.committed is not None else counter.attempted
        values[key] += value or 0
    return dict(sorted(values.items()))


def log_counters(result, namespace: str | None = None) -> dict[str, int]:
    """Waits for `result` to finish, logs every counter at DEBUG and returns them (see counter_values).

    The commands' summaries name the counts that matter; `--log_level DEBUG` shows all counters.
    """
    result.wait_until_finish()
    values = counter_values(result, namespace)
    for key, value in values.items():
        _LOG.debug("counter %s = %d", key, value)
    return values


def is_picklable(obj: Any) -> bool:
    """True if `obj` survives pickling (what multi-process runners need of DoFns and their state)."""
    try:
        pickle.loads(pickle.dumps(obj))
    except Exception:
        return False
    return True
