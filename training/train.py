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
import json
import logging
import os
import shutil
import sys

import numpy as np

from gunshot_core import arguments, logs, params, startup
from gunshot_core.errors import GunshotError
from training import data, models

HASH_BUCKETS = 10000


def parse_args(argv):
    parser = arguments.ArgumentParser(
        "train",
        description="Train a gunshot head (tf.data + Keras) on tf.Transform output; write MDIR/model.keras "
        "and MDIR/card.json. Runs are reproducible for a fixed --seed on CPU.",
    )
    parser.add_argument("--transformed", help="output directory of training.transform (TDIR)")
    parser.add_argument("--output", required=True, help="artifact directory MDIR")
    parser.add_argument(
        "--model", choices=models.MODELS, default="lstm", help="architecture preset (%(default)s)"
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
        "--validation_fraction",
        type=float,
        default=0.1,
        help="share of training videos held out for validation, by a hash of video_id (%(default)s)",
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
    fit.add_argument("--overwrite", action="store_true", help="discard an interrupted run's backup in MDIR")
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
    if args.pooling and args.model != "framepool":
        parser.error(f"--pooling applies to --model framepool, not {args.model}")
    if args.epochs < 1 or args.batch_size < 1:
        parser.error(f"--epochs and --batch_size must be >= 1, got {args.epochs}, {args.batch_size}")
    return args


def head_config(args) -> models.HeadConfig:
    """The preset of --model with the architecture flags given on the command line applied."""
    import dataclasses

    overrides = {
        k: getattr(args, k)
        for k in ("units", "layers", "hidden", "dropout", "activation", "recurrent_activation", "pooling")
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
    subset: str,
    validation_fraction: float,
    batch_size: int,
    seed: int,
    shuffle: bool,
    shuffle_buffer: int = 10000,
    cache: str = "memory",
):
    """The tf.data pipeline over transformed examples.

    Reads the split's files in parallel (deterministic interleave), parses batches of examples,
    keeps the `subset` ("train", "validation" or "all") chosen by a hash of the video id (so all
    clips of one video fall on the same side, and the split does not depend on file order), pads or
    truncates to `frames`, caches, shuffles with `seed` (reshuffled every epoch) and prefetches.

    Returns:
      tf.data.Dataset of (float32 [batch, frames, 128] z-scored frames, float32 [batch] labels), plus
      float32 [batch] mixing weights as a third element when the transformed data has `weight`
      (training.transform with --train sources; see has_example_weights).
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    files = sorted(tf.io.gfile.glob(os.path.join(transform_dir, "transformed", f"{split}-*")))
    if not files:
        raise FileNotFoundError(f"no transformed {split} data in {transform_dir}/transformed/")
    output = tft.TFTransformOutput(transform_dir)
    spec = output.transformed_feature_spec()
    weighted = data.WEIGHT in spec and has_example_weights(transform_dir)
    spec = {
        k: spec[k] for k in (data.FRAMES, data.LABEL, data.VIDEO_ID) + ((data.WEIGHT,) if weighted else ())
    }
    stored = spec[data.FRAMES].shape[0] // params.EMBEDDING_SIZE
    width = params.EMBEDDING_SIZE
    # A raw zero frame after the z-score: the padding value a served head sees for missing frames.
    pad_frame = tf.constant(_zero_frame(transform_dir, stored), tf.float32)
    threshold = int(round(validation_fraction * HASH_BUCKETS))

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        x = tf.reshape(ex[data.FRAMES], [-1, stored, width])
        if frames < stored:
            x = x[:, :frames]
        elif frames > stored:
            pad = tf.tile(pad_frame[tf.newaxis, tf.newaxis], [tf.shape(x)[0], frames - stored, 1])
            x = tf.concat([x, pad], axis=1)
        bucket = tf.strings.to_hash_bucket_fast(ex[data.VIDEO_ID], HASH_BUCKETS)
        weight = ex[data.WEIGHT] if weighted else tf.ones_like(bucket, tf.float32)
        return x, tf.cast(ex[data.LABEL], tf.float32), weight, bucket

    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(256).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    if subset == "train":
        ds = ds.filter(lambda x, y, w, b: b >= threshold)
    elif subset == "validation":
        ds = ds.filter(lambda x, y, w, b: b < threshold)
    elif subset != "all":
        raise ValueError(f"subset must be train, validation or all, got {subset!r}")
    ds = ds.map((lambda x, y, w, b: (x, y, w)) if weighted else (lambda x, y, w, b: (x, y)))
    if cache == "memory":
        ds = ds.cache()
    elif cache != "none":
        ds = ds.cache(f"{cache}-{split}-{subset}")
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def has_example_weights(transform_dir: str) -> bool:
    """Whether the transformed data carries per-example mixing weights (`weight`, training.transform)."""
    import tensorflow_transform as tft

    return data.WEIGHT in tft.TFTransformOutput(transform_dir).transformed_feature_spec()


def _zero_frame(transform_dir: str, frames: int) -> np.ndarray:
    from training import transform

    mean, std = transform.frame_statistics(transform_dir, frames)
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
    import keras
    import tensorflow as tf

    from gunshot_core import heads
    from training import transform

    keras.utils.set_random_seed(args.seed)

    info = transform.read_info(args.transformed)
    stored_frames = int(info["frames"])
    frames = args.frames or stored_frames
    mean, std = transform.frame_statistics(args.transformed, stored_frames)
    config = head_config(args)
    os.makedirs(args.output, exist_ok=True)

    common = dict(
        frames=frames,
        validation_fraction=args.validation_fraction,
        batch_size=args.batch_size,
        seed=args.seed,
        shuffle_buffer=args.shuffle_buffer,
        cache=args.cache,
    )
    train_ds = make_dataset(args.transformed, "train", subset="train", shuffle=True, **common)
    val_ds = None
    if args.validation_fraction > 0:
        val_ds = make_dataset(args.transformed, "train", subset="validation", shuffle=False, **common)
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
    if val_ds is not None and len(val_labels) == 0:
        logging.warning(
            "validation split is empty (validation_fraction=%s); no early stopping", args.validation_fraction
        )
        val_ds = None
    # The sizes are known now: tell Keras, so progress shows totals and epochs end cleanly.
    train_ds = train_ds.apply(
        tf.data.experimental.assert_cardinality(-(-len(train_labels) // args.batch_size))
    )
    if val_ds is not None:
        val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(-(-len(val_labels) // args.batch_size)))

    training_model, serving_model = models.build_models(config, frames, mean, std)
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
    del history

    # Threshold and metrics on the validation split (never on the evaluation data).
    metrics = {}
    threshold = 0.5
    if val_ds is not None:
        val_scores = training_model.predict(val_ds.map(lambda x, y, *w: x), verbose=0).reshape(-1)
        threshold = youden_threshold(val_labels, val_scores)
        predicted = (val_scores >= threshold).astype(np.int64)
        metrics["validation"] = {
            "clips": int(len(val_labels)),
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
    card = heads.HeadCard(
        head_id=head_id,
        threshold=float(threshold),
        frames=frames,
        pad_to_frames=frames,
        classes=[data.NEGATIVE_TAG, info["positive_tag"]],
        input_convention=heads.INPUT_UINT8_AS_FLOAT,
        transform=None,  # baked into model.keras (Normalization layer 'transform_zscore')
        frame_pooling=models.frame_pooling_card(config),
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
            "embeddings": "AudioSet-format uint8 VGGish embeddings after PCA/whitening/quantisation",
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
