"""Writing a subset: selected records byte for byte into `OUTPUT/<split>/subset-*.tfrecord`, the tagged table.

Stage: subset 4 (write). Shard and sort keys for `pipelines.io.sharded.WriteSharded` /
`pipelines.io.tables.WriteTable`, and the write function of the subset files, which reads each
selected record again from its input shard (clips travel with their record's offset, not its bytes),
so reruns give byte-identical files.
"""

from __future__ import annotations

import collections

from gunshot_core import records
from pipelines.io import files

SUBSET_PREFIX = "subset"
TAGGED_SORT_COLUMNS = ("split", "video_id", "start_time_seconds", "source", "record_index")


def _subset_sort_key(element):
    # A run-independent order for WriteSharded; _write_payloads sorts again once it has the bytes.
    row, offset = element
    return (row["video_id"], row["start_time_seconds"], row["source"], offset)


def _subset_shard_key(element):
    return element[0]["clip_key"]


def _write_payloads(handle, elements):
    """Reads the selected records from their shards and writes them sorted by (video_id, start, bytes).

    Ties (the same clip twice) are broken by the record bytes, never by where the record came from,
    so the subset files do not depend on how the input was sharded. Each input shard is opened once
    and read at increasing offsets.

    Raises:
      ValueError: a record is no longer where it was read (its shard changed during the run).
    """
    by_source = collections.defaultdict(list)
    for row, offset in elements:
        by_source[row["source"]].append((offset, row["video_id"], row["start_time_seconds"]))
    chosen = []
    for source in sorted(by_source):
        with files.open_maybe_compressed(source) as shard:
            for offset, video_id, start in sorted(by_source[source]):
                try:
                    data = records.read_record_at(shard, offset)
                except ValueError as e:
                    raise ValueError(f"{source} changed since it was read: {e}") from None
                chosen.append((video_id, start, data))
    chosen.sort()
    records.write_tfrecords(handle, (data for _, _, data in chosen))


def _tagged_shard_key(row):
    return row["clip_key"]
