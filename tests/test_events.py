"""Unit tests of the scoring pipeline's pure parts: events, sources, timestamps, exports."""

import datetime
import io
import tarfile
import zipfile

import apache_beam as beam
import numpy as np
import pytest

from pipelines.scoring import clips, decode, exports, sources
from pipelines.scoring import config as scoring_config
from pipelines.scoring import events as scoring_events


def _windows(scores, hop=5, window=10, n=None):
    scores = np.asarray(scores, np.float64)
    starts = np.arange(len(scores)) * hop
    n = n if n is not None else int(starts[-1]) + window
    return scores, starts * 0.96, np.minimum(starts + window, n) * 0.96


def test_merge_events_joins_consecutive_windows_and_keeps_the_peak():
    scores, start, end = _windows([0.1, 0.6, 0.9, 0.7, 0.2, 0.8, 0.1])
    events = scoring_events.merge_events(scores, start, end, 0.5)
    assert len(events) == 2
    first, second = events
    assert (first.start_seconds, first.end_seconds) == pytest.approx((4.8, 3 * 4.8 + 9.6))
    assert (first.peak_score, first.peak_seconds, first.num_windows) == (0.9, pytest.approx(9.6), 3)
    assert (second.start_seconds, second.peak_score, second.num_windows) == (pytest.approx(24.0), 0.8, 1)


def test_merge_events_threshold_is_inclusive_and_edges_count():
    scores, start, end = _windows([0.5, 0.2, 0.5])
    events = scoring_events.merge_events(scores, start, end, 0.5)
    assert [e.start_seconds for e in events] == pytest.approx([0.0, 9.6])
    assert scoring_events.merge_events(scores, start, end, 0.51) == []
    assert scoring_events.merge_events(np.zeros(0), np.zeros(0), np.zeros(0), 0.5) == []


def test_merge_events_first_peak_wins_ties():
    scores, start, end = _windows([0.7, 0.9, 0.9])
    (event,) = scoring_events.merge_events(scores, start, end, 0.5)
    assert event.peak_seconds == pytest.approx(4.8)


def test_parse_timestamp_anywhere_in_the_name():
    when = sources.parse_timestamp("gs://b/site/SITE7_20230114_031500.flac", "%Y%m%d_%H%M%S")
    assert when == datetime.datetime(2023, 1, 14, 3, 15, tzinfo=datetime.UTC)
    shifted = sources.parse_timestamp("a!rec_20230114T031500+0100.wav", "%Y%m%dT%H%M%S%z")
    assert shifted == datetime.datetime(2023, 1, 14, 2, 15, tzinfo=datetime.UTC)
    assert sources.parse_timestamp("SITE7_notime.wav", "%Y%m%d_%H%M%S") is None


def test_timestamp_pattern_without_directive_is_rejected():
    with pytest.raises(ValueError, match="no strptime directive"):
        sources.compile_timestamp_pattern("YYYYMMDD")


def test_expand_pattern_folders_filter_globs_keep_everything(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.wav", "sub/b.FLAC", "notes.txt", "sub/c.zip", "d.tfrecord.gz", ".hidden.wav"):
        (tmp_path / name).write_bytes(b"x")
    folder = sorted((s.path, s.kind) for s in sources.expand_pattern(str(tmp_path)))
    assert folder == sorted(
        [
            (str(tmp_path / "a.wav"), "audio"),
            (str(tmp_path / "d.tfrecord.gz"), "tfrecord"),
            (str(tmp_path / "sub/b.FLAC"), "audio"),
            (str(tmp_path / "sub/c.zip"), "archive"),
        ]
    )
    globbed = [s.path for s in sources.expand_pattern(str(tmp_path / "*.txt"))]
    assert globbed == [str(tmp_path / "notes.txt")]
    (missing,) = list(sources.expand_pattern(str(tmp_path / "none*.wav")))
    assert isinstance(missing, sources.MatchError) and missing.reason == "not_found"


def test_archive_members_are_read_one_by_one(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("x/one.wav", b"1" * 10)
        z.writestr("x/readme.md", b"no")
        z.writestr("two.flac", b"2" * 20)
    skipped = []
    members = [
        (m.name, m.fileobj.read()) for m in sources.iter_archive_members(str(tmp_path / "a.zip"), skipped)
    ]
    assert members == [("x/one.wav", b"1" * 10), ("two.flac", b"2" * 20)]
    assert skipped == ["x/readme.md"]
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as t:
        info = tarfile.TarInfo("d/three.ogg")
        info.size = 3
        t.addfile(info, io.BytesIO(b"333"))
    assert [(m.name, m.fileobj.read()) for m in sources.iter_archive_members(str(tmp_path / "b.tar.gz"))] == [
        ("d/three.ogg", b"333")
    ]


def test_corrupt_archive_raises(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(zipfile.BadZipFile):
        list(sources.iter_archive_members(str(tmp_path / "bad.zip")))


EVENTS = [
    {"source": "b.wav", "event_index": 0, "start_seconds": 4.8, "end_seconds": 14.4, "peak_score": 0.9,
     "peak_seconds": 4.8, "num_windows": 1, "start_utc": None, "end_utc": None},
    {"source": "a.zip!x/a.wav", "event_index": 0, "start_seconds": 0.0, "end_seconds": 9.6, "peak_score": 0.7,
     "peak_seconds": 0.0, "num_windows": 1, "start_utc": None, "end_utc": None},
]  # fmt: skip


def test_events_csv_is_sorted_with_header():
    lines = exports.events_csv(EVENTS).splitlines()
    assert lines[0].split(",") == list(exports.CSV_COLUMNS)
    assert lines[1].startswith("a.zip!x/a.wav,0,0.0,9.6,0.7")
    assert lines[2].startswith("b.wav,0,4.8,14.4,0.9")


def test_raven_selection_table():
    lines = exports.raven_selection_table(EVENTS).splitlines()
    header = lines[0].split("\t")
    assert header[:7] == [
        "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)"
    ]  # fmt: skip
    row = dict(zip(header, lines[1].split("\t"), strict=True))
    assert row["Selection"] == "1" and row["Begin Path"] == "a.zip" and row["Source"] == "a.zip!x/a.wav"
    assert (row["Begin Time (s)"], row["End Time (s)"], row["Peak Score"]) == ("0.000", "9.600", "0.700000")


def test_clip_names_are_flat_and_distinct():
    a = clips.clip_name("gs://bucket/site 1/rec.wav", 0, 4.8)
    b = clips.clip_name("gs://bucket/site 1/rec.wav", 1, 14.4)
    assert "/" not in a and " " not in a and a != b and a.endswith(".wav")


def test_plan_segments_cover_every_example_once():
    from gunshot_core import audio
    from gunshot_core.audio import AudioInfo
    from pipelines.scoring import segments as sg

    info = AudioInfo(44100, 2, 44100 * 130, "WAV", "PCM_16")  # 130 s: 135 examples
    plan = sg.plan_segments(info, 30.0)
    assert [s.index for s in plan] == list(range(5)) and all(s.count == 5 for s in plan)
    assert plan[0].first == 0 and plan[-1].stop is None
    assert all(a.stop == b.first for a, b in zip(plan, plan[1:], strict=False))
    assert sg.plan_segments(info, 0) == [sg.Segment(0, 1, 0, None)]
    assert sg.plan_segments(info, 200.0) == [sg.Segment(0, 1, 0, None)]
    odd = AudioInfo(44056, 1, 44056 * 130, "WAV", "PCM_16")  # 0.96 s is not a whole number of samples
    plan = sg.plan_segments(odd, 30.0)  # segments of 25 examples (24 s), the step at this rate
    assert [(s.first, s.stop) for s in plan] == [
        (0, 25),
        (25, 50),
        (50, 75),
        (75, 100),
        (100, 125),
        (125, None),
    ]
    assert all(audio.starts_on_input_sample(s.first * 15360, 44056) for s in plan)


def test_archive_parts_group_members_in_order_and_bad_members_are_reported(tmp_path):
    from pipelines.scoring import sources as src

    entries = [
        src.ArchiveEntry(n, b)
        for n, b in (("a.wav", 40), ("b.wav", 70), ("c.wav", 10), ("d.wav", 10), ("e.wav", 200))
    ]
    parts = src.plan_archive_parts(entries, 100)
    assert [[e.name for e in p.members] for p in parts] == [["a.wav", "b.wav"], ["c.wav", "d.wav", "e.wav"]]
    assert [(p.index, p.count) for p in parts] == [(0, 2), (1, 2)]
    assert [p.members for p in src.plan_archive_parts(entries, 0)] == [(e,) for e in entries]

    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x/one.wav", b"RIFF....")
        z.writestr("x/notes.txt", b"text")
        z.writestr("__MACOSX/x/._one.wav", b"meta")
    audio_members, skipped = src.list_archive_members(str(path))
    assert [e.name for e in audio_members] == ["x/one.wav"]
    assert sorted(skipped) == ["__MACOSX/x/._one.wav", "x/notes.txt"]
    part = src.ArchivePart(0, 1, (*audio_members, src.ArchiveEntry("x/gone.wav", 3)))
    got = [
        (m.name, m.fileobj.read()) if isinstance(m, src.Member) else m
        for m in src.iter_part_members(str(path), part)
    ]
    assert got[0] == ("x/one.wav", b"RIFF....")
    assert got[1][0] == "x/gone.wav" and isinstance(got[1][1], KeyError)


def test_plain_tar_members_are_read_by_offset_and_compressed_tars_are_not_split(tmp_path):
    from pipelines.scoring import sources as src

    payload = {"a/one.wav": b"1" * 700, "a/skip.txt": b"t", "a/two.flac": b"2" * 1500}
    path = tmp_path / "plain.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in payload.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert src.splits_into_parts(str(path)) and src.splits_into_parts("x.zip")
    assert not any(src.splits_into_parts(f"x{ext}") for ext in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))
    members, skipped = src.list_archive_members(str(path))
    assert [(e.name, e.nbytes) for e in members] == [("a/one.wav", 700), ("a/two.flac", 1500)]
    assert skipped == ["a/skip.txt"] and all(e.offset % 512 == 0 for e in members)
    # The second member alone, as a worker given only that part reads it:
    part = src.plan_archive_parts(members, 0)[1]
    got = [(m.name, m.fileobj.read()) for m in src.iter_part_members(str(path), part)]
    assert got == [("a/two.flac", payload["a/two.flac"])]
    # A member whose data the file no longer holds (truncated archive) is reported, not returned short.
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[: members[1].offset + 100])
    [(name, error)] = list(src.iter_part_members(str(cut), part))
    assert name == "a/two.flac" and isinstance(error, EOFError)


def test_a_zip_part_that_cannot_be_read_gives_an_error_row_per_member(tmp_path):
    from pipelines.scoring import sources as src

    config = scoring_config.ScoringConfig(checkpoint="c", pca="p", head="h")
    gone = str(tmp_path / "vanished.zip")  # planned, then deleted before decoding
    part = src.ArchivePart(0, 1, (src.ArchiveEntry("a/one.wav", 10), src.ArchiveEntry("a/two.wav", 10)))
    outputs = list(decode.DecodeFn(config)._outputs((src.Source(gone, src.KIND_ARCHIVE, 10), part)))
    infos = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert [key for key, _ in infos] == [gone + "!a/one.wav", gone + "!a/two.wav"]
    assert all(i.status == "error" and i.stage == "read" and i.member.startswith("a/") for _, i in infos)
    assert sum(o.n for o in outputs if isinstance(o, decode._Count) and o.counter == "_decode_errors") == 2


def test_switches_take_a_bare_flag_or_true_false():
    import argparse

    from pipelines import options

    parser = argparse.ArgumentParser()
    options.add_switch(parser, "--skip_existing", help="h")
    parse = parser.parse_args
    assert parse([]).skip_existing is False and parse(["--skip_existing"]).skip_existing is True
    assert parse(["--skip_existing=TRUE"]).skip_existing is True
    assert parse(["--skip_existing=false"]).skip_existing is False
    assert parse(["--skip_existing", "0"]).skip_existing is False
    with pytest.raises(SystemExit):
        parse(["--skip_existing=maybe"])
