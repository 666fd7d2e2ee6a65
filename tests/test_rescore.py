"""`gunshot batch --from_run`: an earlier run's stored embeddings rescored with a head, identity kept.

One audio run (with --write_embeddings) over timestamped files, an archive member and a broken file
is the parent; rescoring it with the same head must give its tables row for row (and the same
evaluate-events figures), another head the same recordings, a gs:// parent the same tables; heads
of another model or window, and runs without embeddings, are refused before any work.
"""

import json
import shutil

import numpy as np
import pytest

from gunshot_core import annotations, heads
from pipelines import score
from pipelines.io import tables
from pipelines.scoring import from_run
from tests import score_inputs
from tests.conftest import SEED_MODELS, SEED_WAVS
from tests.gcs_emulator import gcs_emulator  # noqa: F401  (fixture)

HEAD = str(SEED_MODELS / "1LayerLSTM__Loss=BinCE_20Epochs_july02.h5")
OTHER_HEAD = str(SEED_MODELS / "LogisticRegression_BinaryCE_Adam_50-Epochs.h5")  # fixed 10 frames
THRESHOLD = 0.025  # among the random-weight window scores of these files, so some windows detect
TABLES = ("recordings", "windows", "events", "errors")  # + embeddings when written
IDENTITY = ["source", "file", "member", "input_kind", "format", "sample_rate", "channels"]
IDENTITY += ["duration_seconds", "start_utc", "status", "error_reason", "error_message", "frames"]
SITE1 = "SITE1_20230114_031500.wav"
SITE2 = "SITE2_20230114_040000.wav"


@pytest.fixture(scope="module")
def parent(random_vggish, tmp_path_factory):
    """(audio run directory, input root): two tones with bursts, named with their start time,
    an archive member without one, and random bytes named .wav that fail to decode."""
    root = tmp_path_factory.mktemp("rescore")
    audio = root / "audio"
    (audio / "site1").mkdir(parents=True)
    (audio / "site2").mkdir()
    score_inputs.write_wav(audio / "site1" / SITE1, 40.0, 44100, 2, seed=0)
    score_inputs.write_wav(audio / "site2" / SITE2, 30.0, 22050, 1, seed=5)
    score_inputs.make_zip(
        audio / "site3.zip", {"m/spanish.wav": (SEED_WAVS / "spanishclass.wav").read_bytes()}
    )
    (audio / "broken.wav").write_bytes(np.random.default_rng(1).bytes(50_000))
    ckpt, pca = random_vggish
    output = root / "audio_run"
    score.run(
        [
            f"--input={audio}",
            f"--output={output}",
            f"--checkpoint={ckpt}",
            f"--pca={pca}",
            f"--head={HEAD}",
            f"--threshold={THRESHOLD}",
            "--timestamp_pattern=%Y%m%d_%H%M%S",
            "--resampler=resampy",
            "--write_embeddings",
        ]
    )
    return output, root


def _rescore(parent_dir, output, head=HEAD, *extra):
    return score.run(
        [
            f"--from_run={parent_dir}",
            f"--output={output}",
            f"--head={head}",
            f"--threshold={THRESHOLD}",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def rescored(parent):
    output = parent[1] / "rescored"
    _rescore(parent[0], output, HEAD, "--write_embeddings")
    return output


def _frame(directory, name):
    return tables.read_table(str(directory), name).to_pandas()


def test_same_head_gives_the_audio_runs_tables_row_for_row(parent, rescored):
    audio_run, _ = parent
    recordings = _frame(audio_run, "recordings")
    assert sorted(recordings.status) == ["error", "ok", "ok", "ok"]  # broken.wav failed
    assert (recordings.start_utc.notna()).sum() == 2 and recordings.events.sum() > 0
    for name in (*TABLES, "embeddings"):
        left, right = _frame(audio_run, name), _frame(rescored, name)
        assert len(left) > 0, name
        assert left.equals(right), name
        # Same models and settings: even the files are the same bytes (a rerun is byte-identical too).
        files = sorted(audio_run.glob(f"{name}-*.parquet")), sorted(rescored.glob(f"{name}-*.parquet"))
        assert [p.name for p in files[0]] == [p.name for p in files[1]]
        for a, b in zip(*files, strict=True):
            assert a.read_bytes() == b.read_bytes(), name
    (records,) = audio_run.glob("embeddings-*.tfrecord")
    assert (rescored / records.name).read_bytes() == records.read_bytes()  # --write_embeddings again
    manifest = json.loads((rescored / "run.json").read_text())
    audio_manifest = json.loads((audio_run / "run.json").read_text())
    assert manifest["parent_run"]["directory"] == str(audio_run)
    assert manifest["parent_run"]["provenance"] == audio_manifest["provenance"]
    assert manifest["provenance"] == audio_manifest["provenance"]
    assert manifest["summary"]["recordings"] == 4 and manifest["summary"]["recordings_failed"] == 1
    errors = _frame(rescored, "errors")
    assert set(zip(errors.stage, errors.reason, strict=True)) >= {
        ("decode", "corrupt"),
        ("timestamp", "no_timestamp"),
    }
    assert (rescored / "events.csv").read_text() == (audio_run / "events.csv").read_text()


def test_evaluate_events_gives_the_same_figures(parent, rescored):
    from training import evaluate_events

    audio_run, root = parent
    events = _frame(audio_run, "events")
    first = events[events.source.str.endswith(SITE1)].iloc[0]
    notes = root / "notes"
    notes.mkdir(exist_ok=True)
    rows = [
        {"file": SITE1, "start_seconds": first.start_seconds + 0.1, "end_seconds": first.start_seconds + 0.4,
         "label": "gunshot"},
        {"file": SITE2, "start_seconds": 3.0, "end_seconds": 3.5, "label": "gunshot"},
        {"file": "spanish.wav", "start_seconds": 1.0, "end_seconds": 2.0, "label": "gunshot"},
    ]  # fmt: skip
    (notes / "site.Table.1.selections.txt").write_text(annotations.format_selection_table(rows))
    out = root / "eval"
    argv = ["--scores", f"audio={audio_run}", "--scores", f"rescored={rescored}"]
    assert evaluate_events.main([*argv, "--annotations", str(notes), "--output", str(out)]) == 0
    scorers = json.loads((out / "metrics.json").read_text())["scorers"]
    for figures in scorers.values():
        figures.pop("directory")
    assert scorers["audio"] == scorers["rescored"]
    assert "recall" in json.dumps(scorers["audio"])
    errors = (out / "errors.csv").read_text() if (out / "errors.csv").exists() else ""
    assert "not in run" not in errors  # every annotated recording was found in both runs


def test_another_head_keeps_the_recordings(parent, tmp_path):
    audio_run, _ = parent
    output = tmp_path / "other"
    _rescore(audio_run, output, OTHER_HEAD)
    left, right = _frame(audio_run, "recordings"), _frame(output, "recordings")
    assert left[IDENTITY].equals(right[IDENTITY])
    assert set(right.head_name) == {"LogisticRegression_BinaryCE_Adam_50-Epochs"}
    ok = right.status == "ok"
    assert not np.allclose(left.max_score[ok].astype(float), right.max_score[ok].astype(float))
    lw, rw = _frame(audio_run, "windows"), _frame(output, "windows")
    keys = ["source", "window_index", "start_seconds", "end_seconds", "start_utc"]
    assert lw[keys].equals(rw[keys])


def test_embedding_tfrecords_keep_the_recordings_identity(parent, random_vggish, tmp_path):
    audio_run, _ = parent
    ckpt, pca = random_vggish
    (records,) = audio_run.glob("embeddings-*.tfrecord")
    output = tmp_path / "from_records"
    argv = [f"--input={records}", f"--output={output}", f"--checkpoint={ckpt}", f"--pca={pca}"]
    score.run([*argv, f"--head={HEAD}", f"--threshold={THRESHOLD}"])
    left = tables.read_table(str(audio_run), "recordings").to_pylist()
    right = tables.read_table(str(output), "recordings").to_pylist()
    assert [r for r in left if r["status"] == "ok"] == right  # the TFRecord holds the ok recordings
    for name in ("windows", "events"):
        assert _frame(audio_run, name).equals(_frame(output, name)), name


def test_gcs_parent(parent, rescored, gcs_emulator, tmp_path):  # noqa: F811
    audio_run, _ = parent
    bucket = gcs_emulator.create_bucket("runs")
    for path in sorted(audio_run.iterdir()):
        if path.is_file():
            gcs_emulator.upload(path, f"{bucket}/audio_run/{path.name}")
    output = f"{bucket}/rescored"
    _rescore(f"{bucket}/audio_run", output)
    local = tmp_path / "copy"
    local.mkdir()
    for uri in gcs_emulator.list(output + "/"):
        (local / uri.rsplit("/", 1)[1]).write_bytes(gcs_emulator.read(uri))
    for name in TABLES:
        assert _frame(local, name).equals(_frame(rescored, name)), name
    assert json.loads((local / "run.json").read_text())["parent_run"]["directory"] == f"{bucket}/audio_run"


def test_report_builds_on_a_rescored_run(parent, rescored, tmp_path):
    from pipelines.report import build

    report = build.run(["--scores", str(rescored), "--output", str(tmp_path / "report"), "--top", "5"])
    run = report["runs"][0]
    assert run["recordings"] == 4 and run["recordings_failed"] == 1 and run["events"] > 0
    top = report["events"][0]
    assert top["error"] is None and top["sample_rate"] == 44100  # cut from the original audio


def test_search_finds_the_same_hits_in_a_rescored_run(parent, rescored, random_vggish, tmp_path):
    from pipelines.search import pipeline as search

    ckpt, pca = random_vggish
    site1 = next(s for s in _frame(rescored, "recordings").source if s.endswith(SITE1))
    found = []
    for run in (parent[0], rescored):
        output = tmp_path / run.name
        argv = [
            f"--embeddings={run}",
            f"--output={output}",
            "--top=3",
            f"--checkpoint={ckpt}",
            f"--pca={pca}",
        ]
        assert search.main([*argv, f"--query={site1}@5.0"]) == 0
        found.append(_frame(output, "hits"))
    assert len(found[1]) == 3 and found[0].equals(found[1])
    assert set(found[1].source) <= set(_frame(rescored, "recordings").source)


def _copy_run(audio_run, target, edit=None, drop=()):
    shutil.copytree(audio_run, target)
    for pattern in drop:
        for path in target.glob(pattern):
            path.unlink()
    if edit:
        manifest = json.loads((target / "run.json").read_text())
        edit(manifest)
        (target / "run.json").write_text(json.dumps(manifest))
    return target


def test_head_of_another_window_is_refused_before_any_work(parent, tmp_path, capfd):
    audio_run, _ = parent
    five = _copy_run(audio_run, tmp_path / "five", edit=lambda m: m.update(window_frames=5))
    output = tmp_path / "out"
    argv = [f"--from_run={five}", f"--output={output}", f"--head={OTHER_HEAD}"]
    assert score.main(argv) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "10 frames" in err and "5 frames" in err and "Traceback" not in err
    assert not output.exists()


def test_head_of_another_embedding_model_is_refused(parent):
    audio_run, _ = parent
    run = from_run.read_parent_run(str(audio_run))

    def head(**card):
        return heads.Head(
            None,
            head_id="site7",
            sha256="0" * 64,
            frames=None,
            threshold=0.5,
            source_path="heads/site7",
            kind="keras3_artifact",
            card=heads.HeadCard(head_id="site7", **card),
        )

    from_run.check_head(
        head(vggish_checkpoint_sha256=run.vggish_sha256, pca_params_sha256=run.pca_sha256), run
    )
    with pytest.raises(from_run.HeadMismatchError, match="VGGish checkpoint"):
        from_run.check_head(head(vggish_checkpoint_sha256="f" * 64), run)
    with pytest.raises(from_run.HeadMismatchError, match="PCA parameters"):
        from_run.check_head(head(pca_params_sha256="e" * 64), run)
    with pytest.raises(from_run.HeadMismatchError, match="birdnet embeddings"):
        from_run.check_head(head(extra={"embedding_model": "birdnet"}), run)


def test_run_without_embeddings_is_refused(parent, tmp_path, capfd):
    audio_run, _ = parent
    bare = _copy_run(audio_run, tmp_path / "bare", drop=("embeddings-*",))
    assert score.main([f"--from_run={bare}", f"--output={tmp_path / 'out'}", f"--head={HEAD}"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--write_embeddings" in err and str(bare) in err
    assert score.main([f"--from_run={tmp_path / 'nothing'}", f"--output={tmp_path / 'o'}"]) == 2
    assert "run.json" in capfd.readouterr().err


def test_from_run_takes_no_inputs(parent, tmp_path):
    with pytest.raises(SystemExit) as e:
        score.run([f"--from_run={parent[0]}", f"--input={parent[1]}", f"--output={tmp_path}"])
    assert e.value.code == 2


def test_chunks_split_on_recording_and_gaps():
    import pyarrow as pa

    frames = np.arange(6 * 128, dtype=np.uint8).reshape(6, 128)
    table = pa.table(
        {
            "source": ["a", "a", "a", "b", "b", "b"],
            "frame_index": pa.array([0, 1, 3, 0, 1, 2], pa.int32()),
            "embedding": pa.array([f.tobytes() for f in frames], pa.binary(128)),
        }
    ).slice(1)  # a sliced table: the buffer offset must be honoured
    chunks = list(from_run.chunk_frames(table))
    assert [(s, i, c.shape[0]) for s, (i, c) in chunks] == [("a", 1, 1), ("a", 3, 1), ("b", 0, 3)]
    np.testing.assert_array_equal(chunks[2][1][1], frames[3:])


def _embeddings_table(rows):
    import pyarrow as pa

    return pa.table(
        {
            "source": pa.array([s for s, _ in rows], pa.string()),
            "frame_index": pa.array([i for _, i in rows], pa.int32()),
            "embedding": pa.array([bytes([len(s), i % 256]) * 64 for s, i in rows], pa.binary(128)),
        }
    )


def test_every_recording_is_streamed_once_across_row_groups(tmp_path):
    import pyarrow.parquet as pq

    lengths = {"a": 3, "b": 10, "c": 1, "d": 2, "e": 4}  # b spans three row groups of 4
    rows = [(s, i) for s in sorted(lengths) for i in range(lengths[s])]
    path = str(tmp_path / "embeddings-00000-of-00001.parquet")
    pq.write_table(_embeddings_table(rows), path, row_group_size=4)
    items = from_run.plan_row_groups([path])
    assert [(i, after) for _, i, after in items] == [(0, None), (1, "b"), (2, "b"), (3, "b"), (4, "d")]
    streamed = [rec for item in items for rec in from_run.owned_recordings(*item)]
    assert [s for s, _ in streamed] == sorted(lengths)  # each exactly once, by its first row group
    expected = np.array(
        [np.frombuffer(r, np.uint8) for r in _embeddings_table(rows).column("embedding").to_pylist()]
    )
    for source, chunks in streamed:
        starts = [first for first, _ in chunks]
        frames = np.concatenate([c for _, c in chunks])
        mine = [k for k, (s, _) in enumerate(rows) if s == source]
        assert starts[0] == 0 and frames.shape == (lengths[source], 128), source
        np.testing.assert_array_equal(frames, expected[mine])
    empty = str(tmp_path / "embeddings-empty.parquet")
    pq.write_table(_embeddings_table([]), empty)
    assert from_run.plan_row_groups([empty]) == ()


def test_an_unsorted_embeddings_table_is_refused_at_launch(tmp_path):
    import pyarrow.parquet as pq

    path = str(tmp_path / "embeddings-00000-of-00001.parquet")
    pq.write_table(_embeddings_table([("b", 0), ("b", 1), ("a", 0), ("a", 1)]), path, row_group_size=2)
    with pytest.raises(from_run.FromRunError, match="not sorted by source"):
        from_run.plan_row_groups([path])


def test_small_row_groups_and_a_recording_without_frames(parent, rescored, tmp_path):
    """Recordings straddling many row groups are scored once, as from one group; an ok recording of
    the parent whose frames are gone is one error row, not lost."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    audio_run, _ = parent
    copy = _copy_run(audio_run, tmp_path / "regrouped")
    (path,) = copy.glob("embeddings-*.parquet")
    table = pq.read_table(path)
    site2 = next(s for s in table.column("source").to_pylist() if s.endswith(SITE2))
    pq.write_table(table.filter(pc.not_equal(table.column("source"), site2)), path, row_group_size=5)
    assert pq.ParquetFile(path).metadata.num_row_groups > 8  # recordings straddle them
    output = tmp_path / "out"
    _rescore(copy, output)
    for name in ("recordings", "windows", "events"):
        left, right = _frame(rescored, name), _frame(output, name)
        left, right = (t[t.source != site2].reset_index(drop=True) for t in (left, right))
        assert len(left) > 0 and left.equals(right), name
    row = _frame(output, "recordings").set_index("source").loc[site2]
    assert row.status == "error" and row.error_reason == from_run.NO_FRAMES_REASON
    assert row.sample_rate == 22050 and row.start_utc is not None  # its identity is kept
    errors = _frame(output, "errors")
    assert list(errors[errors.source == site2].reason) == [from_run.NO_FRAMES_REASON]


def test_dataset_from_a_rescored_run_gives_the_parent_runs_examples(
    parent, rescored, random_vggish, tmp_path
):
    import pathlib

    from pipelines.dataset import pipeline as dataset

    audio_run, root = parent
    events = _frame(audio_run, "events")
    first = events[events.source.str.endswith(SITE1)].iloc[0]
    notes = tmp_path / "notes"
    notes.mkdir()
    rows = [
        {"file": SITE1, "start_seconds": first.start_seconds, "end_seconds": first.start_seconds + 0.5,
         "label": "gunshot"},
        {"file": SITE1, "start_seconds": 25.0, "end_seconds": 26.0, "label": "speech"},
        {"file": SITE2, "start_seconds": 3.0, "end_seconds": 3.5, "label": "gunshot"},
    ]  # fmt: skip
    (notes / "sites.Table.1.selections.txt").write_text(annotations.format_selection_table(rows))
    ckpt, pca = random_vggish
    built = {}
    for run in (audio_run, rescored):
        output = tmp_path / f"dataset_{run.name}"
        argv = [f"--embeddings={run}", f"--annotations={notes}", "--negative", "speech"]
        argv += ["--split", "train=0.5", "--split", "eval=0.5", f"--output={output}"]
        dataset.run([*argv, f"--checkpoint={ckpt}", f"--pca={pca}"], save_main_session=False)
        built[run] = {
            str(p.relative_to(output)): p.read_bytes()
            for p in pathlib.Path(output).rglob("*")
            if p.is_file() and p.name != "stats.json"
        }
    examples = [name for name in built[audio_run] if ".tfrecord" in name]
    assert examples and built[audio_run] == built[rescored]
    stats = json.loads((tmp_path / f"dataset_{rescored.name}" / "stats.json").read_text())
    assert "gunshot" in json.dumps(stats)


def test_shard_bounds_cut_after_row_groups_of_enough_frames():
    # (path, row group, first source, last source, rows): file x holds a..e, file y (another shard of a
    # hash-sharded table) b and f; "c" straddles x's second and third row group.
    groups = [
        ("x", 0, "a", "b", 4), ("x", 1, "b", "c", 4), ("x", 2, "c", "d", 4), ("x", 3, "e", "e", 2),
        ("y", 0, "b", "f", 4),
    ]  # fmt: skip
    assert from_run.plan_shard_bounds(groups, 100) == ()  # all fits: one file, as today
    assert from_run.plan_shard_bounds(groups, 8) == ("c", "e")  # (..c]: 4+4 | (c..e]: 4+2 | (e..]: y's 4
    assert from_run.plan_shard_bounds(groups, 1) == ("b", "c", "d", "e")  # never an empty or equal cut
    assert from_run.plan_shard_bounds([g for g in groups if g[0] == "x"], 4) == ("b", "c", "d")


def test_files_and_row_groups_hold_as_many_bytes_for_every_embedding_model():
    from gunshot_core import embedding_models
    from pipelines.scoring import outputs

    vggish, birdnet = embedding_models.get("vggish"), embedding_models.get("birdnet")
    # VGGish keeps its 65,536-frame row groups and 131,072-frame files; BirdNET's 4 kB frames get
    # row groups and (when the rescored run writes embeddings) files of the same bytes.
    assert outputs.row_group_rows("embeddings", vggish) == 1 << 16
    assert outputs.row_group_rows("embeddings", birdnet) == 2048
    assert (
        outputs.row_group_rows("frames", birdnet) == 1 << 16
        and outputs.row_group_rows("windows", vggish) is None
    )
    assert from_run.shard_frames(vggish, True) == from_run.shard_frames(vggish, False) == 1 << 17
    assert from_run.shard_frames(birdnet, False) == 1 << 17 and from_run.shard_frames(birdnet, True) == 16384


def test_write_table_by_ranges_of_the_shard_key(tmp_path):
    import operator

    import apache_beam as beam
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("source", pa.string()), ("i", pa.int64())])
    rows = [{"source": s, "i": i} for s in ("a", "b", "c", "d", "e") for i in range(3)]
    written = {}
    for name, kwargs in (("one", {}), ("ranges", {"shard_bounds": ("b", "c")})):
        with beam.Pipeline(runner="FnApiRunner") as p:
            _ = (
                p
                | beam.Create([rows[7:], rows[:7][::-1]])
                | tables.WriteTable(
                    str(tmp_path / name),
                    "t",
                    schema,
                    batched=True,
                    shard_key=operator.itemgetter("source"),
                    sort_columns=["source", "i"],
                    **kwargs,
                )
            )
        written[name] = sorted((tmp_path / name).glob("t-*.parquet"))
    assert [p.name for p in written["ranges"]] == [f"t-0000{i}-of-00003.parquet" for i in range(3)]
    parts = [pq.read_table(p).column("source").to_pylist() for p in written["ranges"]]
    assert [sorted(set(p)) for p in parts] == [["a", "b"], ["c"], ["d", "e"]]  # (bound, next bound]
    assert tables.read_table(str(tmp_path / "ranges"), "t").equals(pq.read_table(written["one"][0]))
    with pytest.raises(ValueError, match="sorted and distinct"):
        tables.WriteTable(str(tmp_path), "t", schema, sort_columns=["source"], shard_bounds=("c", "b"))


def test_a_long_archive_is_written_in_files_by_ranges_of_source(
    parent, rescored, random_vggish, tmp_path, monkeypatch
):
    """Row groups of 5 frames and files of at most 10 frames: the per-frame tables come in several
    files, each a range of sources, that read in name order are the one-file tables row for row (so
    evaluate-events, review and search see the same run); a rerun writes the same bytes."""
    import pyarrow.parquet as pq

    from pipelines.search import pipeline as search
    from training import evaluate_events

    audio_run, root = parent
    copy = _copy_run(audio_run, tmp_path / "regrouped")
    (path,) = copy.glob("embeddings-*.parquet")
    pq.write_table(pq.read_table(path), path, row_group_size=5)
    monkeypatch.setattr(from_run, "MAX_SHARD_FRAMES", 10)
    output = tmp_path / "out"
    _rescore(copy, output, HEAD, "--write_embeddings")
    sources = sorted(_frame(rescored, "embeddings").source.unique())
    for name in ("windows", "embeddings"):
        files = sorted(output.glob(f"{name}-*.parquet"))
        assert [p.name for p in files] == [f"{name}-0000{i}-of-00003.parquet" for i in range(3)], name
        assert [sorted(set(pq.read_table(p).column("source").to_pylist())) for p in files] == [
            [s] for s in sources
        ], name  # one recording each here: never split, in order
    for name in (*TABLES, "embeddings"):
        assert _frame(output, name).equals(_frame(rescored, name)), name
    for name in ("recordings", "events", "errors"):
        assert [p.name for p in output.glob(f"{name}-*.parquet")] == [f"{name}-00000-of-00001.parquet"]
    first = {p.name: p.read_bytes() for p in output.glob("*-of-*.*")}
    _rescore(copy, output, HEAD, "--write_embeddings")
    assert {p.name: p.read_bytes() for p in output.glob("*-of-*.*")} == first

    notes = tmp_path / "notes"
    notes.mkdir()
    rows = [{"file": SITE2, "start_seconds": 3.0, "end_seconds": 3.5, "label": "gunshot"}]
    (notes / "site.Table.1.selections.txt").write_text(annotations.format_selection_table(rows))
    argv = ["--scores", f"one={rescored}", "--scores", f"ranges={output}", "--annotations", str(notes)]
    assert evaluate_events.main([*argv, "--output", str(tmp_path / "eval")]) == 0
    scorers = json.loads((tmp_path / "eval" / "metrics.json").read_text())["scorers"]
    for figures in scorers.values():
        figures.pop("directory")
    assert scorers["one"] == scorers["ranges"]
    from pipelines.review.frame import read_frame  # review and calibrate read the windows this way

    offered = [read_frame([str(run)]) for run in (rescored, output)]
    assert len(offered[0]) == len(_frame(rescored, "windows"))
    for field in ("sources", "starts", "scores", "groups", "days"):
        np.testing.assert_array_equal(getattr(offered[0], field), getattr(offered[1], field), field)

    ckpt, pca = random_vggish
    site1 = next(s for s in sources if s.endswith(SITE1))
    found = []
    for run in (rescored, output):
        argv = [f"--embeddings={run}", f"--output={tmp_path / ('hits_' + run.name)}", "--top=3"]
        assert search.main([*argv, f"--checkpoint={ckpt}", f"--pca={pca}", f"--query={site1}@5.0"]) == 0
        found.append(_frame(tmp_path / ("hits_" + run.name), "hits"))
    assert len(found[1]) == 3 and found[0].equals(found[1])
