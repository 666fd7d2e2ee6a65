"""Exports of the scoring results: embeddings as AudioSet TFRecords, events as CSV and Raven tables.

Stage: scoring 8 (exports). `WriteEmbeddingRecords` writes one SequenceExample per recording
(`--write_embeddings`); `WriteEventExports` writes events.csv and a Raven Pro selection table.
"""

import csv
import io

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from gunshot_core import params
from pipelines.io import sharded
from pipelines.scoring.outputs import EVENTS_CSV, RAVEN_TABLE, _embeddings_key, _events_key


def recording_record(grouped) -> tuple[str, bytes]:
    """(source, serialized SequenceExample) of one recording's embedding rows.

    The record holds all frames of the recording in order (video_id = source, start 0, end = frames *
    0.96 s, no labels), so scoring the TFRecord gives the recording's own windows and scores again.
    """
    from gunshot_core import records

    source, rows = grouped
    rows = sorted(rows, key=_embeddings_key)
    frames = np.frombuffer(b"".join(r["embedding"] for r in rows), np.uint8).reshape(len(rows), -1)
    return source, records.encode_sequence_example(source, 0.0, len(rows) * params.FRAME_SECONDS, [], frames)


def _record_key(element):
    return element[0]


def _write_records(handle, elements) -> None:
    from gunshot_core import records

    records.write_tfrecords(handle, (payload for _, payload in elements))


class WriteEmbeddingRecords(beam.PTransform):
    """PCollection[dict] embedding rows -> `{directory}/embeddings-SSSSS-of-NNNNN.tfrecord`, one record
    per recording (deterministic shards, sorted by source)."""

    def __init__(self, directory: str, num_shards: int):
        super().__init__()
        self._prefix = FileSystems.join(directory, "embeddings")
        self._num_shards = num_shards

    def expand(self, rows):
        return (
            rows
            | "BySource" >> beam.Map(lambda r: (r["source"], r))
            | "Group" >> beam.GroupByKey()
            | "Encode" >> beam.Map(recording_record)
            | "Write"
            >> sharded.WriteSharded(self._prefix, self._num_shards, ".tfrecord", _write_records, _record_key)
        )


CSV_COLUMNS = (
    "source",
    "event_index",
    "start_seconds",
    "end_seconds",
    "peak_score",
    "peak_seconds",
    "num_windows",
    "start_utc",
    "end_utc",
)


def events_csv(events: list[dict]) -> str:
    """The events as CSV text (sorted by source and start), one header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in sorted(events, key=_events_key):
        writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def raven_selection_table(events: list[dict]) -> str:
    """The events as one Raven Pro selection table (tab-separated).

    Begin/End Time are seconds from the start of the file named in `Begin Path` (the same value as
    `File Offset (s)`); frequencies span the VGGish band (125-7500 Hz).
    """
    header = [
        "Selection",
        "View",
        "Channel",
        "Begin Time (s)",
        "End Time (s)",
        "Low Freq (Hz)",
        "High Freq (Hz)",
        "Begin Path",
        "File Offset (s)",
        "Peak Score",
        "Peak Time (s)",
        "Source",
    ]
    lines = ["\t".join(header)]
    for i, row in enumerate(sorted(events, key=_events_key), start=1):
        path = row["source"].split("!", 1)[0] if "!" in row["source"] else row["source"]
        lines.append(
            "\t".join(
                [
                    str(i),
                    "Spectrogram 1",
                    "1",
                    f"{row['start_seconds']:.3f}",
                    f"{row['end_seconds']:.3f}",
                    f"{params.MEL_MIN_HZ:.1f}",
                    f"{params.MEL_MAX_HZ:.1f}",
                    path,
                    f"{row['start_seconds']:.3f}",
                    f"{row['peak_score']:.6f}",
                    f"{row['peak_seconds']:.3f}",
                    row["source"],
                ]
            )
        )
    return "\n".join(lines) + "\n"


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path, mime_type="text/plain") as f:
        f.write(text.encode("utf-8"))


class _WriteExports(beam.DoFn):
    def __init__(self, directory: str):
        self._directory = directory

    def process(self, events: list[dict]):
        _write_text(FileSystems.join(self._directory, EVENTS_CSV), events_csv(events))
        _write_text(FileSystems.join(self._directory, RAVEN_TABLE), raven_selection_table(events))
        yield len(events)


class WriteEventExports(beam.PTransform):
    """PCollection[dict] event rows -> events.csv and a Raven selection table in `directory`."""

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def expand(self, events):
        return (
            events
            | "ToList" >> beam.combiners.ToList()
            | "Write" >> beam.ParDo(_WriteExports(self._directory))
        )
