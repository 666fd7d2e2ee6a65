"""Dataset stage 5, writing: TFRecords per split, the examples and errors tables, stats.json.

Every file is written by the project's deterministic writers (`sharded.WriteSharded`,
`tables.WriteTable`): the same examples give byte-identical files on any runner or worker count.
Records go to `OUT/<split>/examples-SSSSS-of-NNNNN.tfrecord`, sorted by (source, first frame).
"""

from __future__ import annotations

import collections
import math

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from gunshot_core import records
from pipelines import schemas
from pipelines.dataset import splitting
from pipelines.io import sharded, tables

EXAMPLES = "examples"
ERRORS = "errors"
STATS = "stats.json"
RECORD_PREFIX = "examples"
RECORD_SUFFIX = ".tfrecord"


def example_key(item) -> tuple:
    """Sort and shard key of an (example row, record) pair: (source, first frame, frames)."""
    row = item[0]
    return (row["source"], row["first_frame"], row["num_frames"])


def _write_records(handle, items) -> None:
    records.write_tfrecords(handle, (record for _, record in items))


def error_key(row: dict) -> tuple:
    return (
        row["source"],
        row.get("annotation_file") or "",
        row.get("annotation_line") if row.get("annotation_line") is not None else -1,
        row["stage"],
        row["reason"],
        row["message"],
    )


def _split_index(item, num_splits, names):
    return names.index(item[0]["split"])


class WriteDataset(beam.PTransform):
    """(PCollection[(example row with split, record bytes)], PCollection[error row]) -> files.

    Returns the PCollection of written paths.
    """

    def __init__(self, output: str, split_names, num_shards: int):
        super().__init__()
        self._output = output
        self._names = list(split_names)
        self._num_shards = num_shards

    def expand(self, inputs):
        examples, errors = inputs
        paths = []
        parts = examples | "BySplit" >> beam.Partition(_split_index, len(self._names), self._names)
        for name, part in zip(self._names, parts, strict=True):
            prefix = FileSystems.join(self._output, name, RECORD_PREFIX)
            paths.append(
                part
                | f"Records{name.title()}"
                >> sharded.WriteSharded(
                    prefix, self._num_shards, RECORD_SUFFIX, _write_records, sort_key=example_key
                )
            )
        paths.append(
            examples
            | "Rows" >> beam.Map(lambda item: item[0])
            | "WriteExamples"
            >> tables.WriteTable(
                self._output,
                EXAMPLES,
                schemas.DATASET_EXAMPLES,
                sort_columns=["source", "first_frame", "num_frames"],
            )
        )
        paths.append(
            errors
            | "WriteErrors"
            >> tables.WriteTable(self._output, ERRORS, schemas.DATASET_ERRORS, sort_key=error_key)
        )
        return paths | "Paths" >> beam.Flatten()


def build_stats(examples, errors, recording_stats: dict, options: dict, split_order) -> dict:
    """stats.json from the written tables (pyarrow) and the summed per-recording counts.

    Args:
      examples, errors: pyarrow Tables of the run.
      recording_stats: summed STATS_TAG dicts of MakeExamplesFn.
      options: the run's settings (no paths of temporary files, no times).
      split_order: split names in --split order.
    """
    rows = examples.to_pylist()
    error_rows = errors.to_pylist()
    by_split = {}
    for split in split_order:
        in_split = [r for r in rows if r["split"] == split]
        by_split[split] = {
            "examples": len(in_split),
            "tags": dict(sorted(collections.Counter(r["tag"] for r in in_split).items())),
            "origins": dict(sorted(collections.Counter(r["origin"] for r in in_split).items())),
            "groups": sorted({r["group"] for r in in_split}),
            "recordings": len({r["source"] for r in in_split}),
        }
    reasons = collections.Counter(r["reason"] for r in error_rows)
    ignored_labels = collections.Counter(r["label"] for r in error_rows if r["reason"] == "ignored")
    used_labels = collections.Counter(r["label"] for r in rows if r["label"] is not None and r["shift"] == 0)
    annotation_examples = len(
        {(r["annotation_file"], r["annotation_line"]) for r in rows if r["annotation_file"]}
    )
    annotation_errors = len(
        {
            (r["annotation_file"], r["annotation_line"])
            for r in error_rows
            if r["annotation_file"] and r["annotation_line"]
        }
    )
    hours = recording_stats.get("fully_annotated_seconds", 0.0) / 3600
    return {
        "options": options,
        "examples": len(rows),
        "splits": by_split,
        "annotations": {
            "rows_with_example": annotation_examples,
            "rows_with_error": annotation_errors,
            "labels_used": dict(sorted(used_labels.items())),
            "labels_ignored": dict(sorted(ignored_labels.items())),
        },
        "errors": dict(sorted(reasons.items())),
        "recordings": {
            "used": int(recording_stats.get("recordings", 0)),
            "fully_annotated": int(recording_stats.get("fully_annotated_recordings", 0)),
            "audio_hours": round(recording_stats.get("audio_seconds", 0.0) / 3600, 6),
            "fully_annotated_hours": round(hours, 6),
        },
        "background": {
            "wanted": int(recording_stats.get("background_wanted", 0)),
            "available": int(recording_stats.get("background_available", 0)),
            "written": sum(1 for r in rows if r["origin"] == "background"),
            "per_hour": round(sum(1 for r in rows if r["origin"] == "background") / hours, 3)
            if hours
            else None,
        },
        "leakage": splitting.leakage(rows, split_order),
    }


def sum_stats(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return {
        k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in sorted(out.items())
    }
