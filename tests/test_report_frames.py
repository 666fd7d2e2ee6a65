"""`gunshot report` on a run scored with a frame-level head (framepool): every event page shows the
event's own clip, bounds and peak score, checked in headless Chromium (tests/browser.py).

The run: a 40-s synthetic field recording (tests/field_sites.py: noise, chirps, gunshots and
confusers) scored by `gunshot batch` with an untrained framepool head (seeded Keras weights, the
random-weight VGGish). Its frame scores are arbitrary, so the threshold is set between the 5th and
6th highest frame scores (computed in-process with the same models), which leaves a few events of
one or two 0.96 s frames that fall wherever the untrained head puts them, not on the loudest sound.
"""

import json
import pathlib
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile

from gunshot_core import heads, params
from pipelines import score
from pipelines.report import build, plots
from tests import field_sites
from tests.browser import assert_page_ok, chromium  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report_frames")]

RATE = 16000
EVENTS_WANTED = 5


def _framepool_head(directory: pathlib.Path) -> str:
    """An untrained framepool head with seeded weights, saved as `training.train` saves one."""
    import keras

    from training import models

    keras.utils.set_random_seed(7)
    config = models.PRESETS["framepool"]
    _, serving = models.build_models(config, params.HEAD_FRAMES, np.full(128, 128.0), np.full(128, 20.0))
    directory.mkdir(parents=True)
    serving.save(directory / heads.MODEL_FILENAME)
    heads.write_card(
        directory,
        heads.HeadCard(
            head_id="framepool-untrained", frames=None, frame_pooling=models.frame_pooling_card(config)
        ),
    )
    return str(directory)


def _table(run_dir, name) -> pa.Table:
    files = sorted(pathlib.Path(run_dir).glob(f"{name}-*-of-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


@pytest.fixture(scope="module")
def frame_run(random_vggish, tmp_path_factory):
    from gunshot_core.score_cli import Scorer

    root = tmp_path_factory.mktemp("report_frames")
    site = field_sites.synthesize("framesite", 0, minutes=40 / 60, sample_rate=RATE, seed=5,
                                  gunshots_per_minute=6, confusers_per_minute=6)  # fmt: skip
    wav = root / "recordings" / "framesite.wav"
    wav.parent.mkdir()
    soundfile.write(wav, site.mix, RATE, subtype="PCM_16")
    head = _framepool_head(root / "head")
    ckpt, pca = random_vggish
    scorer = Scorer(ckpt, pca, head)
    _, frames = scorer.frames(str(wav))
    frame_scores = np.sort(scorer.head.frame_scores(frames))[::-1]
    threshold = float(frame_scores[EVENTS_WANTED - 1] + frame_scores[EVENTS_WANTED]) / 2
    output = root / "run"
    score.run([f"--input={wav.parent}", f"--output={output}", f"--checkpoint={ckpt}", f"--pca={pca}",
               f"--head={head}", f"--threshold={threshold!r}"])  # fmt: skip
    report_dir = root / "report"
    drawn = {"spectrogram": {}, "timeline": {}}

    def recorder(kind, draw):
        def wrapped(path, *a, **k):
            drawn[kind][pathlib.Path(path).name] = k
            return draw(path, *a, **k)

        return wrapped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "spectrogram_png", recorder("spectrogram", plots.spectrogram_png))
        patch.setattr(plots, "timeline_png", recorder("timeline", plots.timeline_png))
        report = build.run(["--scores", str(output), "--output", str(report_dir), "--workers", "2"])
    return {"run": output, "report_dir": report_dir, "report": report, "wav": wav, "drawn": drawn,
            "duration": site.mix.size / RATE}  # fmt: skip


def test_frame_events_are_short(frame_run):
    """The fixture's premise: events of a frame head are a few frames long, shorter than a window."""
    events = _table(frame_run["run"], "events").to_pylist()
    assert 1 <= len(events) <= EVENTS_WANTED
    manifest = json.loads((frame_run["run"] / "run.json").read_text())
    assert manifest["events_from"] == "frames"
    assert all(e["end_seconds"] - e["start_seconds"] <= 3 * params.FRAME_SECONDS + 1e-6 for e in events)


def test_every_event_page_has_its_own_clip_and_score(frame_run, chromium):  # noqa: F811
    report, report_dir = frame_run["report"], frame_run["report_dir"]
    events = _table(frame_run["run"], "events").to_pylist()
    by_bounds = {(round(e["start_seconds"], 3), round(e["end_seconds"], 3)): e for e in events}
    assert len(report["events"]) == len(events)
    peaks = []
    recording, rate = soundfile.read(frame_run["wav"], dtype="int16")
    for item in report["events"]:
        event = by_bounds[(round(item["start_seconds"], 3), round(item["end_seconds"], 3))]
        peaks.append(event["peak_score"])
        # The clip holds the whole event, and is the recording's own samples there.
        assert item["clip_start_seconds"] <= event["start_seconds"] + 1e-6, item
        assert item["clip_end_seconds"] >= event["end_seconds"] - 1e-6, item
        clip, clip_rate = soundfile.read(report_dir / "media" / item["clip"], dtype="int16")
        assert clip_rate == rate
        np.testing.assert_array_equal(
            clip, recording[item["first_sample"] : item["first_sample"] + clip.size]
        )
        assert item["peak_scores"]["run"] == pytest.approx(event["peak_score"], abs=1e-6)
        page = chromium.inspect(report_dir / item["page"], screenshot=f"report-frames-{item['rank']}")
        assert_page_ok(page)
        ((_, duration),) = page.audio
        assert duration == pytest.approx(item["clip_end_seconds"] - item["clip_start_seconds"], abs=0.01)
        facts = dict(row[:2] for row in page.tables["event"])
        assert facts["peak score, run"].startswith(f"{event['peak_score']:.4f}"), facts
        shown = [float(x) for x in re.findall(r"[\d.]+", facts["clip (s from start)"])[:2]]
        assert shown[0] <= event["start_seconds"] + 1e-3 and shown[1] >= event["end_seconds"] - 1e-3, facts
    # Top events: best peak_score first, and the scores shown are the events table's.
    assert peaks == sorted(peaks, reverse=True)
    index = chromium.inspect(report_dir / "index.html", screenshot="report-frames-index")
    assert_page_ok(index)
    shown = [float(row[-1]) for row in index.tables["top-events"]]
    assert shown == pytest.approx([round(p, 4) for p in peaks], abs=1e-4)
    listing = chromium.inspect(report_dir / "events.html", screenshot="report-frames-events")
    assert [float(row[-1]) for row in listing.tables["events"]] == pytest.approx(shown, abs=1e-4)


def test_spectrogram_marks_the_event_and_the_timeline_stays_in_the_recording(frame_run):
    """Event bounds narrower than the window are marked; the score timeline ends with the recording."""
    drawn = frame_run["drawn"]
    for item in frame_run["report"]["events"]:
        marks = drawn["spectrogram"][item["spectrogram"]]["marks"]
        assert (pytest.approx(item["start_seconds"]), pytest.approx(item["end_seconds"]), "event") in marks
        timeline = drawn["timeline"][item["timeline"]]
        lo, hi = timeline["span"]
        assert 0 <= lo <= item["start_seconds"] and item["end_seconds"] <= hi <= frame_run["duration"] + 1e-6
        # the frame scores are drawn too, and their best inside the event is the event's peak score
        starts, scores = timeline["frame_series"]["run"]
        inside = (starts >= item["start_seconds"] - 1e-6) & (starts < item["end_seconds"] - 1e-6)
        assert float(scores[inside].max()) == pytest.approx(item["peak_scores"]["run"], abs=1e-6)


def test_summary_raven_and_timelines_read_well(frame_run, chromium):  # noqa: F811
    report_dir = frame_run["report_dir"]
    manifest = json.loads((frame_run["run"] / "run.json").read_text())
    head_sha = frame_run["report"]["runs"][0]["provenance"]["head_sha256"]
    assert len(head_sha) == 64
    index = chromium.inspect(report_dir / "index.html", screenshot="report-frames-summary")
    summary = {row[0]: row[1] for row in index.tables["summary"]}
    # sha256s shortened, the full value on hover (and in run.json)
    for key in ("head sha256", "VGGish sha256", "PCA sha256"):
        assert len(summary[key]) <= build.SHORT_HASH + 1, summary[key]
    html_text = (report_dir / "index.html").read_text()
    assert f'title="{head_sha}"' in html_text and html_text.count(head_sha) == 1
    assert head_sha in json.dumps(manifest)
    # a recording without a timestamp: a score timeline per recording, not a one-column heatmap
    images = [src for src, _ in index.images]
    assert any("timelines-r0-g000.png" in src for src in images), images
    assert not any("heatmap" in src for src in images), images
    # the event's Raven selection is a table
    item = frame_run["report"]["events"][0]
    page = chromium.inspect(report_dir / item["page"], screenshot="report-frames-raven")
    (row,) = page.tables["raven"]
    header = (report_dir / build.RAVEN_FILE).read_text().splitlines()[0].split("\t")
    assert len(row) == len(header) and header[:3] == ["Selection", "View", "Channel"]
    assert float(row[header.index("Begin Time (s)")]) == pytest.approx(item["start_seconds"], abs=1e-3)


def test_histogram_draws_each_runs_threshold_with_plain_log_ticks():
    edges = np.linspace(0, 1, 51)
    counts = {"old": np.arange(50) % 7 + 3, "new": np.arange(50) % 5 + 2}
    figure = plots.histogram_figure(edges, counts, threshold={"old": 0.5, "new": 0.8})
    figure.canvas.draw()
    (axes,) = figure.axes
    vertical = sorted(line.get_xdata()[0] for line in axes.get_lines() if len(set(line.get_xdata())) == 1)
    assert vertical == [0.5, 0.8]
    low, high = axes.get_ylim()
    labels = [
        t.get_text() for t in axes.yaxis.get_ticklabels(which="both") if low <= t.get_position()[1] <= high
    ]
    labels = [t for t in labels if t]
    assert labels and all(re.fullmatch(r"[\d,.]+", t) for t in labels), labels
    same = plots.histogram_figure(edges, counts, threshold={"old": 0.5, "new": 0.5})
    assert len([line for line in same.axes[0].get_lines() if len(set(line.get_xdata())) == 1]) == 1


@pytest.mark.parametrize(
    ("event", "duration", "centre", "expected"),
    [
        ((10.0, 11.0), 60.0, None, (7.5, 13.5)),  # short: --clip_seconds around the event's middle
        ((10.0, 29.2), 60.0, None, (9.0, 30.2)),  # window-head event: the event plus 1 s each side
        ((0.2, 1.0), 60.0, None, (0.0, 6.0)),  # shifted to start with the recording
        ((11.0, 11.9), 12.0, None, (6.0, 12.0)),  # ... and to end with it
        ((1.0, 2.0), 4.0, None, (0.0, 4.0)),  # a recording shorter than a clip: all of it
        ((0.0, 100.0), 600.0, 50.0, (35.0, 65.0)),  # longer than --max_clip_seconds: around `centre`
        ((10.0, 11.0), None, None, (7.5, 13.5)),  # duration unknown
    ],
)
def test_event_clip_span(event, duration, centre, expected):
    span = build.event_clip_span(
        event, min_seconds=6.0, max_seconds=30.0, recording_seconds=duration, centre=centre
    )
    assert span == pytest.approx(expected)
