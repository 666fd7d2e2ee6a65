"""Deterministic sharded writing: a PCollection -> a fixed number of files with stable names and bytes.

Stage: output. `WriteSharded` assigns each element to shard `stable_hash(shard_key(element)) %
num_shards`, sorts within each shard and writes every shard (also empty ones) as
`{prefix}-SSSSS-of-NNNNN{suffix}` with a caller-given write function (TFRecords, Parquet).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import pickle
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

_LOG = logging.getLogger(__name__)


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
        _LOG.info("wrote %d rows to %s", len(rows), path)
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
