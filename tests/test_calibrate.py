"""`gunshot calibrate` on synthetic runs whose truth is known (tests/review_runs.py).

One seeded review; how often thresholds, recall and intervals are right over many reviews is tested
in tests/test_review_stats.py (200 seeded repetitions).
"""

import csv
import json

import numpy as np
import pytest

from gunshot_core import cli
from pipelines.review import sample, verdicts
from tests.browser import assert_page_ok, chromium  # noqa: F401
from tests.review_runs import make_run


def _answer_from_truth(review_dir, truth, reviewer="ana", unsure_every=0):
    is_gunshot = {(w["source"], round(w["start_seconds"], 3)): w["truth"] for w in truth["windows"]}
    for k, row in enumerate(sample.read_sample(str(review_dir))):
        verdict = "yes" if is_gunshot[(row["source"], round(float(row["start_seconds"]), 3))] else "no"
        if unsure_every and k % unsure_every == 0:
            verdict = "unsure"
        verdicts.append_verdict(str(review_dir), {**row, "verdict": verdict, "reviewer": reviewer})


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate")
    # siteB's scores run higher than siteA's for the same sounds; siteC has few windows.
    truth = make_run(
        root / "run",
        root / "audio",
        sites=("siteA", "siteB"),
        windows_per_recording=600,
        site_shift={"siteB": 2.0},
        write_audio=False,
        seed=11,
    )
    small = make_run(
        root / "run2", root / "audio", sites=("siteC",), recordings_per_site=1, windows_per_recording=60,
        write_audio=False, seed=12,
    )  # fmt: skip
    truth["windows"] += small["windows"]
    review = root / "review"
    args = ["review", "sample", "--scores", str(root / "run"), "--scores", str(root / "run2")]
    assert cli.main([*args, "--output", str(review), "--size", "400", "--per_group", "--bins", "10"]) == 0
    _answer_from_truth(review, truth, unsure_every=25)
    output = root / "cal"
    assert (
        cli.main(
            [
                "calibrate",
                "--verdicts",
                str(review),
                "--output",
                str(output),
                "--target_precision",
                "0.9",
                "--min_verdicts",
                "50",
                "--pooling",
                "none",
            ]
        )
        == 0
    )
    return truth, review, output, json.loads((output / "calibration.json").read_text())


def test_thresholds_per_site_reach_the_precision(calibrated):
    truth, _, _, result = calibrated
    groups = result["groups"]
    assert set(groups) == {"siteA", "siteB", "siteC"}
    # A shifted site needs a higher threshold.
    assert groups["siteB"]["threshold"] > groups["siteA"]["threshold"]
    for site in ("siteA", "siteB"):
        r = groups[site]
        assert r["fit"]["source"] == "own" and r["note"] == ""
        windows = [w for w in truth["windows"] if w["site"] == site]
        detected = [w["truth"] for w in windows if w["score"] >= r["threshold"]]
        assert len(detected) == r["detections"]
        assert np.mean(detected) == pytest.approx(0.9, abs=0.1)
        true_recall = sum(detected) / sum(w["truth"] for w in windows)
        assert r["implied_recall"] == pytest.approx(true_recall, abs=0.15)
    assert groups["siteC"]["fit"]["source"] == "overall" and "overall fit used" in groups["siteC"]["note"]


def test_pooled_fits_shrink_a_small_site_toward_the_overall_fit(calibrated, tmp_path):
    truth, review, _, separate = calibrated
    assert cli.main(["calibrate", "--verdicts", str(review), "--output", str(tmp_path / "cal")]) == 0
    result = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert result["pooling"] == "partial"
    groups = result["groups"]
    for r in groups.values():
        assert r["fit"]["source"] == "pooled" and r["note"].startswith("pooled: intercept"), r
        assert r["fit"]["slope"] == result["overall"]["fit"]["slope"]
    # siteB's scores run 2 logits higher for the same sounds: its intercept moves down, siteA's up.
    assert groups["siteB"]["fit"]["offset"] < groups["siteA"]["fit"]["offset"] - 1.0, groups
    assert groups["siteB"]["threshold"] > groups["siteA"]["threshold"]
    for site in ("siteA", "siteB"):
        windows = [w for w in truth["windows"] if w["site"] == site]
        detected = [w["truth"] for w in windows if w["score"] >= groups[site]["threshold"]]
        assert np.mean(detected) == pytest.approx(0.9, abs=0.1), site
    # siteC (few verdicts, unshifted) keeps most of the overall fit: not the all-or-nothing fallback.
    c = groups["siteC"]
    assert abs(c["fit"]["offset"]) < abs(groups["siteB"]["fit"]["offset"]), groups
    assert c["fit"]["offset_sd"] > groups["siteB"]["fit"]["offset_sd"], groups
    assert separate["groups"]["siteC"]["fit"]["source"] == "overall"


def test_counts_cover_the_truth_and_add_up(calibrated):
    truth, _, output, result = calibrated
    counts = result["counts"]
    total = sum(w["truth"] for w in truth["windows"])
    assert counts["overall"]["low90"] <= total <= counts["overall"]["high90"]
    for site, c in counts["groups"].items():
        true = sum(w["truth"] for w in truth["windows"] if w["site"] == site)
        assert c["low90"] <= true <= c["high90"], (site, c, true)
    assert sum(c["estimate"] for c in counts["days"].values()) == pytest.approx(counts["overall"]["estimate"])
    with open(output / "counts_days.csv", newline="") as f:
        days = list(csv.DictReader(f))
    assert {d["domain"] for d in days} == {"2026-03-01", "2026-03-02"}
    # Unsure answers are left out, not counted as no.
    assert result["left_out"] == len(sample.read_sample(str(calibrated[1]))) - result["verdicts_used"] > 0


def test_page_in_the_browser(calibrated, chromium):  # noqa: F811
    page = chromium.inspect(calibrated[2] / "index.html", screenshot="calibration-index")
    assert_page_ok(page)
    assert [row[0] for row in page.tables["thresholds"]] == ["(all)", "siteA", "siteB", "siteC"]
    assert "overall fit used" in page.tables["thresholds"][3][-1]
    assert all(w > 0 for _, w in page.images)


def test_user_errors(tmp_path, capsys):
    make_run(tmp_path / "run", tmp_path / "audio", sites=("siteA",), recordings_per_site=1, write_audio=False)
    assert (
        cli.main(
            [
                "review",
                "sample",
                "--scores",
                str(tmp_path / "run"),
                "--output",
                str(tmp_path / "r"),
                "--size",
                "5",
            ]
        )
        == 0
    )
    assert cli.main(["calibrate", "--verdicts", str(tmp_path / "r"), "--output", str(tmp_path / "c")]) == 2
    assert "no verdicts yet" in capsys.readouterr().err
    for row in sample.read_sample(str(tmp_path / "r")):
        verdicts.append_verdict(str(tmp_path / "r"), {**row, "verdict": "no", "reviewer": "x"})
    assert cli.main(["calibrate", "--verdicts", str(tmp_path / "r"), "--output", str(tmp_path / "c")]) == 2
    assert "needs both yes and no" in capsys.readouterr().err
    make_run(tmp_path / "other", tmp_path / "audio", sites=("siteA",), recordings_per_site=1, write_audio=False, seed=9,
             windows_per_recording=30)  # fmt: skip
    args = [
        "calibrate",
        "--scores",
        str(tmp_path / "other"),
        "--verdicts",
        str(tmp_path / "r"),
        "--output",
        str(tmp_path / "c"),
    ]
    assert cli.main(args) == 2
    assert "not those the sample was drawn from" in capsys.readouterr().err


def test_report_applies_the_calibrated_thresholds(calibrated, tmp_path, chromium):  # noqa: F811
    truth, review, output, result = calibrated
    run_dir = review.parent / "run"
    argv = [
        "report",
        "--scores",
        str(run_dir),
        "--thresholds",
        str(output / "calibration.json"),
        "--output",
        str(tmp_path / "r"),
    ]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = {r["group"]: r for r in report["calibrated"]}
    assert set(rows) == {"siteA", "siteB"}  # siteC is in the other run
    for site, r in rows.items():
        threshold = result["groups"][site]["threshold"]
        assert r["threshold"] == pytest.approx(threshold)
        assert r["detected"] == sum(w["score"] >= threshold for w in truth["windows"] if w["site"] == site)
        assert r["run_detected"] == sum(w["score"] >= 0.5 for w in truth["windows"] if w["site"] == site)
        assert 0 < r["events"] <= r["detected"]
    page = chromium.inspect(tmp_path / "r" / "index.html", screenshot="report-calibrated")
    assert_page_ok(page)
    assert len(page.tables["calibrated"]) == 2
    bad = [
        "report",
        "--scores",
        str(run_dir),
        "--thresholds",
        str(review / "sample.csv"),
        "--output",
        str(tmp_path / "x"),
    ]
    with pytest.raises(SystemExit) as exit_:
        cli.main(bad)
    assert exit_.value.code == 2


def test_batch_rederives_events_at_the_calibrated_thresholds(calibrated, tmp_path):
    truth, review, output, result = calibrated
    run_dir = review.parent / "run"
    argv = [
        "batch",
        "--thresholds",
        str(output / "calibration.json"),
        "--scores",
        str(run_dir),
        "--output",
        str(tmp_path / "new"),
    ]
    assert cli.main(argv) == 0
    import pyarrow.parquet as pq

    windows = pq.read_table(tmp_path / "new" / "windows-00000-of-00001.parquet").to_pylist()
    events = pq.read_table(tmp_path / "new" / "events-00000-of-00001.parquet").to_pylist()
    recordings = pq.read_table(tmp_path / "new" / "recordings-00000-of-00001.parquet").to_pylist()
    for site in ("siteA", "siteB"):
        threshold = result["groups"][site]["threshold"]
        mine = [w for w in windows if f"/{site}/" in w["source"]]
        assert all(w["threshold"] == threshold and w["detected"] == (w["score"] >= threshold) for w in mine)
        # Events: runs of consecutive detected windows, counted directly.
        runs = sum(
            1
            for k, w in enumerate(mine)
            if w["detected"]
            and not (k > 0 and mine[k - 1]["source"] == w["source"] and mine[k - 1]["detected"])
        )
        assert runs == sum(f"/{site}/" in e["source"] for e in events) > 0
    assert sum(r["events"] for r in recordings) == len(events)
    assert (tmp_path / "new" / "events.csv").read_text().count("\n") == len(events) + 1
    assert (
        json.loads((tmp_path / "new" / "run.json").read_text())["rethresholded"]["groups"]["siteA"]["events"]
        > 0
    )


def test_batch_rederives_events_at_one_plain_threshold_below_the_run_s(calibrated, tmp_path, capsys):
    import pyarrow.parquet as pq

    _, review, _, _ = calibrated
    run_dir = review.parent / "run"
    old = pq.read_table(run_dir / "windows-00000-of-00001.parquet").to_pylist()
    lower = round(min(w["threshold"] for w in old) - 0.2, 3)
    assert cli.main(["batch", "--thresholds", str(lower), "--scores", str(run_dir), "--output", str(tmp_path / "low")]) == 0
    windows = pq.read_table(tmp_path / "low" / "windows-00000-of-00001.parquet").to_pylist()
    events = pq.read_table(tmp_path / "low" / "events-00000-of-00001.parquet").to_pylist()
    assert all(w["threshold"] == lower and w["detected"] == (w["score"] >= lower) for w in windows)
    assert sum(w["detected"] for w in windows) > sum(w["detected"] for w in old)
    assert events and all(e["threshold"] == lower and e["peak_score"] >= lower for e in events)
    assert min(e["peak_score"] for e in events) < min(w["threshold"] for w in old)  # events the run missed
    for bad in ("1.5", "-0.1"):
        assert cli.main(["batch", "--thresholds", bad, "--scores", str(run_dir), "--output", str(tmp_path / "x")]) == 2
        assert "a single threshold must be in [0, 1]" in capsys.readouterr().err


def test_events_as_review_items_and_a_recall_floor(tmp_path):
    truth = make_run(
        tmp_path / "run", tmp_path / "audio", sites=("siteA", "siteB"), windows_per_recording=600,
        site_shift={"siteB": 1.5}, write_audio=False, write_events=True, seed=5,
    )  # fmt: skip
    events = truth["events"]
    review = tmp_path / "review"
    argv = ["review", "sample", "--scores", str(tmp_path / "run"), "--output", str(review), "--items", "events"]
    assert cli.main([*argv, "--size", "120", "--per_group"]) == 0
    is_gunshot = {(e["source"], round(e["start_seconds"], 3)): e["truth"] for e in events}
    rows = sample.read_sample(str(review))
    assert len(rows) == 120 and all(float(r["score"]) >= 0.5 for r in rows)  # events' peak scores
    for row in rows:
        yes = is_gunshot[(row["source"], round(float(row["start_seconds"]), 3))]
        verdicts.append_verdict(str(review), {**row, "verdict": "yes" if yes else "no", "reviewer": "ana"})
    results = {}
    for name, extra in (("free", []), ("floor", ["--min_recall", "0.95"])):
        out = tmp_path / name
        argv = ["calibrate", "--verdicts", str(review), "--output", str(out), "--target_precision", "0.95"]
        assert cli.main([*argv, *extra]) == 0
        results[name] = json.loads((out / "calibration.json").read_text())
    free, floor = results["free"], results["floor"]
    assert free["item_kind"] == "events" and free["overall"]["windows"] == len(events)
    for site, r in free["groups"].items():
        kept = [e for e in events if e["site"] == site and e["peak_score"] >= r["threshold"]]
        precision = np.mean([e["truth"] for e in kept])
        assert r["threshold"] >= 0.5 and precision >= 0.85, (site, r, precision)
        f = floor["groups"][site]
        assert f["implied_recall"] >= 0.95 and f["threshold"] <= r["threshold"], (site, f, r)
        if r["implied_recall"] < 0.95:
            assert not f["target_reached"] and "recall below 0.95" in f["note"], f
    assert any(not f["target_reached"] for f in floor["groups"].values()), floor["groups"]


def test_batch_help_shows_the_thresholds_mode_and_its_missing_files_are_named(tmp_path, capsys):
    """`gunshot batch --help` did not mention --thresholds, `--thresholds --help` failed for want of a
    file, and a missing --scores folder printed a bare `[Errno 2]`."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["batch", "--help"])
    assert exit_.value.code == 0
    assert "gunshot batch --thresholds" in " ".join(capsys.readouterr().out.split())
    assert cli.main(["batch", "--thresholds", "--help"]) == 0
    assert "--scores RUN_DIR" in capsys.readouterr().out
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"overall": {"threshold": 0.5}, "groups": {}}))
    missing_run = ["batch", "--thresholds", str(calibration), "--scores", str(tmp_path / "nowhere")]
    assert cli.main([*missing_run, "--output", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gunshot batch: error: --scores ") and "no such folder" in err, err
    (tmp_path / "run").mkdir()
    missing_file = ["batch", "--thresholds", str(tmp_path / "cal.json"), "--scores", str(tmp_path / "run")]
    assert cli.main([*missing_file, "--output", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "gunshot calibrate --output" in err, err
    assert not (tmp_path / "new").exists()
