"""End-to-end runs of pipelines.score on the DirectRunner with the random-weight VGGish.

One module-scoped run covers golden parity, broken files, archives, TFRecords, timestamps, clip and
event exports; further runs check multi-process identity with other chunk sizes, --skip_existing and
the default resampler.
"""

import json
import logging
import os
import pathlib
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from pipelines import schemas, score
from pipelines.io import tables
from pipelines.scoring import outputs
from tests import score_inputs
from tests.conftest import GOLDEN, SEED_WAVS, head_key

pytestmark = pytest.mark.slow

DEFAULT_HEAD_KEY = "score_" + head_key("1LayerLSTM__Loss=BinCE_20Epochs_july02.h5")
THRESHOLD = 0.04  # between the random-weight scores of the seed clips, so some recordings detect
TABLES = ("windows", "recordings", "events", "errors", "embeddings")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_inputs")
    cases = score_inputs.broken_files(root / "bad")
    pistol = (SEED_WAVS / "pistol_shot.wav").read_bytes()
    footsteps = (SEED_WAVS / "footsteps_shuffle.wav").read_bytes()
    archives = root / "archives"
    archives.mkdir()
    zipped = score_inputs.make_zip(
        archives / "batch.zip",
        {
            "site/pistol_shot.wav": pistol,
            "site/README.txt": b"not audio",
            "site/clip.ogg": pathlib.Path(cases["ogg"]).read_bytes(),
        },
    )
    tarred = score_inputs.make_tar_gz(
        archives / "batch.tar.gz",
        {"a/footsteps.wav": footsteps, "a/clip.mp3": pathlib.Path(cases["mp3"]).read_bytes()},
    )
    plain_tar = score_inputs.make_tar_gz(
        archives / "plain.tar",
        {"b/pistol_shot.wav": pistol, "b/notes.txt": b"not audio", "b/footsteps.wav": footsteps},
        mode="w",
    )
    tfrecord = score_inputs.golden_tfrecord(root / "golden.tfrecord")
    stamped = score_inputs.copy_as(
        SEED_WAVS / "footsteps_shuffle.wav", root / "stamped", "SITE7_20230114_031500.wav"
    )
    golden = [str(SEED_WAVS / f"{name}.wav") for name in score_inputs.GOLDEN_WAVS]
    listing = root / "inputs.txt"
    listing.write_text(
        "# bad files\n" + "\n".join(sorted(cases.values())) + "\n\n" + str(root / "nothing*.wav") + "\n"
    )
    return {
        "root": root,
        "cases": cases,
        "golden": golden,
        "zip": zipped,
        "tar": tarred,
        "plain_tar": plain_tar,
        "tfrecord": tfrecord,
        "stamped": stamped,
        "listing": str(listing),
        "patterns": golden + [str(archives), tfrecord, str(root / "stamped")],
    }


def _argv(inputs, random_vggish, output, *extra):
    ckpt, pca = random_vggish
    argv = [f"--input={p}" for p in inputs["patterns"]]
    argv += [
        f"--input_list={inputs['listing']}",
        f"--output={output}",
        f"--checkpoint={ckpt}",
        f"--pca={pca}",
    ]
    argv += ["--resampler=resampy", f"--threshold={THRESHOLD}", "--timestamp_pattern=%Y%m%d_%H%M%S"]
    argv += ["--write_embeddings", "--export_clips=1", *extra]
    return argv


def _table(output, name):
    return tables.read_table(str(output), name).to_pandas()


@pytest.fixture(scope="module")
def scored(inputs, random_vggish, tmp_path_factory):
    output = tmp_path_factory.mktemp("scored") / "out"
    summary = score.run(_argv(inputs, random_vggish, output, "--chunk_seconds=7"))
    return output, summary


def test_golden_scores(scored, inputs):
    output, _ = scored
    recordings = _table(output, "recordings").set_index("source")
    windows = _table(output, "windows")
    for name, path in zip(score_inputs.GOLDEN_WAVS, inputs["golden"], strict=True):
        expected = float(np.load(GOLDEN / f"{name}.npz")[DEFAULT_HEAD_KEY])
        row = recordings.loc[path]
        assert row.status == "ok"
        assert row.max_score == pytest.approx(expected, abs=2e-3), name
        own = windows[windows.source == path]
        assert len(own) == 1 and own.score.iloc[0] == pytest.approx(expected, abs=2e-3)
        assert row.frames == int(np.load(GOLDEN / f"{name}.npz")["num_examples"])


def test_every_input_is_one_recordings_row(scored, inputs):
    output, summary = scored
    recordings = _table(output, "recordings")
    assert recordings.source.is_unique
    by_source = recordings.set_index("source")
    cases = inputs["cases"]
    expected_errors = {
        "zero_length": "empty",
        "random_bytes": "corrupt",
        "wrong_extension": "unsupported",
        "short_0p3s": "too_short",
    }
    for case, reason in expected_errors.items():
        row = by_source.loc[cases[case]]
        assert (row.status, row.error_reason) == ("error", reason), case
        assert row.error_message
    assert by_source.loc[cases["truncated"]].status == "ok"  # the readable part is scored
    assert by_source.loc[cases["truncated"]].duration_seconds < 4
    for case, fmt in (("ogg", "OGG"), ("mp3", "MP3")):
        row = by_source.loc[cases[case]]
        assert (row.status, row.format, row.frames) == ("ok", fmt, 3), case
    long = by_source.loc[cases["five_minutes"]]
    assert (long.status, long.frames, long.sample_rate, long.channels) == ("ok", 312, 44100, 2)
    assert long.windows == len(_table(output, "windows").query("source == @cases['five_minutes']"))
    errors = _table(output, "errors")
    for case in expected_errors:
        assert (errors.source == cases[case]).sum() == 1
    unmatched = errors[errors.stage == "match"]
    assert list(unmatched.reason) == ["not_found"] and unmatched.source.iloc[0].endswith("nothing*.wav")
    assert summary["recordings"] == len(recordings)
    assert summary["recordings_failed"] == len(expected_errors) + 1  # + the bad TFRecord slot


def test_archive_members_are_keyed_by_archive_and_member(scored, inputs):
    output, _ = scored
    recordings = _table(output, "recordings").set_index("source")
    member = recordings.loc[inputs["zip"] + "!site/pistol_shot.wav"]
    plain = recordings.loc[inputs["golden"][0]]
    assert (member.file, member.member, member.input_kind) == (
        inputs["zip"],
        "site/pistol_shot.wav",
        "archive_member",
    )
    assert member.max_score == plain.max_score
    tar_member = recordings.loc[inputs["tar"] + "!a/footsteps.wav"]
    assert tar_member.max_score == recordings.loc[inputs["golden"][3]].max_score
    for member, golden in (("!b/pistol_shot.wav", 0), ("!b/footsteps.wav", 3)):  # read by offset
        row = recordings.loc[inputs["plain_tar"] + member]
        assert (
            row.input_kind == "archive_member"
            and row.max_score == recordings.loc[inputs["golden"][golden]].max_score
        )
    assert not any("README" in s for s in recordings.index)
    # OGG and MP3 members decode from memory as they do from disk.
    for member, case in (("!site/clip.ogg", "ogg"), ("!a/clip.mp3", "mp3")):
        archive = inputs["zip"] if case == "ogg" else inputs["tar"]
        row = recordings.loc[archive + member]
        assert row.status == "ok" and row.max_score == recordings.loc[inputs["cases"][case]].max_score


def test_tfrecord_records_are_scored_by_the_head_alone(scored, inputs):
    output, _ = scored
    recordings = _table(output, "recordings")
    rows = recordings[recordings.file == inputs["tfrecord"]].set_index("member")
    assert len(rows) == len(score_inputs.GOLDEN_WAVS) + 1
    for i, name in enumerate(score_inputs.GOLDEN_WAVS):
        expected = float(np.load(GOLDEN / f"{name}.npz")[DEFAULT_HEAD_KEY])
        row = rows.loc[f"{name}:{i * 10000}"]
        assert (row.status, row.input_kind) == ("ok", "tfrecord")
        assert row.max_score == pytest.approx(expected, abs=1e-5)
    bad = rows.loc["record4"]
    assert (bad.status, bad.error_reason) == ("error", "not_a_sequence_example")


def test_timestamps_from_file_names(scored, inputs):
    output, _ = scored
    row = _table(output, "recordings").set_index("source").loc[inputs["stamped"]]
    assert str(row.start_utc) == "2023-01-14 03:15:00+00:00"
    errors = _table(output, "errors")
    unstamped = errors[errors.stage == "timestamp"]
    assert inputs["golden"][0] in set(unstamped.source)
    assert inputs["stamped"] not in set(unstamped.source)


def test_events_exports_and_clips(scored, inputs):
    output, _ = scored
    windows = _table(output, "windows")
    events = _table(output, "events")
    recordings = _table(output, "recordings").set_index("source")
    assert len(events) > 0
    for source, group in windows.groupby("source"):
        assert recordings.loc[source].detected == bool((group.score >= THRESHOLD).any())
        assert recordings.loc[source].events == (events.source == source).sum()
    csv_lines = (output / outputs.EVENTS_CSV).read_text().splitlines()
    assert len(csv_lines) == len(events) + 1
    raven = (output / outputs.RAVEN_TABLE).read_text().splitlines()
    assert raven[0].startswith("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)")
    assert len(raven) == len(events) + 1
    clips = sorted((output / outputs.CLIPS_DIR).glob("*.wav"))
    detected_audio = [
        s
        for s in recordings.index[recordings.detected.fillna(False).astype(bool)]
        if recordings.loc[s].input_kind != "tfrecord"
    ]
    assert len(clips) == len(detected_audio)
    assert not (_table(output, "errors").stage == "export").any()
    spanish = [c for c in clips if "spanishclass" in c.name]
    assert len(spanish) == 1
    info = soundfile.info(str(spanish[0]))  # event 0-9.6 s plus 1 s padding, cut at the 10-s end
    assert (info.samplerate, info.channels) == (44100, 2) and info.duration == pytest.approx(10.0, abs=1e-3)


def test_tables_carry_provenance_and_schemas(scored):
    output, _ = scored
    manifest = json.loads((output / outputs.RUN_MANIFEST).read_text())
    for name in TABLES:
        table = tables.read_table(str(output), name)
        assert table.schema.equals(schemas.SCORE_TABLES[name], check_metadata=False), name
        if table.num_rows:
            assert set(table.column("model_id").to_pylist()) == {manifest["provenance"]["model_id"]}
            assert set(table.column("threshold").to_pylist()) == {THRESHOLD}
    assert manifest["summary"]["recordings"] == tables.read_table(str(output), "recordings").num_rows
    assert not (output / outputs.STAGING).exists()
    embeddings = _table(output, "embeddings")
    recordings = _table(output, "recordings")
    assert len(embeddings) == recordings.frames.fillna(0).sum()


def test_embeddings_tfrecords_hold_each_recordings_frames(scored):
    from gunshot_core import records

    output, _ = scored
    embeddings = _table(output, "embeddings")
    recordings = _table(output, "recordings")
    (path,) = output.glob("embeddings-*.tfrecord")
    with open(path, "rb") as f:
        decoded = [records.decode_sequence_example(slot.data) for slot in records.read_tfrecords(f)]
    assert sorted(c.video_id for c, _ in decoded) == sorted(recordings.source[recordings.status == "ok"])
    for context, frames in decoded:
        rows = embeddings[embeddings.source == context.video_id].sort_values("frame_index")
        assert frames.tobytes() == b"".join(rows.embedding)
        assert context.end_time == pytest.approx(len(rows) * 0.96, abs=1e-4)


def test_long_recording_split_into_segments_matches_whole_file(scored, inputs, random_vggish, tmp_path):
    """The 5-minute file decoded as 5 segments of 60 s gives the frames and scores of one piece."""
    output, _ = scored
    ckpt, pca = random_vggish
    path = inputs["cases"]["five_minutes"]
    split = tmp_path / "split"
    score.run(
        [
            f"--input={path}",
            f"--output={split}",
            f"--checkpoint={ckpt}",
            f"--pca={pca}",
            "--resampler=resampy",
        ]
        + [f"--threshold={THRESHOLD}", "--chunk_seconds=7", "--split_seconds=60", "--write_embeddings"]
    )
    manifest = json.loads((split / outputs.RUN_MANIFEST).read_text())
    assert manifest["counters"]["score/recordings_split"] == 1
    recordings = _table(split, "recordings")
    assert len(recordings) == 1 and recordings.frames.iloc[0] == 312 and recordings.status.iloc[0] == "ok"
    whole = _table(output, "embeddings").query("source == @path").sort_values("frame_index")
    parts = _table(split, "embeddings").sort_values("frame_index")
    a = np.stack([np.frombuffer(b, np.uint8) for b in whole.embedding]).astype(int)
    b = np.stack([np.frombuffer(b, np.uint8) for b in parts.embedding]).astype(int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1 and (a != b).mean() <= 0.005
    w1 = _table(output, "windows").query("source == @path").sort_values("window_index")
    w2 = _table(split, "windows").sort_values("window_index")
    assert list(w1.start_seconds) == list(w2.start_seconds)
    np.testing.assert_allclose(w1.score, w2.score, atol=2e-3)


def test_embedding_tfrecords_score_back_to_the_same_windows(scored, random_vggish, tmp_path):
    output, _ = scored
    ckpt, pca = random_vggish
    (records_path,) = output.glob("embeddings-*.tfrecord")
    rescored = tmp_path / "rescored"
    score.run([f"--input={records_path}", f"--output={rescored}", f"--checkpoint={ckpt}", f"--pca={pca}"])
    original = _table(output, "windows")
    again = _table(rescored, "windows")  # the run's recordings table next to it gives each record's source
    # The first run used --threshold; compare windows and scores only.
    columns = ["source", "window_index", "start_seconds", "end_seconds", "score"]
    key = ["source", "window_index"]
    left = original[columns].sort_values(key).reset_index(drop=True)
    right = again[columns].sort_values(key).reset_index(drop=True)
    assert len(left) == len(right) and left.equals(right)


def test_multiprocess_run_with_other_batches_gives_identical_tables(scored, inputs, random_vggish, tmp_path):
    output, _ = scored
    other = tmp_path / "out"
    score.run(
        _argv(inputs, random_vggish, other, "--chunk_seconds=7", "--batch_size=40", "--archive_part_mb=0")
        + ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    )
    counters = json.loads((other / outputs.RUN_MANIFEST).read_text())["counters"]
    assert counters["score/archives_split"] == 2  # zip and plain tar members decoded as separate parts
    for name in TABLES:
        for path in sorted(output.glob(f"{name}-*.parquet")):
            assert (other / path.name).read_bytes() == path.read_bytes(), path.name
    for name in (outputs.EVENTS_CSV, outputs.RAVEN_TABLE, "embeddings-00000-of-00001.tfrecord"):
        assert (other / name).read_bytes() == (output / name).read_bytes()
    assert sorted(p.name for p in (other / outputs.CLIPS_DIR).iterdir()) == sorted(
        p.name for p in (output / outputs.CLIPS_DIR).iterdir()
    )


def test_chunked_decoding_matches_whole_file_embeddings(scored, inputs, random_vggish):
    """The 5-minute file was decoded in 7-s chunks; whole-file processing gives the same frames."""
    from gunshot_core import audio, features
    from gunshot_core.postprocess import Postprocessor
    from gunshot_core.vggish import VGGish

    output, _ = scored
    path = inputs["cases"]["five_minutes"]
    waveform = audio.load_audio(path, resampler="resampy")
    examples = features.waveform_to_examples(waveform, 16000)
    ckpt, pca = random_vggish
    whole = Postprocessor.from_npz(pca).postprocess(VGGish.from_checkpoint(ckpt).embed(examples))
    table = _table(output, "embeddings").query("source == @path").sort_values("frame_index")
    chunked = np.stack([np.frombuffer(b, np.uint8) for b in table.embedding])
    assert chunked.shape == whole.shape == (312, 128)
    diff = np.abs(chunked.astype(int) - whole.astype(int))
    # The golden tolerance for float32 re-implementations: 1 LSB on at most 0.5% of the values.
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.005


def test_skip_existing_scores_only_what_is_missing(scored, inputs, random_vggish, tmp_path, caplog):
    output, _ = scored
    rerun = tmp_path / "rerun"
    shutil.copytree(output, rerun)
    # Drop one good recording's rows, as if the first run had not seen it.
    missing = inputs["golden"][1]
    for name in TABLES:
        for path in rerun.glob(f"{name}-*.parquet"):
            table = pq.read_table(path)
            keep = [s != missing for s in table.column("source").to_pylist()]
            pq.write_table(table.filter(keep), path, compression="zstd")
    with caplog.at_level(logging.INFO, logger="pipelines"):
        summary = score.run(_argv(inputs, random_vggish, rerun, "--chunk_seconds=7", "--skip_existing"))
    manifest = json.loads((rerun / outputs.RUN_MANIFEST).read_text())
    # The summary line's counts are the tables' (kept rows too), its audio hours this run's only.
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("scored "))
    kept = manifest["files_skipped_as_done"]
    assert f"{summary['recordings']} recordings" in line and f"; {kept} file{'s' if kept != 1 else ''} kept from the previous run" in line
    assert f"{summary['audio_hours_this_run']:.2f} audio hours this run in " in line, line
    counters = manifest["counters"]
    failed_files = 5 + 1  # the five broken inputs and the TFRecord holding a bad record are retried
    assert manifest["files_skipped_as_done"] > 0
    assert counters["score/files_matched"] - manifest["files_skipped_as_done"] <= failed_files + 1
    assert counters["score/recordings_scored"] < summary["recordings_ok"]
    for name in TABLES:
        assert _table(rerun, name).equals(_table(output, name)), name


def test_default_resampler_is_close_to_golden_and_shards_keep_recordings_together(random_vggish, tmp_path):
    ckpt, pca = random_vggish
    output = tmp_path / "out"
    golden = [str(SEED_WAVS / f"{name}.wav") for name in score_inputs.GOLDEN_WAVS]
    long = score_inputs.write_wav(tmp_path / "long.wav", 40.0, 16000, 1)
    # What an interrupted earlier run with one windows shard left behind must not end up in the table.
    (output / outputs.STAGING).mkdir(parents=True)
    (output / outputs.STAGING / "windows-00000-of-00001.parquet").write_bytes(b"stale")
    argv = [f"--input={p}" for p in golden + [long]]
    score.run(argv + [f"--output={output}", f"--checkpoint={ckpt}", f"--pca={pca}", "--num_shards=3"])
    recordings = _table(output, "recordings").set_index("source")
    for name, path in zip(score_inputs.GOLDEN_WAVS, golden, strict=True):
        expected = float(np.load(GOLDEN / f"{name}.npz")[DEFAULT_HEAD_KEY])
        assert recordings.loc[path].max_score == pytest.approx(expected, abs=0.01), name
    shards = sorted(output.glob("windows-*-of-00003.parquet"))
    assert len(shards) == 3 and shards == sorted(output.glob("windows-*.parquet"))
    seen = set()
    for shard in shards:
        rows = pq.read_table(shard).to_pandas()
        keys = list(zip(rows.source, rows.window_index, strict=True))
        assert keys == sorted(keys)
        assert not seen & set(rows.source)  # every recording's windows sit in one file
        seen |= set(rows.source)
    assert seen == set(recordings.index)
    assert recordings.loc[long].windows == 8  # 41 frames: windows at 0, 5, ..., 30 and one at 31 ending at 41


def test_no_matching_input_fails_loudly_before_the_job_starts(random_vggish, tmp_path):
    from gunshot_core.errors import InputError

    ckpt, pca = random_vggish
    (tmp_path / "empty").mkdir()
    for pattern in (f"{tmp_path}/none*.wav", f"{tmp_path}/empty"):
        with pytest.raises(InputError, match="no recordings to score: nothing matches"):
            score.run(
                [f"--input={pattern}", f"--output={tmp_path / 'o'}", f"--checkpoint={ckpt}", f"--pca={pca}"]
            )
    assert not os.path.exists(tmp_path / "o")  # refused at launch: no job ran
