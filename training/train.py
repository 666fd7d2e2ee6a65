"""Trains a gunshot head on the output of training.transform and writes a head artifact.

    python -m training.train --transformed TDIR --model lstm|logreg|mlp|framepool --output MDIR [options]
    python -m training.train --import_h5 HEAD.h5 --output MDIR    # original head -> artifact

MDIR receives `model.keras` (the serving model: raw uint8-valued frames in, the tf.Transform z-score
baked in as a Normalization layer) and `card.json` (gunshot_core.heads.HeadCard), plus
`history.csv` (per-epoch metrics), `logs/` (TensorBoard), `checkpoints/best.weights.h5`,
`backup/` (while a run is in progress: rerunning the same command resumes it) and `transform/`
(a copy of the transform_fn the model was trained with).
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys

import numpy as np

from gunshot_core import arguments, embedding_models, logs, params, startup
from gunshot_core.errors import GunshotError, InputError
from training import data, models

HASH_BUCKETS = 10000
VALIDATION_CHOICES = ("auto", "eval", "train", "none")
# Held-out group names listed in the log and the card (the count is always complete).
LISTED_GROUPS = 20


def parse_args(argv):
    parser = arguments.ArgumentParser(
        "train",
        description="Train a gunshot head (tf.data + Keras) on tf.Transform output; write MDIR/model.keras "
        "and MDIR/card.json. Runs are reproducible for a fixed --seed on CPU.",
    )
    parser.add_argument("--transformed", help="output directory of training.transform (TDIR)")
    parser.add_argument("--output", required=True, help="artifact directory MDIR")
    parser.add_argument(
        "--model",
        choices=models.MODELS,
        help="architecture preset (default: gunprior on BirdNET frames, i.e. BirdNET's own Gun_Gun logit "
        "plus a learned correction; lstm on VGGish frames). gunprior needs BirdNET frames",
    )
    parser.add_argument(
        "--import_h5", help="convert an original Keras 2 .h5 head into MDIR instead of training"
    )
    arch = parser.add_argument_group("architecture (defaults: the preset's)")
    arch.add_argument("--units", type=int, help="LSTM units (lstm preset: 128)")
    arch.add_argument("--layers", type=int, help="stacked LSTM layers (lstm preset: 1)")
    arch.add_argument(
        "--hidden", type=int, help="hidden units (mlp preset: 100; framepool: 32 per frame, 0 = none)"
    )
    arch.add_argument(
        "--dropout", type=float, help="dropout rate (lstm preset: 0.5, framepool 0.25, others 0)"
    )
    arch.add_argument("--no_batch_norm", action="store_true", help="drop the input batch-norm")
    arch.add_argument("--activation", help="LSTM cell / hidden activation (preset: relu)")
    arch.add_argument("--recurrent_activation", help="LSTM gate activation (preset: sigmoid)")
    arch.add_argument(
        "--l2", type=float, help="gunprior: L2 penalty on the learned correction (preset: 0.001)"
    )
    arch.add_argument(
        "--pooling",
        choices=models.POOLINGS,
        help="framepool: how frame logits become the window's: max, or attention (softmax over learned "
        "per-frame weights) (preset: max)",
    )
    fit = parser.add_argument_group("fitting")
    fit.add_argument("--epochs", type=int, default=50, help="maximum epochs (%(default)s)")
    fit.add_argument("--batch_size", type=int, default=64, help="(%(default)s)")
    fit.add_argument("--learning_rate", type=float, default=1e-3, help="Adam learning rate (%(default)s)")
    fit.add_argument(
        "--patience", type=int, default=5, help="early-stopping patience in epochs (%(default)s)"
    )
    fit.add_argument(
        "--validation",
        choices=VALIDATION_CHOICES,
        default="auto",
        help="what early stopping and the card's threshold are validated on: eval = the --eval split given "
        "to transform; train = groups held out of the training split (the `group` of a `gunshot dataset` "
        "(e.g. the site), else the video/recording); none; auto = eval when the transform has one, else "
        "train, else none with a warning (%(default)s)",
    )
    fit.add_argument(
        "--validation_fraction",
        type=float,
        default=0.1,
        help="--validation train: share of the training split's groups held out, by a hash of the group; "
        "at least one group, never all (%(default)s)",
    )
    fit.add_argument("--class_weight", choices=("balanced", "none"), default="balanced", help="(%(default)s)")
    fit.add_argument("--frames", type=int, help="frames per clip (default: the transform's, 10)")
    fit.add_argument("--shuffle_buffer", type=int, default=10000, help="(%(default)s)")
    fit.add_argument(
        "--cache",
        default="memory",
        help="cache of the parsed examples: memory, none, or a file path prefix for data larger than RAM "
        "(%(default)s)",
    )
    fit.add_argument(
        "--seed", type=int, default=0, help="seed of weights, shuffling and dropout (%(default)s)"
    )
    fit.add_argument(
        "--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras progress output (%(default)s)"
    )
    fit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the head already in MDIR (without it such an MDIR is refused) and discard an "
        "interrupted run's backup",
    )
    card = parser.add_argument_group("card")
    card.add_argument("--head_id", help="id written into the card (default: gunshot-<model>-seed<seed>)")
    card.add_argument("--vggish_sha256", help="sha256 of the VGGish checkpoint the embeddings were made with")
    card.add_argument("--pca_sha256", help="sha256 of the PCA parameters the embeddings were made with")
    logs.add_logging_flags(parser)
    args = parser.parse_args(argv)
    if not args.import_h5 and not args.transformed:
        parser.error("--transformed TDIR is required (or --import_h5 FILE)")
    if not 0.0 <= args.validation_fraction < 1.0:
        parser.error(f"--validation_fraction must be in [0, 1), got {args.validation_fraction}")
    if args.pooling and args.model not in (None, "framepool", "gunprior"):
        parser.error(f"--pooling applies to --model framepool or gunprior, not {args.model}")
    if args.l2 is not None and args.l2 < 0:
        parser.error(f"--l2 must be >= 0, got {args.l2}")
    if args.epochs < 1 or args.batch_size < 1:
        parser.error(f"--epochs and --batch_size must be >= 1, got {args.epochs}, {args.batch_size}")
    return args


def head_config(args) -> models.HeadConfig:
    """The preset of --model with the architecture flags given on the command line applied."""
    overrides = {
        k: getattr(args, k)
        for k in (
            "units",
            "layers",
            "hidden",
            "dropout",
            "activation",
            "recurrent_activation",
            "pooling",
            "l2",
        )
        if getattr(args, k) is not None
    }
    if args.no_batch_norm:
        overrides["batch_norm"] = False
    return dataclasses.replace(models.PRESETS[args.model], **overrides)


def make_dataset(
    transform_dir: str,
    split: str,
    *,
    frames: int,
    width: int = params.EMBEDDING_SIZE,
    subset: str,
    held_out: frozenset = frozenset(),
    batch_size: int,
    seed: int,
    shuffle: bool,
    shuffle_buffer: int = 10000,
    cache: str = "memory",
):
    """The tf.data pipeline over transformed examples.

    Reads the split's files in parallel (deterministic interleave), parses batches of examples,
    keeps the `subset`: "train" (the clips whose video id is not in `held_out`), "validation" (those
    whose video id is) or "all", pads or truncates to `frames`, caches, shuffles with `seed`
    (reshuffled every epoch) and prefetches. `held_out` comes from `plan_validation` (whole groups,
    so all clips of one recording or site fall on the same side; it never depends on file order).

    Returns:
      tf.data.Dataset of (float32 [batch, frames, width] z-scored frames, float32 [batch] labels), plus
      float32 [batch] mixing weights as a third element when the transformed data has `weight`
      (training.transform with --train sources; see has_example_weights).
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    files = _split_files(transform_dir, split)
    if not files:
        raise InputError(
            f"no transformed {split} data in {transform_dir}/transformed/: pass the --output folder of "
            "`gunshot transform` as --transformed"
        )
    output = tft.TFTransformOutput(transform_dir)
    spec = output.transformed_feature_spec()
    weighted = data.WEIGHT in spec and has_example_weights(transform_dir)
    spec = {
        k: spec[k] for k in (data.FRAMES, data.LABEL, data.VIDEO_ID) + ((data.WEIGHT,) if weighted else ())
    }
    stored = spec[data.FRAMES].shape[0] // width
    # A raw zero frame after the z-score: the padding value a served head sees for missing frames.
    pad_frame = tf.constant(_zero_frame(transform_dir, stored, width), tf.float32)
    # Membership by comparison with the sorted held-out ids: stateless, so tf.data keeps the parse
    # map parallel (a lookup table is a resource its optimiser handles less well).
    held_out_ids = tf.constant(sorted(held_out), tf.string, shape=[len(held_out)])

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        x = tf.reshape(ex[data.FRAMES], [-1, stored, width])
        if frames < stored:
            x = x[:, :frames]
        elif frames > stored:
            pad = tf.tile(pad_frame[tf.newaxis, tf.newaxis], [tf.shape(x)[0], frames - stored, 1])
            x = tf.concat([x, pad], axis=1)
        ids = ex[data.VIDEO_ID]
        validation = tf.reduce_any(tf.equal(ids[:, tf.newaxis], held_out_ids[tf.newaxis, :]), axis=1)
        weight = ex[data.WEIGHT] if weighted else tf.ones_like(validation, tf.float32)
        return x, tf.cast(ex[data.LABEL], tf.float32), weight, validation

    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(256).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    if subset == "train":
        ds = ds.filter(lambda x, y, w, v: tf.logical_not(v))
    elif subset == "validation":
        ds = ds.filter(lambda x, y, w, v: v)
    elif subset != "all":
        raise ValueError(f"subset must be train, validation or all, got {subset!r}")

    def drop_flag(x, y, w, v):  # a named function: AutoGraph cannot tell two lambdas on one line apart
        return (x, y, w) if weighted else (x, y)

    ds = ds.map(drop_flag)
    if cache == "memory":
        ds = ds.cache()
    elif cache != "none":
        ds = ds.cache(f"{cache}-{split}-{subset}")
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _split_files(transform_dir: str, split: str) -> list[str]:
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(os.path.join(transform_dir, "transformed", f"{split}-*")))


def split_video_ids(transform_dir: str, split: str) -> list[str]:
    """The distinct video ids (AudioSet videos; recordings of a `gunshot dataset`) of a transformed split."""
    import tensorflow as tf

    files = _split_files(transform_dir, split)
    if not files:
        return []
    spec = {data.VIDEO_ID: tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024)
    ds = ds.map(lambda s: tf.io.parse_example(s, spec)[data.VIDEO_ID])
    return sorted({v.decode() for batch in ds for v in batch.numpy()})


@dataclasses.dataclass(frozen=True)
class ValidationPlan:
    """What a training run validates on (`plan_validation`).

    Attributes:
      split: "eval" (the transform's eval split), "train" (groups held out of the training split) or
        None (no validation: no early stopping on a validation loss, threshold 0.5).
      held_out: video ids of the training split held out for validation (split "train").
      groups: groups in the training split; held_out_groups: the held-out ones, sorted.
      grouped_by: "group" (the dataset builder's `group` column, e.g. the site) or "video_id".
      reason: why, for the log and the card.
    """

    split: str | None
    held_out: frozenset = frozenset()
    groups: int = 0
    held_out_groups: tuple = ()
    grouped_by: str = "video_id"
    reason: str = ""

    def summary(self) -> dict:
        return {
            "split": self.split,
            "grouped_by": self.grouped_by if self.split == "train" else None,
            "groups": self.groups,
            "held_out_groups": len(self.held_out_groups),
            "held_out_group_names": list(self.held_out_groups[:LISTED_GROUPS]),
            "reason": self.reason,
        }


def _train_tag_tables(info: dict) -> list[str]:
    patterns = [s.get("tags_pattern") for s in info.get("train_sources") or []]
    patterns = [p for p in patterns if p] or ([info["tags_pattern"]] if info.get("tags_pattern") else [])
    return patterns


def held_out_groups(groups: list[str], fraction: float) -> list[str]:
    """The groups held out for validation: those whose hash bucket is below `fraction`, at least one
    and never all of them (needs two groups or more).

    The bucket is `tf.strings.to_hash_bucket_fast(group, HASH_BUCKETS)`, so with the video id as
    the group the choice is the same as the hash-of-video_id split of earlier versions whenever
    that one held anything out.
    """
    import tensorflow as tf

    groups = sorted(set(groups))
    if len(groups) < 2:
        return []
    buckets = tf.strings.to_hash_bucket_fast(tf.constant(groups), HASH_BUCKETS).numpy().tolist()
    order = sorted(zip(buckets, groups, strict=True))
    threshold = int(round(fraction * HASH_BUCKETS))
    chosen = [g for b, g in order if b < threshold]
    if not chosen:
        chosen = [order[0][1]]
    if len(chosen) == len(groups):
        chosen = chosen[:-1]
    return sorted(chosen)


def plan_validation(transform_dir: str, info: dict, mode: str, fraction: float) -> ValidationPlan:
    """Chooses the validation data of a run (`--validation`, see parse_args).

    Raises:
      InputError: `--validation eval` without an eval split, or `--validation train` when the training
        split has fewer than two groups (nothing can be held out).
    """
    if mode == "none":
        return ValidationPlan(None, reason="--validation none")
    has_eval = bool(_split_files(transform_dir, "eval"))
    if mode == "eval" or (mode == "auto" and has_eval):
        if not has_eval:
            raise InputError(
                f"--validation eval: {transform_dir} has no eval split; rerun `gunshot transform` with "
                "--eval (e.g. the eval folder of `gunshot dataset --split eval=0.25`), or use "
                "--validation train"
            )
        return ValidationPlan(
            "eval", reason=f"the eval split given to transform ({info.get('eval_pattern')})"
        )
    if mode == "auto" and fraction == 0:
        return ValidationPlan(None, reason="--validation_fraction 0")
    if fraction == 0:
        raise InputError("--validation train needs --validation_fraction > 0")
    video_ids = split_video_ids(transform_dir, "train")
    groups = {}
    for pattern in _train_tag_tables(info):
        groups.update(data.load_groups(pattern))
    grouped_by = "group" if any(v in groups for v in video_ids) else "video_id"
    group_of = {v: groups.get(v, v) for v in video_ids}
    names = sorted(set(group_of.values()))
    chosen = held_out_groups(names, fraction)
    if not chosen:
        fix = (
            "give `gunshot transform` an --eval split (e.g. from `gunshot dataset --split train=0.75 --split "
            "eval=0.25`), or recordings from more sites (`gunshot dataset --group_pattern`)"
        )
        message = (
            f"nothing can be held out for validation: the training split has {len(names)} "
            f"{grouped_by.replace('_', ' ')}(s) ({', '.join(names[:3])}) and no eval split; {fix}"
        )
        if mode == "train":
            raise InputError(f"--validation train: {message}")
        return ValidationPlan(None, groups=len(names), grouped_by=grouped_by, reason=message)
    chosen_set = set(chosen)
    held_out = frozenset(v for v, g in group_of.items() if g in chosen_set)
    reason = f"{len(chosen)} of {len(names)} {grouped_by}s held out of the training split"
    return ValidationPlan("train", held_out, len(names), tuple(chosen), grouped_by, reason)


def has_example_weights(transform_dir: str) -> bool:
    """Whether the transformed data carries per-example mixing weights (`weight`, training.transform)."""
    import tensorflow_transform as tft

    return data.WEIGHT in tft.TFTransformOutput(transform_dir).transformed_feature_spec()


def _zero_frame(transform_dir: str, frames: int, width: int = params.EMBEDDING_SIZE) -> np.ndarray:
    from training import transform

    mean, std = transform.frame_statistics(transform_dir, frames, width)
    return (-mean / std).astype(np.float32)


def _tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _labels_of(ds) -> np.ndarray:
    return np.concatenate([t[1].numpy() for t in ds] or [np.zeros(0, np.float32)]).astype(np.int64)


def _labels_and_weights(ds) -> tuple[np.ndarray, np.ndarray]:
    """int64 [n] labels and float64 [n] mixing weights (1 without `weight`) of a dataset, in one pass."""
    labels, weights = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    for t in ds:
        labels.append(t[1].numpy())
        weights.append(t[2].numpy() if len(t) > 2 else np.ones_like(labels[-1]))
    return np.concatenate(labels).astype(np.int64), np.concatenate(weights).astype(np.float64)


def _with_class_weight(ds, class_weight: dict | None):
    """(x, y, w) -> (x, y, w * class_weight[y]): the class weights folded into the mixing weights."""
    import tensorflow as tf

    if not class_weight:
        return ds
    table = tf.constant([class_weight[0], class_weight[1]], tf.float32)
    return ds.map(lambda x, y, w: (x, y, w * tf.gather(table, tf.cast(y, tf.int32))))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The ROC threshold maximising Youden's J = TPR - FPR (0.5 if only one class is present)."""
    from sklearn.metrics import roc_curve

    if len(set(labels.tolist())) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thresholds[best], 0.0, 1.0))


def _copy_transform(transform_dir: str, mdir: str) -> str:
    import tensorflow as tf

    from training import transform

    target = os.path.join(mdir, "transform")
    if tf.io.gfile.exists(target):
        tf.io.gfile.rmtree(target)
    for name in ("transform_fn", "transformed_metadata"):
        src = os.path.join(transform_dir, name)
        for root, _, files in tf.io.gfile.walk(src):
            rel = os.path.relpath(root, transform_dir)
            tf.io.gfile.makedirs(os.path.join(target, rel))
            for f in files:
                tf.io.gfile.copy(os.path.join(root, f), os.path.join(target, rel, f), overwrite=True)
    tf.io.gfile.copy(
        os.path.join(transform_dir, transform.INFO_FILE),
        os.path.join(target, transform.INFO_FILE),
        overwrite=True,
    )
    return "transform"


@contextlib.contextmanager
def _op_determinism():
    """Deterministic TF ops while training; the previous setting is restored for in-process callers."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            tf_config.disable_op_determinism()


def refuse_existing_head(output: str, overwrite: bool) -> None:
    """Refuses to write over a finished head in `output` unless `overwrite`.

    An interrupted run (`backup/` in the folder) is resumed, not refused.

    Raises:
      InputError: `output` holds a card.json or model.keras and no backup, and not `overwrite`.
    """
    from gunshot_core import heads

    if overwrite or os.path.isdir(os.path.join(output, "backup")):
        return
    found = [
        n for n in (heads.CARD_FILENAME, heads.MODEL_FILENAME) if os.path.exists(os.path.join(output, n))
    ]
    if found:
        raise InputError(
            f"{output} already holds a head ({', '.join(found)}); pass --overwrite to replace it, or "
            "choose another --output"
        )


def log_validation(plan: ValidationPlan, labels) -> None:
    """One INFO line saying what the run validates on, or a warning with the fix when nothing."""
    if plan.split is None:
        if plan.reason.startswith("--validation"):
            logging.info("validation: none (%s): no early stopping, threshold 0.5", plan.reason)
        else:
            logging.warning(
                "VALIDATION: none, %s. Without it: no early stopping, threshold 0.5.", plan.reason
            )
        return
    positives = int(np.sum(labels))
    logging.info(
        "validation: %s: %d clips (%d positive)%s",
        plan.reason,
        len(labels),
        positives,
        f"; held out: {', '.join(plan.held_out_groups[:LISTED_GROUPS])}" if plan.split == "train" else "",
    )
    if plan.split == "eval":
        logging.info(
            "validation: the threshold is tuned on the eval split: measure on another split "
            "(`gunshot dataset --split test=FRACTION` or `gunshot subset --split test=GLOB`) for numbers "
            "not tuned on"
        )


def import_h5(args) -> int:
    from gunshot_core import heads

    card = heads.import_h5_head(args.import_h5, args.output, head_id=args.head_id)
    logging.info("imported %s into %s (head_id %s)", args.import_h5, args.output, card.head_id)
    return 0


def train(args, extra_callbacks=()) -> dict:
    """Runs one training job; returns the card dict written to MDIR/card.json.

    Seeds Python, numpy and TF with --seed; `main` also makes TF ops deterministic around it.

    Args:
      args: parsed command line (parse_args).
      extra_callbacks: Keras callbacks run after the job's own (progress hooks, tests).
    """
    from gunshot_core import heads

    refuse_existing_head(args.output, args.overwrite)
    import keras
    import tensorflow as tf

    from training import transform

    keras.utils.set_random_seed(args.seed)

    info = transform.read_info(args.transformed)
    stored_frames = int(info["frames"])
    frames = args.frames or stored_frames
    embedding_model = embedding_models.get(
        info.get("embedding_model"), hop_seconds=info.get("embedding_hop_seconds")
    )
    width = embedding_model.embedding_size
    mean, std = transform.frame_statistics(args.transformed, stored_frames, width)
    args.model = args.model or models.default_model(embedding_model.name)
    if args.pooling and args.model not in ("framepool", "gunprior"):
        raise InputError(f"--pooling applies to --model framepool or gunprior, not {args.model}")
    if args.l2 is not None and args.model not in models.PRIOR_MODELS:
        raise InputError(f"--l2 applies to --model gunprior, not {args.model}")
    config = head_config(args)
    prior, prior_source = None, None
    if config.kind in models.PRIOR_MODELS:
        prior, prior_source = embedding_model.gun_prior()
    plan = plan_validation(args.transformed, info, args.validation, args.validation_fraction)
    os.makedirs(args.output, exist_ok=True)
    common = dict(
        frames=frames,
        width=width,
        batch_size=args.batch_size,
        seed=args.seed,
        shuffle_buffer=args.shuffle_buffer,
        cache=args.cache,
    )
    train_ds = make_dataset(
        args.transformed, "train", subset="train", held_out=plan.held_out, shuffle=True, **common
    )
    val_ds = None
    if plan.split == "eval":
        val_ds = make_dataset(args.transformed, "eval", subset="all", shuffle=False, **common)
    elif plan.split == "train":
        val_ds = make_dataset(
            args.transformed, "train", subset="validation", held_out=plan.held_out, shuffle=False, **common
        )
    weighted = has_example_weights(args.transformed)
    train_labels, train_weights = _labels_and_weights(train_ds)
    val_labels = _labels_of(val_ds) if val_ds is not None else np.zeros(0, np.int64)
    counts = {int(c): int((train_labels == c).sum()) for c in (0, 1)}
    if min(counts.values()) == 0:
        raise ValueError(f"the training split needs both classes, got counts {counts}")
    # With mixing weights the classes are balanced on their weighted totals, and the class weight
    # multiplies into each example's weight (Keras' class_weight would ignore the mix).
    totals = {c: float(train_weights[train_labels == c].sum()) for c in (0, 1)}
    class_weight = None
    if args.class_weight == "balanced":
        class_weight = {c: sum(totals.values()) / (2.0 * t) for c, t in totals.items()}
    mixing = None
    if weighted:
        info_sources = info.get("train_sources", [])
        mixing = {
            "sources": info_sources,
            "weighted_class_totals": {str(c): round(t, 6) for c, t in totals.items()},
            "applied_as": "sample_weight = mixing weight * class weight of the label",
        }
        train_ds = _with_class_weight(train_ds, class_weight)
    logging.info(
        "training on %d clips %s (weighted totals %s), validating on %d; class weights %s",
        len(train_labels),
        counts,
        {c: round(t, 3) for c, t in totals.items()},
        len(val_labels),
        class_weight,
    )
    log_validation(plan, val_labels)
    if val_ds is not None and len(val_labels) == 0:
        logging.warning(
            "VALIDATION: the %s split holds no usable clip: no early stopping, threshold 0.5", plan.split
        )
        val_ds = None
    # The sizes are known now: tell Keras, so progress shows totals and epochs end cleanly.
    train_ds = train_ds.apply(
        tf.data.experimental.assert_cardinality(-(-len(train_labels) // args.batch_size))
    )
    if val_ds is not None:
        val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(-(-len(val_labels) // args.batch_size)))

    training_model, serving_model = models.build_models(config, frames, mean, std, width=width, prior=prior)
    training_model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc"), keras.metrics.Recall(name="recall")],
    )
    backup = os.path.join(args.output, "backup")
    if args.overwrite and os.path.exists(backup):
        shutil.rmtree(backup)
    resuming = os.path.exists(backup)
    if not resuming:
        for stale in ("history.csv", "logs"):
            path = os.path.join(args.output, stale)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    monitor = "val_loss" if val_ds is not None else "loss"
    os.makedirs(os.path.join(args.output, "checkpoints"), exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=args.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(
            os.path.join(args.output, "checkpoints", "best.weights.h5"),
            monitor=monitor,
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(os.path.join(args.output, "history.csv"), append=resuming),
    ]
    if _tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(args.output, "logs")))
    else:
        logging.warning("tensorboard is not installed: no TensorBoard logs (history.csv has the curves)")
    callbacks.extend(extra_callbacks)
    if resuming:
        logging.info("resuming the interrupted run from %s", backup)
    history = training_model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        class_weight=None if weighted else class_weight,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=args.verbose,
    )
    with open(os.path.join(args.output, "history.csv")) as f:
        epochs_run = max(0, sum(1 for _ in f) - 1)  # a resumed run appends to the interrupted run's rows
    last = {k: float(v[-1]) for k, v in history.history.items() if v and not k.startswith("val_")}
    del history

    # Threshold and metrics on the validation data (`plan`: the eval split, or held-out groups).
    metrics = {"training": {"clips": int(len(train_labels)), "last_epoch": last}}
    threshold = 0.5
    if val_ds is not None:
        val_scores = training_model.predict(val_ds.map(lambda x, y, *w: x), verbose=0).reshape(-1)
        threshold = youden_threshold(val_labels, val_scores)
        predicted = (val_scores >= threshold).astype(np.int64)
        metrics["validation"] = {
            "split": plan.split,
            "clips": int(len(val_labels)),
            "positives": int(val_labels.sum()),
            "accuracy": float((predicted == val_labels).mean()),
            "threshold": threshold,
            "threshold_rule": "youden_j",
        }
        if len(set(val_labels.tolist())) == 2:
            from sklearn.metrics import roc_auc_score

            metrics["validation"]["roc_auc"] = float(roc_auc_score(val_labels, val_scores))

    model_path = os.path.join(args.output, heads.MODEL_FILENAME)
    tmp = os.path.join(args.output, ".tmp-" + heads.MODEL_FILENAME)
    serving_model.save(tmp)
    os.replace(tmp, model_path)
    transform_copy = _copy_transform(args.transformed, args.output)
    head_id = args.head_id or f"gunshot-{args.model}-seed{args.seed}"
    free_length = embedding_model.dtype != "uint8" and models.frame_pooling_card(config) is not None
    card = heads.HeadCard(
        head_id=head_id,
        threshold=float(threshold),
        # A frame-pooling head on float frames takes any number of frames and pads none: a zero
        # BirdNET embedding is not silence (its Gun_Gun logit is the bias, a score of 0.5).
        frames=None if free_length else frames,
        pad_to_frames=0 if free_length else frames,
        classes=[data.NEGATIVE_TAG, info["positive_tag"]],
        input_convention=heads.INPUT_UINT8_AS_FLOAT
        if embedding_model.dtype == "uint8"
        else heads.INPUT_FLOAT32,
        transform=None,  # baked into model.keras (Normalization layer 'transform_zscore')
        frame_pooling=models.frame_pooling_card(config),
        embedding_model=embedding_model.name,
        vggish_checkpoint_sha256=args.vggish_sha256,
        pca_params_sha256=args.pca_sha256,
        training={
            "architecture": config.__dict__,
            "epochs": args.epochs,
            "epochs_run": epochs_run,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "patience": args.patience,
            "seed": args.seed,
            "class_weight": class_weight and {str(k): v for k, v in class_weight.items()},
            "validation_fraction": args.validation_fraction,
            "validation": plan.summary(),
            "train_clips": counts,
            "validation_clips": int(len(val_labels)),
            "transform_fn": {
                "source": os.path.abspath(args.transformed)
                if "://" not in args.transformed
                else args.transformed,
                "copy": transform_copy,
                "applied_in_model": "Normalization layer 'transform_zscore' (z-score per dimension)",
                "train_tag_counts": info["train_tag_counts"],
                "tag_vocabulary": info["tag_vocabulary"],
                "frame_mean": info["frame_mean"],
                "frame_std": info["frame_std"],
            },
            "data": {"train": info["train_pattern"], "tags": info["tags_pattern"]},
            "mixing": mixing,
            "embeddings": (
                "AudioSet-format uint8 VGGish embeddings after PCA/whitening/quantisation"
                if embedding_model.name == "vggish"
                else f"{embedding_model.description}; hop {embedding_model.hop_seconds} s"
            ),
            "prior": prior_source,
            "options": {k: v for k, v in sorted(vars(args).items())},
        },
        metrics=metrics,
        source={"kind": "training.train"},
    )
    written = heads.write_card(args.output, card)
    logging.info(
        "wrote %s and %s (threshold %.4f, %d epochs)", model_path, heads.CARD_FILENAME, threshold, epochs_run
    )
    return written.to_dict()


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.import_h5:
        return import_h5(args)
    try:
        with _op_determinism():
            card = train(args)
    except (FileNotFoundError, ValueError, GunshotError) as e:
        return arguments.fail("train", e)
    print(json.dumps({"output": args.output, "threshold": card["threshold"], "metrics": card["metrics"]}))
    return 0


if __name__ == "__main__":
    logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
    startup.exit_process(main())  # a finished run ends without the interpreter's teardown
