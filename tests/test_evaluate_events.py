"""`gunshot evaluate-events`: figures agree with hand counts and with an independent computation."""

import csv
import itertools
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gunshot_core import annotations
from pipelines import schemas
from training import evaluate_events as ee

PROVENANCE = {
    "model_id": "0123456789abcdef",
    "head_name": "head",
    "vggish_sha256": "v",
    "pca_sha256": "p",
    "head_sha256": "h",
    "code_version": "test",
    "window_seconds": 1.0,
    "hop_seconds": 1.0,
}
THRESHOLD = 0.5
A, B, C, D = "/data/site1/a.wav", "/data/site2/b.wav", "/data/site2/c.wav", "/data/site3/d.wav"

# Rec A: 60 one-second windows (hop 1 s), score 0.1 but for these windows
A_PEAKS = {10: 0.9, 11: 0.9, 20: 0.7, 30: 0.6, 40: 0.8, 50: 0.55}
A_TRUTH = [
    (12.5, 13.0, "gunshot"),  # 0.5 s after the event [10, 12]: matched
    (20.2, 20.4, "gunshot"),  # the event [20, 21] covers both of these:
    (20.6, 20.8, "gunshot"),  # one is matched, the other missed
    (32.0, 32.5, "gunshot"),  # exactly 1 s after the event [30, 31]: matched (tolerance is inclusive)
    (42.25, 43.0, "gunshot"),  # 1.25 s after the event [40, 41]: missed, and that event a false alarm
    (40.5, 41.5, "speech"),  # the confuser under that false alarm
]  # the event [50, 51] overlaps nothing: a false alarm of unannotated origin
B_TRUTH = [(5.0, 6.0, "gunshot")]  # rec B: 30 windows at 0.2, no event: missed
C_TRUTH = [(1.0, 2.0, "gunshot")]  # rec C failed to decode: missed
# rec D has an event but no annotation file: not evaluated unless --all_annotated


def _scores_a(bump=0.0):
    s = np.full(60, 0.1, np.float32)
    for i, v in A_PEAKS.items():
        s[i] = v + bump
    return s


def _write(directory, name, rows, schema):
    os.makedirs(directory, exist_ok=True)
    full = [{**r, **PROVENANCE, "threshold": THRESHOLD} for r in rows]
    pq.write_table(
        pa.Table.from_pylist(full, schema=schema), os.path.join(directory, f"{name}-00000-of-00001.parquet")
    )


def _independent_events(scores, starts, ends, threshold):
    """Runs of consecutive windows >= threshold, by np.diff of the mask (not the pipeline's loop)."""
    mask = np.r_[False, np.asarray(scores) >= threshold, False].astype(int)
    edges = np.diff(mask)
    firsts, lasts = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [
        (float(starts[a]), float(np.max(ends[a : b + 1])), float(np.max(scores[a : b + 1])))
        for a, b in zip(firsts, lasts, strict=True)
    ]


def _make_run(directory, scores_a, scores_d):
    windows, events = [], []
    recordings = [
        {"source": B, "file": B, "input_kind": "audio", "status": "ok", "duration_seconds": 30.0},
        {
            "source": C,
            "file": C,
            "input_kind": "audio",
            "status": "error",
            "error_reason": "corrupt",
            "error_message": "bad",
        },  # fmt: skip
    ]
    for source, scores in ((A, scores_a), (B, np.full(30, 0.2, np.float32)), (D, scores_d)):
        starts = np.arange(len(scores), dtype=np.float64)
        ends = starts + 1.0
        for i, s in enumerate(scores):
            windows.append(
                {
                    "source": source,
                    "window_index": i,
                    "start_seconds": starts[i],
                    "end_seconds": ends[i],
                    "score": float(s),
                    "detected": bool(s >= THRESHOLD),
                }  # fmt: skip
            )
        for k, (a, b, peak) in enumerate(_independent_events(scores, starts, ends, THRESHOLD)):
            events.append(
                {
                    "source": source,
                    "event_index": k,
                    "start_seconds": a,
                    "end_seconds": b,
                    "peak_score": peak,
                    "peak_seconds": a,
                    "num_windows": int(b - a),
                }  # fmt: skip
            )
        if source != B:
            recordings.append(
                {
                    "source": source,
                    "file": source,
                    "input_kind": "audio",
                    "status": "ok",
                    "duration_seconds": float(len(scores)),
                }  # fmt: skip
            )
    _write(directory, "windows", windows, schemas.SCORE_WINDOWS)
    _write(directory, "events", events, schemas.SCORE_EVENTS)
    _write(directory, "recordings", recordings, schemas.SCORE_RECORDINGS)
    _write(directory, "errors", [], schemas.SCORE_ERRORS)


def _raven(rows):
    return annotations.format_selection_table(
        [{"file": f, "start_seconds": a, "end_seconds": b, "label": lab} for f, a, b, lab in rows]
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("ee")
    _make_run(
        str(root / "old"), _scores_a(), np.r_[np.full(5, 0.1), [0.9], np.full(4, 0.1)].astype(np.float32)
    )
    new_a = _scores_a(bump=0.05)
    new_a[41:43] = 0.75  # the new head extends the event at 40 s over the gunshot at 42.25 s
    _make_run(str(root / "new"), new_a, np.full(10, 0.1, np.float32))
    notes = root / "notes"
    (notes / "audio").mkdir(parents=True)
    (notes / "audio" / "a.wav").write_bytes(b"RIFF")  # folders are searched for .txt and .csv only
    (notes / "a.Table.1.selections.txt").write_text(_raven([("site1/a.wav", *t) for t in A_TRUTH]))
    (notes / "b.Table.1.selections.txt").write_text(_raven([("b.wav", *t) for t in B_TRUTH]))
    (notes / "more.csv").write_text(
        "file,start_seconds,end_seconds,label\n"
        f"c.wav,{C_TRUTH[0][0]},{C_TRUTH[0][1]},gunshot\n"
        "/data/site9/zzz.wav,1,2,gunshot\n"  # a recording the runs do not have
        "b.wav,soon,later,gunshot\n"  # not a number
        "b.wav,31,32,gunshot\n"  # after the end of the 30-s recording
    )
    return root


def _run(case, out, *extra):
    argv = ["--scores", f"old={case / 'old'}", "--scores", f"new={case / 'new'}"]
    argv += ["--annotations", str(case / "notes"), "--group_pattern", "/(site[^/]+)/", "--output", str(out)]
    assert ee.main(argv + list(extra)) == 0
    with open(out / "metrics.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def result(case):
    out = case / "eval"
    return out, _run(case, out)


def test_hand_counted_figures_at_the_run_threshold(result):
    out, metrics = result
    old = metrics["scorers"]["old"]["run_threshold"]
    # positives 5 (A) + 1 (B) + 1 (C, failed); matched: [10,12], one of the pair at 20 s, the one 1 s away
    assert (old["positives"], old["matched"], old["missed"], old["missed_in_failed_recordings"]) == (
        7,
        3,
        4,
        1,
    )
    assert (old["events"], old["false_alarms"]) == (5, 2)
    assert old["hours"] == pytest.approx(90 / 3600)  # A 60 s + B 30 s; C failed, D not annotated
    assert old["false_alarms_per_hour"] == pytest.approx(2 / (90 / 3600))
    assert old["recall"] == pytest.approx(3 / 7)
    assert old["precision"] == pytest.approx(3 / 5)
    assert old["f1"] == pytest.approx(2 * (3 / 7) * (3 / 5) / (3 / 7 + 3 / 5))
    new = metrics["scorers"]["new"]["run_threshold"]
    # the event at 42 s extends [40, 41] to [40, 43]: it now matches the gunshot at 42.25 s
    assert (new["matched"], new["false_alarms"], new["events"]) == (4, 1, 5)
    assert metrics["scorers"]["old"]["recordings_evaluated"] == 3
    assert metrics["scorers"]["old"]["recordings_failed"] == 1
    assert metrics["scorers"]["old"]["recordings_unannotated"] == 1
    with open(out / "old" / "metrics.json") as f:
        assert json.load(f) == metrics["scorers"]["old"]


def test_breakdowns_per_group_and_label(result):
    out, _ = result
    with open(out / "per_group.csv") as f:
        groups = {
            (r["scorer"], r["group"]): r for r in csv.DictReader(f) if r["operating_point"] == "run_threshold"
        }
    site1, site2 = groups[("old", "site1")], groups[("old", "site2")]
    assert (int(site1["positives"]), int(site1["matched"]), int(site1["false_alarms"])) == (5, 3, 2)
    assert (int(site2["positives"]), int(site2["matched"]), int(site2["events"])) == (2, 0, 0)
    assert float(site2["hours"]) == pytest.approx(30 / 3600)
    with open(out / "per_label.csv") as f:
        labels = {
            (r["scorer"], r["label"]): r for r in csv.DictReader(f) if r["operating_point"] == "run_threshold"
        }
    gun, speech, bg = labels[("old", "gunshot")], labels[("old", "speech")], labels[("old", "(unannotated)")]
    assert (int(gun["annotations"]), int(gun["detected"]), gun["positive"]) == (7, 3, "True")
    assert (int(speech["annotations"]), int(speech["detected"]), int(speech["false_alarms"])) == (1, 1, 1)
    assert (int(bg["annotations"]), int(bg["false_alarms"])) == (0, 1)


def test_errors_name_every_row_that_could_not_be_evaluated(result):
    out, metrics = result
    with open(out / "errors.csv") as f:
        errors = list(csv.DictReader(f))
    reasons = sorted((e["scorer"], e["reason"]) for e in errors)
    assert reasons == [
        ("", "non_numeric"),
        ("new", "beyond_end"),
        ("new", "recording_not_in_run"),
        ("old", "beyond_end"),
        ("old", "recording_not_in_run"),
    ]
    assert all("zzz.wav" in e["message"] for e in errors if e["reason"] == "recording_not_in_run")
    assert len(metrics["errors"]) == 5


def test_review_tables_hold_the_misses_and_false_alarms(result):
    out, _ = result
    parsed = annotations.read_annotations(str(out / "old" / "review" / "site1" / "a.Table.1.selections.txt"))
    assert not parsed.errors
    got = sorted((r.label, r.start_seconds, r.end_seconds) for r in parsed.rows)
    misses = [g for g in got if g[0] == ee.MISS_LABEL]
    assert len(misses) == 2 and (ee.MISS_LABEL, 42.25, 43.0) in misses
    assert misses[0][1:] in ((20.2, 20.4), (20.6, 20.8))
    assert [g for g in got if g[0] == ee.FALSE_ALARM_LABEL] == [
        (ee.FALSE_ALARM_LABEL, 40.0, 41.0),
        (ee.FALSE_ALARM_LABEL, 50.0, 51.0),
    ]
    assert {r.recording_key for r in parsed.rows} == {A}
    text = (out / "old" / "review" / "site1" / "a.Table.1.selections.txt").read_text()
    (line,) = [x for x in text.splitlines() if "\t40.000000\t" in x]
    assert line.endswith(f"\t{ee.FALSE_ALARM_LABEL}\t0.800000\tspeech")  # it lies on the speech
    assert (out / "old" / "review" / "site2" / "b.Table.1.selections.txt").exists()
    assert not (out / "old" / "review" / "site3").exists()


def _brute_force_matches(events, truths, tolerance):
    """Largest one-to-one matching by trying every assignment (tiny inputs only)."""
    ok = [[e[0] <= t[1] + tolerance and e[1] >= t[0] - tolerance for t in truths] for e in events]
    best = 0
    for k in range(min(len(events), len(truths)), 0, -1):
        for chosen in itertools.combinations(range(len(events)), k):
            for perm in itertools.permutations(range(len(truths)), k):
                if all(ok[e][t] for e, t in zip(chosen, perm, strict=True)):
                    return k
    return best


def test_sweep_agrees_with_an_independent_computation(result, case):
    out, metrics = result
    table = pq.read_table(out / "sweep.parquet").to_pylist()
    with open(out / "sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == len(table)
    windows = pq.read_table(case / "old" / "windows-00000-of-00001.parquet").to_pylist()
    by_source = {}
    for w in windows:
        by_source.setdefault(w["source"], []).append(w)
    truths = {A: [t for t in A_TRUTH if t[2] == "gunshot"], B: B_TRUTH}
    rows = [r for r in table if r["scorer"] == "old"]
    assert len(rows) > 100
    assert sum(r["run_threshold"] for r in rows) == 1
    for row in rows:
        matched = n_events = 0
        for source, gunshots in truths.items():
            ws = sorted(by_source[source], key=lambda w: w["window_index"])
            s = np.array([w["score"] for w in ws], np.float32)  # compared in float32, as the pipeline does
            events = _independent_events(
                s,
                np.array([w["start_seconds"] for w in ws]),
                np.array([w["end_seconds"] for w in ws]),
                row["threshold"],
            )
            n_events += len(events)
            matched += _brute_force_matches(events, gunshots, 1.0)
        assert (row["matched"], row["events"], row["positives"]) == (matched, n_events, 7), row["threshold"]
        assert row["recall"] == pytest.approx(matched / 7)
        assert row["false_alarms_per_hour"] == pytest.approx((n_events - matched) * 3600 / 90)
        if n_events:
            assert row["precision"] == pytest.approx(matched / n_events)
    # the best recall within each false-alarm budget, from the independent figures
    mine = [(r["threshold"], r["matched"] / 7, (r["events"] - r["matched"]) * 3600 / 90) for r in rows]
    for budget in ("10", "20", "40"):
        fit = [m for m in mine if m[2] <= float(budget) + 1e-9]
        best = metrics["scorers"]["old"]["recall_at_false_alarms_per_hour"][budget]
        if not fit:
            assert best is None
            continue
        assert best["recall"] == pytest.approx(max(m[1] for m in fit))
        assert best["threshold"] == max(m[0] for m in fit if m[1] == max(f[1] for f in fit))
    # 40/h over 90 s allows one false alarm: above 0.55 the event at 50 s is gone, the one at 40 s stays
    at40 = metrics["scorers"]["old"]["recall_at_false_alarms_per_hour"]["40"]
    assert (at40["recall"], at40["false_alarms_per_hour"]) == (pytest.approx(3 / 7), pytest.approx(40.0))
    # at threshold 0 each recording is one event, which matches one gunshot (A: 1 of 5, B: 1 of 1)
    lowest = min(rows, key=lambda r: r["threshold"])
    assert (lowest["threshold"], lowest["events"], lowest["matched"]) == (0.0, 2, 2)
    target = metrics["scorers"]["old"]["target_recall"]
    reaching = [r["threshold"] for r in rows if r["recall"] >= 0.8]
    assert target is None if not reaching else target["threshold"] == max(reaching)


def test_target_recall_is_the_highest_threshold_reaching_it(case, tmp_path):
    metrics = _run(case, tmp_path / "t", "--target_recall", "0.4")
    old = metrics["scorers"]["old"]["target_recall"]
    # 3 of 7 = 0.43 holds up to the score of the event at 30 s (0.6); above it only 2 are found
    assert old["recall"] == pytest.approx(3 / 7)
    assert old["threshold"] == pytest.approx(0.6)
    metrics = _run(case, tmp_path / "u", "--target_recall", "1.0")
    assert metrics["scorers"]["old"]["target_recall"] is None
    assert "not reached" in (tmp_path / "u" / "report.md").read_text()


def test_all_annotated_counts_false_alarms_in_recordings_without_notes(case, tmp_path):
    metrics = _run(case, tmp_path / "all", "--all_annotated")
    old = metrics["scorers"]["old"]["run_threshold"]
    assert (old["events"], old["false_alarms"], old["hours"]) == (6, 3, pytest.approx(100 / 3600))


def test_missing_annotation_patterns_are_error_rows(case, tmp_path):
    metrics = _run(case, tmp_path / "nf", "--annotations", str(tmp_path / "nowhere" / "*.txt"))
    assert [e["reason"] for e in metrics["errors"] if e["reason"] == "not_found"] == ["not_found"]
    assert metrics["scorers"]["old"]["run_threshold"]["positives"] == 7


def test_report_and_plots_compare_the_scorers(result):
    out, _ = result
    report = (out / "report.md").read_text()
    assert "| | old | new |" in report
    assert "| recall | 42.9% | 57.1% |" in report
    for plot in ("pr.png", "recall_vs_false_alarms.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"


def test_reruns_are_identical(result, case, tmp_path):
    out, _ = result
    again = tmp_path / "again"
    _run(case, again)
    for name in ("metrics.json", "sweep.csv", "per_group.csv", "per_label.csv", "errors.csv", "report.md"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_matching_is_maximal_not_greedy():
    # E0 overlaps T0 most, but giving T0 to E0 would leave E1 (which only reaches T0) unmatched
    events, truths = [(0.0, 3.0), (1.5, 1.8)], [(0.0, 2.0), (2.5, 3.0)]
    assert ee.match_events(events, truths, 0.0) == [(0, 1), (1, 0)]
    assert ee.match_events([(0.0, 1.0)], [(2.0, 3.0)], 1.0) == [(0, 0)]  # touching at the tolerance
    assert ee.match_events([(0.0, 1.0)], [(2.0, 3.0)], 0.999) == []
    assert ee.match_events([], [(2.0, 3.0)], 1.0) == [] and ee.match_events([(0.0, 1.0)], [], 1.0) == []
    # among equally many matches, the larger overlap wins
    assert ee.match_events([(0.0, 10.0)], [(0.0, 1.0), (3.0, 6.0)], 1.0) == [(0, 1)]


def test_bad_arguments_and_missing_runs_fail_clearly(case, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ee.main(["--scores", "a=x", "--scores", "a=y", "--annotations", "n", "--output", "o"])
    assert "given twice" in capsys.readouterr().err
    argv = [
        "--scores",
        f"x={tmp_path / 'nothing'}",
        "--annotations",
        str(case / "notes"),
        "--output",
        str(tmp_path / "o"),
    ]
    assert ee.main(argv) == 2  # nothing to evaluate: one line, exit 2
    assert "no 'recordings' table" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ee.main(["--scores", "x=y", "--annotations", "n", "--output", "o", "--target_recall", "0"])
    assert "--target_recall must be in (0, 1]" in capsys.readouterr().err


def test_sweep_events_are_the_pipelines_merge_of_all_windows():
    from pipelines.scoring.events import merge_events

    rng = np.random.default_rng(7)
    for trial in range(200):
        m = int(rng.integers(1, 40))
        scores = rng.random(m).astype(np.float32)
        starts = np.arange(m) * 0.96
        ends = starts + rng.choice([0.96, 9.6])
        rec = ee.Recording("s", "g", "ok", 60.0, [], [], starts, ends, scores, [])
        threshold = float(rng.choice([0.0, 0.3, 0.5, 0.9, float(scores[rng.integers(m)])]))
        expected = [
            (e.start_seconds, e.end_seconds, e.peak_score)
            for e in merge_events(scores, starts, ends, threshold)
        ]
        assert ee.events_at(rec, threshold, run_threshold=-1.0) == expected, trial
