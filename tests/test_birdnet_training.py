"""The training loop on BirdNET frames: records of float frames -> transform -> train (default: the
gunprior head) -> evaluate -> gunshot score with the trained head.

The frames are real BirdNET frames of short synthetic field recordings (tests/birdnet_transfer.py),
written with gunshot_core.records.encode_embedding_record, the writer `gunshot dataset` uses.
"""

import json

import numpy as np
import pytest

from tests.conftest import BIRDNET_TESTS

pytestmark = BIRDNET_TESTS

HOP = 1.5
WINDOW = 3


def _write_split(folder, recordings, model, bt):
    """One TFRecord file of clips (WINDOW frames every frame) + the dataset builder's examples table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gunshot_core import records

    folder.mkdir(parents=True)
    payloads, rows = [], {"video_id": [], "start_time_seconds": [], "tag": [], "group": []}
    for rec in recordings:
        labels = bt.frame_labels(rec, model)
        video_id = f"{rec.site}/{rec.path.rsplit('/', 1)[-1]}"
        for i in range(rec.frames.shape[0] - WINDOW + 1):
            part = labels[i : i + WINDOW]
            tag = "gunshot" if (part == 1).any() else "no_gunshot" if (part == 0).all() else None
            if tag is None:
                continue
            start = float(model.frame_start_seconds(i))
            end = float(model.frame_end_seconds(i + WINDOW - 1))
            payloads.append(
                records.encode_embedding_record(video_id, start, end, [], rec.frames[i : i + WINDOW], model)
            )
            for key, value in zip(rows, (video_id, start, tag, rec.site), strict=True):
                rows[key].append(value)
    with open(folder / "clips-00000-of-00001.tfrecord", "wb") as f:
        records.write_tfrecords(f, payloads)
    pq.write_table(pa.table(rows), folder / "examples-00000-of-00001.parquet")


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    from gunshot_core import embedding_models
    from tests import birdnet_transfer as bt

    root = tmp_path_factory.mktemp("birdnet_loop")
    train, held_out = bt.make_split(
        root / "sites",
        train_sites=("siteA", "siteB"),
        held_out_sites=("siteE",),
        minutes=1.0,
        gunshots_per_minute=4.0,
        snr_db=(-5.0, 5.0),
    )
    model = embedding_models.get("birdnet", hop_seconds=HOP)
    bt.embed(train + held_out, model.load())
    _write_split(root / "ds" / "train", train, model, bt)
    _write_split(root / "ds" / "eval", held_out, model, bt)
    from training import transform

    tdir = root / "tft"
    transform.run(
        [
            "--train",
            f"{root}/ds/train/*.tfrecord",
            "--eval",
            f"{root}/ds/eval/*.tfrecord",
            "--tags",
            f"{root}/ds/*/examples-*.parquet",
            "--output",
            str(tdir),
        ]
    )
    return root, model, held_out, tdir


def test_transform_train_evaluate_score_on_birdnet_frames(loop, tmp_path):
    from gunshot_core import heads
    from gunshot_core.score_cli import Scorer
    from training import evaluate, train, transform

    root, model, held_out, tdir = loop
    mdir, edir = tmp_path / "head", tmp_path / "eval"
    info = transform.read_info(str(tdir))
    assert (info["embedding_model"], info["embedding_size"], info["embedding_hop_seconds"]) == (
        "birdnet",
        1024,
        HOP,
    )
    assert len(info["frame_mean"]) == 1024
    # No --model: BirdNET frames train the gunprior head.
    assert (
        train.main(["--transformed", str(tdir), "--output", str(mdir), "--epochs", "3", "--verbose", "0"])
        == 0
    )
    card = json.loads((mdir / "card.json").read_text())
    assert card["embedding_model"] == "birdnet" and card["input_convention"] == "float32"
    assert card["training"]["architecture"]["kind"] == "gunprior"
    assert card["training"]["prior"]["label"] == "Gun_Gun" and card["frame_pooling"]["pooling"] == "max"
    head = heads.load_head(mdir)
    assert (
        evaluate.main(
            [
                "--model",
                str(mdir),
                "--data",
                f"{root}/ds/eval/*.tfrecord",
                "--output",
                str(edir),
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    metrics = json.loads((edir / "metrics.json").read_text())
    assert metrics["chosen"]["roc_auc"] > 0.5
    # gunshot score --embedding_model birdnet --head MDIR runs the head on the recording's frames.
    rec = held_out[0]
    result = Scorer(None, None, str(mdir), embedding_model=model).score(rec.path, WINDOW, 1)
    assert result["peak_frame_score"] == pytest.approx(float(head.frame_scores(rec.frames).max()), abs=2e-6)
    # A VGGish head on BirdNET records is refused in one line naming both models.
    assert (
        evaluate.main(
            [
                "--model",
                heads.DEFAULT_HEAD_PATH,
                "--data",
                f"{root}/ds/eval/*.tfrecord",
                "--output",
                str(tmp_path / "e2"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize("architecture", ["framepool", "logreg", "mlp", "lstm"])
def test_every_architecture_trains_on_birdnet_frames(loop, tmp_path, architecture):
    from gunshot_core import heads
    from training import train

    _, _, held_out, tdir = loop
    argv = [
        "--transformed",
        str(tdir),
        "--model",
        architecture,
        "--epochs",
        "1",
        "--verbose",
        "0",
        "--validation",
        "none",
    ]
    assert train.main(argv + ["--output", str(tmp_path / architecture)]) == 0
    head = heads.load_head(tmp_path / architecture)
    assert head.embedding_model == "birdnet"
    windows = np.stack([rec.frames[:WINDOW] for rec in held_out])  # float32 [n, WINDOW, 1024]
    scores = head.predict(windows)
    assert scores.shape[0] == len(held_out) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    if head.has_frame_scores:
        frame_logits = head.frame_logits(held_out[0].frames)
        assert frame_logits.shape == (held_out[0].frames.shape[0],) and not np.isnan(frame_logits).any()


def test_gunprior_needs_a_model_with_its_own_gun_class():
    from gunshot_core import embedding_models
    from gunshot_core.errors import EmbeddingModelError
    from training import models

    with pytest.raises(EmbeddingModelError, match="gunprior needs frames of a model with its own gun class"):
        embedding_models.get("vggish").gun_prior()
    config = models.PRESETS["gunprior"]
    with pytest.raises(ValueError, match="needs the embedding model's own gun class"):
        models.build_models(config, 3, np.zeros(1024), np.ones(1024), width=1024)
    assert models.default_model("birdnet") == "gunprior" and models.default_model("vggish") == "lstm"
