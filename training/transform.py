"""Analyses a training subset with tf.Transform and writes transformed train/eval data + transform_fn.

    python -m training.transform --train 'DIR/train*' --eval 'DIR/eval*' --tags 'DIR/tagged*.parquet' \\
        --output TDIR [Beam options, e.g. --runner DataflowRunner ...]
    python -m training.transform --train dataset/train --train_weight 0.7 \\
        --train 'subset/train*' --train_weight 0.3 --eval dataset/eval --output TDIR

Several `--train` sources are mixed with weights: every training clip gets a per-example `weight`
so that the clips of source i sum to (W_i / sum W) * N (N clips in all, mean weight 1), whatever
the sources' sizes; the counts n_i are taken inside the pipeline. Without weights every clip
weighs 1. Evaluation clips always weigh 1.

The records' embedding model (VGGish's AudioSet format, or the model named in the records' context,
e.g. BirdNET's 1024 floats per frame) sets the frame width; it is recorded in transform_info.json,
and `gunshot train` / `evaluate` read it from there.

The analysis runs on the training split only: per-dimension mean and standard deviation of the
embedding values over the real (unpadded) frames, and the vocabulary of tags with their counts. Both
splits are transformed with the same `transform_fn`. Output layout:

    TDIR/transform_fn/, TDIR/transformed_metadata/   tf.Transform output (tft.TFTransformOutput(TDIR))
    TDIR/transformed/train-*.tfrecord.gz, eval-*    tf.train.Example, features in training.data
    TDIR/errors/{train,eval}-00000-of-00001.jsonl   one JSON line per unusable record
    TDIR/transform_info.json                        frames, tag counts, frame statistics, options,
                                                    train sources with their weights and clip counts
"""

import gzip
import json
import logging
import os
import sys

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from gunshot_core import arguments, embedding_models, logs, params, records, startup
from gunshot_core.errors import InputError
from pipelines import options as pipelines_options
from pipelines.io import counters, launch, sharded
from training import data

RAW = "raw_frames"  # raw input feature: float32 [frames * d] frames as stored, zero-padded
SOURCE = "source_index"  # raw input feature: int64, index of the --train source of the clip
TAG_VOCABULARY = "tags"
INFO_FILE = "transform_info.json"
SOURCES_DIR = "sources"  # TDIR/sources/train-00000-of-00001.jsonl: clips per --train source


def raw_feature_spec(num_frames: int, width: int = params.EMBEDDING_SIZE) -> dict:
    """The feature spec of the instance dicts fed to tf.Transform (`width` values per frame)."""
    return {
        RAW: tf.io.FixedLenFeature([num_frames * width], tf.float32),
        data.NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        data.TAG: tf.io.FixedLenFeature([], tf.string),
        data.VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
        data.START_TIME: tf.io.FixedLenFeature([], tf.float32),
        data.CLASS_IDS: tf.io.VarLenFeature(tf.int64),
        data.WEIGHT: tf.io.FixedLenFeature([], tf.float32),
    }


def make_preprocessing_fn(num_frames: int, positive_tag: str, width: int = params.EMBEDDING_SIZE):
    """Returns the tf.Transform preprocessing_fn for clips of `num_frames` frames of `width` values.

    Outputs `frames` (float32 [num_frames * width]): (x - mean) / std per embedding dimension, with
    mean and std over the real frames of the training split (a dimension with zero variance keeps
    std 1); padding frames are raw zeros scaled the same way, exactly as a served head sees them.
    """

    def preprocessing_fn(inputs):
        x = tf.cast(tf.reshape(inputs[RAW], [-1, num_frames, width]), tf.float64)
        valid = tf.sequence_mask(tf.minimum(inputs[data.NUM_FRAMES], num_frames), num_frames, tf.float64)
        valid = valid[:, :, tf.newaxis]
        # Sums in float64 so that E[x^2] - E[x]^2 stays exact at archive scale.
        total = tft.sum(tf.reduce_sum(x * valid, axis=1), reduce_instance_dims=False, name="frame_sum")
        squares = tft.sum(tf.reduce_sum(x * x * valid, axis=1), reduce_instance_dims=False, name="frame_sq")
        count = tft.sum(tf.reduce_sum(valid[:, :, 0], axis=1), name="frame_count")
        count = tf.maximum(count, 1.0)
        mean = total / count
        std = tf.sqrt(tf.maximum(squares / count - mean * mean, 0.0))
        std = tf.where(std > 0, std, tf.ones_like(std))
        scaled = tf.cast((x - mean) / std, tf.float32)
        tag = inputs[data.TAG]
        tft.vocabulary(tag, vocab_filename=TAG_VOCABULARY + "_counts", store_frequency=True)
        return {
            data.FRAMES: tf.reshape(scaled, [-1, num_frames * width]),
            data.NUM_FRAMES: inputs[data.NUM_FRAMES],
            data.LABEL: tf.cast(tf.equal(tag, positive_tag), tf.int64),
            data.TAG: tag,
            data.TAG_ID: tft.compute_and_apply_vocabulary(tag, vocab_filename=TAG_VOCABULARY),
            data.VIDEO_ID: inputs[data.VIDEO_ID],
            data.START_TIME: inputs[data.START_TIME],
            data.CLASS_IDS: inputs[data.CLASS_IDS],
            data.WEIGHT: inputs[data.WEIGHT],  # mixing weight, unchanged
        }

    return preprocessing_fn


class DecodeClipFn(beam.DoFn):
    """TFRecord file path -> tf.Transform instance dicts; unusable records and slots to 'errors'.

    Errors are JSON strings {"source", "reason", "message"}; each reason has its own counter.
    """

    def __init__(
        self,
        split: str,
        num_frames: int,
        tags_pattern: str | None,
        source_index: int = 0,
        embedding_model: str = records.DEFAULT_EMBEDDING_MODEL,
    ):
        self._split = split
        self._embedding_model = embedding_model
        self._source_index = source_index
        self._num_frames = num_frames
        self._tags_pattern = tags_pattern
        self._clips = Metrics.counter(self.__class__, f"{split}_clips")
        self._errors = {}
        self._tags = None

    def setup(self):
        self._tags = data.load_tag_table(self._tags_pattern) if self._tags_pattern else {}

    def _error(self, source: str, reason: str, message: str):
        if reason not in self._errors:
            self._errors[reason] = Metrics.counter(self.__class__, f"{self._split}_{reason}")
        self._errors[reason].inc()
        logging.warning("%s record %s unusable (%s): %s", self._split, source, reason, message)
        row = {"split": self._split, "source": source, "reason": reason, "message": message}
        return beam.pvalue.TaggedOutput("errors", json.dumps(row, sort_keys=True))

    def process(self, path: str):
        for source, serialized, reason, detail in data.read_file_records(path):
            if serialized is None:
                yield self._error(source, reason, detail)
            else:
                yield from self._decode(source, serialized)

    def _decode(self, source: str, serialized: bytes):
        try:
            clip = data.decode_clip(serialized)
        except records.RecordError as e:
            yield self._error(source, e.reason, str(e))
            return
        if clip.embedding_model != self._embedding_model:
            yield self._error(
                source,
                "embedding_model_mismatch",
                f"clip frames are {clip.embedding_model} frames, the transform's are {self._embedding_model}",
            )
            return
        key = data.clip_key(clip.video_id, clip.start_time)
        tag = self._tags.get(key)
        if tag is None:
            yield self._error(source, "untagged", f"clip {key} is not in the tag table")
            return
        self._clips.inc()
        yield {
            RAW: data.pad_frames(clip.frames, self._num_frames).reshape(-1),
            data.NUM_FRAMES: int(clip.frames.shape[0]),
            data.TAG: tag.encode("utf-8"),
            data.VIDEO_ID: clip.video_id.encode("utf-8"),
            data.START_TIME: float(clip.start_time),
            data.CLASS_IDS: list(clip.class_ids),
            data.WEIGHT: 1.0,  # the training split's mixing weight is set by MixingWeightFn
            SOURCE: self._source_index,
        }


def mixing_weights(weights: list[float] | None, counts: dict[int, int]) -> dict[int, float]:
    """Per-clip weight of each source: (W_i / sum W) * N / n_i, N = sum n_i (mean weight 1).

    Args:
      weights: the sources' mixing weights W_i (> 0), in --train order; None (no --train_weight):
        every clip weighs 1, so the sources count in proportion to their sizes.
      counts: {source index: clips n_i}; a source without clips is absent.
    Returns:
      {source index: weight of each of its clips}.
    """
    if weights is None:
        return {i: 1.0 for i in counts}
    total_clips = sum(counts.values())
    total_weight = sum(weights[i] for i in counts)
    return {i: weights[i] / total_weight * total_clips / n for i, n in counts.items()}


class MixingWeightFn(beam.DoFn):
    """Sets a training clip's `weight` from its source's clip count (side input {source: n_i})."""

    def __init__(self, weights: list[float] | None):
        self._weights = None if weights is None else list(weights)

    def process(self, instance: dict, counts: dict):
        out = dict(instance)
        out[data.WEIGHT] = mixing_weights(self._weights, dict(counts))[out.pop(SOURCE)]
        yield out


def _drop_source(instance: dict) -> dict:
    out = dict(instance)
    out.pop(SOURCE, None)
    return out


def _source_of(instance: dict) -> int:
    return instance[SOURCE]


def _count_line(element) -> str:
    source, count = element
    return json.dumps({"source_index": int(source), "clips": int(count)}, sort_keys=True)


def _split_values(values: list[str] | None) -> list[str]:
    """Repeated flag values, each possibly holding several ';'-separated entries (template form)."""
    return [v.strip() for value in values or [] for v in value.split(";") if v.strip()]


def parse_known_args(argv):
    parser = arguments.ArgumentParser(
        "transform",
        description="tf.Transform analysis of a training subset; transforms train and eval with it.",
        epilog="Any other --flag is passed to Apache Beam (e.g. --runner DataflowRunner, --project, --region, "
        "--temp_location, --setup_file ./setup.py).",
    )
    parser.add_argument(
        "--train",
        required=True,
        action="append",
        help="glob of the training TFRecords (a subset or a dataset builder's train split); commas join "
        "globs into one source. Repeat --train to mix sources (one value may also hold several "
        "sources separated by ';', as a template parameter does)",
    )
    parser.add_argument(
        "--train_weight",
        action="append",
        help="mixing weight (> 0) of each --train source, one per --train in the same order (or one "
        "';'-separated value): source i's clips together weigh W_i / sum(W) of the training data, "
        "whatever its size. Default: every clip weighs 1 (sources in proportion to their sizes)",
    )
    parser.add_argument("--eval", help="glob of the evaluation subset TFRecords (optional)")
    parser.add_argument(
        "--tags",
        help="glob of the tag table(s) for every split (default: per --train source, the tagged-*.parquet "
        "or examples-*.parquet of the directory its files are in)",
    )
    parser.add_argument("--output", required=True, help="output directory TDIR (local or gs://)")
    parser.add_argument(
        "--positive_tag", default=data.POSITIVE_TAG, help="tag labelled 1 (default %(default)s)"
    )
    parser.add_argument(
        "--frames",
        type=int,
        help=f"frames per clip after zero-padding/truncation (default: {params.HEAD_FRAMES} = 10 s clips for "
        "VGGish records; for other models' records the longest clip among the first records, so clips "
        "are not padded: a zero BirdNET embedding is not silence)",
    )
    parser.add_argument(
        "--num_shards",
        type=int,
        default=4,
        help="files per transformed split (%(default)s); clips are assigned by a stable hash of their key "
        "and sorted, so reruns write identical files",
    )
    logs.add_logging_flags(parser)
    args, beam_args = pipelines_options.split_args(parser, argv)
    if (args.frames is not None and args.frames < 1) or args.num_shards < 1:
        parser.error(f"--frames and --num_shards must be >= 1, got {args.frames}, {args.num_shards}")
    args.train = _split_values(args.train)
    if not args.train:
        parser.error("--train needs at least one glob")
    if args.train_weight is not None:
        texts = _split_values(args.train_weight)
        if len(texts) != len(args.train):
            parser.error(
                f"--train_weight: {len(texts)} weight(s) for {len(args.train)} --train source(s); "
                "give one weight per --train, in the same order"
            )
        try:
            args.train_weight = [float(t) for t in texts]
        except ValueError:
            parser.error(f"--train_weight takes numbers, got {texts}")
        bad = [w for w in args.train_weight if not (w > 0 and np.isfinite(w))]
        if bad:
            parser.error(f"--train_weight must be finite and > 0, got {bad}")
    try:
        # One tag table per source (a field dataset and an AudioSet subset each have their own);
        # --tags overrides them all. The eval split uses every table found.
        args.train_tags = [args.tags or data.find_tag_table(t) for t in args.train]
        args.tags = args.tags or ",".join(dict.fromkeys(args.train_tags))
    except FileNotFoundError as e:  # an input, not a flag: one line (gunshot_core.cli), no usage
        raise InputError(
            f"--train: {e}; give the TFRecords written by `gunshot subset` or `gunshot dataset`"
        ) from e
    args.embedding_model, args.embedding_hop_seconds, longest = records_embedding_model(
        args.train + ([args.eval] if args.eval else [])
    )
    if args.frames is None:
        vggish = args.embedding_model == records.DEFAULT_EMBEDDING_MODEL
        args.frames = params.HEAD_FRAMES if vggish or not longest else longest
    return args, beam_args


def records_embedding_model(patterns: list[str]) -> tuple[str, float | None, int]:
    """The embedding model (and hop) of the records, from the first readable records of each pattern.

    Records of VGGish (the AudioSet format) name no model; records of other models carry it in their
    context (gunshot_core.records.encode_embedding_record).

    Returns:
      (model name, hop seconds or None, most frames in one of the records read).
    Raises:
      InputError: two sources hold frames of different embedding models.
    """
    found, longest = {}, 0
    for pattern in patterns:
        for _, payload, _, _ in _first_records(pattern):
            try:
                context, frames = records.validate_record(payload)
            except records.RecordError:
                continue
            found.setdefault(pattern, (context.embedding_model, context.hop_seconds))
            longest = max(longest, frames)
    models = sorted({model for model, _ in found.values()})
    if len(models) > 1:
        detail = ", ".join(f"{p!r}: {m}" for p, (m, _) in found.items())
        raise InputError(
            f"the records hold frames of different embedding models ({detail}); transform one model's "
            "records at a time"
        )
    if not found:
        return records.DEFAULT_EMBEDDING_MODEL, None, longest
    return (*next(iter(found.values())), longest)


def _first_records(pattern: str, limit: int = 16):
    """Up to `limit` good record payloads from the first files of `pattern`."""
    count = 0
    for path in data.match_files(pattern):
        for slot in data.read_file_records(path):
            if slot[1] is not None:
                yield slot
                count += 1
                if count >= limit:
                    return


def _key_of(element):
    return element[0]


def _identity(element):
    return element


def _write_examples(handle, elements):
    """Writes sorted (clip key, serialized Example) pairs as one gzip TFRecord file (fixed gzip header)."""
    with gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as compressed:
        records.write_tfrecords(compressed, (payload for _, payload in elements))


def _write_lines(handle, lines):
    handle.write("".join(line + "\n" for line in lines).encode("utf-8"))


class _KeyExample:
    """Transformed instance dict -> (clip key, serialized tf.train.Example)."""

    def __init__(self, schema):
        self._coder = tft.coders.ExampleProtoCoder(schema)

    def __call__(self, instance):
        video_id = instance[data.VIDEO_ID]
        video_id = video_id.decode("utf-8") if isinstance(video_id, bytes) else str(video_id)
        return data.clip_key(video_id, float(instance[data.START_TIME])), self._coder.encode(instance)


def _write_split(pcoll, output: str, split: str, metadata, num_shards: int):
    """Writes a split's transformed examples into `num_shards` files; same inputs, same bytes."""
    title = split.title()
    return (
        pcoll
        | f"Encode{title}" >> beam.Map(_KeyExample(metadata.schema))
        | f"Write{title}"
        >> sharded.WriteSharded(
            os.path.join(output, "transformed", split),
            num_shards,
            ".tfrecord.gz",
            _write_examples,
            sort_key=_identity,
            shard_key=_key_of,
        )
    )


def run(argv=None, save_main_session=True, test_pipeline=None):
    """Builds and runs the transform pipeline; returns the PipelineResult."""
    args, beam_args = parse_known_args(argv)
    options = PipelineOptions(beam_args, save_main_session=save_main_session)
    width = embedding_models.get(args.embedding_model).embedding_size
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(raw_feature_spec(args.frames, width))
    )
    preprocessing_fn = make_preprocessing_fn(args.frames, args.positive_tag, width)
    temp_dir = os.path.join(args.output, "tmp")
    splits = [
        ("train", i, pattern, tags)
        for i, (pattern, tags) in enumerate(zip(args.train, args.train_tags, strict=True))
    ]
    splits += [("eval", 0, args.eval, args.tags)] if args.eval else []
    pipeline = test_pipeline or beam.Pipeline(options=options)
    with pipeline as p, tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
        clips, errors = {"train": [], "eval": []}, {"train": [], "eval": []}
        for split, index, pattern, tags in splits:
            title = split.title() + (str(index) if index else "")
            files = data.match_files(pattern)
            if not files:
                raise FileNotFoundError(f"--{split} {pattern!r} matches no file")
            logging.info("%s: %d files from %r (tags %r)", split, len(files), pattern, tags)
            decoded = (
                p
                | f"Match{title}" >> beam.Create(files)
                | f"Reshuffle{title}" >> beam.Reshuffle()  # spread the files over workers
                | f"Decode{title}"
                >> beam.ParDo(
                    DecodeClipFn(split, args.frames, tags, index, args.embedding_model)
                ).with_outputs("errors", main="clips")
            )
            clips[split].append(decoded.clips)
            errors[split].append(decoded.errors)
        for split in ("train", "eval") if args.eval else ("train",):
            title = split.title()
            split_errors = (
                errors[split][0]
                if len(errors[split]) == 1
                else (errors[split] | f"MergeErrors{title}" >> beam.Flatten())
            )
            split_errors | f"WriteErrors{title}" >> sharded.WriteSharded(
                os.path.join(args.output, "errors", split), 1, ".jsonl", _write_lines, sort_key=_identity
            )
        train_clips = (
            clips["train"][0]
            if len(clips["train"]) == 1
            else (clips["train"] | "MergeTrainSources" >> beam.Flatten())
        )
        # Clips per source, counted in the pipeline, turn the mixing weights into per-clip weights.
        source_counts = (
            train_clips
            | "SourceOf" >> beam.Map(_source_of)
            | "CountPerSource" >> beam.combiners.Count.PerElement()
        )
        (
            source_counts
            | "SourceCountJson" >> beam.Map(_count_line)
            | "WriteSourceCounts"
            >> sharded.WriteSharded(
                os.path.join(args.output, SOURCES_DIR, "train"), 1, ".jsonl", _write_lines, sort_key=_identity
            )
        )
        train_clips = train_clips | "MixingWeight" >> beam.ParDo(
            MixingWeightFn(args.train_weight), beam.pvalue.AsDict(source_counts)
        )
        decoded = {"train": train_clips}
        if args.eval:
            decoded["eval"] = clips["eval"][0] | "EvalWeight" >> beam.Map(_drop_source)
        (train, transformed_metadata), transform_fn = (
            decoded["train"],
            metadata,
        ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _write_split(train, args.output, "train", transformed_metadata, args.num_shards)
        if args.eval:
            (evaluation, _) = (
                (decoded["eval"], metadata),
                transform_fn,
            ) | "TransformEval" >> tft_beam.TransformDataset()
            _write_split(evaluation, args.output, "eval", transformed_metadata, args.num_shards)
        transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(args.output)
    result = p.result if hasattr(p, "result") else None
    if result is not None and launch.job_detached(result, p.options):  # template launch, dry run, no-wait
        launch.log_detached(result, p.options, "transform")
        return result
    if result is not None:
        counters.log_counters(result)  # clips and unusable records per split and reason
    write_info(args)
    if tf.io.gfile.exists(temp_dir):
        tf.io.gfile.rmtree(temp_dir)
    return result


def frame_statistics(
    transform_dir: str, num_frames: int, width: int = params.EMBEDDING_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Reads the analysed per-dimension mean and std back out of a transform_fn.

    The transform is affine per dimension, scaled = (x - mean) / std, so two probes (all-zero and
    all-256 raw frames, far apart for float32 accuracy) determine it: std = 256 / (s256 - s0),
    mean = -s0 * std.

    Returns:
      (mean, std), float64 [width] each (width: values per frame, 128 for VGGish).
    """
    output = tft.TFTransformOutput(transform_dir)

    def probe(value):
        features = {
            RAW: tf.fill([1, num_frames * width], tf.constant(value, tf.float32)),
            data.NUM_FRAMES: tf.constant([num_frames], tf.int64),
            data.TAG: tf.constant([b""]),
            data.VIDEO_ID: tf.constant([b""]),
            data.START_TIME: tf.constant([0.0]),
            data.CLASS_IDS: tf.sparse.from_dense(tf.zeros([1, 0], tf.int64)),
            data.WEIGHT: tf.constant([1.0]),
        }
        out = output.transform_raw_features(features)[data.FRAMES].numpy()
        return out.reshape(num_frames, width)[0].astype(np.float64)

    s0, s256 = probe(0.0), probe(256.0)
    std = 256.0 / (s256 - s0)
    return -s0 * std, std


def read_info(transform_dir: str) -> dict:
    """The transform_info.json of a transform output directory.

    Raises:
      InputError: the folder holds no transform output (missing folder, or not TDIR).
    """
    path = os.path.join(transform_dir, INFO_FILE)
    if not tf.io.gfile.exists(path):
        what = "does not exist" if not tf.io.gfile.exists(transform_dir) else f"holds no {INFO_FILE}"
        raise InputError(
            f"--transformed {transform_dir} {what}: it must be the --output folder of `gunshot transform`"
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_sources(args) -> list[dict]:
    """The --train sources with their tag tables, mixing weights, clip counts and per-clip weights."""
    counts = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(args.output, SOURCES_DIR, "train-*"))):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                row = json.loads(line)
                counts[int(row["source_index"])] = int(row["clips"])
    clip_weights = mixing_weights(args.train_weight, counts) if counts else {}
    # Without --train_weight every clip weighs 1: a source's share is its share of the clips.
    weights = args.train_weight or [counts.get(i, 0) for i in range(len(args.train))]
    total = sum(weights) or 1
    sources = []
    for i, (pattern, tags, weight) in enumerate(zip(args.train, args.train_tags, weights, strict=True)):
        if i not in counts:
            logging.warning("--train %r gave no usable clip: its weight %s is not applied", pattern, weight)
        sources.append(
            {
                "pattern": pattern,
                "tags_pattern": tags,
                "weight": args.train_weight[i] if args.train_weight else None,
                "share": weight / total,
                "clips": counts.get(i, 0),
                "clip_weight": round(clip_weights.get(i, 0.0), 9),
            }
        )
    return sources


def write_info(args) -> dict:
    """Writes TDIR/transform_info.json: options, tag counts and the frame statistics."""
    output = tft.TFTransformOutput(args.output)
    counts = {}
    with tf.io.gfile.GFile(output.vocabulary_file_by_name(TAG_VOCABULARY + "_counts")) as f:
        for line in f:
            count, _, tag = line.rstrip("\n").partition(" ")
            counts[tag] = int(count)
    model = embedding_models.get(args.embedding_model, hop_seconds=args.embedding_hop_seconds)
    mean, std = frame_statistics(args.output, args.frames, model.embedding_size)
    info = {
        "embedding_model": model.name,
        "embedding_size": model.embedding_size,
        "embedding_hop_seconds": model.hop_seconds,
        "frames": args.frames,
        "positive_tag": args.positive_tag,
        "train_pattern": ",".join(args.train),
        "train_sources": read_sources(args),
        "eval_pattern": args.eval,
        "tags_pattern": args.tags,
        "tag_vocabulary": output.vocabulary_by_name(TAG_VOCABULARY),
        "train_tag_counts": counts,
        "train_clips": sum(counts.values()),
        "frame_mean": [round(float(v), 9) for v in mean],
        "frame_std": [round(float(v), 9) for v in std],
    }
    info["tag_vocabulary"] = [t.decode() if isinstance(t, bytes) else t for t in info["tag_vocabulary"]]
    with tf.io.gfile.GFile(os.path.join(args.output, INFO_FILE), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    logging.info(
        "transform of %d training clips written to %s (tags %s)", info["train_clips"], args.output, counts
    )
    return info


if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    # A finished run ends without the interpreter's teardown; user errors: one line, status 2.
    startup.exit_process(arguments.run_program("transform", run))
