"""Reading and tagging: AudioSet shards -> one tagged row per clip, or an error row.

Stage: subset 1 (read and tag). `ReadAndTag` reads one SequenceExample shard record by record
(plain or gzip, local or gs://), validates each clip, tags it exclusively (`gunshot_core.labels`) and
gives it its selection rank, a seeded 63-bit hash (`selection_rank`), in batches of MAX_BATCH rows.
"""

from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam.metrics import Metrics

from gunshot_core import labels as labels_lib
from gunshot_core import records
from pipelines.io import errors as io_errors
from pipelines.io import files, sharded
from pipelines.subset.config import NAMESPACE, Config

MAX_BATCH = 2000
"""Tagged clips per element between steps (one list per shard, split when a shard holds more)."""


def selection_rank(seed: int, video_id: str, start_time: float) -> int:
    """The clip's selection rank: a 63-bit hash of (seed, video id, start ms); lowest ranks are kept.

    Independent of arrival order, sharding, runner and worker count.
    """
    return sharded.stable_hash(f"{seed}:{records.clip_key(video_id, start_time)}") >> 1


def parse_segment_line(line: str, mid_to_index: dict) -> tuple[str, tuple[int, ...]] | None:
    """(clip_key, sorted label indices) of one segments-CSV line; None for comments/blank lines.

    Raises:
      ValueError: a malformed line or an unknown MID (the message shows the line).
    """
    if not line.strip() or line.startswith("#"):
        return None
    parts = [p.strip() for p in line.split(",", 3)]
    if len(parts) != 4:
        raise ValueError(f"segments line has {len(parts)} fields, expected 4: {line!r}")
    mids = [m.strip() for m in parts[3].strip().strip('"').split(",") if m.strip()]
    unknown = [m for m in mids if m not in mid_to_index]
    if unknown:
        raise ValueError(f"segments line has unknown MIDs {unknown}: {line!r}")
    return records.clip_key(parts[0], float(parts[1])), tuple(sorted(mid_to_index[m] for m in mids))


def _error_row(split, source, reason, detail, index=None, offset=None, video_id=None) -> dict:
    return {
        "split": split,
        "source": source,
        "record_index": index,
        "offset": offset,
        "video_id": video_id,
        "reason": reason,
        "detail": detail,
    }


class ReadAndTag(beam.DoFn):
    """Reads one AudioSet shard record by record, validates and tags each clip.

    Input: (split, path). Outputs:
      main: one list per shard of (row dict of SUBSET_TAGGED without selection fields, record bytes),
        one pair per tagged clip (lists, so that Beam moves one element per shard, not per clip);
      'stats': ((kind, split, ...), count) partial counts per shard (records read, other, co-occurrence);
      ERRORS_TAG: SUBSET_ERRORS rows (bad CRC, truncation, malformed record, unreadable shard, ...).
    Only the context of untagged clips is read (unless validate_all); tagged clips are fully validated
    before they can be selected, so balancing never counts a record that would then be rejected.
    """

    def __init__(self, config: Config):
        self._tags = config.tags
        self._policy = config.policy
        self._names = config.label_names
        self._seed = config.seed
        self._validate_all = config.validate_all
        self._label_source = config.label_source
        self._errors = io_errors.ErrorReporter(NAMESPACE)
        self._records_read = Metrics.counter(NAMESPACE, "records_read")
        self._shards_read = Metrics.counter(NAMESPACE, "shards_read")
        self._other = Metrics.counter(NAMESPACE, "clips_other")
        self._tagged = {t.name: Metrics.counter(NAMESPACE, f"clips_{t.name}") for t in config.tags}
        self._co_dropped = Metrics.counter(NAMESPACE, "clips_dropped_co_occurrence")

    def process(self, element, segments=None):
        split, path = element
        stats = collections.Counter()
        batch = []
        for out in self._read(split, path, stats, segments):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield out
            else:
                batch.append(out)
                if len(batch) >= MAX_BATCH:  # bounded elements, also for unusually large shards
                    yield batch
                    batch = []
        if batch:
            yield batch
        # Counters are bumped once per shard from the shard's tallies (a Beam counter call per record costs).
        self._shards_read.inc()
        self._records_read.inc(stats[("read", split)])
        self._other.inc(stats[("other", split)])
        self._co_dropped.inc(
            sum(v for k, v in stats.items() if k[0] == "co_occurrence" and k[3] == "dropped")
        )
        for tag, counter in self._tagged.items():
            counter.inc(stats[("tagged", split, tag)])
        for key, value in sorted(stats.items()):
            yield beam.pvalue.TaggedOutput("stats", (key, value))

    def _read(self, split, path, stats, segments):
        try:
            handle = files.open_maybe_compressed(path)
        except Exception as e:
            stats[("read", split)] += 1
            yield self._errors.emit(_error_row(split, path, "unreadable", f"{type(e).__name__}: {e}"))
            return
        tags, policy, names = self._tags, self._policy, self._names
        with handle:
            for framed in records.read_tfrecords(handle):
                stats[("read", split)] += 1
                if framed.reason is not None:
                    row = _error_row(split, path, framed.reason, framed.detail, framed.index, framed.offset)
                    yield self._errors.emit(row)
                    continue
                video_id = None
                try:
                    example = records.parse_record(framed.data)
                    context = records.context_from_features(example.context)
                    video_id = context.video_id
                    labels = context.labels
                    if self._label_source != "records":
                        csv_labels = segments.get(context.key)
                        if self._label_source == "csv":
                            if csv_labels is None:
                                raise records.RecordError(
                                    f"clip {context.key} is not in --segments_csv", "not_in_segments_csv"
                                )
                            labels = csv_labels
                        elif csv_labels is None:
                            stats[("label_check", split, "not_in_csv")] += 1
                        elif csv_labels != tuple(sorted(set(labels))):
                            stats[("label_check", split, "mismatch")] += 1
                        else:
                            stats[("label_check", split, "match")] += 1
                    result = labels_lib.tag_labels(labels, tags, policy)
                    if result.tag == labels_lib.OTHER and not self._validate_all:
                        pass
                    else:
                        records.embedding_frames(example)
                except records.RecordError as e:
                    row = _error_row(split, path, e.reason, str(e), framed.index, framed.offset, video_id)
                    yield self._errors.emit(row)
                    continue
                if len(result.matched) > 1:
                    outcome = "dropped" if result.dropped else result.tag
                    group = "+".join(result.matched)
                    stats[("co_occurrence", split, group, outcome)] += 1
                    for label in result.co_labels:
                        stats[("co_label", split, group, names.get(label, f"#{label}"))] += 1
                if result.tag == labels_lib.OTHER:
                    stats[("other", split)] += 1
                    continue
                stats[("tagged", split, result.tag)] += 1
                row = {
                    "split": split,
                    "clip_key": context.key,
                    "video_id": video_id,
                    "start_time_seconds": context.start_time,
                    "end_time_seconds": context.end_time,
                    "labels": list(labels),
                    "label_names": [names.get(x, f"#{x}") for x in labels],
                    "tag": result.tag,
                    "co_labels": list(result.co_labels),
                    "rank": selection_rank(self._seed, video_id, context.start_time),
                    "source": path,
                    "record_index": framed.index,
                }
                yield row, framed.data
