"""Builds balanced, reproducible AudioSet embedding subsets (e.g. gunshot vs. no_gunshot) with Beam.

    python -m pipelines.build_subset --input 'audioset_v1_embeddings/eval/*.tfrecord' --output out/
    python -m pipelines.build_subset --split eval='.../eval/*' --split train='.../bal_train/*' \\
        --output gs://bucket/subsets/v1 --runner DataflowRunner ...
    gunshot subset ...   (the same)

Reads official AudioSet SequenceExample shards (local or gs://, plain or gzip), tags each clip exclusively
(gunshot / no_gunshot by default, or N named tags), balances each split by a seeded hash rank and writes,
per split, `OUTPUT/<split>/subset-SSSSS-of-NNNNN.tfrecord` (selected records, byte for byte), plus
`OUTPUT/tagged-*.parquet`, `OUTPUT/errors-*.parquet` (schemas in pipelines.schemas) and
`OUTPUT/stats.json`. docs/build_subset.md explains every option and output.
"""

from __future__ import annotations

import argparse
import collections
import fractions
import json
import logging
import math
import re

from gunshot_core import startup

# Beam creates ~300,000 long-lived objects: no garbage collection meanwhile, and, run as a command,
# none over them later, while the job's own rows come and go (see gunshot_core.startup).
with startup.imports_without_gc(freeze=__name__ == "__main__"):
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.metrics import Metrics
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

    from gunshot_core import labels as labels_lib
    from gunshot_core import records
    from pipelines import common, remote, schemas

_LOG = logging.getLogger(__name__)

NAMESPACE = "build_subset"
DEFAULT_SPLIT = "subset"
SUBSET_PREFIX = "subset"
STATS_FILE = "stats.json"
LEAK_EXAMPLES = 50
TAGGED_SORT_COLUMNS = ("split", "video_id", "start_time_seconds", "source", "record_index")
MAX_BATCH = 2000
"""Tagged clips per element between steps (one list per shard, split when a shard holds more)."""


# ---- Options ------------------------------------------------------------------------------------


def _split_arg(text: str) -> list[tuple[str, str]]:
    """NAME=PATTERN, or several separated by ';' (one template parameter can then carry every split)."""
    entries = []
    for entry in text.split(";"):
        name, sep, pattern = entry.strip().partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not pattern:
            raise argparse.ArgumentTypeError(
                f"--split takes NAME=PATTERN[;NAME=PATTERN...] (NAME of [A-Za-z0-9_.-]), got {text!r}"
            )
        entries.append((name, pattern))
    return entries


def _class_arg(text: str) -> tuple[str, str]:
    name, sep, classes = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not classes.strip():
        raise argparse.ArgumentTypeError(f"--class takes NAME=CLASS_LIST, got {text!r}")
    return name, classes


def _csv_join(items) -> str:
    return ",".join(f'"{item}"' if "," in item else item for item in items)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of our own flags (Beam's flags are passed through)."""
    parser = argparse.ArgumentParser(
        prog="gunshot subset",
        description=(
            "Tag AudioSet embedding records exclusively, balance them reproducibly and write subset "
            "TFRecords (official format, records unchanged), a tagged Parquet table, an errors table "
            "and stats.json. Any Beam flag (--runner, --direct_num_workers, --project, ...) is passed on."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io_group = parser.add_argument_group("inputs and outputs")
    io_group.add_argument(
        "--input",
        action="append",
        default=[],
        help=f"glob of AudioSet embedding TFRecords (local or gs://, plain or gzip); repeatable; "
        f"forms the split {DEFAULT_SPLIT!r}",
    )
    io_group.add_argument(
        "--split",
        action="append",
        type=_split_arg,
        default=[],
        metavar="NAME=PATTERN",
        help="a named split and its glob, e.g. eval='emb/eval/*.tfrecord'; repeatable (repeat a NAME to add "
        "patterns), and one value may hold several entries separated by ';' (as a template parameter "
        "must). The order of first appearance is the priority order of --drop_leakage",
    )
    io_group.add_argument("--output", required=True, help="output directory (local or gs://)")
    io_group.add_argument("--num_shards", type=int, default=4, help="subset TFRecord files per split")
    io_group.add_argument(
        "--table_shards",
        type=int,
        default=4,
        help="Parquet files of the tagged table (one file holds rows/table_shards rows in a worker's memory; "
        "use ~32 for the full unbalanced release)",
    )

    cls = parser.add_argument_group("classes and tagging")
    cls.add_argument(
        "--positive_classes",
        default=None,
        help="CSV of class display names or MIDs (quote names with commas) or @file; the positive tag. "
        f"Default: {_csv_join(labels_lib.DEFAULT_POSITIVE)}",
    )
    cls.add_argument(
        "--negative_classes",
        default=None,
        help="CSV of class names/MIDs or @file; the negative tag. Default: the original project's hard and "
        "easy negatives (docs/build_subset.md)",
    )
    cls.add_argument(
        "--positive_name", default=labels_lib.DEFAULT_TAG_NAMES[0], help="name of the positive tag"
    )
    cls.add_argument(
        "--negative_name", default=labels_lib.DEFAULT_TAG_NAMES[1], help="name of the negative tag"
    )
    cls.add_argument(
        "--class",
        dest="classes",
        action="append",
        type=_class_arg,
        default=[],
        metavar="NAME=CLASS_LIST",
        help="N-way tagging instead of positive/negative: one tag per flag, in priority order, e.g. "
        "--class 'gunshot=\"Gunshot, gunfire\",Machine gun' --class fireworks=Fireworks,Firecracker",
    )
    common.add_switch(
        cls,
        "--include_children",
        help="expand every listed class to its ontology descendants",
    )
    cls.add_argument(
        "--co_occurrence",
        choices=labels_lib.POLICIES,
        default=None,
        help="clips carrying classes of several tags: 'priority' gives them the first tag (default with "
        "positive/negative: positive wins, as in the original project), 'drop' drops them (default with "
        "--class); both are reported in stats.json",
    )
    cls.add_argument(
        "--class_labels_csv", default=None, help="class_labels_indices.csv (default: shipped copy)"
    )
    cls.add_argument("--ontology", default=None, help="ontology.json (default: shipped copy)")
    cls.add_argument(
        "--segments_csv",
        action="append",
        default=[],
        help="AudioSet segments CSV(s) (YTID, start, end, positive_labels); used per --label_source",
    )
    cls.add_argument(
        "--label_source",
        choices=("records", "csv", "check"),
        default=None,
        help="labels from the records' `labels`, from --segments_csv (clips missing there are errors), or "
        "from the records cross-checked against the CSV (mismatches counted in stats.json). "
        "Default: records, or check when --segments_csv is given",
    )
    common.add_switch(
        cls,
        "--validate_all",
        help="also check the embedding of clips that no tag selects (default: context only for those)",
    )

    bal = parser.add_argument_group("balancing")
    bal.add_argument(
        "--balance",
        choices=("downsample", "none", "weights"),
        default="downsample",
        help="downsample every tag to --ratio; none keeps all; weights keeps all and writes class weights",
    )
    bal.add_argument(
        "--ratio", default=None, help="tag proportions for downsample, in tag order, e.g. 1:3 (default all 1)"
    )
    bal.add_argument(
        "--max_per_class", type=int, default=None, help="at most this many clips per tag and split"
    )
    bal.add_argument(
        "--seed", type=int, default=0, help="seed of the selection rank (hash of seed+video+start)"
    )
    common.add_switch(
        bal,
        "--drop_leakage",
        help="drop clips whose video id is tagged in an earlier --split from later splits",
    )
    return parser


class Config:
    """Resolved, picklable settings of one run (what the DoFns need)."""

    def __init__(self, args: argparse.Namespace):
        catalog = labels_lib.ClassCatalog.from_files(args.class_labels_csv, args.ontology)
        if args.classes:
            if args.positive_classes is not None or args.negative_classes is not None:
                raise ValueError(
                    "--class replaces --positive_classes/--negative_classes; give one or the other"
                )
            specs = list(args.classes)
            self.policy = args.co_occurrence or "drop"
        else:
            specs = [
                (args.positive_name, args.positive_classes or labels_lib.DEFAULT_POSITIVE),
                (args.negative_name, args.negative_classes or labels_lib.DEFAULT_NEGATIVE),
            ]
            self.policy = args.co_occurrence or "priority"
        self.tags = labels_lib.build_tags(catalog, specs, include_children=args.include_children)
        self.tag_names = tuple(t.name for t in self.tags)
        self.label_names = {c.index: c.name for c in catalog.classes}
        self.tag_classes = {t.name: sorted(t.indices) for t in self.tags}
        self.class_mids = {c.index: c.mid for c in catalog.classes}

        splits = collections.OrderedDict()
        for pattern in args.input:
            splits.setdefault(DEFAULT_SPLIT, []).append(pattern)
        for entries in args.split:
            for name, pattern in entries:
                splits.setdefault(name, []).append(pattern)
        if not splits:
            raise ValueError("give --input PATTERN or at least one --split NAME=PATTERN")
        self.splits = splits
        self.split_names = tuple(splits)

        if args.ratio:
            try:
                ratio = [int(x) for x in args.ratio.split(":")]
            except ValueError:
                raise ValueError(f"--ratio must be integers separated by ':', got {args.ratio!r}") from None
            if len(ratio) != len(self.tags) or min(ratio) < 1:
                raise ValueError(
                    f"--ratio {args.ratio!r} needs {len(self.tags)} positive integers, one per tag {self.tag_names}"
                )
        else:
            ratio = [1] * len(self.tags)
        self.ratio = dict(zip(self.tag_names, ratio, strict=True))
        if args.max_per_class is not None and args.max_per_class < 0:
            raise ValueError(f"--max_per_class must be >= 0, got {args.max_per_class}")
        self.balance = args.balance
        self.max_per_class = args.max_per_class
        self.seed = args.seed
        self.drop_leakage = args.drop_leakage
        self.validate_all = args.validate_all
        self.label_source = args.label_source or ("check" if args.segments_csv else "records")
        if self.label_source != "records" and not args.segments_csv:
            raise ValueError(f"--label_source {self.label_source} needs --segments_csv")
        self.segments_csv = list(args.segments_csv)
        self.output = args.output
        self.num_shards = args.num_shards
        self.table_shards = args.table_shards
        if self.num_shards < 1 or self.table_shards < 1:
            raise ValueError(
                f"--num_shards and --table_shards must be >= 1, got {self.num_shards}, {self.table_shards}"
            )

    def summary(self) -> dict:
        """The settings as JSON-able dict (written into stats.json)."""
        return {
            "tags": {
                name: [f"{self.class_mids[i]} {self.label_names[i]}" for i in self.tag_classes[name]]
                for name in self.tag_names
            },
            "co_occurrence": self.policy,
            "balance": self.balance,
            "ratio": ":".join(str(self.ratio[t]) for t in self.tag_names),
            "max_per_class": self.max_per_class,
            "seed": self.seed,
            "drop_leakage": self.drop_leakage,
            "label_source": self.label_source,
            "segments_csv": self.segments_csv,
            "splits": {name: patterns for name, patterns in self.splits.items()},
            "num_shards": self.num_shards,
            "validate_all": self.validate_all,
        }


# ---- Pure helpers (unit-tested without Beam) ------------------------------------------------------


def selection_rank(seed: int, video_id: str, start_time: float) -> int:
    """The clip's selection rank: a 63-bit hash of (seed, video id, start ms); lowest ranks are kept.

    Independent of arrival order, sharding, runner and worker count.
    """
    return common.stable_hash(f"{seed}:{records.clip_key(video_id, start_time)}") >> 1


def quotas(
    counts: dict[str, int], config_ratio: dict[str, int], balance: str, max_per_class: int | None
) -> dict:
    """How many clips of each tag a split keeps.

    Args:
      counts: eligible clips per tag (missing tags count 0).
      config_ratio: tag -> integer proportion (downsample only).
      balance: downsample | none | weights.
      max_per_class: optional cap per tag.
    Returns:
      {tag: quota}. downsample keeps floor(s * ratio[tag]) with the largest s that every tag can fill
      (and that keeps every tag <= max_per_class); none/weights keep min(count, max_per_class).
    """
    if balance == "downsample":
        scale = min(fractions.Fraction(counts.get(t, 0), r) for t, r in config_ratio.items())
        if max_per_class is not None:
            scale = min(scale, fractions.Fraction(max_per_class, max(config_ratio.values())))
        return {t: math.floor(scale * r) for t, r in config_ratio.items()}
    if balance in ("none", "weights"):
        cap = max_per_class if max_per_class is not None else float("inf")
        return {t: int(min(counts.get(t, 0), cap)) for t in config_ratio}
    raise ValueError(f"unknown balance mode {balance!r}")


def class_weights(kept: dict[str, int]) -> dict[str, float]:
    """Balanced class weights n_total / (n_tags * n_tag) (sklearn's 'balanced'); 0 for empty tags."""
    total = sum(kept.values())
    return {t: (total / (len(kept) * n) if n else 0.0) for t, n in kept.items()}


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


# ---- DoFns ----------------------------------------------------------------------------------------


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
        self._errors = common.ErrorReporter(NAMESPACE)
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
            handle = common.open_maybe_compressed(path)
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


class ComputeThresholds(beam.DoFn):
    """Per split: eligible ranks per tag -> (split, tag) -> (rank threshold, quota, eligible, weight).

    Input: (split, [(tag, sorted ranks), ...]). A clip is selected iff its rank <= threshold; the
    threshold is the quota-th smallest rank (None when the quota is 0).
    """

    def __init__(self, config: Config):
        self._tag_names = config.tag_names
        self._ratio = config.ratio
        self._balance = config.balance
        self._max = config.max_per_class

    def process(self, element):
        split, per_tag = element
        ranks = {t: [] for t in self._tag_names}
        for tag, values in per_tag:
            ranks[tag].extend(values)
        for values in ranks.values():
            values.sort()
        counts = {t: len(v) for t, v in ranks.items()}
        quota = quotas(counts, self._ratio, self._balance, self._max)
        kept = {t: min(quota[t], counts[t]) for t in self._tag_names}
        weights = class_weights(kept) if self._balance == "weights" else {t: 1.0 for t in kept}
        for tag in self._tag_names:
            threshold = ranks[tag][kept[tag] - 1] if kept[tag] > 0 else None
            if kept[tag] < quota[tag] and self._balance == "downsample":
                _LOG.warning(
                    "split %s: tag %s has only %d clips for a quota of %d",
                    split,
                    tag,
                    counts[tag],
                    quota[tag],
                )
            yield (
                (split, tag),
                {
                    "threshold": threshold,
                    "quota": quota[tag],
                    "eligible": counts[tag],
                    "kept": kept[tag],
                    "weight": weights[tag],
                },
            )


class Select(beam.DoFn):
    """Marks each tagged clip leaked / selected and sets its weight.

    Input: list of (row, bytes) (one input shard); side inputs: thresholds {(split, tag): info},
    leaked {video_id: splits}. Output: the list with rows completed by `leaked`, `selected`, `weight`.
    """

    def __init__(self, config: Config):
        self._drop_leakage = config.drop_leakage
        self._selected = Metrics.counter(NAMESPACE, "clips_selected")
        self._leak_dropped = Metrics.counter(NAMESPACE, "clips_dropped_leakage")

    def process(self, batch, thresholds, leaked):
        out = []
        n_dropped = n_selected = 0
        for row, data in batch:
            row = dict(row)
            splits = leaked.get(row["video_id"])
            row["leaked"] = splits is not None
            dropped = bool(self._drop_leakage and splits is not None and splits[0] != row["split"])
            info = thresholds.get((row["split"], row["tag"]))
            threshold = info["threshold"] if info else None
            row["selected"] = bool(not dropped and threshold is not None and row["rank"] <= threshold)
            row["weight"] = float(info["weight"]) if info else 1.0
            n_dropped += dropped
            n_selected += row["selected"]
            out.append((row, data))
        self._leak_dropped.inc(n_dropped)
        self._selected.inc(n_selected)
        yield out


def _eligible_ranks(batch, drop_leakage, leaked):
    """((split, tag), [ranks]) of one shard's clips that may be selected (not dropped for leakage)."""
    ranks = collections.defaultdict(list)
    for row, _ in batch:
        splits = leaked.get(row["video_id"])
        if drop_leakage and splits is not None and splits[0] != row["split"]:
            continue
        ranks[(row["split"], row["tag"])].append(row["rank"])
    return sorted(ranks.items())


def _video_splits(batch):
    return sorted({(row["video_id"], row["split"]) for row, _ in batch})


def _rows_of(batch):
    return [row for row, _ in batch]


def _selected_in(batch, split):
    chosen = [pair for pair in batch if pair[0]["selected"] and pair[0]["split"] == split]
    return [chosen] if chosen else []


def _leak_entry(element, split_order):
    video_id, splits = element
    unique = sorted(set(splits), key=split_order.index)
    if len(unique) > 1:
        yield video_id, tuple(unique)


class RowStats(beam.DoFn):
    """Counts tagged rows per (split, tag), per class before/after balancing and leaked rows.

    Input: lists of SUBSET_TAGGED row dicts. Output: ((kind, split, ...), count) pairs summed per bundle,
    so the stats cost one element per key and bundle instead of several per row.
    """

    def __init__(self, config: Config):
        self._tag_classes = {t: frozenset(v) for t, v in config.tag_classes.items()}
        self._names = config.label_names

    def start_bundle(self):
        self._counts = collections.Counter()

    def process(self, rows):
        counts, names = self._counts, self._names
        for row in rows:
            split, tag, selected = row["split"], row["tag"], row["selected"]
            counts[("tag_before", split, tag)] += 1
            if selected:
                counts[("tag_after", split, tag)] += 1
            if row["leaked"]:
                counts[("leaked_clips", split)] += 1
            in_tag = self._tag_classes[tag]
            for label in set(row["labels"]):
                if label in in_tag:
                    name = names.get(label, f"#{label}")
                    counts[("class_before", split, tag, name)] += 1
                    if selected:
                        counts[("class_after", split, tag, name)] += 1

    def finish_bundle(self):
        for key, value in sorted(self._counts.items()):
            yield beam.utils.windowed_value.WindowedValue(
                (key, value), 0, [beam.transforms.window.GlobalWindow()]
            )


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


class WriteStats(beam.DoFn):
    """Collects the summed stat counts and writes OUTPUT/stats.json (sorted keys: stable bytes)."""

    def __init__(self, config: Config, path: str):
        self._summary = config.summary()
        self._splits = config.split_names
        self._tags = config.tag_names
        self._path = path

    def process(self, counts, thresholds, leaks):
        stats = build_stats(counts, thresholds, leaks, self._splits, self._tags, self._summary)
        common.write_json(self._path, stats)
        _LOG.info("wrote %s", self._path)
        yield stats


def build_stats(counts, thresholds, leaks, splits, tags, summary) -> dict:
    """Assembles stats.json from summed counts [(key tuple, n)], thresholds and leaked ids."""
    c = collections.defaultdict(int)
    for key, value in counts:
        c[tuple(key)] += value
    by_split = {}
    for split in splits:
        errors = {k[2]: v for k, v in c.items() if k[0] == "error" and k[1] == split}
        tagged = {t: c[("tag_before", split, t)] for t in tags}
        entry = {
            "records_read": c[("read", split)],
            "errors": dict(sorted(errors.items())),
            "errors_total": sum(errors.values()),
            "other": c[("other", split)],
            "tagged": tagged,
            "tagged_total": sum(tagged.values()),
            "selected_total": sum(c[("tag_after", split, t)] for t in tags),
            "leaked_clips": c[("leaked_clips", split)],
            "tags": {},
            "co_occurrence": {},
        }
        # Nothing disappears: every record slot read is tagged, other or an error, and every clip the
        # reader tagged reached the tagged table.
        slots = entry["tagged_total"] + entry["other"] + entry["errors_total"]
        reached_table = all(c[("tagged", split, t)] == tagged[t] for t in tags)
        entry["accounted"] = entry["records_read"] == slots and reached_table
        for tag in tags:
            info = thresholds.get((split, tag), {})
            entry["tags"][tag] = {
                "before": c[("tag_before", split, tag)],
                "eligible": info.get("eligible", 0),
                "quota": info.get("quota", 0),
                "after": c[("tag_after", split, tag)],
                "weight": info.get("weight", 1.0),
                "classes_before": {
                    k[3]: v for k, v in sorted(c.items()) if k[:3] == ("class_before", split, tag)
                },
                "classes_after": {
                    k[3]: v for k, v in sorted(c.items()) if k[:3] == ("class_after", split, tag)
                },
            }
        for k, v in sorted(c.items()):
            if k[0] == "co_occurrence" and k[1] == split:
                entry["co_occurrence"].setdefault(k[2], {"clips": 0, "outcome": {}, "labels": {}})
                group = entry["co_occurrence"][k[2]]
                group["clips"] += v
                group["outcome"][k[3]] = v
        for k, v in sorted(c.items()):
            if k[0] == "co_label" and k[1] == split:
                entry["co_occurrence"][k[2]]["labels"][k[3]] = v
        entry["co_occurrence_dropped"] = sum(
            g["outcome"].get("dropped", 0) for g in entry["co_occurrence"].values()
        )
        checks = {k[2]: v for k, v in c.items() if k[0] == "label_check" and k[1] == split}
        if checks:
            entry["label_check"] = dict(sorted(checks.items()))
        by_split[split] = entry
    pairs = collections.Counter("+".join(s) for _, s in leaks)
    leakage = {
        "video_ids": len(leaks),
        "by_splits": dict(sorted(pairs.items())),
        "examples": sorted(v for v, _ in leaks)[:LEAK_EXAMPLES],
        "dropped": summary["drop_leakage"],
    }
    return {"options": summary, "splits": by_split, "leakage": leakage}


# ---- Pipeline -------------------------------------------------------------------------------------


def build_pipeline(p: beam.Pipeline, config: Config, inputs: list[tuple[str, str]]):
    """Adds the subset builder to pipeline `p`.

    Args:
      p: the pipeline.
      config: resolved settings.
      inputs: [(split, shard path)] in a stable order.
    Returns:
      dict of the main PCollections: rows (lists of tagged rows, one per input shard), errors (error
      rows), stats (one dict).
    """
    segments = None
    if config.label_source != "records":
        mid_to_index = {mid: i for i, mid in config.class_mids.items()}
        segments = (
            p
            | "SegmentsCsv" >> beam.Create(config.segments_csv)
            | "ReadSegments" >> beam.io.ReadAllFromText()
            | "ParseSegments"
            >> beam.FlatMap(lambda line, m: [x for x in [parse_segment_line(line, m)] if x], mid_to_index)
        )
    read = (
        p
        | "Shards" >> beam.Create(inputs)
        | "Spread" >> beam.Reshuffle()
        | "ReadAndTag"
        >> beam.ParDo(
            ReadAndTag(config), segments=beam.pvalue.AsDict(segments) if segments is not None else None
        ).with_outputs("stats", common.ERRORS_TAG, main="clips")
    )
    clips = read.clips

    split_order = list(config.split_names)
    if len(split_order) > 1:
        leaked = (
            clips
            | "VideoSplit" >> beam.FlatMap(_video_splits)
            | "DistinctVideoSplit" >> beam.Distinct()
            | "GroupVideo" >> beam.GroupByKey()
            | "Leaks" >> beam.FlatMap(_leak_entry, split_order)
        )
    else:  # one split cannot leak
        leaked = p | "NoLeaks" >> beam.Create([])
    leaked_dict = beam.pvalue.AsDict(leaked)

    # Every (split, tag) gets a threshold entry, also when it has no eligible clip (quota 0).
    per_split = (
        clips
        | "EligibleRanks" >> beam.FlatMap(_eligible_ranks, config.drop_leakage, leaked_dict)
        | "GroupTag" >> beam.GroupByKey()
        | "PerSplit" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], [r for part in kv[1] for r in part])))
    )
    empty = p | "AllSplitTags" >> beam.Create(
        [(s, (t, [])) for s in config.split_names for t in config.tag_names]
    )
    thresholds = (
        (per_split, empty)
        | "WithEmpty" >> beam.Flatten()
        | "GroupSplit" >> beam.GroupByKey()
        | "Thresholds" >> beam.ParDo(ComputeThresholds(config))
    )
    thresholds_dict = beam.pvalue.AsDict(thresholds)

    selected = clips | "Select" >> beam.ParDo(Select(config), thresholds_dict, leaked_dict)
    rows = selected | "Rows" >> beam.Map(_rows_of)

    output = config.output
    for split in config.split_names:
        (
            selected
            | f"Keep_{split}" >> beam.FlatMap(_selected_in, split)
            | f"WriteSubset_{split}"
            >> common.WriteSharded(
                FileSystems.join(output, split, SUBSET_PREFIX),
                config.num_shards,
                ".tfrecord",
                _write_payloads,
                sort_key=_subset_sort_key,
                shard_key=_subset_shard_key,
                batched=True,
            )
        )
    rows | "WriteTagged" >> common.WriteTable(
        output,
        "tagged",
        schemas.SUBSET_TAGGED,
        sort_columns=TAGGED_SORT_COLUMNS,
        shard_key=_tagged_shard_key,
        num_shards=config.table_shards,
        batched=True,
    )
    errors = read[common.ERRORS_TAG]
    errors | "WriteErrors" >> common.WriteTable(output, "errors", schemas.SUBSET_ERRORS, num_shards=1)

    stat_pairs = (
        read.stats,
        rows | "RowStats" >> beam.ParDo(RowStats(config)),
        errors | "ErrorStats" >> beam.Map(lambda r: (("error", r["split"], r["reason"]), 1)),
    ) | "AllStats" >> beam.Flatten()
    stats = (
        stat_pairs
        | "SumStats" >> beam.CombinePerKey(sum)
        | "CollectStats" >> beam.combiners.ToList()
        | "WriteStats"
        >> beam.ParDo(
            WriteStats(config, FileSystems.join(output, STATS_FILE)),
            thresholds_dict,
            beam.pvalue.AsList(leaked),
        )
    )
    return {"rows": rows, "errors": errors, "stats": stats}


def resolve_inputs(config: Config) -> list[tuple[str, str]]:
    """[(split, path)] of every matched shard, sorted; fails fast on a pattern that matches nothing."""
    inputs = []
    for split, patterns in config.splits.items():
        for meta in common.expand_patterns(patterns):
            inputs.append((split, meta.path))
        _LOG.info("split %s: %d shards", split, sum(1 for s, _ in inputs if s == split))
    return inputs


def run(argv=None, save_main_session=True, test_pipeline=None):
    """Runs the subset builder; returns the finished PipelineResult (see module docstring)."""
    parser = build_parser()
    args, beam_args = common.split_args(parser, argv)
    try:
        config = Config(args)
        inputs = resolve_inputs(config)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    _LOG.info("tags: %s", json.dumps(config.summary()["tags"]))
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, config, inputs)
    result = p.run()
    if remote.job_detached(result, p.options):  # template / flex-template launch, dry run, no-wait
        remote.log_detached(result, p.options, NAMESPACE)
        return result
    common.log_counters(result, NAMESPACE)
    _log_summary(FileSystems.join(config.output, STATS_FILE))
    return result


def _log_summary(path: str) -> None:
    try:
        with FileSystems.open(path) as handle:
            stats = json.loads(handle.read())
    except Exception as e:  # the pipeline failed before writing it, or the runner is asynchronous
        _LOG.warning("no stats at %s yet: %s", path, e)
        return
    for split, entry in stats["splits"].items():
        after = {t: v["after"] for t, v in entry["tags"].items()}
        _LOG.info(
            "split %s: read %d, tagged %s, other %d, errors %d, selected %s",
            split,
            entry["records_read"],
            entry["tagged"],
            entry["other"],
            entry["errors_total"],
            after,
        )
    if stats["leakage"]["video_ids"]:
        _LOG.warning(
            "leakage: %d video ids in several splits %s",
            stats["leakage"]["video_ids"],
            stats["leakage"]["by_splits"],
        )


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
    startup.freeze_before_exit()
