"""Tests of gunshot_core.heads: golden parity of the five original heads, feeding convention, safety."""

import json
import pickle
import shutil

import h5py
import numpy as np
import pytest

from gunshot_core import heads
from gunshot_core.errors import ModelFileError
from gunshot_core.hashes import file_sha256
from gunshot_core.heads import keras3
from tests.conftest import GOLDEN_CLIPS, SEED_HEADS, SEED_MODELS, head_key

FIXED_INPUT_HEADS = [h for h in SEED_HEADS if h.startswith(("LogisticRegression", "SingleLayerNN"))]
LSTM_HEADS = [h for h in SEED_HEADS if "LSTM" in h]
SATURATED = "SingleLayerNN"  # score is 0.0 for every clip; its logit carries the information


def test_seed_heads_present():
    assert len(SEED_HEADS) == 5 and len(FIXED_INPUT_HEADS) == 2 and len(LSTM_HEADS) == 3


@pytest.fixture(scope="module")
def loaded():
    return {name: heads.load_head(SEED_MODELS / name) for name in SEED_HEADS}


@pytest.mark.parametrize("clip", sorted(GOLDEN_CLIPS))
@pytest.mark.parametrize("head_name", SEED_HEADS)
def test_scores_and_logits_match_golden(loaded, golden, head_name, clip):
    head, data, key = loaded[head_name], golden[clip], head_key(head_name)
    score, logit = head.scores_and_logits(data["postprocessed"])
    assert np.shape(score) == () and np.shape(logit) == ()
    np.testing.assert_allclose(float(score), data[f"score_{key}"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(float(logit), data[f"logit_{key}"], rtol=1e-5, atol=1e-4)
    assert float(head.predict(data["postprocessed"])) == float(score)
    assert float(head.logits(data["postprocessed"])) == float(logit)
    fed, single = head.prepare(data["postprocessed"])
    assert single and fed.shape[1] == int(data[f"head_input_frames_{key}"])


def test_saturated_head_is_distinguished_by_logits(loaded, golden):
    head = loaded[next(h for h in SEED_HEADS if h.startswith(SATURATED))]
    logits = [float(head.logits(g["postprocessed"])) for g in golden.values()]
    assert all(float(head.predict(g["postprocessed"])) == 0.0 for g in golden.values())
    assert len(set(np.round(logits, 1))) == len(logits)  # different clips, different logits


@pytest.mark.parametrize("head_name", SEED_HEADS)
def test_batch_equals_one_by_one(loaded, golden, head_name):
    head = loaded[head_name]
    clips = [golden[c]["postprocessed"] for c in sorted(GOLDEN_CLIPS)]
    batch = np.zeros((len(clips), 10, 128), np.uint8)  # the convention pads with zero frames to 10
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = clip
    scores, logits = head.scores_and_logits(batch)
    assert scores.shape == (len(clips),) and scores.dtype == np.float32
    for i, clip in enumerate(clips):
        np.testing.assert_allclose(scores[i], head.predict(clip), rtol=0, atol=1e-6)
        np.testing.assert_allclose(logits[i], head.logits(clip), rtol=1e-6, atol=1e-5)
    assert head.predict(np.zeros((0, 10, 128), np.uint8)).shape == (0,)


def _long_clip(frames=13, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(frames, 128), dtype=np.uint8)


@pytest.mark.parametrize("head_name", FIXED_INPUT_HEADS)
def test_fixed_input_heads_use_first_ten_frames(loaded, head_name):
    head, x = loaded[head_name], _long_clip()
    assert head.frames == 10
    assert head.prepare(x)[0].shape == (1, 10, 128)
    assert float(head.logits(x)) == float(head.logits(x[:10]))
    assert float(head.logits(x)) != float(head.logits(x[3:]))  # the tail alone scores differently


@pytest.mark.parametrize("head_name", LSTM_HEADS)
def test_lstm_heads_see_every_frame(loaded, head_name):
    head, x = loaded[head_name], _long_clip()
    assert head.frames is None
    assert head.prepare(x)[0].shape == (1, 13, 128)
    assert float(head.logits(x)) != float(head.logits(x[:10]))


def test_padding_is_zero_frames(loaded):
    head = loaded[SEED_HEADS[0]]
    x = _long_clip(4)
    padded = np.concatenate([x, np.zeros((6, 128), np.uint8)])
    assert float(head.logits(x)) == float(head.logits(padded))


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 64), np.uint8), np.zeros((2, 3, 10, 128)), np.array(["a"] * 128)]
)
def test_bad_input_shape_or_dtype_raises(loaded, bad):
    with pytest.raises(ValueError, match="head input"):
        loaded[SEED_HEADS[0]].predict(bad)


def test_default_head_is_the_original_lstm():
    head = heads.load_head()
    assert head.head_id == "1LayerLSTM__Loss=BinCE_20Epochs_july02"
    assert head.threshold == 0.51 and head.frames is None and head.kind == "keras2_h5"
    assert head.sha256 == file_sha256(SEED_MODELS / "1LayerLSTM__Loss=BinCE_20Epochs_july02.h5")


def test_h5_head_pickles_and_scores_the_same(loaded, golden):
    head = loaded[SEED_HEADS[2]]
    clone = pickle.loads(pickle.dumps(head))
    x = golden["pistol_shot"]["postprocessed"]
    assert float(clone.predict(x)) == float(head.predict(x)) and clone.head_id == head.head_id


# --- refusing bad files ---------------------------------------------------------------------------------


def _write_h5(path, layers, weights=None, input_shape=(None, 10, 128)):
    layers = [dict(layer) for layer in layers]
    layers[0]["config"] = dict(layers[0]["config"], batch_input_shape=list(input_shape))
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.2.4"
        f.attrs["model_config"] = json.dumps(
            {"class_name": "Sequential", "config": {"name": "m", "layers": layers}}
        )
        group = f.create_group("model_weights")
        for name, arrays in (weights or {}).items():
            g = group.create_group(name)
            g.attrs["weight_names"] = [f"{name}/{k}:0".encode() for k in arrays]
            for k, v in arrays.items():
                g.create_dataset(f"{name}/{k}:0", data=v)
    return path


DENSE = {"class_name": "Dense", "config": {"name": "d", "units": 1, "activation": "sigmoid"}}
FLATTEN = {"class_name": "Flatten", "config": {"name": "f"}}
DENSE_W = {"d": {"kernel": np.zeros((1280, 1), np.float32), "bias": np.zeros(1, np.float32)}}


def test_tiny_crafted_h5_works(tmp_path):
    weights = {"d": {"kernel": np.full((1280, 1), 0.001, np.float32), "bias": np.array([-1.0], np.float32)}}
    head = heads.load_head(_write_h5(tmp_path / "ok.h5", [FLATTEN, DENSE], weights))
    x = np.full((10, 128), 2, np.uint8)
    np.testing.assert_allclose(float(head.logits(x)), 1280 * 2 * 0.001 - 1.0, rtol=1e-5)


def test_lambda_layer_is_refused(tmp_path):
    marshalled = (
        "4wEAAAAAAAAAAQAAAAQAAABDAAAAcw4AAAB0AGoBZAGDAQEAfABTACkCTnoCcm0gLXJmIH4pAtoCb3PaBnN5c3RlbSkB2gF4"
    )
    lam = {"class_name": "Lambda", "config": {"name": "evil", "function": [marshalled, None, None]}}
    path = _write_h5(tmp_path / "lambda.h5", [lam, FLATTEN, DENSE], DENSE_W)
    with pytest.raises(ModelFileError, match="'Lambda', which is not allowed"):
        heads.load_head(path)


def test_unknown_layer_type_is_refused(tmp_path):
    conv = {"class_name": "Conv1D", "config": {"name": "c", "filters": 4, "kernel_size": 3}}
    with pytest.raises(ModelFileError, match="'Conv1D'"):
        heads.load_head(_write_h5(tmp_path / "conv.h5", [conv, FLATTEN, DENSE], DENSE_W))


def test_wrong_weight_shape_is_refused(tmp_path):
    weights = {"d": {"kernel": np.zeros((128, 1), np.float32), "bias": np.zeros(1, np.float32)}}
    with pytest.raises(ModelFileError, match=r"shape \(128, 1\), expected \(1280, 1\)"):
        heads.load_head(_write_h5(tmp_path / "shape.h5", [FLATTEN, DENSE], weights))


def test_non_sigmoid_output_is_refused(tmp_path):
    relu = {"class_name": "Dense", "config": {"name": "d", "units": 1, "activation": "relu"}}
    with pytest.raises(ModelFileError, match="single sigmoid output"):
        heads.load_head(_write_h5(tmp_path / "relu.h5", [FLATTEN, relu], DENSE_W))


def test_corrupt_and_missing_files_are_refused(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(ModelFileError, match="not a head"):
        heads.load_head(junk)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes((SEED_MODELS / SEED_HEADS[0]).read_bytes()[:20000])
    with pytest.raises(ModelFileError):
        heads.load_head(truncated)
    with pytest.raises(ModelFileError, match="not found"):
        heads.load_head(tmp_path / "missing.h5")
    weights_only = tmp_path / "weights.h5"
    with h5py.File(weights_only, "w") as f:
        f.create_group("dense_1")
    with pytest.raises(ModelFileError, match="no model_config"):
        heads.load_head(weights_only)


# --- head artifacts (model.keras + card.json) -------------------------------------------------------------


@pytest.mark.parametrize("head_name", SEED_HEADS)
def test_import_h5_head_round_trip(tmp_path, golden, loaded, head_name):
    card = heads.import_h5_head(SEED_MODELS / head_name, tmp_path / "mdir")
    assert sorted(p.name for p in (tmp_path / "mdir").iterdir()) == ["card.json", "model.keras"]
    head = heads.load_head(tmp_path / "mdir")
    original = loaded[head_name]
    assert head.kind == "keras3_artifact" and head.head_id == original.head_id == card.head_id
    assert head.frames == original.frames and head.threshold == 0.51
    assert card.source["sha256"] == original.sha256 and card.model_sha256 == head.sha256
    key = head_key(head_name)
    for clip in sorted(GOLDEN_CLIPS):
        score, logit = head.scores_and_logits(golden[clip]["postprocessed"])
        np.testing.assert_allclose(float(score), golden[clip][f"score_{key}"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(float(logit), golden[clip][f"logit_{key}"], rtol=1e-5, atol=1e-4)
    x = _long_clip()
    np.testing.assert_allclose(head.logits(x), original.logits(x), rtol=1e-5, atol=1e-4)
    clone = pickle.loads(pickle.dumps(head))  # pickles as paths; the model is reloaded on first use
    assert clone._net._model is None
    np.testing.assert_allclose(clone.predict(x), head.predict(x), rtol=0, atol=1e-7)


def test_keras2_hard_sigmoid_differs_from_keras3s():
    import keras

    fn = heads.register_keras_objects()
    x = np.array([-3.0, -1.0, 0.0, 1.0, 2.4, 3.0], np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fn(x)), [0.0, 0.3, 0.5, 0.7, 0.98, 1.0], atol=1e-6)
    assert not np.allclose(
        keras.ops.convert_to_numpy(keras.activations.hard_sigmoid(x)), [0, 0.3, 0.5, 0.7, 0.98, 1]
    )
    assert keras.saving.get_registered_name(fn) == heads.KERAS2_HARD_SIGMOID


def test_card_round_trip_and_validation(tmp_path):
    card = heads.write_card(
        tmp_path,
        {"head_id": "lstm-1", "threshold": 0.4, "frames": None, "metrics": {"auc": 0.9}, "future": 1},
    )
    assert card.created_utc and card.library_version and card.model_sha256 is None
    back = heads.read_card(tmp_path)
    assert back == card and back.extra == {"future": 1}
    on_disk = json.loads((tmp_path / "card.json").read_text())
    assert (
        on_disk["format"] == heads.CARD_FORMAT and on_disk["format_version"] == 1 and on_disk["future"] == 1
    )
    for bad, match in [
        ({"head_id": "x", "threshold": 1.5}, "threshold"),
        ({"head_id": "x", "input_convention": "float"}, "input_convention"),
        ({"head_id": "x", "format_version": 99}, "newer"),
        ({"head_id": "x", "transform": {"kind": "sklearn"}}, "transform"),
        ({"threshold": 0.5}, "head_id"),
    ]:
        with pytest.raises(ModelFileError, match=match):
            heads.HeadCard.from_dict(bad)
    with pytest.raises(ModelFileError, match="no card.json"):
        heads.read_card(tmp_path / "nowhere")


def test_tampered_model_file_is_refused(tmp_path):
    heads.import_h5_head(SEED_MODELS / FIXED_INPUT_HEADS[0], tmp_path)
    model = tmp_path / "model.keras"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(ModelFileError, match="does not match the card's model_sha256"):
        heads.load_head(tmp_path)


def test_keras_model_with_lambda_is_refused(tmp_path):
    import keras

    inputs = keras.Input(shape=(10, 128))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")
    heads.write_card(tmp_path, {"head_id": "evil", "frames": 10})
    with pytest.raises(ModelFileError, match="Lambda"):
        heads.load_head(tmp_path)


def test_artifact_with_div_255_convention_and_generic_output(tmp_path):
    """A head trained on x/255 whose last layer is not a sigmoid Dense: the card's convention is applied."""
    import keras

    inputs = keras.Input(shape=(None, 128))
    pooled = keras.layers.GlobalAveragePooling1D()(inputs)
    dense = keras.layers.Dense(1, name="z")
    outputs = keras.layers.Activation("sigmoid")(dense(pooled))
    model = keras.Model(inputs, outputs)
    dense.set_weights([np.full((128, 1), 1.0, np.float32), np.array([-64.0], np.float32)])
    model.save(tmp_path / "model.keras")
    heads.write_card(tmp_path, {"head_id": "mean", "input_convention": "uint8_div_255", "pad_to_frames": 0})
    head = heads.load_head(tmp_path / "card.json")
    x = np.full((5, 128), 255, np.uint8)  # mean of x/255 = 1 -> z = 128 - 64 = 64
    np.testing.assert_allclose(float(head.logits(x * 0 + 128)), 128 * 128 / 255 - 64, rtol=1e-4)
    assert float(head.predict(x)) == pytest.approx(1.0)


def test_load_head_accepts_copied_artifact_dir(tmp_path):
    heads.import_h5_head(SEED_MODELS / FIXED_INPUT_HEADS[1], tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a, b = heads.load_head(tmp_path / "a"), heads.load_head(tmp_path / "b" / "model.keras")
    assert a.sha256 == b.sha256 and b.source_path == str(tmp_path / "b")


def test_artifact_with_tf_transform_hook(tmp_path):
    """card['transform'] points at a tf.Transform output that is applied before the model."""
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(8, 10, 128)).astype(np.float32)
    spec = {"embedding": tf.io.FixedLenFeature([10, 128], tf.float32)}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))

    def preprocessing_fn(inputs):
        return {"embedding_xf": tft.scale_to_z_score(inputs["embedding"])}

    with tft_beam.Context(temp_dir=str(tmp_path / "tft-tmp"), force_tf_compat_v1=False):
        transform_fn = ([{"embedding": c} for c in clips], metadata) | tft_beam.AnalyzeDataset(
            preprocessing_fn
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "tft"))

    inputs = keras.Input(shape=(10, 128))
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    weights = rng.standard_normal((1280, 1)).astype(np.float32) * 0.01
    dense.set_weights([weights, np.array([0.25], np.float32)])
    model.save(tmp_path / "model.keras")
    transform = {"kind": "tf_transform", "dir": "tft", "input_key": "embedding", "output_key": "embedding_xf"}
    heads.write_card(tmp_path, {"head_id": "zscored", "frames": 10, "transform": transform})
    head = heads.load_head(tmp_path)
    x = rng.integers(0, 256, size=(3, 10, 128), dtype=np.uint8)
    z = (x.astype(np.float64) - clips.mean()) / clips.std()
    expected = z.reshape(3, -1) @ weights.astype(np.float64)[:, 0] + 0.25
    np.testing.assert_allclose(head.logits(x), expected, rtol=1e-4, atol=1e-4)
    clone = pickle.loads(pickle.dumps(head))
    np.testing.assert_allclose(clone.logits(x), head.logits(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "node, match",
    [
        ({"module": "os", "class_name": "system", "config": {}}, "module 'os'"),
        ({"module": "builtins", "class_name": "eval", "config": {}}, "module 'builtins'"),
        ({"module": "keras.layers", "class_name": "Dense", "registered_name": "evil>Layer"}, "evil>Layer"),
        ({"module": "builtins", "class_name": "function", "config": "evil>fn"}, "evil>fn"),
        ({"module": "keras.layers", "class_name": "Lambda", "config": {}}, "Lambda"),
    ],
)
def test_keras_config_check_refuses_foreign_references(node, match):
    with pytest.raises(ModelFileError, match=match):
        keras3._check_keras_config({"config": {"layers": [node]}}, "model.keras")
    keras3._check_keras_config(
        {"module": "builtins", "class_name": "function", "config": heads.KERAS2_HARD_SIGMOID}, "m"
    )
