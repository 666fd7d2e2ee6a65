"""`--num_shards auto`: the files of an audio run's per-frame tables, chosen at launch from the inputs.

Unit tests of the bound (formats, archives, TFRecords, models, --write_embeddings; local and gs://
listings) and end-to-end batch runs in which a lowered bound per file forces several files: the
tables read back hold the rows of the one-file run, and --skip_existing reruns keep them.
"""

import json
import math

import pytest

from gunshot_core import embedding_models
from pipelines import score
from pipelines.io import tables
from pipelines.scoring import from_run, outputs, shard_plan
from pipelines.scoring.pipeline import parse_known_args
from pipelines.scoring.sources import Source
from tests import score_inputs
from tests.conftest import SEED_WAVS
from tests.gcs_emulator import gcs_emulator  # noqa: F401 - the fixture

VGGISH = embedding_models.get("vggish")
BIRDNET = embedding_models.get("birdnet")
TB = 10**12


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a/b/x.wav", "pcm"),
        ("gs://bucket/site/X.WAV", "pcm"),
        ("x.aiff", "pcm"),
        ("x.flac", "lossless"),
        ("x.mp3", "lossy"),
        ("x.opus", "lossy"),
        ("x.ogg", "lossy"),
        ("batch.zip", "archive"),
        ("batch.tar", "archive"),
        ("batch.tar.gz", "archive"),
        ("batch.tgz", "archive"),
        ("frames.tfrecord", "tfrecord"),
        ("frames.tfrecord.gz", "tfrecord_gz"),
        ("recording.dat", "other"),
    ],
)
def test_format_kind(name, kind):
    assert shard_plan.format_kind(name) == kind


def test_rates_are_ordered_from_pcm_down_and_archives_take_the_smallest():
    rates = shard_plan.MIN_BYTES_PER_HOUR
    assert rates["pcm"] == 8000 * 2 * 3600  # 8 kHz, 16-bit, mono
    assert rates["pcm"] > rates["lossless"] > rates["lossy"]
    assert rates["archive"] == rates["other"] == min(rates[k] for k in ("pcm", "lossless", "lossy"))
    assert rates["tfrecord"] == 128 * 3750 == 2 * rates["tfrecord_gz"]
    # An hour of 48 kHz 16-bit mono wav is bounded by 6 hours; of 128 kbit/s mp3 by 8 hours.
    assert shard_plan.hours_bound("a.wav", 48000 * 2 * 3600) == pytest.approx(6.0)
    assert shard_plan.hours_bound("a.mp3", 16000 * 3600) == pytest.approx(8.0)
    assert shard_plan.hours_bound("a.wav", -1) == 0.0  # size unknown


def test_small_runs_get_one_file_and_a_terabyte_of_wav_a_file_per_bound():
    small = [Source(f"/r/{i}.wav", "audio", 50 << 20) for i in range(10)]  # 500 MB: ~9 hours at most
    plan = shard_plan.plan_for_sources(small, VGGISH, write_embeddings=False)
    assert plan.num_shards == 1 and plan.files == 10 and plan.frames_bound < from_run.MAX_SHARD_FRAMES
    assert shard_plan.plan_for_sources([], VGGISH, False).num_shards == 1

    archive = [Source(f"/r/{i:04d}.wav", "audio", TB // 1000) for i in range(1000)]
    plan = shard_plan.plan_for_sources(archive, VGGISH, write_embeddings=True)
    hours = TB / shard_plan.PCM_BYTES_PER_HOUR
    assert plan.audio_hours_bound == pytest.approx(hours, rel=1e-6)
    frames = sum(math.ceil(TB / 1000 / shard_plan.PCM_BYTES_PER_HOUR * 3600 / 0.96) + 1 for _ in range(1000))
    assert plan.frames_bound == frames
    # VGGish's 128-byte frames: 64 MB of embeddings is more than MAX_SHARD_FRAMES frames, no change.
    assert plan.frames_per_file == from_run.MAX_SHARD_FRAMES
    assert plan.num_shards == math.ceil(frames / from_run.MAX_SHARD_FRAMES) == 497
    assert plan.input_bytes == TB
    # The same terabyte as FLAC or MP3, or in zip/tar archives, is bounded by more hours: more files.
    for path, factor in (("x.flac", 4), ("x.mp3", 8), ("x.tar.gz", 8), ("x.zip", 8)):
        other = shard_plan.plan_for_sources([Source(path, "audio", TB)], VGGISH, False)
        assert other.num_shards == math.ceil(
            (math.ceil(hours * factor * 3750) + 1) / from_run.MAX_SHARD_FRAMES
        )


def test_birdnet_frames_and_embedding_bytes_bound_a_file_as_in_a_rescored_run():
    src = [Source("/r/site.flac", "audio", 2 * 10**9)]  # at most ~139 hours
    hours = 2 * 10**9 / shard_plan.LOSSLESS_BYTES_PER_HOUR
    plain = shard_plan.plan_for_sources(src, BIRDNET, write_embeddings=False)
    assert plain.frames_bound == math.ceil(hours * 3600 / BIRDNET.hop_seconds) + 1
    assert plain.frames_per_file == from_run.MAX_SHARD_FRAMES
    with_embeddings = shard_plan.plan_for_sources(src, BIRDNET, write_embeddings=True)
    assert with_embeddings.frames_per_file == from_run.shard_frames(BIRDNET, True) == 16_384
    assert with_embeddings.num_shards == math.ceil(plain.frames_bound / 16_384) > plain.num_shards
    hop = shard_plan.plan_for_sources(src, BIRDNET.with_hop(1.0), write_embeddings=False)
    assert hop.frames_bound == math.ceil(hours * 3600) + 1


def test_tfrecords_are_bounded_by_their_stored_frames():
    size = 128 * 3750 * 100  # 100 hours of bare 128-byte frames
    plan = shard_plan.plan_for_sources([Source("/e/a.tfrecord", "tfrecord", size)], VGGISH, False)
    assert plan.audio_hours_bound == pytest.approx(100)
    assert plan.num_shards == 3  # 375,001 frames / 131,072
    gz = shard_plan.plan_for_sources([Source("/e/a.tfrecord.gz", "tfrecord", size)], VGGISH, False)
    assert gz.audio_hours_bound == pytest.approx(200)


def test_local_listing_uses_sizes_only(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    for i in range(3):  # sparse: sizes on the listing, no data written or read
        with open(folder / f"rec{i}.wav", "wb") as f:
            f.truncate(2 * 10**9)
    (folder / "notes.txt").write_text("not audio")  # filtered out of a folder
    plan = shard_plan.plan_num_shards([str(folder), str(tmp_path / "none*.wav")], VGGISH, False)
    frames = 3 * (math.ceil(2 * 10**9 / shard_plan.PCM_BYTES_PER_HOUR * 3750) + 1)
    assert (plan.files, plan.input_bytes, plan.frames_bound) == (3, 6 * 10**9, frames)
    assert plan.num_shards == math.ceil(frames / from_run.MAX_SHARD_FRAMES) == 3
    assert plan.unlisted_patterns == 0  # a pattern matching nothing is an error row, not unlisted


def test_gs_listing(gcs_emulator, tmp_path, monkeypatch):  # noqa: F811
    bucket = gcs_emulator.create_bucket("recordings")
    local = tmp_path / "a.flac"
    local.write_bytes(b"\0" * 100_000)  # 25 s at most at 4 kB/s
    gcs_emulator.upload(local, f"{bucket}/site/a.flac")
    gcs_emulator.upload(local, f"{bucket}/site/b.mp3")  # 50 s at most at 2 kB/s
    monkeypatch.setattr(from_run, "MAX_SHARD_FRAMES", 20)
    plan = shard_plan.plan_num_shards([f"{bucket}/site/"], VGGISH, False)
    frames = math.ceil(25 / 0.96) + 1 + math.ceil(50 / 0.96) + 1
    assert (plan.files, plan.input_bytes, plan.frames_bound) == (2, 200_000, frames)
    assert plan.num_shards == math.ceil(frames / 20) == 5


def test_num_shards_option(capsys):
    base = ["--input=x.wav", "--output=o"]
    assert parse_known_args(base)[0].num_shards == "auto"
    assert parse_known_args(base + ["--num_shards=AUTO"])[0].num_shards == "auto"
    assert parse_known_args(base + ["--num_shards", "3"])[0].num_shards == 3
    for bad in ("0", "many"):
        with pytest.raises(SystemExit) as exit_info:
            parse_known_args(base + [f"--num_shards={bad}"])
        assert exit_info.value.code == 2
        assert "--num_shards" in capsys.readouterr().err


PER_FRAME = ("windows", "embeddings")
ALL_TABLES = ("windows", "recordings", "events", "errors", "embeddings")


def _run(random_vggish, paths, output, *extra):
    ckpt, pca = random_vggish
    argv = [f"--input={p}" for p in paths]
    argv += [f"--output={output}", f"--checkpoint={ckpt}", f"--pca={pca}", "--write_embeddings", *extra]
    score.run(argv)
    return json.loads((output / outputs.RUN_MANIFEST).read_text())


def _sorted(output, name):
    table = tables.read_table(str(output), name)
    return table.sort_by([(c, "ascending") for c in outputs.SORT_COLUMNS[name]])


def _file_bytes(output):
    return {p.name: p.read_bytes() for p in sorted(output.glob("*.parquet"))}


@pytest.mark.slow
def test_auto_shards_end_to_end(random_vggish, tmp_path, monkeypatch):
    paths = [str(SEED_WAVS / f"{name}.wav") for name in score_inputs.GOLDEN_WAVS]
    paths.append(score_inputs.write_wav(tmp_path / "long.wav", 40.0, 16000, 1))
    one = tmp_path / "one"
    manifest = _run(random_vggish, paths, one)
    assert manifest["arguments"]["num_shards"] == "auto" and manifest["num_shards"] == 1
    assert manifest["num_shards_plan"]["files"] == len(paths)
    for name in ALL_TABLES:
        assert [p.name for p in one.glob(f"{name}-*.parquet")] == [f"{name}-00000-of-00001.parquet"]
    explicit = tmp_path / "explicit"
    manifest = _run(random_vggish, paths, explicit, "--num_shards=1")
    assert manifest["num_shards"] == 1 and manifest["num_shards_plan"] is None
    assert _file_bytes(explicit) == _file_bytes(one)  # auto on a small run: today's single files

    frames = json.loads((one / outputs.RUN_MANIFEST).read_text())["num_shards_plan"]["frames_bound"]
    assert frames >= len(_sorted(one, "embeddings"))  # the bound holds
    bound = from_run.MAX_SHARD_FRAMES
    monkeypatch.setattr(from_run, "MAX_SHARD_FRAMES", 64)
    several = tmp_path / "several"
    manifest = _run(random_vggish, paths, several)
    count = math.ceil(frames / 64)
    assert count >= 3 and manifest["num_shards"] == count
    for name in PER_FRAME:
        found = sorted(p.name for p in several.glob(f"{name}-*.parquet"))
        assert len(found) == count and all(n.endswith(f"-of-{count:05d}.parquet") for n in found)
    for name in ALL_TABLES:  # the rows of the one-file run, row for row
        assert _sorted(several, name).equals(_sorted(one, name)), name

    # A rerun over the same inputs chooses the same files and writes the same bytes, skipping all.
    written = _file_bytes(several)
    manifest = _run(random_vggish, paths, several, "--skip_existing")
    assert manifest["files_skipped_as_done"] == len(paths) and manifest["num_shards"] == count
    assert _file_bytes(several) == written
    # A bound that changed between runs: the carried rows go to the new count's files, none is stale.
    monkeypatch.setattr(from_run, "MAX_SHARD_FRAMES", bound)
    manifest = _run(random_vggish, paths, several, "--skip_existing")
    assert manifest["num_shards"] == 1
    assert _file_bytes(several) == _file_bytes(one)
