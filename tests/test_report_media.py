"""Tests of the report's shared pieces: clips through the core's decoder, figures, pages, the browser."""

import io
import pathlib

import numpy as np
import pytest
import soundfile
from markupsafe import Markup

from pipelines.report import html, media, plots
from tests.browser import assert_page_ok, chromium  # noqa: F401 (fixture)
from tests.gcs_emulator import gcs_emulator  # noqa: F401 (fixture)
from tests.score_inputs import make_tar_gz, make_zip, tone


def _pcm16(seconds, rate, channels=1, seed=0):
    data = tone(seconds, rate, channels, seed)
    data = data[:, 0] if channels == 1 else data
    return (np.round(data * 32767)).astype(np.int16)


def _wav_bytes(samples, rate, fmt="WAV"):
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def test_source_keys_split_at_the_archive():
    assert media.AudioRef.from_source("a/b.zip!x/y.wav") == media.AudioRef("a/b.zip", "x/y.wav")
    assert media.AudioRef.from_source("gs://b/t.tar.gz!m!n.wav") == media.AudioRef(
        "gs://b/t.tar.gz", "m!n.wav"
    )
    assert media.AudioRef.from_source("odd!name.wav") == media.AudioRef("odd!name.wav")
    assert media.AudioRef("a.zip", "m.wav").source == "a.zip!m.wav"


@pytest.mark.parametrize("container", ["file", "zip", "tar", "tar.gz"])
def test_clip_samples_are_the_recordings(tmp_path, container):
    rate = 22050
    pcm = _pcm16(20.0, rate)
    data = _wav_bytes(pcm, rate)
    if container == "file":
        ref = media.AudioRef(str(tmp_path / "rec.wav"))
        pathlib.Path(ref.file).write_bytes(data)
    elif container == "zip":
        ref = media.AudioRef(
            make_zip(tmp_path / "a.zip", {"other.wav": b"x", "d/rec.wav": data}), "d/rec.wav"
        )
    else:
        mode = "w" if container == "tar" else "w:gz"
        ref = media.AudioRef(make_tar_gz(tmp_path / f"a.{container}", {"d/rec.wav": data}, mode), "d/rec.wav")
    clip = media.cut_clip(ref, 3.3, 9.1)
    first, last = int(np.floor(3.3 * rate)), int(np.ceil(9.1 * rate))
    assert clip.sample_rate == rate and clip.first_sample == first
    np.testing.assert_array_equal(media.to_pcm16(clip.samples), pcm[first:last])
    out = tmp_path / "clip.wav"
    media.write_wav(out, clip)
    written, written_rate = soundfile.read(out, dtype="int16")
    assert written_rate == rate
    np.testing.assert_array_equal(written, pcm[first:last])
    # clamped at the ends of the recording
    tail = media.cut_clip(ref, 18.0, 25.0)
    assert tail.samples.size == pcm.size - 18 * rate and tail.end_seconds == pytest.approx(20.0)


def test_stereo_is_mixed_down_like_the_decoder(tmp_path):
    rate = 16000
    pcm = _pcm16(4.0, rate, channels=2)
    path = tmp_path / "st.wav"
    soundfile.write(path, pcm, rate, subtype="PCM_16")
    clip = media.cut_clip(media.AudioRef(str(path)), 1.0, 2.0)
    expected = (pcm[16000:32000].astype(np.float32) / 32768).mean(axis=1)
    np.testing.assert_allclose(clip.samples, expected, atol=1e-7)


def test_unreadable_inputs_give_media_errors_with_stable_text(tmp_path):
    good = _wav_bytes(_pcm16(2.0, 16000), 16000)
    archive = make_zip(tmp_path / "a.zip", {"bad.wav": b"not audio at all" * 100, "ok.wav": good})
    cases = {
        "missing_file": (media.AudioRef(str(tmp_path / "gone.wav")), "unreadable"),
        "missing_member": (media.AudioRef(archive, "nope.wav"), "missing_member"),
        "bad_member": (media.AudioRef(archive, "bad.wav"), None),
        "not_an_archive": (media.AudioRef(str(tmp_path / "gone.zip"), "x.wav"), "unreadable"),
        "out_of_range": (media.AudioRef(archive, "ok.wav"), "out_of_range"),
    }
    for name, (ref, reason) in cases.items():
        start = 5.0 if name == "out_of_range" else 0.0
        with pytest.raises(media.MediaError) as info:
            media.cut_clip(ref, start, start + 1.0)
        if reason:
            assert info.value.reason == reason, name
        assert "0x" not in str(info.value) and str(tmp_path) in str(info.value), name


def test_clip_from_gcs(tmp_path, gcs_emulator):  # noqa: F811
    rate = 16000
    pcm = _pcm16(6.0, rate)
    local = tmp_path / "rec.wav"
    soundfile.write(local, pcm, rate, subtype="PCM_16")
    gcs_emulator.create_bucket("media")
    uri = gcs_emulator.upload(local, "gs://media/site/rec.wav")
    zipped = gcs_emulator.upload(
        make_zip(tmp_path / "a.zip", {"rec.wav": local.read_bytes()}), "gs://media/a.zip"
    )
    for ref in (media.AudioRef(uri), media.AudioRef(zipped, "rec.wav")):
        clip = media.cut_clip(ref, 1.0, 2.5)
        np.testing.assert_array_equal(media.to_pcm16(clip.samples), pcm[16000:40000])


def test_loudest_point_and_sub_clip():
    rate = 8000
    samples = np.zeros(10 * rate, np.float32)
    samples[int(6.2 * rate) : int(6.25 * rate)] = 0.9
    samples[int(1.0 * rate) : int(1.05 * rate)] = 1.0  # louder, but outside `within`
    clip = media.Clip(samples, rate, 2 * rate, 30.0)  # starts 2 s into the recording
    assert media.loudest_seconds(clip) == pytest.approx(3.025, abs=0.03)
    assert media.loudest_seconds(clip, within=(5.0, 12.0)) == pytest.approx(8.225, abs=0.03)
    part = media.sub_clip(clip, 8.0, 9.0)
    assert part.first_sample == 8 * rate and part.samples.size == rate
    np.testing.assert_array_equal(part.samples, samples[6 * rate : 7 * rate])


def test_map_with_progress_keeps_order_and_returns_exceptions():
    stream = io.StringIO()

    def work(x):
        if x == 3:
            raise ValueError("three")
        return x * x

    results = media.map_with_progress(work, range(6), label="work", workers=3, stream=stream)
    assert results[:3] == [0, 1, 4] and isinstance(results[3], ValueError) and results[4:] == [16, 25]
    assert "work: [" in stream.getvalue() and "6/6" in stream.getvalue()


def test_figures_are_small_and_byte_identical(tmp_path):
    rate = 16000
    samples = tone(6.0, rate, 1)[:, 0]
    sizes = []
    for i in range(2):
        sizes.append(
            plots.spectrogram_png(
                tmp_path / f"s{i}.png", samples, rate, start_seconds=10.0, marks=[(11, 12, "x")]
            )
        )
    assert (tmp_path / "s0.png").read_bytes() == (tmp_path / "s1.png").read_bytes()
    assert 5_000 < sizes[0] < 300_000
    starts = np.arange(20) * 4.8
    plots.timeline_png(
        tmp_path / "t.png", {"a": (starts, np.linspace(0, 1, 20))}, threshold=0.5, marks=[(9.6, 19.2)]
    )
    plots.histogram_png(tmp_path / "h.png", np.linspace(0, 1, 11), {"a": np.arange(10)}, threshold=0.5)
    plots.heatmap_png(
        tmp_path / "m.png",
        np.arange(48).reshape(2, 24),
        ["d1", "d2"],
        [str(h) for h in range(24)],
        xlabel="hour",
    )
    for name in ("t.png", "h.png", "m.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pages_escape_paginate_and_stay_small(tmp_path):
    site = html.Site(tmp_path / "site", "test site", nav=[("Home", "index.html")])
    columns = [
        html.Column("n", "n", "num"),
        html.Column("name", "name"),
        html.Column("score", "score", "num", ".3f"),
    ]
    rows = [{"n": i, "name": html.Link(f"<rec {i}>", f"e{i}.html"), "score": i / 7} for i in range(250)]
    names = site.write_table_pages("events", "Events", columns, rows, per_page=100, table_id="events")
    assert names == ["events.html", "events-2.html", "events-3.html"]
    text = (tmp_path / "site" / "events-3.html").read_text()
    assert "&lt;rec 249&gt;" in text and "<rec" not in text and 'href="events-2.html"' in text
    assert text.count("<tr>") == 51  # header + 50 rows
    with pytest.raises(html.PageTooLarge):
        site.write("big.html", "big", [html.pre("x" * (html.MAX_PAGE_BYTES + 1))])


def test_page_with_media_in_the_browser(tmp_path, chromium):  # noqa: F811
    site = html.Site(tmp_path / "site", "browser check")
    rate = 16000
    clip = media.Clip(tone(2.0, rate, 1)[:, 0], rate, 0, 2.0)
    media.write_wav(tmp_path / "site" / "media" / "c.wav", clip)
    plots.spectrogram_png(tmp_path / "site" / "media" / "c.png", clip.samples, rate)
    rows = [{"a": "first", "b": 1}, {"a": "second", "b": 2}]
    site.write(
        "index.html",
        "Media",
        [
            html.section("Clip", html.figure("media/c.png", "spectrogram"), html.audio("media/c.wav")),
            html.table([html.Column("a", "A"), html.Column("b", "B", "num")], rows, id="t"),
            Markup("<p>done</p>"),
        ],
    )
    page = chromium.inspect(tmp_path / "site" / "index.html", screenshot="report-media-check")
    assert_page_ok(page)
    assert [w for _, w in page.images] == [700]
    assert page.audio[0][1] == pytest.approx(2.0, abs=0.01)
    assert page.tables["t"] == [["first", "1"], ["second", "2"]]
    assert page.screenshot.stat().st_size > 1000
    # and the checks can fail: a missing image and a missing clip are reported
    site.write("broken.html", "Broken", [html.figure("media/none.png", "x"), html.audio("media/none.wav")])
    broken = chromium.inspect(tmp_path / "site" / "broken.html", screenshot="report-media-broken")
    assert broken.images == [("media/none.png", 0)]
    assert not broken.audio[0][1] > 0
    assert broken.console_errors
