"""The training chain on a synthetic subset with real AudioSet label sets.

fixture TFRecords (real clip ids and labels from ../shared/audioset, class-direction embeddings that
make the gunshot classes separable) -> pipelines.build_subset -> training.transform -> training.train
-> training.evaluate, each stage run once per session through its command-line entry point.
"""

import csv
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from gunshot_core import labels as labels_lib
from gunshot_core import records
from tests.conftest import AUDIOSET
from tests.fixtures_audioset import (
    corrupt_payload_crc,
    encode_segment,
    malformed_records,
    read_segments,
    truncate,
    write_shards,
    write_tfrecord_file,
)

# One worker runs the whole chain (CI uses `-n 2 --dist loadgroup`), so the fixtures are built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("training")]

SIGNAL = 1.5
EPOCHS = 8


def _pick(segments, positive, negative, n_pos, n_neg, n_other):
    pos, neg, other = [], [], []
    for s in segments:
        labels = set(s.labels)
        if labels & positive:
            if len(pos) < n_pos:
                pos.append(s)
        elif labels & negative:
            if len(neg) < n_neg:
                neg.append(s)
        elif len(other) < n_other:
            other.append(s)
    return pos + neg + other


@pytest.fixture(scope="session")
def subset_dir(tmp_path_factory):
    """A subset built by pipelines.build_subset from synthetic shards, plus one file of bad records.

    Returns:
      (subset output directory, {reason: count} of the bad records added to its train folder).
    """
    from pipelines import build_subset

    root = tmp_path_factory.mktemp("training")
    catalog = labels_lib.ClassCatalog.from_files()
    positive = {catalog.resolve(n).index for n in labels_lib.DEFAULT_POSITIVE}
    negative = {catalog.resolve(n).index for n in labels_lib.DEFAULT_NEGATIVE}
    train = _pick(read_segments(AUDIOSET / "balanced_train_segments.csv"), positive, negative, 60, 70, 10)
    evaluation = _pick(read_segments(AUDIOSET / "eval_segments.csv"), positive, negative, 30, 35, 5)
    write_shards(root / "raw" / "train", train, num_shards=2, signal=SIGNAL)
    write_shards(root / "raw" / "eval", evaluation, num_shards=2, signal=SIGNAL, compress=True)
    out = root / "subset"
    build_subset.run(
        [
            "--split",
            f"train={root / 'raw' / 'train' / '*'}",
            "--split",
            f"eval={root / 'raw' / 'eval' / '*'}",
            "--output",
            str(out),
            "--num_shards",
            "2",
            "--seed",
            "3",
        ]
    )
    # Records a reader must survive: malformed ones and a valid clip that the tagged table lacks.
    bad = malformed_records()
    untagged = encode_segment(train[-1], signal=SIGNAL)  # an `other` clip: never tagged
    write_tfrecord_file(out / "train" / "zz-damaged.tfrecord", list(bad.values()) + [untagged])
    # Damaged framing: a payload CRC mismatch, then a good untagged record, then a truncated tail.
    framing = write_tfrecord_file(
        out / "train" / "zz-framing.tfrecord", [encode_segment(s, signal=SIGNAL) for s in train[-4:-1]]
    )
    corrupt_payload_crc(framing, 0)
    truncate(framing, keep_records=2)
    expected = {reason: 1 for reason in bad} | {"untagged": 2, "bad_data_crc": 1, "truncated": 1}
    return str(out), expected


@pytest.fixture(scope="session")
def transformed(subset_dir, tmp_path_factory):
    from training import transform

    out = str(tmp_path_factory.mktemp("tdir"))
    directory, _ = subset_dir
    transform.run(["--train", f"{directory}/train*", "--eval", f"{directory}/eval*", "--output", out])
    return out


def _train(transformed, out, model="lstm", seed=0, extra=()):
    from training import train

    argv = [
        "--transformed",
        transformed,
        "--model",
        model,
        "--output",
        str(out),
        "--epochs",
        str(EPOCHS),
        "--batch_size",
        "16",
        "--seed",
        str(seed),
        "--validation_fraction",
        "0.2",
        "--verbose",
        "0",
        "--patience",
        "3",
        *extra,
    ]
    assert train.main(argv) == 0
    return str(out)


@pytest.fixture(scope="session")
def trained(transformed, tmp_path_factory):
    return _train(transformed, tmp_path_factory.mktemp("mdir"))


@pytest.fixture(scope="session")
def evaluated(subset_dir, trained, tmp_path_factory):
    from training import evaluate

    out = str(tmp_path_factory.mktemp("edir"))
    directory, _ = subset_dir
    assert (
        evaluate.main(
            ["--model", trained, "--data", f"{directory}/eval*", "--output", out, "--bootstrap", "200"]
        )
        == 0
    )
    with open(os.path.join(out, "metrics.json")) as f:
        return out, json.load(f)


def _subset_clips(directory, split):
    from training import data

    return data.load_clips(
        f"{directory}/{split}/subset-*", data.load_tag_table(f"{directory}/tagged-*.parquet")
    )


def test_transform_analyses_train_split_and_reports_bad_records(subset_dir, transformed):
    from training import transform

    directory, expected_errors = subset_dir
    clips = _subset_clips(directory, "train")
    assert len(clips) > 50 and set(clips.tags) == {"gunshot", "no_gunshot"}
    # Per-dimension statistics over the real frames, computed independently with numpy.
    frames = np.concatenate(clips.frames).astype(np.float64)
    mean, std = transform.frame_statistics(transformed, 10)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-4)
    info = transform.read_info(transformed)
    tags = clips.tags
    assert info["train_tag_counts"] == {t: tags.count(t) for t in set(tags)}
    assert sorted(info["tag_vocabulary"]) == ["gunshot", "no_gunshot"]
    # Every damaged record of the train folder is an error row with its reason, nothing else is.
    with open(os.path.join(transformed, "errors", "train-00000-of-00001.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    reasons = {}
    for row in rows:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    assert reasons == expected_errors
    with open(os.path.join(transformed, "errors", "eval-00000-of-00001.jsonl")) as f:
        assert f.read() == ""


def test_transform_rerun_writes_identical_files(subset_dir, transformed, tmp_path):
    import glob

    from training import transform

    directory, _ = subset_dir
    transform.run(
        ["--train", f"{directory}/train*", "--eval", f"{directory}/eval*", "--output", str(tmp_path)]
    )
    names = sorted(os.path.relpath(p, transformed) for p in glob.glob(f"{transformed}/transformed/*"))
    assert len(names) == 8  # 4 shards per split
    for name in names + ["errors/train-00000-of-00001.jsonl"]:
        assert (tmp_path / name).read_bytes() == open(os.path.join(transformed, name), "rb").read(), name
    assert not os.path.exists(os.path.join(transformed, "tmp"))


def test_serving_model_applies_the_transform_fn(subset_dir, transformed, trained):
    """model.keras on raw uint8 values == the training model on tf.Transform output."""
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from training import data

    output = tft.TFTransformOutput(transformed)
    spec = output.transformed_feature_spec()
    files = tf.io.gfile.glob(os.path.join(transformed, "transformed", "eval-*"))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1000)
    examples = tf.io.parse_example(next(iter(ds)), spec)
    scaled = examples[data.FRAMES].numpy().reshape(-1, 10, 128)
    by_key = {
        records.clip_key(v.decode(), s): i
        for i, (v, s) in enumerate(
            zip(examples[data.VIDEO_ID].numpy(), examples[data.START_TIME].numpy(), strict=True)
        )
    }
    model = keras.saving.load_model(os.path.join(trained, "model.keras"), safe_mode=True)
    normalise = keras.Model(model.inputs, model.get_layer("transform_zscore").output)
    clips = _subset_clips(subset_dir[0], "eval")
    assert len(clips) == len(by_key) > 30
    order = [by_key[records.clip_key(v, s)] for v, s in zip(clips.video_ids, clips.start_times, strict=True)]
    in_model = normalise.predict(clips.padded(10), verbose=0)
    np.testing.assert_allclose(in_model, scaled[order], atol=2e-5)
    assert np.abs(scaled).max() > 1  # really scaled, not raw values


def test_chain_learns_the_separable_class(evaluated):
    out, metrics = evaluated
    chosen = metrics["chosen"]
    assert chosen["clips"] >= 50
    assert chosen["accuracy"] >= 0.85, chosen  # chance is 0.5 on the balanced split
    assert chosen["roc_auc"] >= 0.9, chosen
    assert metrics["at_card_threshold"]["accuracy"] >= 0.8
    low, high = metrics["confidence_intervals"]["accuracy"]
    assert low <= chosen["accuracy"] <= high
    for name in (
        "report.md",
        "roc.png",
        "pr.png",
        "score_histogram.png",
        "training_curves.png",
        "per_label.csv",
    ):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    report = open(os.path.join(out, "report.md")).read()
    assert "91.07 %" in report and "![roc](roc.png)" in report
    history = list(csv.DictReader(open(os.path.join(metrics["model"], "history.csv"))))
    expected = np.mean([float(r["val_accuracy"]) for r in history])
    assert metrics["mean_validation_accuracy_over_epochs"] == pytest.approx(expected)


def test_metrics_agree_with_sklearn(subset_dir, trained, evaluated):
    import keras
    from sklearn import metrics as skm

    from training import data

    out, result = evaluated
    directory, _ = subset_dir
    clips = _subset_clips(directory, "eval")
    model = keras.saving.load_model(os.path.join(trained, "model.keras"), safe_mode=True)
    scores = model.predict(clips.padded(10), verbose=0).reshape(-1)
    table = pq.read_table(os.path.join(out, "scores.parquet")).to_pydict()
    assert table["video_id"] == clips.video_ids
    np.testing.assert_allclose(table["score"], scores, atol=1e-5)
    # The metrics are checked on the scores the evaluation wrote: a clip scoring within float noise
    # of the threshold would otherwise flip between two equally valid forward passes.
    scores = np.asarray(table["score"], dtype=scores.dtype)
    y = clips.labels
    t = result["chosen"]["threshold"]
    pred = (scores >= t).astype(int)
    chosen = result["chosen"]
    assert chosen["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert chosen["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert chosen["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert chosen["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert chosen["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-6)
    assert chosen["pr_auc"] == pytest.approx(skm.average_precision_score(y, scores), abs=1e-6)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    assert chosen["confusion_matrix"] == [[tn, len(y) - y.sum() - tn], [y.sum() - tp, tp]]

    # The headline threshold is the head's own; Youden's J on this data is reported beside it and is
    # the best over every candidate threshold.
    assert t == json.loads(open(os.path.join(trained, "card.json")).read())["threshold"]

    def youden(th):
        p = scores >= th
        return p[y == 1].mean() - p[y == 0].mean()

    tj = result["youden_j"]["threshold"]
    assert youden(tj) == pytest.approx(max(youden(th) for th in np.unique(scores)), abs=1e-9)
    assert result["youden_j"]["accuracy"] == pytest.approx(skm.accuracy_score(y, scores >= tj))
    # The per-label table counts errors per AudioSet class of the clips.
    rows = list(csv.DictReader(open(os.path.join(out, "per_label.csv"))))
    speech = labels_lib.ClassCatalog.from_files().resolve("Speech").index
    neg = [i for i in range(len(y)) if y[i] == 0 and speech in clips.class_ids[i]]
    row = next(r for r in rows if r["clip_class"] == "negative" and int(r["class_index"]) == speech)
    assert int(row["clips"]) == len(neg) and int(row["errors"]) == int(pred[neg].sum())
    assert row["class_name"] == "Speech"
    del data


def test_target_recall_threshold(subset_dir, trained, tmp_path):
    from training import evaluate

    directory, _ = subset_dir
    assert (
        evaluate.main(
            [
                "--model",
                trained,
                "--data",
                f"{directory}/eval*",
                "--output",
                str(tmp_path),
                "--target_recall",
                "0.95",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "metrics.json").read_text())
    table = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    scores, y = np.asarray(table["score"]), np.asarray(table["label"])
    t = result["chosen"]["threshold"]
    assert result["chosen"]["recall"] >= 0.95
    higher = scores[scores > t]
    if higher.size:  # the next higher threshold would miss the target
        assert (scores[y == 1] >= higher.min()).mean() < 0.95


def test_artifact_round_trips_in_gunshot_score_and_pipeline(
    subset_dir, trained, evaluated, random_vggish, tmp_path
):
    import keras

    from gunshot_core import heads, windows
    from pipelines import score

    out, result = evaluated
    card = heads.read_card(trained)
    assert (
        card.frames == 10 and card.input_convention == heads.INPUT_UINT8_AS_FLOAT and card.transform is None
    )
    assert card.classes == ["no_gunshot", "gunshot"] and 0 < card.threshold < 1
    assert card.training["transform_fn"]["frame_mean"] and card.metrics["validation"]["clips"] > 0
    assert os.path.isdir(os.path.join(trained, card.training["transform_fn"]["copy"], "transform_fn"))
    model = keras.saving.load_model(os.path.join(trained, "model.keras"), safe_mode=True)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)

    directory, _ = subset_dir
    clips = _subset_clips(directory, "eval")
    expected = dict(
        zip(
            zip(clips.video_ids, clips.start_times, strict=True),
            pq.read_table(os.path.join(out, "scores.parquet")).column("score").to_pylist(),
            strict=True,
        )
    )
    head = heads.load_head(trained)
    # `gunshot score`'s path from frames: one 10-frame window per clip.
    for vid, start, frames in list(zip(clips.video_ids, clips.start_times, clips.frames, strict=True))[:10]:
        scored = windows.score_frames(head, frames, 10, 10)
        assert scored.scores[0] == pytest.approx(expected[(vid, start)], abs=1e-6)
    # The scoring pipeline on the eval subset TFRecords.
    checkpoint, pca = random_vggish
    scored_dir = tmp_path / "scored"
    score.run(
        [
            "--input",
            f"{directory}/eval",
            "--head",
            trained,
            "--checkpoint",
            checkpoint,
            "--pca",
            pca,
            "--output",
            str(scored_dir),
        ]
    )
    windows_table = pq.read_table([str(p) for p in scored_dir.glob("windows*.parquet")]).to_pydict()
    by_source = {}
    for source, index, value in zip(
        windows_table["source"], windows_table["window_index"], windows_table["score"], strict=True
    ):
        if index == 0:
            by_source[source.rsplit("!", 1)[-1]] = value
    keys = {records.clip_key(v, s): (v, s) for v, s in expected}
    matched = 0
    for member, value in by_source.items():
        key = member.split(":", 1)[-1] if member.count(":") > 1 else member
        if key in keys:
            assert value == pytest.approx(expected[keys[key]], abs=1e-6)
            matched += 1
    assert matched == len(expected)


def test_training_is_reproducible(transformed, tmp_path):
    import keras

    first = _train(transformed, tmp_path / "a", model="mlp", seed=7)
    second = _train(transformed, tmp_path / "b", model="mlp", seed=7)
    other = _train(transformed, tmp_path / "c", model="mlp", seed=8)
    weights = [
        keras.saving.load_model(os.path.join(d, "model.keras"), safe_mode=True).get_weights()
        for d in (first, second, other)
    ]
    for a, b in zip(weights[0], weights[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(weights[0], weights[2], strict=True))


def test_logreg_preset_and_h5_import(transformed, tmp_path):
    from gunshot_core import heads
    from tests.conftest import SEED_MODELS
    from training import train

    mdir = _train(transformed, tmp_path / "logreg", model="logreg")
    head = heads.load_head(mdir)
    assert [line.split("(")[0] for line in head.describe()["layers"]] == [
        "InputLayer",
        "Normalization",
        "BatchNormalization",
        "Flatten",
        "Dense",
    ]
    h5 = SEED_MODELS / "1LayerLSTM__Loss=BinCE_20Epochs_july02.h5"
    assert train.main(["--import_h5", str(h5), "--output", str(tmp_path / "imported")]) == 0
    frames = np.random.default_rng(0).integers(0, 256, (3, 10, 128)).astype(np.uint8)
    np.testing.assert_allclose(
        heads.load_head(tmp_path / "imported").predict(frames), heads.load_head(h5).predict(frames), atol=1e-5
    )


def test_analyze_writes_views(subset_dir, tmp_path):
    from training import analyze

    directory, _ = subset_dir
    assert (
        analyze.main(["--data", f"{directory}/train/subset-*", "--output", str(tmp_path), "--sample", "60"])
        == 0
    )
    for name in ("pca_by_tag", "pca_by_label", "tsne_by_tag", "tsne_by_label"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(tmp_path / "points.csv")))
    assert len(rows) == len(_subset_clips(directory, "train"))
    assert sum(1 for r in rows if r["tsne_x"]) == 60


def test_interrupted_run_resumes(transformed, tmp_path):
    import keras

    from training import train

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("simulated interruption after epoch 2")

    argv = [
        "--transformed",
        transformed,
        "--model",
        "logreg",
        "--output",
        str(tmp_path),
        "--epochs",
        "4",
        "--patience",
        "10",
        "--verbose",
        "0",
    ]
    with pytest.raises(KeyboardInterrupt):
        train.train(train.parse_args(argv), extra_callbacks=[Interrupt()])
    assert (tmp_path / "backup").is_dir() and not (tmp_path / "model.keras").exists()
    assert train.main(argv) == 0
    epochs = [int(row["epoch"]) for row in csv.DictReader(open(tmp_path / "history.csv"))]
    assert epochs == [0, 1, 2, 3]  # epochs 3 and 4 continued the interrupted run
    assert not (tmp_path / "backup").exists()
    assert json.loads((tmp_path / "card.json").read_text())["training"]["epochs_run"] == 4


def test_evaluate_reports_unusable_records(subset_dir, trained, tmp_path):
    from training import evaluate

    directory, expected_errors = subset_dir
    assert (
        evaluate.main(
            [
                "--model",
                trained,
                "--data",
                f"{directory}/train*",
                "--output",
                str(tmp_path),
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(tmp_path / "errors.csv")))
    reasons = {}
    for row in rows:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    assert reasons == expected_errors
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["unusable_records"] == len(rows)
    assert result["chosen"]["clips"] == len(_subset_clips(directory, "train"))


# ---- mixing weighted --train sources ------------------------------------------------------------------


def _transformed_rows(tdir, split):
    """{clip key: (weight, label)} of a transformed split, read with tf.train.Example directly."""
    import glob

    import tensorflow as tf

    from training import data

    out = {}
    for path in sorted(glob.glob(os.path.join(tdir, "transformed", f"{split}-*"))):
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            ex = tf.train.Example.FromString(raw.numpy()).features.feature
            key = data.clip_key(
                ex[data.VIDEO_ID].bytes_list.value[0].decode(), ex[data.START_TIME].float_list.value[0]
            )
            out[key] = (ex[data.WEIGHT].float_list.value[0], ex[data.LABEL].int64_list.value[0])
    return out


@pytest.fixture(scope="session")
def mixed(subset_dir, tmp_path_factory):
    """Transform of two train sources of different sizes (the train split, and one eval shard) at
    weights 0.7 / 0.3, the second given in the ';' template form."""
    from training import transform

    directory, _ = subset_dir
    out = str(tmp_path_factory.mktemp("tdir-mixed"))
    big, small = f"{directory}/train/subset-*", f"{directory}/eval/subset-00000-*"
    argv = ["--train", big, "--train_weight", "0.7", "--train", small, "--train_weight", "0.3"]
    transform.run(argv + ["--eval", f"{directory}/eval/subset-00001-*", "--output", out])
    return out, big, small


def test_mixing_weights_give_each_source_its_share(subset_dir, mixed):
    from training import data, transform

    out, big, small = mixed
    directory, _ = subset_dir
    tags = data.load_tag_table(f"{directory}/tagged-*.parquet")
    sources = [data.load_clips(p, tags) for p in (big, small)]
    keys = [{data.clip_key(v, s) for v, s in zip(c.video_ids, c.start_times, strict=True)} for c in sources]
    n = [len(k) for k in keys]
    assert n[0] > 2 * n[1] > 0 and not keys[0] & keys[1]
    rows = _transformed_rows(out, "train")
    assert set(rows) == keys[0] | keys[1]
    total = sum(n)
    for share, source_keys in zip((0.7, 0.3), keys, strict=True):
        weights = [rows[k][0] for k in source_keys]
        assert sum(weights) == pytest.approx(share * total, rel=1e-5)
        assert max(weights) - min(weights) < 1e-6  # one weight per source
    evaluation = _transformed_rows(out, "eval")
    assert evaluation and {w for w, _ in evaluation.values()} == {1.0}
    info = transform.read_info(out)
    assert [(s["pattern"], s["weight"], s["clips"]) for s in info["train_sources"]] == [
        (big, 0.7, n[0]),
        (small, 0.3, n[1]),
    ]
    assert info["train_clips"] == total


def test_unweighted_transform_weighs_every_clip_one(transformed):
    from training import transform

    assert {w for w, _ in _transformed_rows(transformed, "train").values()} == {1.0}
    sources = transform.read_info(transformed)["train_sources"]
    assert [(s["weight"], s["share"], s["clip_weight"]) for s in sources] == [(None, 1.0, 1.0)]


def test_mixing_weights_without_train_weight_keep_every_clip_at_one():
    from training import transform

    counts = {0: 10, 1: 30}
    assert transform.mixing_weights(None, counts) == {0: 1.0, 1: 1.0}
    weighted = transform.mixing_weights([0.7, 0.3], counts)
    assert weighted[0] * 10 == pytest.approx(0.7 * 40) and weighted[1] * 30 == pytest.approx(0.3 * 40)


def test_train_on_all_one_weights_equals_the_unweighted_path(transformed, tmp_path, monkeypatch):
    import csv as csv_lib

    from training import train

    extra = ("--epochs", "2", "--validation_fraction", "0.2")
    weighted = _train(transformed, tmp_path / "weighted", model="mlp", seed=5, extra=extra)
    monkeypatch.setattr(train, "has_example_weights", lambda _: False)  # as before mixing existed
    plain = _train(transformed, tmp_path / "plain", model="mlp", seed=5, extra=extra)
    monkeypatch.undo()

    def history(mdir):
        return [
            {k: float(v) for k, v in row.items()}
            for row in csv_lib.DictReader(open(os.path.join(mdir, "history.csv")))
        ]

    a, b = history(weighted), history(plain)
    assert len(a) == len(b) == 2
    for row_a, row_b in zip(a, b, strict=True):
        for k in ("loss", "val_loss"):
            assert row_a[k] == pytest.approx(row_b[k], rel=1e-4), k
    cards = [json.load(open(os.path.join(m, "card.json"))) for m in (weighted, plain)]
    assert cards[0]["training"]["class_weight"] == cards[1]["training"]["class_weight"]
    assert cards[0]["threshold"] == pytest.approx(cards[1]["threshold"], abs=1e-4)


def test_train_on_mixed_sources_writes_a_loadable_head(mixed, tmp_path):
    import glob

    from gunshot_core import heads
    from training import transform

    out, _, _ = mixed
    mdir = _train(out, tmp_path / "mdir", model="mlp", extra=("--epochs", "1"))
    head = heads.load_head(mdir)
    assert head.card.training["mixing"]["sources"] == transform.read_info(out)["train_sources"]
    # The balanced class weights come from the weighted class totals of the training part.
    rows = _transformed_rows(out, "train")
    totals = head.card.training["mixing"]["weighted_class_totals"]
    assert 0 < totals["0"] + totals["1"] <= sum(w for w, _ in rows.values()) + 1e-3
    cw = head.card.training["class_weight"]
    assert cw["0"] * totals["0"] == pytest.approx(cw["1"] * totals["1"], rel=1e-6)
    assert glob.glob(os.path.join(mdir, "model.keras"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train", "a", "--train", "b", "--train_weight", "1"], "1 weight(s) for 2 --train source(s)"),
        (["--train", "a", "--train_weight", "0"], "must be finite and > 0"),
        (["--train", "a", "--train_weight", "-1"], "must be finite and > 0"),
        (["--train", "a", "--train_weight", "x"], "takes numbers"),
    ],
)
def test_train_weight_parser_errors(argv, message, capsys):
    from training import transform

    with pytest.raises(SystemExit):
        transform.parse_known_args(argv + ["--tags", "t.parquet", "--output", "o"])
    assert message in capsys.readouterr().err
