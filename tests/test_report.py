"""End-to-end tests of `gunshot report` on real scoring runs (DirectRunner, random-weight VGGish), with
the pages checked in headless Chromium (tests/browser.py; screenshots in test-artifacts/).

The main run scores the seed recordings plus a 4-minute synthetic field recording (the soundscape of
tests/field_sites.py: coloured noise and insect-like chirps) into which the whole of
`pistol_shot.wav` is inserted at INSERT_SECONDS, once as a file and once as a zip member. With the
random-weight VGGish and the default head, the windows that hold the insertion score highest of the
run (about 0.054, against at most 0.049 for the soundscape and 0.043 for the seed clips), so with
THRESHOLD the only events are the inserted ones. The figures the report shows are checked against
an independent computation from the Parquet tables (pyarrow, not DuckDB).
"""

import pathlib
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import soundfile

from pipelines import score
from pipelines.report import build, html
from tests import field_sites
from tests.browser import assert_page_ok, chromium  # noqa: F401 (fixture)
from tests.conftest import SEED_MODELS, SEED_WAVS
from tests.gcs_emulator import gcs_emulator  # noqa: F401 (fixture)
from tests.score_inputs import make_zip

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report")]  # one scoring of the main run

RATE = 16000
INSERT_SECONDS = 130.0
THRESHOLD = 0.05
SEEDS = ("pistol_shot.wav", "ultimate_gunshot.wav", "spanishclass.wav")
SECOND_HEAD = "LogisticRegression_BinaryCE_Adam_50-Epochs.h5"


def _long_recording() -> np.ndarray:
    """float32 [4 min at 16 kHz]: a field-site soundscape with pistol_shot.wav added at INSERT_SECONDS."""
    profile = field_sites.SiteProfile(
        noise_slope=1.0,
        noise_dbfs=-40,
        hum_hz=0,
        chirp_hz=3000,
        chirps_per_minute=2,
        chirp_db=6,
        rain_per_minute=0,
        rain_db=0,
    )
    site = field_sites.synthesize(
        "longsite", 0, minutes=4.0, sample_rate=RATE, seed=3, profile=profile,
        gunshots_per_minute=0, confusers_per_minute=0,
    )  # fmt: skip
    shot = field_sites.load_seed("pistol_shot.wav", RATE)
    mix = site.background.copy()
    start = int(INSERT_SECONDS * RATE)
    mix[start : start + shot.size] += shot
    return np.clip(mix, -1.0, 32767 / 32768)


def _score(inputs, output, random_vggish, *extra):
    ckpt, pca = random_vggish
    argv = [f"--input={p}" for p in inputs]
    argv += [
        f"--output={output}",
        f"--checkpoint={ckpt}",
        f"--pca={pca}",
        "--timestamp_pattern=%Y%m%d_%H%M%S",
    ]
    return score.run(argv + list(extra))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_inputs")
    site_a, site_b = root / "siteA", root / "siteB"
    site_a.mkdir()
    site_b.mkdir()
    long_path = site_a / "long_site.wav"
    soundfile.write(long_path, _long_recording(), RATE, subtype="PCM_16")
    for name in SEEDS:
        shutil.copyfile(SEED_WAVS / name, site_b / name)
    shutil.copyfile(SEED_WAVS / "ultimate_gunshot.wav", site_b / "SITE7_20230114_031500.wav")
    make_zip(
        site_a / "archive.zip", {"inner/long_copy.wav": long_path.read_bytes(), "inner/bad.wav": b"junk" * 50}
    )
    (site_a / "broken.wav").write_bytes(b"not a wav file" * 20)
    return {"root": root, "long": str(long_path), "zip": str(site_a / "archive.zip")}


@pytest.fixture(scope="module")
def main_run(recordings, random_vggish, tmp_path_factory):
    output = tmp_path_factory.mktemp("report_runs") / "main"
    _score([str(recordings["root"])], output, random_vggish, f"--threshold={THRESHOLD}")
    return output


@pytest.fixture(scope="module")
def main_report(main_run, tmp_path_factory):
    output = tmp_path_factory.mktemp("reports") / "main"
    report = build.run(["--scores", str(main_run), "--output", str(output), "--top", "50"])
    return output, report


def _table(run_dir, name) -> pa.Table:
    files = sorted(pathlib.Path(run_dir).glob(f"{name}-*-of-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _expected_counts(run_dir) -> dict:
    recordings = _table(run_dir, "recordings").to_pylist()
    windows = _table(run_dir, "windows")
    ok = [r for r in recordings if r["status"] == "ok"]
    return {
        "recordings": len(recordings),
        "recordings_ok": len(ok),
        "recordings_failed": len(recordings) - len(ok),
        "recordings_detected": sum(1 for r in recordings if r["detected"]),
        "audio_hours": sum(r["duration_seconds"] for r in ok) / 3600,
        "windows": windows.num_rows,
        "detected_windows": pc.sum(windows["detected"].cast(pa.int64())).as_py() or 0,
        "events": _table(run_dir, "events").num_rows,
        "errors": _table(run_dir, "errors").num_rows,
    }


def test_counts_equal_the_tables(main_run, main_report):
    _, report = main_report
    expected = _expected_counts(main_run)
    got = report["runs"][0]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert expected["recordings_failed"] == 2 and expected["events"] == 2  # broken.wav, inner/bad.wav
    errors = _table(main_run, "errors").to_pylist()
    groups = {(g["stage"], g["reason"]): g["n"] for g in report["error_groups"]["main"]}
    expected_groups = {}
    for e in errors:
        expected_groups[(e["stage"], e["reason"])] = expected_groups.get((e["stage"], e["reason"]), 0) + 1
    assert groups == expected_groups


def test_top_event_is_the_inserted_one_and_its_clip_is_the_source(main_run, main_report, recordings):
    output, report = main_report
    events = _table(main_run, "events").to_pylist()
    events.sort(key=lambda e: (-e["peak_score"], e["source"], e["start_seconds"]))
    assert [e["source"] for e in report["events"]] == [e["source"] for e in events]
    assert {e["source"] for e in events} == {recordings["long"], recordings["zip"] + "!inner/long_copy.wav"}
    top = report["events"][0]
    assert top["start_seconds"] <= INSERT_SECONDS < top["end_seconds"]
    assert top["best_window"][0] <= INSERT_SECONDS < top["best_window"][1]
    assert top["error"] is None and top["sample_rate"] == RATE
    # the clip is the event with a margin on each side (and so holds the inserted shot)
    for event in report["events"]:
        assert event["clip_holds_event"] is True
        assert event["clip_start_seconds"] == pytest.approx(
            event["start_seconds"] - build.CLIP_MARGIN_SECONDS
        )
        assert event["clip_end_seconds"] == pytest.approx(event["end_seconds"] + build.CLIP_MARGIN_SECONDS)
    assert top["clip_start_seconds"] <= INSERT_SECONDS + 1.0 <= top["clip_end_seconds"]
    source, _ = soundfile.read(recordings["long"], dtype="int16")
    for event in report["events"]:
        clip, rate = soundfile.read(output / html.MEDIA_DIR / event["clip"], dtype="int16")
        assert rate == RATE
        first = event["first_sample"]
        np.testing.assert_array_equal(clip, source[first : first + clip.size])  # member = copy of the file
    # peak score per event = the events table's peak_score = the best window overlapping it
    by_start = {(e["source"], e["start_seconds"]): e["peak_score"] for e in events}
    windows = _table(main_run, "windows").to_pylist()
    for event in report["events"]:
        assert event["peak_scores"]["main"] == pytest.approx(
            by_start[event["source"], event["start_seconds"]]
        )
        own = [
            w["score"]
            for w in windows
            if w["source"] == event["source"]
            and w["end_seconds"] > event["start_seconds"]
            and w["start_seconds"] < event["end_seconds"]
        ]
        assert event["peak_scores"]["main"] == pytest.approx(max(own))
    raven = (output / build.RAVEN_FILE).read_text().splitlines()
    assert len(raven) == 1 + len(events) and raven[0].startswith("Selection\tView\tChannel")


def test_pages_in_the_browser(main_run, main_report, recordings, chromium):  # noqa: F811
    output, report = main_report
    index = chromium.inspect(output / "index.html", screenshot="report-index")
    assert_page_ok(index)
    assert len(index.images) >= 2  # histogram and at least one heatmap
    summary = {row[0]: row[1] for row in index.tables["summary"]}
    expected = _expected_counts(main_run)
    assert summary["inputs (recordings rows)"] == str(expected["recordings"])
    assert summary["recordings failed"] == str(expected["recordings_failed"])
    assert summary["windows detected (detections)"] == str(expected["detected_windows"])
    assert summary["events"] == str(expected["events"])
    listed = [row[1] for row in index.tables["top-events"]]
    assert listed == [e["source"] for e in report["events"]]
    assert index.tables["top-events"][0][2].startswith("+0:02:")  # offset, no timestamp in the name
    assert "decode" in [row[1] for row in index.tables["error-groups"]]
    events_page = chromium.inspect(output / "events.html", screenshot="report-events")
    assert_page_ok(events_page)
    assert [row[1] for row in events_page.tables["events"]] == listed
    for event in report["events"]:
        page = chromium.inspect(output / event["page"], screenshot=f"report-{event['page']}")
        assert_page_ok(page)
        assert len(page.images) == 2 and len(page.audio) == 1
        clip_seconds = event["clip_end_seconds"] - event["clip_start_seconds"]
        assert page.audio[0][1] == pytest.approx(clip_seconds, abs=0.01)
        assert "Begin Path" in page.text
    for name in ("groups.html", "errors.html", "recordings.html"):
        assert_page_ok(chromium.inspect(output / name, screenshot=f"report-{name}"))
    assert index.screenshot.exists() and index.screenshot.stat().st_size > 10_000


def test_rerun_is_byte_identical_and_pages_stay_small(main_run, main_report, tmp_path):
    output, _ = main_report
    again = tmp_path / "again"
    build.run(["--scores", f"main={main_run}", "--output", str(again), "--top", "50"])

    def tree(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first, second = tree(output), tree(again)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert max(len(data) for name, data in first.items() if name.endswith(".html")) < html.MAX_PAGE_BYTES
    # paginated: one event per page; a rerun into the same folder replaces the earlier report
    build.run(["--scores", str(main_run), "--output", str(again), "--top", "50", "--per_page", "1"])
    assert (again / "events-2.html").exists() and not (again / "events-3.html").exists()
    with pytest.raises(FileExistsError):
        build.run(["--scores", str(main_run), "--output", str(tmp_path)])  # not empty, not a report


def test_runs_side_by_side(main_run, recordings, random_vggish, tmp_path, chromium):  # noqa: F811
    other = tmp_path / "logreg"
    _score(
        [str(recordings["root"])],
        other,
        random_vggish,
        f"--head={SEED_MODELS / SECOND_HEAD}",
        "--threshold=0.02",
    )
    output = tmp_path / "side"
    report = build.run(
        ["--scores", f"default={main_run}", "--scores", f"logreg={other}", "--output", str(output)]
    )
    assert [r["name"] for r in report["runs"]] == ["default", "logreg"]
    for key, value in _expected_counts(other).items():
        assert report["runs"][1][key] == pytest.approx(value), key
    windows = {
        name: _table(d, "windows").to_pylist() for name, d in (("default", main_run), ("logreg", other))
    }
    events = {name: _table(d, "events").to_pylist() for name, d in (("default", main_run), ("logreg", other))}
    for event in report["events"]:
        for name, rows in windows.items():
            own = [
                w["score"]
                for w in rows
                if w["source"] == event["source"]
                and w["end_seconds"] > event["start_seconds"]
                and w["start_seconds"] < event["end_seconds"]
            ]
            assert event["best_window_scores"][name] == pytest.approx(max(own) if own else None)
            # each run's score is its own overlapping event's peak_score (none: no event there)
            mine = [
                e["peak_score"]
                for e in events[name]
                if e["source"] == event["source"]
                and e["end_seconds"] > event["start_seconds"]
                and e["start_seconds"] < event["end_seconds"]
            ]
            if event["peak_scores"][name] is not None:
                assert any(event["peak_scores"][name] == pytest.approx(m) for m in mine), (name, mine)
    page = chromium.inspect(output / "index.html", screenshot="report-side-by-side")
    assert_page_ok(page)
    assert page.tables["summary"][0][1:] == [str(main_run), str(other)]
    heads = {row[0]: row[1:] for row in page.tables["summary"]}["head"]
    assert heads[0] != heads[1]
    event_page = chromium.inspect(
        output / report["events"][0]["page"], screenshot="report-side-by-side-event"
    )
    assert_page_ok(event_page)
    assert {row[0] for row in event_page.tables["event"]} >= {"peak score, default", "peak score, logreg"}


def test_no_detections_and_all_failed(random_vggish, tmp_path, chromium):  # noqa: F811
    quiet_in = tmp_path / "quiet"
    quiet_in.mkdir()
    shutil.copyfile(SEED_WAVS / "pistol_shot.wav", quiet_in / "pistol_shot.wav")
    _score([str(quiet_in)], tmp_path / "quiet_run", random_vggish, "--threshold=0.99")
    report = build.run(["--scores", str(tmp_path / "quiet_run"), "--output", str(tmp_path / "quiet_report")])
    assert report["events"] == [] and report["runs"][0]["detected_windows"] == 0
    page = chromium.inspect(tmp_path / "quiet_report" / "index.html", screenshot="report-no-detections")
    assert_page_ok(page)
    assert "No events" in page.text

    bad_in = tmp_path / "bad"
    bad_in.mkdir()
    (bad_in / "a.wav").write_bytes(b"")
    (bad_in / "b.wav").write_bytes(b"junk" * 100)
    _score([str(bad_in)], tmp_path / "bad_run", random_vggish)
    report = build.run(["--scores", str(tmp_path / "bad_run"), "--output", str(tmp_path / "bad_report")])
    assert report["runs"][0]["recordings"] == 2 and report["runs"][0]["recordings_failed"] == 2
    page = chromium.inspect(tmp_path / "bad_report" / "index.html", screenshot="report-all-failed")
    assert_page_ok(page)
    assert "Every input failed" in page.text
    reasons = {row[2] for row in page.tables["error-groups"]}
    assert {"empty", "unsupported"} <= reasons


def test_unreadable_source_gives_a_page_that_says_so(random_vggish, tmp_path, chromium):  # noqa: F811
    source = tmp_path / "in" / "pistol_shot.wav"
    source.parent.mkdir()
    shutil.copyfile(SEED_WAVS / "pistol_shot.wav", source)
    _score([str(source.parent)], tmp_path / "run", random_vggish, "--threshold=0.03")
    source.write_bytes(b"overwritten after scoring")
    report = build.run(["--scores", str(tmp_path / "run"), "--output", str(tmp_path / "report")])
    event = report["events"][0]
    assert event["clip"] is None and event["error_reason"] == "unsupported"
    page = chromium.inspect(tmp_path / "report" / event["page"], screenshot="report-unreadable-source")
    assert_page_ok(page)
    assert "could not be read" in page.text and str(source) in page.text


def test_report_on_gcs(random_vggish, tmp_path, gcs_emulator, chromium):  # noqa: F811
    bucket = gcs_emulator.create_bucket("report")
    gcs_emulator.upload(SEED_WAVS / "pistol_shot.wav", f"{bucket}/audio/site1/pistol_shot.wav")
    gcs_emulator.upload(SEED_WAVS / "spanishclass.wav", f"{bucket}/audio/site2/spanishclass.wav")
    run_uri = f"{bucket}/scores"
    _score([f"{bucket}/audio/"], run_uri, random_vggish, "--threshold=0.03")
    report = build.run(["--scores", f"cloud={run_uri}", "--output", str(tmp_path / "report")])
    run = report["runs"][0]
    assert run["recordings"] == 2 and run["events"] >= 1
    local = tmp_path / "copy"
    local.mkdir()
    for uri in gcs_emulator.list(run_uri):
        if uri.endswith(".parquet"):
            (local / uri.rsplit("/", 1)[-1]).write_bytes(gcs_emulator.read(uri))
    for key, value in _expected_counts(local).items():
        assert run[key] == pytest.approx(value), key
    top = report["events"][0]
    assert top["source"].startswith(f"{bucket}/audio/") and top["error"] is None
    clip, rate = soundfile.read(tmp_path / "report" / html.MEDIA_DIR / top["clip"], dtype="int16")
    original, original_rate = soundfile.read(SEED_WAVS / pathlib.Path(top["source"]).name, dtype="int16")
    mono = (
        np.round(original.astype(np.float64).mean(axis=1)).astype(np.int16)
        if original.ndim == 2
        else original
    )
    assert rate == original_rate
    first = top["first_sample"]
    np.testing.assert_allclose(clip, mono[first : first + clip.size], atol=1)  # stereo mixed down
    page = chromium.inspect(tmp_path / "report" / "index.html", screenshot="report-gcs")
    assert_page_ok(page)
    groups_page = chromium.inspect(tmp_path / "report" / "groups.html", screenshot="report-gcs-groups")
    assert sorted(row[1] for row in groups_page.tables["groups"]) == ["site1", "site2"]
    event_page = chromium.inspect(tmp_path / "report" / top["page"], screenshot="report-gcs-event")
    assert_page_ok(event_page)
    assert len(event_page.audio) == 1


def test_bad_arguments_are_reported(tmp_path):
    with pytest.raises(SystemExit):
        build.parse_args(["--scores", "a", "--scores", "a", "--output", "o"])
    with pytest.raises(SystemExit):
        build.parse_args(["--scores", "a", "--output", "gs://b/o"])
    with pytest.raises(SystemExit):
        build.parse_args(["--scores", "a", "--output", "o", "--group_pattern", "("])
    assert build.main(["--scores", str(tmp_path / "missing"), "--output", str(tmp_path / "out")]) == 2


def test_groups_by_folder_or_pattern(main_run, tmp_path):
    from pipelines.report.tables import NO_GROUP, ReportTables, RunInput

    windows = _table(main_run, "windows").to_pylist()
    tables = ReportTables([RunInput("main", str(main_run))], str(tmp_path / "scratch"))
    try:
        by_folder = {g["grp"]: g for g in tables.group_counts(0, None)}
        by_pattern = {g["grp"]: g for g in tables.group_counts(0, r"/(site[AB])/")}
        by_match = {g["grp"]: g for g in tables.group_counts(0, r"long_\w+")}
    finally:
        tables.close()
    for groups in (by_folder, by_pattern):
        assert set(groups) == {"siteA", "siteB"}
        for name, group in groups.items():
            own = [w for w in windows if f"/{name}/" in w["source"]]
            assert group["windows"] == len(own) and group["detected"] == sum(w["detected"] for w in own)
    assert set(by_match) == {"long_site", "long_copy", NO_GROUP}  # the file and the zip member
    assert by_match["long_site"]["recordings"] == 1 and by_match["long_copy"]["recordings"] == 1


def test_embedding_tfrecord_inputs_give_pages_without_audio(random_vggish, tmp_path, chromium):  # noqa: F811
    from tests.score_inputs import golden_tfrecord

    (tmp_path / "in").mkdir()
    golden_tfrecord(tmp_path / "in" / "golden.tfrecord")
    _score([str(tmp_path / "in" / "golden.tfrecord")], tmp_path / "run", random_vggish, "--threshold=0.03")
    report = build.run(["--scores", str(tmp_path / "run"), "--output", str(tmp_path / "report")])
    assert report["events"] and all(e["error_reason"] == "no_audio" for e in report["events"])
    page = chromium.inspect(
        tmp_path / "report" / report["events"][0]["page"], screenshot="report-tfrecord-event"
    )
    assert_page_ok(page)
    assert page.audio == [] and "embedding TFRecord" in page.text
