"""Parity of every VGGish stage with golden outputs of the official reference implementation.

Tolerances are those of ../shared/golden/README.md.
"""

import pathlib

import numpy as np
import pytest

from gunshot_core import audio, features, params
from gunshot_core.postprocess import Postprocessor
from gunshot_core.vggish import VGGish
from tests.conftest import GOLDEN_CLIPS, load_recipe

CLIPS = sorted(GOLDEN_CLIPS)


@pytest.fixture(scope="module")
def model(random_vggish):
    return VGGish.from_checkpoint(random_vggish[0])


@pytest.fixture(scope="module")
def postprocessor(random_vggish):
    return Postprocessor.from_npz(random_vggish[1])


def assert_uint8_close(actual, expected, max_fraction=0.005):
    """Exact, except one LSB on at most `max_fraction` of the values (the golden tolerance)."""
    assert actual.shape == expected.shape and actual.dtype == np.uint8
    diff = np.abs(actual.astype(int) - expected.astype(int))
    assert diff.max(initial=0) <= 1, f"max uint8 difference {diff.max()}"
    assert (diff > 0).mean() <= max_fraction if diff.size else True


@pytest.mark.parametrize("clip", CLIPS)
def test_waveform_with_resampy_matches_reference(clip, golden):
    g = golden[clip]
    waveform = audio.load_audio(str(GOLDEN_CLIPS[clip]), resampler="resampy")
    assert waveform.dtype == np.float32
    assert waveform.shape == g["waveform_16k"].shape  # length exact
    np.testing.assert_allclose(waveform, g["waveform_16k"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("clip", CLIPS)
def test_examples_from_golden_waveform(clip, golden):
    g = golden[clip]
    examples = features.waveform_to_examples(g["waveform_16k"], params.SAMPLE_RATE)
    assert examples.dtype == np.float32
    assert examples.shape == g["examples"].shape == (int(g["num_examples"]), 96, 64)
    np.testing.assert_allclose(examples, g["examples"], atol=1e-3, rtol=0)


@pytest.mark.parametrize("clip", CLIPS)
def test_raw_embedding_from_golden_examples(clip, golden, model):
    g = golden[clip]
    raw = model.embed(g["examples"])
    assert raw.dtype == np.float32 and raw.shape == g["raw_embedding"].shape
    np.testing.assert_allclose(raw, g["raw_embedding"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("clip", CLIPS)
def test_postprocessed_from_golden_raw(clip, golden, postprocessor):
    g = golden[clip]
    assert_uint8_close(postprocessor.postprocess(g["raw_embedding"]), g["postprocessed"])


@pytest.mark.parametrize("clip", CLIPS)
def test_end_to_end_with_reference_resampler(clip, golden, model, postprocessor):
    g = golden[clip]
    examples = features.waveform_to_examples(audio.load_audio(str(GOLDEN_CLIPS[clip]), resampler="resampy"))
    raw = model.embed(examples)
    np.testing.assert_allclose(raw, g["raw_embedding"], atol=5e-4, rtol=0)
    assert_uint8_close(postprocessor.postprocess(raw), g["postprocessed"])


@pytest.mark.parametrize("clip", CLIPS)
def test_streamed_examples_equal_whole_file(clip):
    path = str(GOLDEN_CLIPS[clip])
    whole = features.waveform_to_examples(audio.load_audio(path))
    # Tiny chunks force many block and example boundaries inside one clip.
    chunks = list(audio.iter_examples(path, chunk_seconds=1.3))
    starts = [start for start, _ in chunks]
    streamed = np.concatenate([block for _, block in chunks]) if chunks else np.zeros((0, 96, 64), np.float32)
    assert streamed.shape == whole.shape
    assert starts == sorted(starts) and (not chunks or starts[0] == 0)
    np.testing.assert_allclose(streamed, whole, atol=2e-5, rtol=0)


def test_pca_file_is_the_recipe(random_vggish):
    expected = load_recipe().random_pca_params()
    pp = Postprocessor.from_npz(random_vggish[1])
    np.testing.assert_array_equal(pp.pca_eigen_vectors, expected["pca_eigen_vectors"])


def test_embedding_does_not_depend_on_how_examples_are_grouped(model):
    """Fixed-shape blocks: the same example gives the same bits alone, in sevens or in one call."""
    examples = np.random.default_rng(1).normal(-2, 2, (70, 96, 64)).astype(np.float32)
    together = model.embed(examples)
    in_sevens = np.concatenate([model.embed(examples[i : i + 7]) for i in range(0, 70, 7)])
    one_by_one = np.concatenate([model.embed(examples[i : i + 1]) for i in (0, 33, 69)])
    np.testing.assert_array_equal(together, in_sevens)
    np.testing.assert_array_equal(together[[0, 33, 69]], one_by_one)
    assert model.embed(np.zeros((0, 96, 64), np.float32)).shape == (0, 128)
    with pytest.raises(ValueError, match=r"\[n, 96, 64\]"):
        model.embed(np.zeros((3, 64, 96), np.float32))


@pytest.fixture(scope="module")
def seed_heads():
    from gunshot_core.heads import load_head
    from tests.conftest import SEED_HEADS, SEED_MODELS

    return {name: load_head(str(SEED_MODELS / name)) for name in SEED_HEADS}


@pytest.mark.parametrize("clip", CLIPS)
def test_default_path_scores_stay_within_0_01_of_reference(clip, golden, model, postprocessor, seed_heads):
    """The default resampler (not the reference's) keeps every head's score within 0.01."""
    from tests.conftest import head_key

    g = golden[clip]
    frames = postprocessor.postprocess(
        model.embed(features.waveform_to_examples(audio.load_audio(str(GOLDEN_CLIPS[clip]))))
    )
    assert frames.shape == g["postprocessed"].shape
    for name, head in seed_heads.items():
        key = head_key(name)
        score = float(np.asarray(head.predict(frames)).reshape(-1)[0])
        assert abs(score - float(g[f"score_{key}"])) < 0.01, (name, score)
        if "SingleLayerNN" in name:  # saturated: its score is 0 everywhere, so check the logit
            logit = float(np.asarray(head.logits(frames)).reshape(-1)[0])
            assert logit == pytest.approx(float(g[f"logit_{key}"]), rel=0.01)


def test_inference_graph_equals_the_keras_model(random_vggish, golden):
    """The plain-ops inference graph and the Keras model (for users who want one) agree."""
    from gunshot_core.vggish import build_model, read_checkpoint_weights

    weights = read_checkpoint_weights(random_vggish[0])
    keras_model = build_model(weights)
    examples = golden["pistol_shot"]["examples"]
    np.testing.assert_allclose(
        keras_model(examples, training=False).numpy(), VGGish(weights).embed(examples), atol=1e-5, rtol=0
    )


def test_v2_checkpoint_reads_the_same_weights(random_vggish, tmp_path):
    """A TF V2 checkpoint (prefix + .index) with the official variable names reads like the V1 file."""
    import tensorflow as tf

    from gunshot_core.vggish import read_checkpoint_weights

    v1 = read_checkpoint_weights(random_vggish[0])
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        variables = {name: tf.compat.v1.Variable(value, name=name) for name, value in v1.items()}
        sess.run(tf.compat.v1.global_variables_initializer())
        prefix = tf.compat.v1.train.Saver(variables).save(sess, str(tmp_path / "vggish_v2"))
    assert pathlib.Path(prefix + ".index").exists()
    v2 = read_checkpoint_weights(prefix)
    assert v2.keys() == v1.keys()
    for name in v1:
        np.testing.assert_array_equal(v2[name], v1[name])


def test_unreadable_checkpoints_name_the_file_and_the_problem(tmp_path):
    from gunshot_core.errors import ModelFileError
    from gunshot_core.vggish import VGGish

    with pytest.raises(ModelFileError, match="not found"):
        VGGish.from_checkpoint(str(tmp_path / "missing.ckpt"))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(ModelFileError, match="garbage.ckpt"):
        VGGish.from_checkpoint(str(garbage))


def test_v1_checkpoint_is_read_from_its_v2_copy_after_the_first_time(random_vggish, tmp_path, monkeypatch):
    """The first read writes a V2 copy into the user's cache; later reads use it, with equal weights;
    a damaged copy is replaced; an unwritable cache only costs speed."""
    from gunshot_core import hashes, vggish

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reads = []
    restore = vggish._restore
    monkeypatch.setattr(
        vggish, "_restore", lambda path, v2, names: reads.append(v2) or restore(path, v2, names)
    )
    ckpt = random_vggish[0]
    first = {k: v.numpy() for k, v in vggish.read_checkpoint_tensors(ckpt).items()}
    copy = vggish.derived_v2_prefix(ckpt)
    assert copy.with_suffix(".index").exists() and str(copy).startswith(str(hashes.user_cache_dir()))
    second = {k: v.numpy() for k, v in vggish.read_checkpoint_tensors(ckpt).items()}
    assert reads == [False, True]  # V1 once, then the copy
    for name in first:
        np.testing.assert_array_equal(second[name], first[name])

    data = next(copy.parent.glob("weights.data-*"))
    data.write_bytes(data.read_bytes()[:1000])  # truncated copy
    third = vggish.read_checkpoint_tensors(ckpt)
    assert reads[2:] == [True, False] and copy.with_suffix(".index").exists()
    np.testing.assert_array_equal(third["vggish/fc2/weights"].numpy(), first["vggish/fc2/weights"])
    assert reads.count(False) == 2 and vggish.read_checkpoint_tensors(ckpt) and reads[-1] is True

    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert vggish.read_checkpoint_tensors(ckpt, cache=True).keys() == first.keys()
