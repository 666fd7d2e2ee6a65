"""`gunshot review sample|export` and verdicts.csv, on synthetic scoring runs (tests/review_runs.py)."""

import csv
import multiprocessing
import os

import numpy as np
import pytest

from gunshot_core import annotations, cli
from pipelines.review import sample, verdicts
from tests.review_runs import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    truth = make_run(root / "run", root / "audio", seed=1)
    return root, truth


def _sample(run_dir, output, *extra):
    status = cli.main(["review", "sample", "--scores", str(run_dir), "--output", str(output), *extra])
    assert status == 0
    with open(os.path.join(output, sample.SAMPLE_CSV), newline="") as f:
        return list(csv.DictReader(f))


def test_stratified_sample_rows_probabilities_and_media(run, tmp_path):
    root, truth = run
    rows = _sample(root / "run", tmp_path / "a", "--size", "20", "--seed", "3")
    assert len(rows) == 20 and list(rows[0]) == list(sample.SAMPLE_COLUMNS)
    assert len({r["item_id"] for r in rows}) == 20
    with open(tmp_path / "a" / sample.STRATA_CSV, newline="") as f:
        strata = {s["stratum"]: s for s in csv.DictReader(f)}
    assert sum(int(s["population"]) for s in strata.values()) == len(truth["windows"])
    for r in rows:
        s = strata[r["stratum"]]
        assert float(r["inclusion_probability"]) == pytest.approx(
            int(s["sample_size"]) / int(s["population"])
        )
        assert float(s["score_low"]) <= float(r["score"]) <= float(s["score_high"])
        assert r["group"] in ("siteA", "siteB") and r["day"].startswith("2026-03-0")
        assert r["media_error"] == "" and os.path.getsize(tmp_path / "a" / r["clip"]) > 1000
        assert (tmp_path / "a" / r["spectrogram"]).read_bytes()[:4] == b"\x89PNG"
    # Same seed, same sample, same bytes; another seed, another sample.
    again = _sample(root / "run", tmp_path / "b", "--size", "20", "--seed", "3")
    assert again == rows
    assert (tmp_path / "a" / rows[0]["clip"]).read_bytes() == (tmp_path / "b" / rows[0]["clip"]).read_bytes()
    other = _sample(root / "run", tmp_path / "c", "--size", "20", "--seed", "4")
    assert {r["item_id"] for r in other} != {r["item_id"] for r in rows}


def test_strategies_and_groups(run, tmp_path):
    root, truth = run
    scores = np.array([w["score"] for w in truth["windows"]])
    top = _sample(root / "run", tmp_path / "top", "--size", "5", "--strategy", "top")
    assert sorted(float(r["score"]) for r in top) == pytest.approx(sorted(scores)[-5:])
    assert all(r["inclusion_probability"] == "" for r in top)
    assert not (tmp_path / "top" / sample.STRATA_CSV).exists()
    margin = _sample(
        root / "run", tmp_path / "margin", "--size", "4", "--strategy", "margin", "--threshold", "0.5"
    )
    nearest = sorted(scores, key=lambda s: abs(np.log(s / (1 - s))))[:4]
    assert sorted(float(r["score"]) for r in margin) == pytest.approx(sorted(nearest))
    per_group = _sample(
        root / "run",
        tmp_path / "pg",
        "--size",
        "40",
        "--per_group",
        "--group_pattern",
        "/(site[AB])/",
        "--bins",
        "4",
    )
    assert {r["stratum"].split("|")[0] for r in per_group} == {"siteA", "siteB"}
    assert sum(r["group"] == "siteA" for r in per_group) == 20


def test_missing_audio_keeps_the_row_with_the_reason(tmp_path):
    make_run(tmp_path / "run", tmp_path / "audio", sites=("siteC",), recordings_per_site=1, write_audio=False)
    rows = _sample(tmp_path / "run", tmp_path / "rev", "--size", "3")
    assert len(rows) == 3 and all(r["clip"] == "" and r["media_error"] for r in rows)
    assert "siteC_rec00.wav" in rows[0]["media_error"]


def test_user_errors_are_one_line_and_exit_2(run, tmp_path, capsys):
    root, _ = run
    assert (
        cli.main(
            [
                "review",
                "sample",
                "--scores",
                str(tmp_path / "nope"),
                "--output",
                str(tmp_path / "o"),
                "--size",
                "3",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    _sample(root / "run", tmp_path / "r", "--size", "3")
    (tmp_path / "r" / verdicts.VERDICTS_CSV).write_text(
        "source,start_seconds,end_seconds,verdict\nx,1,2,maybe\n"
    )
    assert cli.main(["review", "export", str(tmp_path / "r")]) == 2
    assert "verdicts.csv:2: verdict 'maybe'" in capsys.readouterr().err
    # A new sample must not orphan the verdicts of the folder.
    assert (
        cli.main(
            [
                "review",
                "sample",
                "--scores",
                str(root / "run"),
                "--output",
                str(tmp_path / "r"),
                "--size",
                "3",
            ]
        )
        == 2
    )


def _append_many(args):
    review_dir, reviewer, n = args
    for i in range(n):
        verdicts.append_verdict(
            review_dir,
            {
                "source": f"s{i}.wav",
                "start_seconds": i,
                "end_seconds": i + 1,
                "verdict": "yes",
                "reviewer": reviewer,
                "label": 'a, "quoted" label',
            },
        )


def test_concurrent_appends_keep_every_line_whole(tmp_path):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_append_many, [(str(tmp_path), "ana", 150), (str(tmp_path), "ben", 150)])
    rows = verdicts.read_verdicts(str(tmp_path))
    assert len(rows) == 300 and (tmp_path / verdicts.VERDICTS_CSV).read_text().count("item_id") == 1
    assert {r["label"] for r in rows} == {'a, "quoted" label'}
    assert len(verdicts.latest(rows)) == 300


def test_supersession_consensus_and_raven_export(run, tmp_path):
    root, _ = run
    rows = _sample(root / "run", tmp_path, "--size", "3")
    first, second, _ = rows
    for who, item, verdict in [
        ("ana", first, "yes"),
        ("ana", first, "no"),
        ("ben", first, "no"),
        ("ana", second, "yes"),
        ("ben", second, "unsure"),
    ]:
        verdicts.append_verdict(str(tmp_path), {**item, "verdict": verdict, "reviewer": who, "label": ""})
    got = verdicts.read_verdicts(str(tmp_path))
    latest = verdicts.latest(got)
    assert latest[(first["item_id"], "ana")]["verdict"] == "no" and len(latest) == 4
    assert verdicts.consensus(got) == {first["item_id"]: "no", second["item_id"]: "yes"}
    assert cli.main(["review", "export", str(tmp_path)]) == 0
    parsed = annotations.read_annotations(str(tmp_path / verdicts.RAVEN_EXPORT))
    assert not parsed.errors and len(parsed.rows) == 4
    assert {(r.recording_key, round(r.start_seconds, 3), r.label) for r in parsed.rows} >= {
        (first["source"], round(float(first["start_seconds"]), 3), "no")
    }


def test_append_after_a_hand_written_row_without_line_end(tmp_path):
    (tmp_path / verdicts.VERDICTS_CSV).write_text(
        "item_id,source,start_seconds,end_seconds,verdict,label,reviewer,answered_utc\n"
        ",site/r.wav,1,2,yes,,script,2026-01-01T00:00:00Z"
    )
    verdicts.append_verdict(
        str(tmp_path),
        {"source": "site/r.wav", "start_seconds": 3, "end_seconds": 4, "verdict": "no", "reviewer": "x"},
    )
    rows = verdicts.read_verdicts(str(tmp_path))
    assert [(r["reviewer"], r["verdict"]) for r in rows] == [("script", "yes"), ("x", "no")]
    assert rows[0]["item_id"] == sample.item_id("site/r.wav", 1.0)
