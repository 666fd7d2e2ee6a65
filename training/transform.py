"""Analyses a training subset with tf.Transform and writes transformed train/eval data + transform_fn.

    python -m training.transform --train 'DIR/train*' --eval 'DIR/eval*' --tags 'DIR/tagged*.parquet' \\
        --output TDIR [Beam options, e.g. --runner DataflowRunner ...]

The analysis runs on the training split only: per-dimension mean and standard deviation of the uint8
embedding values over the real (unpadded) frames, and the vocabulary of tags with their counts. Both
splits are transformed with the same `transform_fn`. Output layout:

    TDIR/transform_fn/, TDIR/transformed_metadata/   tf.Transform output (tft.TFTransformOutput(TDIR))
    TDIR/transformed/train-*.tfrecord.gz, eval-*    tf.train.Example, features in training.data
    TDIR/errors/{train,eval}-00000-of-00001.jsonl   one JSON line per unusable record
    TDIR/transform_info.json                        frames, tag counts, frame statistics, options
"""

import argparse
import gzip
import json
import logging
import os

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from gunshot_core import params, records
from pipelines.io import counters, launch, sharded
from training import data

RAW = "raw_frames"  # raw input feature: float32 [frames * 128], uint8 values zero-padded
TAG_VOCABULARY = "tags"
INFO_FILE = "transform_info.json"


def raw_feature_spec(num_frames: int) -> dict:
    """The feature spec of the instance dicts fed to tf.Transform."""
    return {
        RAW: tf.io.FixedLenFeature([num_frames * params.EMBEDDING_SIZE], tf.float32),
        data.NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        data.TAG: tf.io.FixedLenFeature([], tf.string),
        data.VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
        data.START_TIME: tf.io.FixedLenFeature([], tf.float32),
        data.CLASS_IDS: tf.io.VarLenFeature(tf.int64),
    }


def make_preprocessing_fn(num_frames: int, positive_tag: str):
    """Returns the tf.Transform preprocessing_fn for clips of `num_frames` frames.

    Outputs `frames` (float32 [num_frames * 128]): (x - mean) / std per embedding dimension, with
    mean and std over the real frames of the training split (a dimension with zero variance keeps
    std 1); padding frames are raw zeros scaled the same way, exactly as a served head sees them.
    """
    width = params.EMBEDDING_SIZE

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
        }

    return preprocessing_fn


class DecodeClipFn(beam.DoFn):
    """TFRecord file path -> tf.Transform instance dicts; unusable records and slots to 'errors'.

    Errors are JSON strings {"source", "reason", "message"}; each reason has its own counter.
    """

    def __init__(self, split: str, num_frames: int, tags_pattern: str | None):
        self._split = split
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
        }


def parse_known_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m training.transform",
        description="tf.Transform analysis of a training subset; transforms train and eval with it.",
        epilog="Any other --flag is passed to Apache Beam (e.g. --runner DataflowRunner, --project, --region, "
        "--temp_location, --setup_file ./setup.py).",
    )
    parser.add_argument("--train", required=True, help="glob of the training subset TFRecords")
    parser.add_argument("--eval", help="glob of the evaluation subset TFRecords (optional)")
    parser.add_argument(
        "--tags",
        help="glob of the subset builder's tagged Parquet table(s) (default: the tagged-*.parquet of the "
        "subset directory the --train files are in)",
    )
    parser.add_argument("--output", required=True, help="output directory TDIR (local or gs://)")
    parser.add_argument(
        "--positive_tag", default=data.POSITIVE_TAG, help="tag labelled 1 (default %(default)s)"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=params.HEAD_FRAMES,
        help="frames per clip after zero-padding/truncation (default %(default)s = 10 s clips)",
    )
    parser.add_argument(
        "--num_shards",
        type=int,
        default=4,
        help="files per transformed split (%(default)s); clips are assigned by a stable hash of their key "
        "and sorted, so reruns write identical files",
    )
    args, beam_args = parser.parse_known_args(argv)
    if args.frames < 1 or args.num_shards < 1:
        parser.error(f"--frames and --num_shards must be >= 1, got {args.frames}, {args.num_shards}")
    try:
        args.tags = args.tags or data.find_tag_table(args.train)
    except FileNotFoundError as e:
        parser.error(str(e))
    return args, beam_args


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
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(raw_feature_spec(args.frames))
    )
    preprocessing_fn = make_preprocessing_fn(args.frames, args.positive_tag)
    temp_dir = os.path.join(args.output, "tmp")
    splits = [("train", args.train)] + ([("eval", args.eval)] if args.eval else [])
    pipeline = test_pipeline or beam.Pipeline(options=options)
    with pipeline as p, tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
        decoded = {}
        for split, pattern in splits:
            title = split.title()
            files = data.match_files(pattern)
            if not files:
                raise FileNotFoundError(f"--{split} {pattern!r} matches no file")
            logging.info("%s: %d files from %r", split, len(files), pattern)
            decoded[split] = (
                p
                | f"Match{title}" >> beam.Create(files)
                | f"Reshuffle{title}" >> beam.Reshuffle()  # spread the files over workers
                | f"Decode{title}"
                >> beam.ParDo(DecodeClipFn(split, args.frames, args.tags)).with_outputs(
                    "errors", main="clips"
                )
            )
            decoded[split].errors | f"WriteErrors{title}" >> sharded.WriteSharded(
                os.path.join(args.output, "errors", split), 1, ".jsonl", _write_lines, sort_key=_identity
            )
        (train, transformed_metadata), transform_fn = (
            decoded["train"].clips,
            metadata,
        ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _write_split(train, args.output, "train", transformed_metadata, args.num_shards)
        if args.eval:
            (evaluation, _) = (
                (decoded["eval"].clips, metadata),
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


def frame_statistics(transform_dir: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Reads the analysed per-dimension mean and std back out of a transform_fn.

    The transform is affine per dimension, scaled = (x - mean) / std, so two probes (all-zero and
    all-256 raw frames, far apart for float32 accuracy) determine it: std = 256 / (s256 - s0),
    mean = -s0 * std.

    Returns:
      (mean, std), float64 [128] each.
    """
    output = tft.TFTransformOutput(transform_dir)
    width = params.EMBEDDING_SIZE

    def probe(value):
        features = {
            RAW: tf.fill([1, num_frames * width], tf.constant(value, tf.float32)),
            data.NUM_FRAMES: tf.constant([num_frames], tf.int64),
            data.TAG: tf.constant([b""]),
            data.VIDEO_ID: tf.constant([b""]),
            data.START_TIME: tf.constant([0.0]),
            data.CLASS_IDS: tf.sparse.from_dense(tf.zeros([1, 0], tf.int64)),
        }
        out = output.transform_raw_features(features)[data.FRAMES].numpy()
        return out.reshape(num_frames, width)[0].astype(np.float64)

    s0, s256 = probe(0.0), probe(256.0)
    std = 256.0 / (s256 - s0)
    return -s0 * std, std


def read_info(transform_dir: str) -> dict:
    """The transform_info.json of a transform output directory."""
    with tf.io.gfile.GFile(os.path.join(transform_dir, INFO_FILE)) as f:
        return json.load(f)


def write_info(args) -> dict:
    """Writes TDIR/transform_info.json: options, tag counts and the frame statistics."""
    output = tft.TFTransformOutput(args.output)
    counts = {}
    with tf.io.gfile.GFile(output.vocabulary_file_by_name(TAG_VOCABULARY + "_counts")) as f:
        for line in f:
            count, _, tag = line.rstrip("\n").partition(" ")
            counts[tag] = int(count)
    mean, std = frame_statistics(args.output, args.frames)
    info = {
        "frames": args.frames,
        "positive_tag": args.positive_tag,
        "train_pattern": args.train,
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
    logging.getLogger().setLevel(logging.INFO)
    run()
