"""The adaptation loop end to end: score -> dataset -> transform/train -> score held-out sites -> evaluate.

Six synthetic field sites (tests/field_sites.py, three minutes each, gunshots at 5-20 dB SNR among
speech, footsteps, clicks and branch snaps) with the random-weight VGGish of the test fixtures:

    gunshot batch --write_embeddings            sites 1-4 (scored with the default head)
    gunshot dataset --audio / --embeddings      sites 1-4, split by site; both give the same files
    gunshot transform, gunshot train --model framepool
    gunshot batch --head NEW, and the default   held-out sites 5-6
    gunshot evaluate-events --scores default=.. --scores new=..

and checks that the retrained head finds the held-out gunshots at a false-alarm rate the default head
cannot match. Every step runs in this process through the commands' own `run`/`main` (the
DirectRunner), as `docs/adapt.md` walks it with `gunshot ...` commands.
"""

import json

import pyarrow.parquet as pq
import pytest

from gunshot_core import annotations
from pipelines.review import verdicts
from tests import field_sites, review_runs
from tests.conftest import tree_bytes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not field_sites.SEED_WAVS.exists(), reason="needs ../shared/seed/wavs"),
]

TRAIN_SITES = ("site1", "site2", "site3", "site4")
HELDOUT_SITES = ("site5", "site6")
MINUTES = 3.0
NEGATIVES = ("speech", "footsteps", "click", "branch")


def _best_recall(sweep: list[dict], scorer: str, max_false_alarms_per_hour: float) -> float:
    rows = [
        r
        for r in sweep
        if r["scorer"] == scorer
        and r["false_alarms_per_hour"] is not None
        and r["false_alarms_per_hour"] <= max_false_alarms_per_hour
    ]
    return max((r["recall"] for r in rows), default=0.0)


@pytest.fixture(scope="module")
def loop(random_vggish, tmp_path_factory):
    from pipelines import score
    from pipelines.dataset import pipeline as dataset
    from training import evaluate_events, train, transform

    ckpt, pca = (str(p) for p in random_vggish)
    models = ["--checkpoint", ckpt, "--pca", pca]
    work = tmp_path_factory.mktemp("adapt")
    sites = work / "sites"
    insertions = field_sites.make_sites(
        sites,
        sites=TRAIN_SITES + HELDOUT_SITES,
        recordings_per_site=1,
        minutes=MINUTES,
        seed=0,
        gunshots_per_minute=4.0,
        confusers_per_minute=4.0,
    )
    train_audio = [arg for s in TRAIN_SITES for arg in ("--input", str(sites / s))]
    heldout_audio = [arg for s in HELDOUT_SITES for arg in ("--input", str(sites / s))]
    train_notes = [arg for s in TRAIN_SITES for arg in ("--annotations", str(sites / s))]

    # 1. score the archive with the default head, keeping the embeddings
    score.run([*train_audio, "--output", str(work / "scores_train"), "--write_embeddings", *models])
    # 2. the reviewed annotations (here: the generator's Raven tables) -> a training set split by site
    common = [*train_notes, "--negative", *NEGATIVES, "--group_pattern", "/(site[0-9]+)/"]
    common += ["--split", "train=0.75", "--split", "eval=0.25", "--positive_shifts", "2"]
    common += ["--negatives_per_hour", "300"]
    audio_args = [a.replace("--input", "--audio") for a in train_audio]
    dataset.run([*audio_args, *common, "--output", str(work / "dataset_audio"), *models])
    dataset.run(["--embeddings", str(work / "scores_train"), *common, "--output", str(work / "dataset")])
    # 3. transform and train a frame-pooling head
    transform.run(
        ["--train", str(work / "dataset" / "train"), "--eval", str(work / "dataset" / "eval")]
        + ["--output", str(work / "tft")]
    )
    assert train.main(["--transformed", str(work / "tft"), "--model", "framepool"]
                      + ["--output", str(work / "head"), "--verbose", "0"]) == 0  # fmt: skip
    # 4. score the held-out sites with the new head and with the default head
    score.run([*heldout_audio, "--output", str(work / "scores_new"), "--head", str(work / "head"), *models])
    # (with the embeddings, so that a head trained from review verdicts rescores them without VGGish)
    score.run([*heldout_audio, "--output", str(work / "scores_default"), "--write_embeddings", *models])
    # 5. compare them on the held-out annotations
    argv = ["--scores", f"default={work / 'scores_default'}", "--scores", f"new={work / 'scores_new'}"]
    argv += [arg for s in HELDOUT_SITES for arg in ("--annotations", str(sites / s))]
    argv += ["--group_pattern", "/(site[0-9]+)/", "--target_recall", "0.6", "--output", str(work / "eval")]
    assert evaluate_events.main(argv) == 0
    return work, insertions


def test_dataset_from_embeddings_equals_dataset_from_audio(loop):
    work, _ = loop
    from_audio, from_embeddings = tree_bytes(work / "dataset_audio"), tree_bytes(work / "dataset")
    assert sorted(from_audio) == sorted(from_embeddings)
    assert any(name.endswith(".tfrecord") for name in from_audio)
    for name in from_audio:
        assert from_audio[name] == from_embeddings[name], name
    stats = json.loads((work / "dataset" / "stats.json").read_text())
    assert stats["leakage"]["groups"] == 0
    examples = pq.read_table(work / "dataset" / "examples-00000-of-00001.parquet").to_pylist()
    splits = {}
    for row in examples:
        splits.setdefault(row["split"], set()).add(row["group"])
    assert splits["train"].isdisjoint(splits["eval"])
    assert splits["train"] | splits["eval"] <= set(TRAIN_SITES)


def test_retrained_head_beats_the_default_head_on_held_out_sites(loop):
    work, insertions = loop
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    sweep = pq.read_table(work / "eval" / "sweep.parquet").to_pylist()
    new, default = metrics["scorers"]["new"], metrics["scorers"]["default"]
    # the evaluator saw exactly the held-out gunshots and audio the generator made
    heldout = [i for i in insertions if i.site in HELDOUT_SITES and i.label == field_sites.GUNSHOT]
    assert new["run_threshold"]["positives"] == default["run_threshold"]["positives"] == len(heldout)
    assert new["run_threshold"]["hours"] == pytest.approx(len(HELDOUT_SITES) * MINUTES / 60)
    recall_new = _best_recall(sweep, "new", 40.0)
    recall_default = _best_recall(sweep, "default", 40.0)
    summary = {"new@40/h": recall_new, "default@40/h": recall_default}
    assert recall_new >= 0.6, summary
    assert recall_new >= recall_default + 0.25, summary
    # and at the thresholds the runs were made with
    assert (new["run_threshold"]["f1"] or 0.0) >= (default["run_threshold"]["f1"] or 0.0) + 0.3, summary


def test_evaluation_outputs_are_ready_for_the_next_review(loop):
    work, _ = loop
    out = work / "eval"
    for name in ("report.md", "pr.png", "recall_vs_false_alarms.png", "per_group.csv", "per_label.csv"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "| | default | new |" in report
    assert "site5" in report and "site6" in report
    tables = sorted((out / "new" / "review").rglob("*.selections.txt"))
    assert tables and {t.parent.name for t in tables} <= set(HELDOUT_SITES)
    for table in tables:
        parsed = annotations.read_annotations(str(table))
        assert parsed.rows and not parsed.errors
        assert {r.label for r in parsed.rows} <= {"missed gunshot", "false alarm"}


REVIEW_VERDICTS = 120


@pytest.fixture(scope="module")
def review_loop(loop):
    """The review loop on top of `loop`: the default head's run of sites 1-4 is reviewed, the verdicts
    train a head, and that head rescores the held-out sites' stored embeddings:

        gunshot review sample --scores scores_train --per_group      120 windows, stratified by score
        (answered from the annotations into verdicts.csv, as the review app writes them)
        gunshot dataset --embeddings scores_train --annotations review/verdicts.csv
            --label_column verdict --positive yes --negative no --fully_annotated none
        gunshot transform, gunshot train --model framepool
        gunshot batch --from_run scores_default --head head_verdicts    held-out sites 5-6, no VGGish
        gunshot evaluate-events --scores default=.. --scores verdicts=..
    """
    from gunshot_core import cli

    work, insertions = loop
    review = work / "review"
    pattern = "/(site[0-9]+)/"

    def step(*argv):
        assert cli.main([str(a) for a in argv]) == 0, argv

    step("review", "sample", "--scores", work / "scores_train", "--output", review, "--size", REVIEW_VERDICTS,
         "--per_group", "--group_pattern", pattern, "--seed", 0, "--workers", 2)  # fmt: skip
    answers = review_runs.answer_from_insertions(review, insertions)
    # A review sample annotates its windows only: no background windows from the rest of the audio
    # (they may hold gunshots nobody listened to).
    step("dataset", "--embeddings", work / "scores_train", "--annotations", review / verdicts.VERDICTS_CSV,
         "--label_column", "verdict", "--positive", "yes", "--negative", "no", "--fully_annotated", "none",
         "--group_pattern", pattern, "--split", "train=0.75", "--split", "eval=0.25", "--positive_shifts", 2,
         "--output", work / "dataset_verdicts")  # fmt: skip
    step("transform", "--train", work / "dataset_verdicts" / "train", "--eval", work / "dataset_verdicts" / "eval",
         "--output", work / "tft_verdicts")  # fmt: skip
    step("train", "--transformed", work / "tft_verdicts", "--model", "framepool", "--output",
         work / "head_verdicts", "--verbose", 0)  # fmt: skip
    step("batch", "--from_run", work / "scores_default", "--head", work / "head_verdicts", "--output",
         work / "scores_verdicts")  # fmt: skip
    notes = [a for s in HELDOUT_SITES for a in ("--annotations", work / "sites" / s)]
    step("evaluate-events", "--scores", f"default={work / 'scores_default'}",
         "--scores", f"verdicts={work / 'scores_verdicts'}", *notes, "--group_pattern", pattern,
         "--target_recall", 0.6, "--output", work / "eval_verdicts")  # fmt: skip
    return work, insertions, answers


def test_a_head_trained_from_review_verdicts_finds_held_out_gunshots(review_loop):
    work, insertions, answers = review_loop
    # every stage's output fed the next: 120 answers -> examples of the reviewed windows only
    assert len(answers) == REVIEW_VERDICTS == len(verdicts.read_verdicts(str(work / "review")))
    yes = sum(v == "yes" for v in answers.values())
    assert 0 < yes < REVIEW_VERDICTS, answers
    stats = json.loads((work / "dataset_verdicts" / "stats.json").read_text())
    tags = {}
    for split in stats["splits"].values():
        for tag, count in split["tags"].items():
            tags[tag] = tags.get(tag, 0) + count
    assert yes <= tags["gunshot"] <= 3 * yes, (yes, tags)  # each yes window and up to 2 shifted copies
    assert 0 < tags["no_gunshot"] <= REVIEW_VERDICTS - yes, tags
    card = json.loads((work / "head_verdicts" / "card.json").read_text())
    assert card["training"]["validation"]["split"] == "eval", card["training"]["validation"]
    run = json.loads((work / "scores_verdicts" / "run.json").read_text())
    assert run["parent_run"]["directory"] == str(work / "scores_default")  # rescored, no VGGish
    # evaluate-events counted exactly the held-out gunshots and hours
    metrics = json.loads((work / "eval_verdicts" / "metrics.json").read_text())["scorers"]
    heldout = [i for i in insertions if i.site in HELDOUT_SITES and i.label == field_sites.GUNSHOT]
    for scorer in ("default", "verdicts"):
        assert metrics[scorer]["run_threshold"]["positives"] == len(heldout), scorer
        assert metrics[scorer]["run_threshold"]["hours"] == pytest.approx(len(HELDOUT_SITES) * MINUTES / 60)
    sweep = pq.read_table(work / "eval_verdicts" / "sweep.parquet").to_pylist()
    summary = {
        "yes": yes,
        "verdicts@40/h": _best_recall(sweep, "verdicts", 40.0),
        "default@40/h": _best_recall(sweep, "default", 40.0),
    }
    assert summary["verdicts@40/h"] >= summary["default@40/h"] + 0.2, summary


CONFUSER_SITES = ("site5", "site6", "site7", "site8")
CONFUSERS_PER_MINUTE = 8.0
# 6 minutes per site (96 gunshots): with 3 the outcome hung on one or two events of a head that differs
# from run to run (docs/review.md)
CONFUSER_MINUTES = 6.0


@pytest.fixture(scope="module")
def field_calibration(loop, random_vggish):
    """Per-site thresholds from 100 reviewed events at sites unlike the training ones (twice the
    confusers), against the head card's threshold:

        gunshot batch --head head                                   4 new sites, 8 confusers per minute
        gunshot review sample --items events --size 100 --per_group
        (answered from the annotations into verdicts.csv)
        gunshot calibrate --target_precision 0.9 --min_recall 0.5
        gunshot batch --thresholds calibration.json --scores ...     events re-derived, no VGGish
        gunshot evaluate-events --scores card=.. --scores calibrated=..
    """
    from gunshot_core import cli

    work, _ = loop
    out = work / "confusers"
    insertions = field_sites.make_sites(
        out / "sites", sites=CONFUSER_SITES, recordings_per_site=1, minutes=CONFUSER_MINUTES, seed=2,
        gunshots_per_minute=4.0, confusers_per_minute=CONFUSERS_PER_MINUTE,
    )  # fmt: skip
    pattern = "/(site[0-9]+)/"
    card = json.loads((work / "head" / "card.json").read_text())
    ckpt, pca = (str(p) for p in random_vggish)
    models = ["--checkpoint", ckpt, "--pca", pca]

    def step(*argv):
        assert cli.main([str(a) for a in argv]) == 0, argv

    step("batch", *[a for s in CONFUSER_SITES for a in ("--input", out / "sites" / s)], "--head", work / "head",
         "--output", out / "scores", *models)  # fmt: skip
    step("review", "sample", "--scores", out / "scores", "--output", out / "review", "--items", "events",
         "--size", 100, "--per_group", "--group_pattern", pattern, "--seed", 0)  # fmt: skip
    answers = review_runs.answer_from_insertions(out / "review", insertions)
    step("calibrate", "--verdicts", out / "review", "--target_precision", 0.9, "--min_recall", 0.5,
         "--output", out / "cal")  # fmt: skip
    step("batch", "--thresholds", out / "cal" / "calibration.json", "--scores", out / "scores",
         "--output", out / "scores_cal")  # fmt: skip
    notes = [a for s in CONFUSER_SITES for a in ("--annotations", out / "sites" / s)]
    step("evaluate-events", "--scores", f"card={out / 'scores'}", "--scores", f"calibrated={out / 'scores_cal'}",
         *notes, "--group_pattern", pattern, "--output", out / "eval")  # fmt: skip
    calibration = json.loads((out / "cal" / "calibration.json").read_text())
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["scorers"]
    return card, insertions, answers, calibration, metrics


def test_calibrated_thresholds_cut_false_alarms_at_sites_unlike_the_training_ones(field_calibration):
    card, insertions, answers, calibration, metrics = field_calibration
    assert calibration["item_kind"] == "events" and calibration["pooling"] == "partial"
    assert len(answers) == min(100, calibration["overall"]["windows"])
    before, after = metrics["card"]["run_threshold"], metrics["calibrated"]["run_threshold"]
    gunshots = sum(i.label == field_sites.GUNSHOT for i in insertions)
    assert before["positives"] == after["positives"] == gunshots
    assert before["threshold"] == pytest.approx(card["threshold"])
    summary = {
        "card": (before["recall"], before["false_alarms_per_hour"]),
        "calibrated": (after["recall"], after["false_alarms_per_hour"]),
        "thresholds": {g: r["threshold"] for g, r in calibration["groups"].items()},
    }
    # The head differs with where the training archive lies (the dataset's draws hash the paths), so
    # these figures vary from run to run: over 12 such heads the card made 58-245 false alarms per
    # hour and calibration cut them 5.0-12.8x at recall 0.56-0.75 (docs/review.md). The bounds below
    # leave that spread a margin on the cut; the 5x goal itself is measured by
    # benchmarks/bench_review_calibration.py over many sites.
    # the card's threshold is badly off at these sites ...
    assert before["false_alarms_per_hour"] >= 40, summary
    # ... the calibrated per-site thresholds cut its false alarms >= 4x and keep half of the gunshots
    assert after["false_alarms_per_hour"] * 4 <= before["false_alarms_per_hour"], summary
    assert after["recall"] >= 0.5, summary
    assert all(r["threshold"] >= card["threshold"] for r in calibration["groups"].values()), summary
