"""Dataset stage 0, options: the `gunshot dataset` command line and the resolved, picklable Config."""

from __future__ import annotations

import argparse
import dataclasses
import re

from gunshot_core import arguments, logs, params, precision
from gunshot_core import options as gunshot_options
from gunshot_core.errors import InputError
from pipelines import options
from pipelines.dataset import planning
from pipelines.scoring import config, embed

DEFAULT_SPLITS = (("train", 0.8), ("eval", 0.2))
ANNOTATED = "annotated"
"""--fully_annotated keyword: every recording an annotation file covers (the default)."""

DESCRIPTION = (
    "Builds a training set of AudioSet-format records (VGGish; with --embedding_model birdnet, records of "
    "BirdNET float frames) from annotated recordings."
)

EPILOG = """\
Every annotation row ends as an example or as a row of the errors table with the reason
(non_numeric, end_before_start, missing_recording, beyond_end, ignored, ...); the job never stops
on one bad file. Labels are matched case-insensitively; labels that are neither --positive nor
--negative are counted in stats.json and get an `ignored` row. Any other --flag is passed to
Apache Beam (e.g. --runner DataflowRunner, --project, --direct_num_workers).

Outputs in --output: <split>/examples-SSSSS-of-NNNNN.tfrecord (AudioSet SequenceExamples: video_id =
the recording, start/end = the window), examples-*.parquet (one row per record, with its tag; the
table training.transform joins the records to), errors-*.parquet, stats.json.
Train on it:  gunshot transform --train OUT/train --eval OUT/eval --output tft/
"""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the dataset job's DoFns need (small and picklable).

    Attributes:
      plan: window planning settings (window size, labels, shifts, background rate, seed).
      label_column: Raven/CSV label column, or None for the readers' defaults.
      fully_annotated: fnmatch globs of recordings declared fully annotated; ANNOTATED stands for
        every recording an annotation file covers.
      group_pattern: regex searched in the source; its first group (else the whole match) is the
        group. None: the folder of the recording.
      splits: ((name, fraction), ...), fractions summing to 1.
      seed: seed of split assignment and sampling.
      num_shards: TFRecord files per split.
      embedding_model, embedding_hop_seconds: the embedding model of the frames and its hop (None:
        the model's default); see `model`.
    """

    plan: planning.PlanConfig
    label_column: str | None = None
    fully_annotated: tuple[str, ...] = (ANNOTATED,)
    group_pattern: str | None = None
    splits: tuple[tuple[str, float], ...] = DEFAULT_SPLITS
    seed: int = 0
    num_shards: int = 1
    embedding_model: str = "vggish"
    embedding_hop_seconds: float | None = None

    @property
    def model(self):
        """The gunshot_core.embedding_models.EmbeddingModel the examples' frames come from."""
        from gunshot_core import embedding_models

        return embedding_models.get(self.embedding_model, hop_seconds=self.embedding_hop_seconds)


def _split_value(text: str) -> tuple[str, float]:
    name, sep, fraction = text.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise argparse.ArgumentTypeError(f"--split wants NAME=FRACTION (e.g. train=0.7), got {text!r}")
    try:
        value = float(fraction)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split fraction must be a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"--split fraction must be in (0, 1], got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "dataset",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io_group = parser.add_argument_group("inputs and outputs")
    io_group.add_argument(
        "--audio",
        action="append",
        default=[],
        help="recordings, as `gunshot batch --input` takes them: file, folder, glob (** recurses), "
        "zip/tar archive or gs:// path; repeatable",
    )
    io_group.add_argument(
        "--audio_list",
        action="append",
        default=[],
        help="text file (local or gs://) with one --audio per line",
    )
    io_group.add_argument(
        "--embeddings",
        metavar="DIR",
        help="instead of --audio: the output folder of a `gunshot batch --write_embeddings` run; its "
        "embeddings and recordings tables are read and no audio is decoded (the examples are "
        "identical to those built from the audio with the same models); the embedding model and "
        "its hop are the table's",
    )
    io_group.add_argument(
        "--annotations",
        action="append",
        default=[],
        required=True,
        help="annotation files: Raven selection tables (.txt), Audacity label files (.txt) or CSV "
        "(file,start_seconds,end_seconds,label); a folder is searched recursively for .txt and .csv; "
        "globs and gs:// work; repeatable",
    )
    io_group.add_argument("--output", required=True, help="output folder (local or gs://)")
    labels = parser.add_argument_group("labels")
    labels.add_argument(
        "--positive",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL",
        help="annotation labels made gunshot examples (case-insensitive; default: gunshot)",
    )
    labels.add_argument(
        "--negative",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL",
        help="annotation labels made no_gunshot examples (confusers: door, thunder, speech, ...)",
    )
    labels.add_argument(
        "--label_column",
        help="label column of Raven tables and CSV files (Raven default: the first of Annotation, Label, "
        "Species, Class, Sound Type, Call Type, Tag; CSV default: label)",
    )
    windows = parser.add_argument_group("windows")
    windows.add_argument(
        "--head",
        help="a trained head directory whose card gives the window size in frames (default: the "
        f"original heads' {params.HEAD_FRAMES} frames of 0.96 s)",
    )
    windows.add_argument(
        "--window_frames",
        type=int,
        help="window size in frames, one per embedding hop (VGGish 0.96 s; BirdNET 3 s frames every "
        "--embedding_hop_seconds) (overrides --head)",
    )
    windows.add_argument(
        "--positive_shifts",
        type=int,
        default=0,
        metavar="N",
        help="also write up to N copies of each positive window shifted by whole frames, each still "
        "holding the whole event, picked by a seeded hash (%(default)s)",
    )
    windows.add_argument(
        "--negatives_per_hour",
        type=float,
        default=60.0,
        help="background windows (overlapping no annotation) per hour of fully annotated audio (%(default)s)",
    )
    windows.add_argument(
        "--fully_annotated",
        action="append",
        default=[],
        metavar="GLOB",
        help="recordings declared fully annotated, so background windows may be drawn from them: "
        f"fnmatch globs on the recording path, or '{ANNOTATED}' for every recording an annotation file "
        f"covers (default: {ANNOTATED}); 'none' draws no background; repeatable",
    )
    split = parser.add_argument_group("splits")
    split.add_argument(
        "--group_pattern",
        metavar="REGEX",
        help="regex searched in each recording's path; its first group (else the match) is the "
        "recording's group, e.g. 'field/([^/]+)/' for a site folder. Whole groups go to one split. "
        "Default: the folder the recording is in",
    )
    split.add_argument(
        "--split",
        action="append",
        type=_split_value,
        default=[],
        metavar="NAME=FRACTION",
        help="a split and its share of the groups, repeatable (default: train=0.8 eval=0.2). Groups are "
        "ordered by a seeded hash and dealt out by these fractions",
    )
    split.add_argument(
        "--seed", type=int, default=0, help="seed of the split, shift and background draws (%(default)s)"
    )
    perf = parser.add_argument_group("decoding and performance (as gunshot batch)")
    gunshot_options.add_embedding_model_arguments(perf)
    gunshot_options.add_vggish_arguments(
        perf,
        precision_default=None,
        precision_default_help="fp32 with --audio, the table's with --embeddings",
    )
    gunshot_options.add_resampler_argument(perf, "keep the one the recordings are scored with")
    config.add_decoding_arguments(perf)
    perf.add_argument("--num_shards", type=int, default=1, help="TFRecord files per split (%(default)s)")
    logs.add_logging_flags(parser)
    return parser


def dataset_precision(args) -> str:
    """The precision of the dataset's frames: --precision (default fp32) when embedding --audio; the
    table's with --embeddings, which must hold one precision and agree with an explicit --precision.

    Raises:
      PrecisionError: precisions would be mixed, or the runtime is missing.
    """
    if not args.embeddings:
        return precision.resolve(args.precision)
    from pipelines.dataset import recordings
    from pipelines.scoring import provenance

    found = provenance.table_precisions(recordings._table_files(args.embeddings, "embeddings"))
    if len(found) > 1:
        raise precision.PrecisionError(
            f"--embeddings {args.embeddings}: the table holds embeddings of precisions {', '.join(sorted(found))};"
            f" a dataset takes one precision's frames (see {precision.DOCS})"
        )
    ours = found.pop() if found else precision.DEFAULT_PRECISION
    if args.precision is not None and precision.resolve(args.precision) != ours:
        raise precision.PrecisionError(
            f"--precision {args.precision} differs from the {ours} embeddings in {args.embeddings}; "
            f"pass --precision {ours} or leave it out"
        )
    return ours


def dataset_model(args):
    """The embedding model of the dataset's frames: --embedding_model/--embedding_hop_seconds with
    --audio; with --embeddings the table's model and hop, which an explicit non-default
    --embedding_model or --embedding_hop_seconds must agree with.

    Raises:
      EmbeddingModelError: unknown model or hop, or flags that contradict the table.
    """
    from gunshot_core import embedding_models
    from gunshot_core.errors import EmbeddingModelError

    if not args.embeddings:
        model = embedding_models.get(args.embedding_model, hop_seconds=args.embedding_hop_seconds)
        if not model.is_default:
            model.file_paths()  # at launch: a missing extra is one line, not a worker's traceback
        return model
    from pipelines.dataset import recordings
    from pipelines.io import embeddings_table

    table = embeddings_table.inspect_table(recordings._table_files(args.embeddings, "embeddings"))
    if len(table.embedding_model) > 1 or len(table.embedding_hop_seconds) > 1:
        raise EmbeddingModelError(
            f"--embeddings {args.embeddings}: the table holds frames of "
            f"{' and '.join(table.embedding_model)} (hops {list(table.embedding_hop_seconds)}); a dataset "
            "takes one model's frames"
        )
    model = table.model()
    if args.embedding_model not in (embedding_models.DEFAULT, model.name) or (
        args.embedding_hop_seconds is not None and args.embedding_hop_seconds != model.hop_seconds
    ):
        raise EmbeddingModelError(
            f"--embedding_model {args.embedding_model} --embedding_hop_seconds {args.embedding_hop_seconds}: "
            f"the frames in {args.embeddings} are {model.name} embeddings every {model.hop_seconds:g} s; "
            "leave --embedding_model and --embedding_hop_seconds out"
        )
    return model


def parse_known_args(argv):
    """(args, beam_args); exits with a message on bad flags."""
    parser = build_parser()
    args, beam_args = options.split_args(parser, argv)
    if bool(args.audio or args.audio_list) == bool(args.embeddings):
        parser.error("give --audio (or --audio_list) or --embeddings, not both and not neither")
    if args.window_frames is not None and args.window_frames < 1:
        parser.error(f"--window_frames must be >= 1, got {args.window_frames}")
    if args.positive_shifts < 0:
        parser.error(f"--positive_shifts must be >= 0, got {args.positive_shifts}")
    if args.negatives_per_hour < 0:
        parser.error(f"--negatives_per_hour must be >= 0, got {args.negatives_per_hour}")
    if args.num_shards < 1 or args.batch_size < 1:
        parser.error("--num_shards and --batch_size must be >= 1")
    if not args.chunk_seconds > 1:
        parser.error(f"--chunk_seconds must be > 1, got {args.chunk_seconds}")
    if args.group_pattern:
        try:
            re.compile(args.group_pattern)
        except re.error as e:
            parser.error(f"--group_pattern {args.group_pattern!r} is not a regex: {e}")
    try:
        args.model = dataset_model(args)
        args.precision_used = args.model.check_precision(args.precision, dataset_precision(args))
    except FileNotFoundError as e:  # a missing input, not a usage error: one line, status 2
        raise InputError(str(e)) from None
    splits = args.split or list(DEFAULT_SPLITS)
    names = [n for n, _ in splits]
    if len(set(names)) != len(names):
        parser.error(f"--split names must differ, got {names}")
    total = sum(f for _, f in splits)
    if abs(total - 1.0) > 1e-6:
        parser.error(f"--split fractions must sum to 1, got {total:g} ({splits})")
    args.split = splits
    positive = {label.strip().lower() for label in args.positive} or {"gunshot"}
    negative = {label.strip().lower() for label in args.negative}
    if positive & negative:
        parser.error(f"labels both --positive and --negative: {sorted(positive & negative)}")
    args.positive, args.negative = sorted(positive), sorted(negative)
    return args, beam_args


def window_frames(args) -> int:
    """Frames per example: --window_frames, else the head card's input size, else 10."""
    if args.window_frames:
        return int(args.window_frames)
    if args.head and not args.head.lower().endswith((".h5", ".hdf5")):  # original heads: 10 frames
        from gunshot_core import heads

        card = heads.read_card(embed.localize(args.head))
        model = _model_of(args)
        if card.embedding_model != model.name:
            from gunshot_core.errors import EmbeddingModelMismatchError

            raise EmbeddingModelMismatchError(
                f"--head {args.head} was trained on {card.embedding_model} frames but the dataset's frames are "
                f"{model.name}: pass --embedding_model {card.embedding_model}, or --window_frames instead of --head"
            )
        return int(card.frames or card.pad_to_frames or params.HEAD_FRAMES)
    return params.HEAD_FRAMES


def _model_of(args):
    """The model `parse_known_args` resolved (args built otherwise: their flags, default VGGish)."""
    from gunshot_core import embedding_models

    model = getattr(args, "model", None)
    if model is None:
        model = embedding_models.get(
            getattr(args, "embedding_model", None), hop_seconds=getattr(args, "embedding_hop_seconds", None)
        )
    return model


def make_config(args) -> Config:
    fully = tuple(args.fully_annotated) or (ANNOTATED,)
    if fully == ("none",):
        fully = ()
    model = _model_of(args)
    plan = planning.PlanConfig(
        window_frames=window_frames(args),
        positive=frozenset(args.positive),
        negative=frozenset(args.negative),
        positive_shifts=args.positive_shifts,
        negatives_per_hour=args.negatives_per_hour,
        seed=args.seed,
        frame_seconds=model.frame_seconds,
        hop_seconds=model.hop_seconds,
    )
    return Config(
        plan=plan,
        label_column=args.label_column,
        fully_annotated=fully,
        group_pattern=args.group_pattern,
        splits=tuple((n, float(f)) for n, f in args.split),
        seed=args.seed,
        num_shards=args.num_shards,
        embedding_model=model.name,
        embedding_hop_seconds=None if model.is_default else model.hop_seconds,
    )


def scoring_config(args) -> config.ScoringConfig:
    """The scoring pipeline's decode/embed settings, for embedding recordings exactly as it does."""
    from gunshot_core import models

    model = _model_of(args)
    if model.is_default:
        paths = models.resolve_model_paths(args.checkpoint, args.pca, None)
        checkpoint, pca, head = paths.checkpoint, paths.pca, paths.head
    else:  # the model's own files (checked when a worker loads it); its default head is not used
        checkpoint, pca, head = "", "", model.default_head
    batch_size = args.batch_size
    if batch_size == config.DEFAULT_BATCH_SIZE:  # not given: the model's own batch
        batch_size = model.batch_inputs
    return config.ScoringConfig(
        checkpoint=checkpoint,
        pca=pca,
        head=head,
        embedding_model=model.name,
        embedding_hop_seconds=None if model.is_default else model.hop_seconds,
        batch_size=batch_size,
        chunk_seconds=args.chunk_seconds,
        split_seconds=args.split_seconds,
        archive_part_bytes=int(args.archive_part_mb * (1 << 20)),
        resampler=args.resampler,
        precision=args.precision_used,
    )
