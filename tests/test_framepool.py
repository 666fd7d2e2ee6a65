"""The framepool head: a per-frame scorer pooled over the window, and events on 0.96 s frames.

Synthetic windows where a "shot" (a fixed direction added to the background) fills one or two of the
ten frames at a random position -> training.transform -> training.train --model framepool (max and
attention pooling) -> load_head, frame scores, and a pipelines.score run whose events start and end
on frame boundaries.
"""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gunshot_core import heads, params, records
from pipelines import schemas

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("framepool")]

WIDTH = params.EMBEDDING_SIZE
SHOT_AMPLITUDE = 30.0


def _directions():
    rng = np.random.default_rng(1234)
    shot = rng.choice([-1.0, 1.0], WIDTH)
    confuser = rng.choice([-1.0, 1.0], WIDTH)
    return shot, confuser


def background(rng, n: int) -> np.ndarray:
    """float64 [n, 128] background frames around 128."""
    return rng.normal(128.0, 20.0, (n, WIDTH))


def quantise(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def add_shot(frames: np.ndarray, at: int, length: int = 1) -> np.ndarray:
    shot, _ = _directions()
    out = frames.copy()
    out[at : at + length] += SHOT_AMPLITUDE * shot
    return out


def _window(rng, positive: bool) -> np.ndarray:
    x = background(rng, params.HEAD_FRAMES)
    if positive:
        length = int(rng.integers(1, 3))
        x = add_shot(x, int(rng.integers(0, params.HEAD_FRAMES - length + 1)), length)
    elif rng.random() < 0.5:
        _, confuser = _directions()
        x[int(rng.integers(0, params.HEAD_FRAMES))] += SHOT_AMPLITUDE * confuser
    return quantise(x)


def write_split(directory, split: str, n: int, seed: int) -> list[dict]:
    """Writes `n` windows (half positive) as SequenceExamples; returns their tagged-table rows."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(directory, split), exist_ok=True)
    path = os.path.join(directory, split, "windows-00000-of-00001.tfrecord")
    payloads, rows = [], []
    for i in range(n):
        positive = i % 2 == 0
        video_id = f"{split}{i:04d}"
        payloads.append(records.encode_sequence_example(video_id, 0.0, 9.6, [], _window(rng, positive)))
        rows.append(
            {
                "split": split,
                "clip_key": records.clip_key(video_id, 0.0),
                "video_id": video_id,
                "start_time_seconds": 0.0,
                "end_time_seconds": 9.6,
                "labels": [],
                "label_names": [],
                "tag": "gunshot" if positive else "no_gunshot",
                "co_labels": [],
                "leaked": False,
                "selected": True,
                "weight": 1.0,
                "rank": i,
                "source": path,
                "record_index": i,
            }
        )
    with open(path, "wb") as f:
        records.write_tfrecords(f, payloads)
    return rows


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    from training import transform

    root = tmp_path_factory.mktemp("framepool")
    rows = write_split(root, "train", 240, seed=0) + write_split(root, "eval", 80, seed=1)
    pq.write_table(pa.Table.from_pylist(rows, schema=schemas.SUBSET_TAGGED), root / "tagged-00000.parquet")
    out = root / "tdir"
    transform.run(["--train", f"{root}/train*", "--eval", f"{root}/eval*", "--output", str(out)])
    return str(out)


def _train(transformed, out, *extra):
    from training import train

    argv = ["--transformed", transformed, "--model", "framepool", "--output", str(out)]
    argv += ["--epochs", "12", "--batch_size", "16", "--validation_fraction", "0.2", "--verbose", "0"]
    assert train.main(argv + list(extra)) == 0
    return str(out)


@pytest.fixture(scope="module")
def max_head(transformed, tmp_path_factory):
    return _train(transformed, tmp_path_factory.mktemp("fp_max") / "mdir")


@pytest.fixture(scope="module")
def attention_head(transformed, tmp_path_factory):
    return _train(transformed, tmp_path_factory.mktemp("fp_att") / "mdir", "--pooling", "attention")


def _eval_windows(n=60, seed=7):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2 == 0
    return np.stack([_window(rng, bool(p)) for p in labels]), labels.astype(int)


@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_framepool_trains_saves_and_loads_through_load_head(pooling, max_head, attention_head):
    import keras
    from sklearn.metrics import roc_auc_score

    mdir = max_head if pooling == "max" else attention_head
    head = heads.load_head(mdir)
    assert head.kind == "keras3_artifact" and head.has_frame_scores and head.pooling == pooling
    card = json.loads(open(os.path.join(mdir, heads.CARD_FILENAME)).read())
    assert card["frame_pooling"]["pooling"] == pooling and card["frames"] == params.HEAD_FRAMES
    assert card["training"]["architecture"]["kind"] == "framepool"
    # Only standard Keras layers: the archive's config passes the allow-list and safe_mode.
    model = keras.saving.load_model(os.path.join(mdir, heads.MODEL_FILENAME), safe_mode=True)
    assert all(type(layer).__module__.startswith("keras") for layer in model.layers)
    windows, labels = _eval_windows()
    scores = head.predict(windows)
    assert roc_auc_score(labels, scores) >= 0.95
    # The head's window score is the Keras model's output.
    np.testing.assert_allclose(scores, model.predict(windows.astype(np.float32), verbose=0)[:, 0], atol=1e-6)


def test_window_score_is_the_pool_of_frame_scores(max_head, attention_head):
    import keras

    windows, _ = _eval_windows(20)
    head = heads.load_head(max_head)
    frame_scores = np.stack([head.frame_scores(w) for w in windows])
    assert frame_scores.shape == (20, params.HEAD_FRAMES) and frame_scores.dtype == np.float32
    np.testing.assert_allclose(head.predict(windows), frame_scores.max(axis=1), atol=1e-6)

    # Attention: softmax of the attention logits weighs the frame logits (computed here from the
    # saved model's own layers, independently of gunshot_core.heads).
    head = heads.load_head(attention_head)
    model = keras.saving.load_model(os.path.join(attention_head, heads.MODEL_FILENAME), safe_mode=True)
    parts = keras.Model(
        model.inputs, [model.get_layer("frame_logit").output, model.get_layer("attention_logit").output]
    )
    z, a = (np.asarray(o, np.float64)[..., 0] for o in parts.predict(windows.astype(np.float32), verbose=0))
    w = np.exp(a - a.max(axis=1, keepdims=True))
    pooled = (w * z).sum(axis=1) / w.sum(axis=1)
    np.testing.assert_allclose(head.predict(windows), 1 / (1 + np.exp(-pooled)), atol=1e-6)
    frame_scores = np.stack([head.frame_scores(x) for x in windows])
    np.testing.assert_allclose(frame_scores, 1 / (1 + np.exp(-z)), atol=1e-6)
    np.testing.assert_allclose(
        heads.pool_frame_logits(z, "attention", a), pooled.astype(np.float32), atol=1e-6
    )


def test_max_pooling_does_not_care_where_the_shot_falls(max_head):
    head = heads.load_head(max_head)
    rng = np.random.default_rng(99)
    base = quantise(background(rng, params.HEAD_FRAMES - 1))
    shot_frame = quantise(add_shot(background(rng, 1), 0))[0]
    # The same nine background frames and one shot frame, the shot moved through every position.
    placed = np.stack(
        [np.insert(base, position, shot_frame, axis=0) for position in range(params.HEAD_FRAMES)]
    )
    scores = head.predict(placed)
    assert np.ptp(scores) <= 1e-6, scores
    # ... and the head found the shot: the shot frame outscores every background frame.
    frame_scores = head.frame_scores(placed[0])
    assert frame_scores[0] > frame_scores[1:].max() and scores[0] >= 0.5


def test_frame_scores_are_exact_in_chunks(max_head, monkeypatch):
    head = heads.load_head(max_head)
    frames = quantise(add_shot(background(np.random.default_rng(5), 50), 17, 2))
    whole = head.frame_scores(frames)
    monkeypatch.setattr(heads, "FRAME_CHUNK", 7)
    np.testing.assert_allclose(head.frame_scores(frames), whole, atol=1e-6)
    assert head.frame_scores(np.zeros((0, WIDTH), np.uint8)).shape == (0,)
    with pytest.raises(ValueError, match="no frame scores"):
        heads.load_head().frame_scores(frames)


def test_merge_frame_events_on_frame_boundaries():
    from pipelines.scoring import events as scoring_events

    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.1, 0.7], np.float32)
    events = scoring_events.merge_frame_events(scores, np.array([0, 2]), np.array([4, 6]), 0.5)
    f = params.FRAME_SECONDS
    assert [(e.start_seconds, e.end_seconds, e.peak_seconds, e.num_windows) for e in events] == [
        (pytest.approx(f), pytest.approx(3 * f), pytest.approx(f), 2),
        (pytest.approx(5 * f), pytest.approx(6 * f), pytest.approx(5 * f), 1),
    ]
    assert [e.peak_score for e in events] == [pytest.approx(0.9), pytest.approx(0.7)]


def test_scoring_run_gives_events_on_frame_boundaries(max_head, random_vggish, tmp_path):
    """A recording (as an embedding TFRecord) with shots at frames 13 and 40-41 -> two frame events."""
    from pipelines import score
    from pipelines.io import tables

    rng = np.random.default_rng(3)
    frames = add_shot(add_shot(background(rng, 60), 13), 40, 2)
    frames = quantise(frames)
    path = tmp_path / "site.tfrecord"
    with open(path, "wb") as f:
        records.write_tfrecords(f, [records.encode_sequence_example("site-a", 0.0, 57.6, [], frames)])
    ckpt, pca = random_vggish
    out = tmp_path / "out"
    score.run(
        [f"--input={path}", f"--output={out}", f"--checkpoint={ckpt}", f"--pca={pca}"]
        + [f"--head={max_head}", "--threshold=0.5"]
    )
    head = heads.load_head(max_head)
    expected_scores = head.frame_scores(frames)
    above = np.flatnonzero(expected_scores >= 0.5)
    assert above.tolist() == [13, 40, 41]  # the head finds the shots and nothing else
    table = tables.read_table(str(out), "frames").to_pandas()
    assert table.frame_index.tolist() == list(range(60))
    np.testing.assert_allclose(table.score, expected_scores, atol=1e-6)
    np.testing.assert_allclose(table.start_seconds, np.arange(60) * params.FRAME_SECONDS)
    events = tables.read_table(str(out), "events").to_pandas()
    f = params.FRAME_SECONDS
    np.testing.assert_allclose(events.start_seconds, [13 * f, 40 * f])
    np.testing.assert_allclose(events.end_seconds, [14 * f, 42 * f])
    np.testing.assert_allclose(events.peak_score, [expected_scores[13], expected_scores[40:42].max()])
    # Windows of 10 frames every 5 overlapping each event: frames 13 -> windows 5 and 10; 40-41 ->
    # windows 35 and 40 (starts).
    assert events.num_windows.tolist() == [2, 2]
    windows = tables.read_table(str(out), "windows").to_pandas()
    for row in windows.itertuples():
        first = int(round(row.start_seconds / f))
        assert row.score == pytest.approx(float(expected_scores[first : first + 10].max()), abs=1e-6)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["events_from"] == "frames"
    assert (out / "frames-00000-of-00001.parquet").exists()

    # gunshot evaluate-events sweeps thresholds over the frames, as the pipeline merged them.
    from training import evaluate_events

    run = evaluate_events.load_run("fp", str(out), [], {"gunshot"}, None, True, [])
    (rec,) = run.recordings
    np.testing.assert_allclose(rec.starts, np.arange(60) * f)
    swept = evaluate_events.events_at(rec, 0.5 - 1e-7, run.threshold)
    assert [(round(a / f), round(b / f)) for a, b, _ in swept] == [(13, 14), (40, 42)]


def test_score_cli_locates_the_best_frame(max_head, random_vggish, capsys):
    from gunshot_core import score_cli
    from tests.conftest import SEED_WAVS

    ckpt, pca = random_vggish
    wav = str(SEED_WAVS / "pistol_shot.wav")
    argv = ["--json", "--checkpoint", ckpt, "--pca", pca, "--head", max_head, wav]
    assert score_cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    f = params.FRAME_SECONDS
    start = result["peak_start_seconds"]
    assert result["peak_end_seconds"] == pytest.approx(start + f, abs=1e-3)
    assert start / f == pytest.approx(round(start / f), abs=1e-3)
    assert 0 < result["peak_frame_score"] <= 1


def test_frame_pooling_card_is_checked(tmp_path):
    """A card whose frame_pooling is malformed or names a layer the model lacks is refused."""
    import dataclasses
    import pickle

    from gunshot_core.errors import ModelFileError
    from training import models

    config = models.PRESETS["framepool"]
    _, serving = models.build_models(config, 10, np.full(128, 128.0), np.full(128, 20.0))
    serving.save(tmp_path / heads.MODEL_FILENAME)
    good = models.frame_pooling_card(config)
    heads.write_card(tmp_path, heads.HeadCard(head_id="fp", frames=10, frame_pooling=good))
    head = heads.load_head(tmp_path)
    frames = quantise(background(np.random.default_rng(0), 12))
    copy = pickle.loads(pickle.dumps(head))  # as a Beam worker receives it: reloads lazily
    np.testing.assert_allclose(copy.frame_scores(frames), head.frame_scores(frames), atol=1e-7)
    assert models.frame_pooling_card(models.PRESETS["mlp"]) is None

    for bad, match in [
        ({"pooling": "mean", "frame_logits": "frame_logit"}, "frame_pooling"),
        ({"pooling": "attention", "frame_logits": "frame_logit", "attention_logits": None}, "frame_pooling"),
    ]:
        with pytest.raises(ModelFileError, match=match):
            heads.HeadCard(head_id="fp", frame_pooling=bad).validate()
    card = dataclasses.replace(heads.read_card(tmp_path), frame_pooling={**good, "frame_logits": "nope"})
    heads.write_card(tmp_path, card)
    with pytest.raises(ModelFileError, match="lacks"):
        heads.load_head(tmp_path)
