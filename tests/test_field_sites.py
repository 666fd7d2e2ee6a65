"""The synthetic field-site generator puts what it claims where it claims, deterministically."""

import csv
import dataclasses
import hashlib
import pathlib

import numpy as np
import pytest
import soundfile as sf

from gunshot_core import annotations
from tests import field_sites as fs

pytestmark = pytest.mark.skipif(not fs.SEED_WAVS.exists(), reason="needs ../shared/seed/wavs")

SITES = ("north", "south")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    insertions = fs.make_sites(root, sites=SITES, recordings_per_site=2, minutes=0.5, seed=3)
    return root, insertions


def _db(x):
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20)


def test_layout_and_formats(made):
    root, insertions = made
    paths = fs.recordings(root)
    assert [pathlib.Path(p).relative_to(root).as_posix() for p in paths] == [
        "north/north_rec00.wav", "north/north_rec01.flac", "south/south_rec00.wav", "south/south_rec01.flac",
    ]  # fmt: skip
    for path, rate in zip(paths, [16000, 44100, 16000, 44100], strict=True):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (rate, 1, "PCM_16")
        assert info.frames == 30 * rate
        assert fs.recording_seconds(root)[path] == 30.0
    assert {i.site for i in insertions} == set(SITES)
    assert fs.read_ground_truth(root) == insertions
    for path in paths:
        mine = [i for i in insertions if i.file == path]
        assert sum(i.label == fs.GUNSHOT for i in mine) == 1  # 2 per minute * 0.5 min
        assert sum(i.label in fs.CONFUSER_LABELS for i in mine) == 2  # 3 per minute * 0.5, rounded


def test_events_are_inserted_at_the_claimed_times_and_snrs(made):
    """Over each event's span, mix power / background power = 1 + 10**(snr/10), in the written file."""
    root, insertions = made
    checked = 0
    for index, path in enumerate(fs.recordings(root)):
        site = pathlib.Path(path).parent.name
        rate = sf.info(path).samplerate
        rec = fs.synthesize(site, index % 2, minutes=0.5, sample_rate=rate, seed=3)
        written, _ = sf.read(path, dtype="float32")
        np.testing.assert_allclose(written, rec.mix, atol=1 / 32767)
        events = [i for i in insertions if i.file == path and i.label != "rain"]
        assert [dataclasses.replace(i, file="") for i in events] == [
            i for i in rec.insertions if i.label != "rain"
        ]
        for ins in events:
            span = slice(int(round(ins.start * rate)), int(round(ins.end * rate)))
            rise = _db(written[span]) - _db(rec.background[span])
            assert rise == pytest.approx(10 * np.log10(1 + 10 ** (ins.snr_db / 10)), abs=0.1), ins
            low, high = fs.GUNSHOT_SNR_DB if ins.label == fs.GUNSHOT else fs.CONFUSER_SNR_DB
            assert low <= ins.snr_db <= high
            # and the energy is really there, not around it: the second before is quieter
            before = slice(max(0, span.start - rate), span.start)
            alone = not any(o.start < ins.start and o.end > ins.start - 1 for o in events if o != ins)
            if ins.label == fs.GUNSHOT and alone:
                assert _db(written[span]) > _db(written[before]) + 3.0, ins
            checked += 1
    assert checked == 12


def test_gunshot_snippets_start_at_a_loud_onset():
    snippets = fs.gunshot_snippets(16000)
    assert {name for name, _, _ in snippets} == {"pistol_shot.wav", "ultimate_gunshot.wav"}
    for name, onset, x in snippets:
        assert 0.5 * 16000 <= len(x) <= 1.5 * 16000
        source = fs.load_seed(name, 16000)
        start = max(0, int(round((onset - 0.02) * 16000)))
        np.testing.assert_array_equal(x, source[start : start + len(x)])
        peaks = np.abs(source[: len(source) // 160 * 160]).reshape(-1, 160).max(axis=1)
        onset_peak = np.abs(x[int(0.01 * 16000) : int(0.04 * 16000)]).max()
        assert 20 * np.log10(onset_peak) > 20 * np.log10(np.median(peaks)) + 12, (name, onset)


def test_raven_tables_list_the_annotated_insertions(made):
    root, insertions = made
    for path in fs.recordings(root):
        table = fs.raven_table_path(path)
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        expected = [i for i in insertions if i.file == path and i.annotated]
        assert [(float(r["Begin Time (s)"]), float(r["End Time (s)"]), r["Annotation"]) for r in rows] == [
            (i.start, i.end, i.label) for i in expected
        ]
        assert {r["Begin File"] for r in rows} == {pathlib.Path(path).name}
        parsed = annotations.read_annotations(str(table))
        assert not parsed.errors
        assert annotations.RecordingMatcher(fs.recordings(root)).match(parsed.recording_keys[0]) == path
    assert not any(i.annotated for i in insertions if i.label == "rain")


def test_sites_sound_different_and_reruns_are_identical(made, tmp_path):
    root, _ = made
    a, b = fs.site_profile("north", 3), fs.site_profile("south", 3)
    assert a != b and fs.site_profile("north", 3) == a
    again = fs.make_sites(tmp_path, sites=SITES, recordings_per_site=2, minutes=0.5, seed=3)
    assert [
        dataclasses.replace(i, file=pathlib.Path(i.file).relative_to(tmp_path).as_posix()) for i in again
    ] == [
        dataclasses.replace(i, file=pathlib.Path(i.file).relative_to(root).as_posix())
        for i in fs.read_ground_truth(root)
    ]
    for path in fs.recordings(root):
        other = tmp_path / pathlib.Path(path).relative_to(root)
        assert (
            hashlib.sha256(other.read_bytes()).digest()
            == hashlib.sha256(pathlib.Path(path).read_bytes()).digest()
        )
    # cached: a second call with the same parameters rewrites nothing
    stamp = [pathlib.Path(p).stat().st_mtime_ns for p in fs.recordings(tmp_path)]
    fs.make_sites(tmp_path, sites=SITES, recordings_per_site=2, minutes=0.5, seed=3)
    assert [pathlib.Path(p).stat().st_mtime_ns for p in fs.recordings(tmp_path)] == stamp
    # a different seed gives a different soundscape and different events
    other = fs.make_sites(tmp_path / "s4", sites=SITES, recordings_per_site=1, minutes=0.5, seed=4)
    assert [(i.start, i.label) for i in other] != [
        (i.start, i.label) for i in again if i.file.endswith("rec00.wav")
    ]
