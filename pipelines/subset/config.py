"""Options and resolved settings of one subset build: the flags, and the picklable `Config` the DoFns get.

Stage: subset (configuration). `build_parser` declares our flags (Beam's are passed through);
`Config` resolves them (splits, tags, class sets, seed, quotas) once at launch.
"""

from __future__ import annotations

import argparse
import collections
import re

from gunshot_core import arguments, logs
from gunshot_core import labels as labels_lib
from pipelines import options as pipelines_options

NAMESPACE = "build_subset"
DEFAULT_SPLIT = "subset"


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
    parser = arguments.ArgumentParser(
        "subset",
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
    pipelines_options.add_switch(
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
    pipelines_options.add_switch(
        cls,
        "--validate_all",
        help="also check the embedding of clips that no tag selects (default: context only for those)",
    )
    cls.add_argument(
        "--fast_read",
        choices=("auto", "on", "off"),
        default="auto",
        help="read each shard whole and parse it with TensorFlow in one call (~4x faster per record, same "
        "outputs; a shard with anything unusual is read again record by record, as with off). auto: on "
        "when the inputs hold >= 512 MiB (below that, importing TensorFlow in each worker costs about what "
        "it saves) or TensorFlow is already imported. Labels from --segments_csv always read record by record",
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
    pipelines_options.add_switch(
        bal,
        "--drop_leakage",
        help="drop clips whose video id is tagged in an earlier --split from later splits",
    )
    logs.add_logging_flags(parser)
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
        self.fast_read = args.fast_read
        self.input_bytes = 0  # total size of the matched input shards (set by resolve_inputs)
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
