"""Reading and tagging: AudioSet shards -> one tagged row per clip, or an error row.

Stage: subset 1 (read and tag). `ReadAndTag` reads one SequenceExample shard (plain or gzip, local or
gs://), validates each clip, tags it exclusively (`gunshot_core.labels`) and gives it its selection
rank, a seeded 63-bit hash (`selection_rank`), in batches of MAX_BATCH rows.

Two readers give the same outputs. The whole-shard reader (`gunshot_core.record_batch`, when
`--fast_read` is on) frames the shard in one pass, parses every record in one TensorFlow call and tags
with numpy, building Python rows only for the clips a tag wants. The record-by-record reader handles
everything else: a shard in which the whole-shard reader finds anything unusual (a bad CRC, a
truncated or malformed record, a missing field, ...) is read again record by record, so that each
bad record gets its precise error row; so is every shard when labels come from a segments CSV.
"""

from __future__ import annotations

import collections
import logging
import sys

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from gunshot_core import labels as labels_lib
from gunshot_core import record_batch, records, startup
from gunshot_core.errors import describe
from pipelines.io import errors as io_errors
from pipelines.io import files, sharded
from pipelines.subset.config import NAMESPACE, Config

_LOG = logging.getLogger(__name__)

MAX_BATCH = 2000
"""Tagged clips per element between steps (one list per shard, split when a shard holds more)."""
MAX_WHOLE_SHARD_BYTES = 256 << 20
"""Larger (decompressed) shards are read record by record, never held in memory whole."""
FAST_READ_MIN_BYTES = 512 << 20
"""`--fast_read auto` imports TensorFlow for inputs of at least this size (~350,000 records): below it,
the import (~1.3 s per worker process, `startup.import_tensorflow`) costs about as much as the
whole-shard reader saves (~5 us per record): at 200,000 records `on` was still 0.5 s behind `off`."""


def _count_co_occurrence(stats, split: str, result, names: dict) -> None:
    """Tallies a clip whose labels match several tags: the outcome per tag group (kept as a tag, or
    dropped) and every co-occurring label (both readers count alike)."""
    outcome = "dropped" if result.dropped else result.tag
    group = "+".join(result.matched)
    stats[("co_occurrence", split, group, outcome)] += 1
    for label in result.co_labels:
        stats[("co_label", split, group, names.get(label, f"#{label}"))] += 1


class ClipBatch(list):
    """A list of (tagged row dict, record offset) that crosses Beam steps as one pickle.

    The offset is the record's byte offset in its shard (`row["source"]`, decompressed stream): the
    writer reads the few selected records again from there instead of every tagged clip carrying its
    ~1.5 kB through the steps and Dataflow's shuffle.

    Beam's default coder encodes a plain list of dicts value by value (~4 us per row and step); a list
    subclass goes to its pickle fallback, which the C pickler does in ~1 us. Behaves as a list.
    """

    __slots__ = ()


def use_fast_read(mode: str, input_bytes: int) -> bool:
    """Whether ReadAndTag reads shards whole with TensorFlow's parser (see `--fast_read`).

    Args:
      mode: on | off | auto.
      input_bytes: total size of the job's input shards.
    Returns:
      on: True; off: False; auto: True when the input holds at least FAST_READ_MIN_BYTES or TensorFlow
      is already imported in this process (then the whole-shard reader costs no import).
    """
    if mode in ("on", "off"):
        return mode == "on"
    return input_bytes >= FAST_READ_MIN_BYTES or "tensorflow" in sys.modules


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
    """Reads one AudioSet shard (whole or record by record, see the module docstring) and tags its clips.

    Input: (split, path). Outputs:
      main: one ClipBatch per shard of (row dict of SUBSET_TAGGED without selection fields, record offset),
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
        self._fast_read = config.fast_read
        self._input_bytes = config.input_bytes
        self._tf = None  # the tensorflow module once setup() decided to read shards whole
        self._errors = io_errors.ErrorReporter(NAMESPACE)
        self._records_read = Metrics.counter(NAMESPACE, "records_read")
        self._shards_read = Metrics.counter(NAMESPACE, "shards_read")
        self._other = Metrics.counter(NAMESPACE, "clips_other")
        self._tagged = {t.name: Metrics.counter(NAMESPACE, f"clips_{t.name}") for t in config.tags}
        self._co_dropped = Metrics.counter(NAMESPACE, "clips_dropped_co_occurrence")
        self._shards_whole = Metrics.counter(NAMESPACE, "shards_read_whole")
        self._shards_fallback = Metrics.counter(NAMESPACE, "shards_reread_record_by_record")

    def setup(self):
        self._tf = None
        if self._label_source != "records" or not use_fast_read(self._fast_read, self._input_bytes):
            return
        try:
            tf = startup.import_tensorflow(freeze=True)  # long-lived modules: out of the collector's way
        except ImportError as e:  # the record-by-record reader needs no TensorFlow
            _LOG.warning("TensorFlow cannot be imported (%s): reading shards record by record", e)
            return
        self._tf = tf

    def process(self, element, segments=None):
        split, path = element
        stats = collections.Counter()
        batch = []
        outputs = self._read_whole(split, path, stats) if self._tf is not None else None
        if outputs is None:
            outputs = self._read(split, path, stats, segments)
        for out in outputs:
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield out
            else:
                batch.append(out)
                if len(batch) >= MAX_BATCH:  # bounded elements, also for unusually large shards
                    yield ClipBatch(batch)
                    batch = []
        if batch:
            yield ClipBatch(batch)
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

    def _read_whole(self, split, path, stats):
        """The shard's outputs from the whole-shard reader, or None when it must be read record by record.

        `stats` is only updated when the outputs are returned.
        """
        try:
            with files.open_maybe_compressed(path) as handle:
                buffer = handle.read(MAX_WHOLE_SHARD_BYTES + 1)
        except Exception:  # the record-by-record reader reports it with the right reason
            return None
        if len(buffer) > MAX_WHOLE_SHARD_BYTES:
            return None
        if not buffer:
            return []
        try:
            framed = record_batch.split_framed(buffer)
            contexts = record_batch.parse_contexts(self._tf, framed.payloads)
        except record_batch.ShardAnomaly as e:
            self._shards_fallback.inc()
            _LOG.debug("%s: reading record by record: %s", path, e)
            return None
        del buffer
        self._shards_whole.inc()
        tags, policy, names, seed = self._tags, self._policy, self._names, self._seed
        counts = collections.Counter()
        n = len(framed.payloads)
        counts[("read", split)] += n
        # Clips with classes of exactly one tag get it right away (tag_labels would give the same, with
        # no co-occurrence); only clips with classes of several tags go through tag_labels.
        hits = record_batch.tag_hits(contexts, [t.indices for t in tags])
        n_hit = hits.sum(axis=0)
        candidates = np.flatnonzero(n_hit).tolist()
        if n - len(candidates):  # no label of any tag: untagged, no co-occurrence
            counts[("other", split)] += n - len(candidates)
        single = (n_hit == 1).tolist()
        first = [tags[t].name for t in hits.argmax(axis=0).tolist()]
        starts, ends = contexts.start_times.tolist(), contexts.end_times.tolist()
        out = []
        for i in candidates:
            labels = contexts.labels(i)
            if single[i]:
                tag, co_labels = first[i], ()
            else:
                result = labels_lib.tag_labels(labels, tags, policy)
                _count_co_occurrence(counts, split, result, names)
                if result.tag == labels_lib.OTHER:
                    counts[("other", split)] += 1
                    continue
                tag, co_labels = result.tag, result.co_labels
            counts[("tagged", split, tag)] += 1
            video_id = contexts.video_ids[i].decode("utf-8")
            key = records.clip_key(video_id, starts[i])
            row = {
                "split": split,
                "clip_key": key,
                "video_id": video_id,
                "start_time_seconds": starts[i],
                "end_time_seconds": ends[i],
                "labels": list(labels),
                "label_names": [names.get(x, f"#{x}") for x in labels],
                "tag": tag,
                "co_labels": list(co_labels),
                "rank": sharded.stable_hash(f"{seed}:{key}") >> 1,  # selection_rank(seed, video_id, start)
                "source": path,
                "record_index": i,
            }
            out.append((row, int(framed.offsets[i])))
        stats.update(counts)
        return out

    def _read(self, split, path, stats, segments):
        try:
            handle = files.open_maybe_compressed(path)
        except Exception as e:
            stats[("read", split)] += 1
            yield self._errors.emit(_error_row(split, path, "unreadable", describe(e)))
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
                    _count_co_occurrence(stats, split, result, names)
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
                yield row, framed.offset
