"""Writing a subset: selected records byte for byte into `OUTPUT/<split>/subset-*.tfrecord`, the tagged table.

Stage: subset 4 (write). Shard and sort keys for `pipelines.io.sharded.WriteSharded` /
`pipelines.io.tables.WriteTable`, so reruns give byte-identical files.
"""

from __future__ import annotations

from gunshot_core import records

SUBSET_PREFIX = "subset"
TAGGED_SORT_COLUMNS = ("split", "video_id", "start_time_seconds", "source", "record_index")


def _subset_sort_key(element):
    # Ties (the same clip twice) are broken by the record bytes, never by where the record came from,
    # so the subset files do not depend on how the input was sharded.
    row, data = element
    return (row["video_id"], row["start_time_seconds"], data)


def _subset_shard_key(element):
    return element[0]["clip_key"]


def _write_payloads(handle, elements):
    records.write_tfrecords(handle, (data for _, data in elements))


def _tagged_shard_key(row):
    return row["clip_key"]
