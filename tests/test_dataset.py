"""`gunshot dataset` (pipelines.dataset): window planning, splits, and the job end to end.

The end-to-end tests build three synthetic field sites (tests/field_sites.py, one minute each),
score them once with `gunshot batch --write_embeddings`, and build the dataset from the audio and
from those embeddings, with a folder of bad annotation files mixed in.
"""

import glob
import os
import pathlib
import shutil
import zipfile

import pyarrow.parquet as pq
import pytest

from gunshot_core import annotations, params, records
from gunshot_core.annotations import Annotation
from pipelines.dataset import options, planning, splitting
from tests import field_sites
from tests.conftest import SEED_WAVS

F = params.FRAME_SECONDS


def ann(start, end, label="gunshot", line=2, key="rec.wav", file="rec.txt"):
    return Annotation(key, start, end, label, file, line)


CONFIG = planning.PlanConfig(
    window_frames=10, positive=frozenset({"gunshot"}), negative=frozenset({"door"}), negatives_per_hour=0
)


def _holds(plan, a):
    return (
        plan.first_frame * F <= a.start_seconds + 1e-6
        and a.end_seconds <= (plan.first_frame + plan.num_frames) * F + 1e-6
    )


# ---- planning ---------------------------------------------------------------------------------------


def test_positive_window_is_centred_on_the_event_and_shifts_still_hold_it():
    a = ann(30.2, 30.9)
    config = planning.PlanConfig(window_frames=10, positive_shifts=4, negatives_per_hour=0)
    plans, rejections, _ = planning.plan_recording("rec.wav", 100, 96.0, [a], False, config)
    assert rejections == []
    base = [p for p in plans if p.shift == 0]
    assert len(base) == 1 and base[0].first_frame == 27  # centre 30.55 s = frame 31.8 -> 31.8 - 5 -> 27
    assert len(plans) == 5 and len({p.first_frame for p in plans}) == 5
    assert all(_holds(p, a) and p.tag == "gunshot" and p.origin == "annotation" for p in plans)
    assert sorted(p.shift for p in plans) == [0, 1, 2, 3, 4]
    # Seeded: another seed picks other shifts, the same seed the same ones.
    again, _, _ = planning.plan_recording("rec.wav", 100, 96.0, [a], False, config)
    other, _, _ = planning.plan_recording(
        "rec.wav", 100, 96.0, [a], False, planning.PlanConfig(positive_shifts=4, seed=5)
    )
    assert again == plans
    assert {p.first_frame for p in other} != {p.first_frame for p in plans}


def test_windows_at_the_recording_edges_and_short_recordings():
    plans, _, _ = planning.plan_recording("rec.wav", 100, 96.0, [ann(0.1, 0.5)], False, CONFIG)
    assert [p.first_frame for p in plans] == [0]
    plans, _, _ = planning.plan_recording("rec.wav", 100, 96.3, [ann(95.5, 96.2)], False, CONFIG)
    assert [(p.first_frame, p.num_frames) for p in plans] == [(90, 10)]
    plans, _, _ = planning.plan_recording("short.wav", 4, 4.0, [ann(1.0, 2.0)], True, CONFIG)
    assert [(p.first_frame, p.num_frames) for p in plans] == [(0, 4)]


def test_confuser_window_avoids_positive_events_or_is_rejected():
    gun, door = ann(20.0, 20.5, line=2), ann(23.0, 23.5, "Door", line=3)
    plans, rejections, _ = planning.plan_recording("rec.wav", 100, 96.0, [gun, door], False, CONFIG)
    confuser = [p for p in plans if p.origin == "confuser"]
    assert rejections == [] and len(confuser) == 1
    assert _holds(confuser[0], door) and confuser[0].first_frame * F >= 20.5  # starts after the shot
    close = ann(20.6, 20.7, "door", line=3)  # no window holds it without the shot
    _, rejections, _ = planning.plan_recording("rec.wav", 100, 96.0, [gun, close], False, CONFIG)
    assert [(r.reason, r.annotation.line) for r in rejections] == [(planning.OVERLAPS_POSITIVE, 3)]


def test_rejections_beyond_end_ignored_labels_and_taken_windows():
    rows = [
        ann(97.0, 98.0, line=2),  # starts after the end
        ann(90.0, 97.5, line=3),  # ends more than END_TOLERANCE past it
        ann(10.0, 11.0, "Rain", line=4),  # not mapped
        ann(50.0, 50.5, line=5),
    ]
    plans, rejections, _ = planning.plan_recording("rec.wav", 100, 96.0, rows, False, CONFIG)
    assert [(r.annotation.line, r.reason) for r in rejections] == [
        (2, planning.BEYOND_END),
        (3, planning.BEYOND_END),
        (4, planning.IGNORED),
    ]
    assert "'Rain' is neither --positive nor --negative" in rejections[2].message
    assert len(plans) == 1
    # Two shots in one 1-frame recording span: the second takes the nearest other window; a third in a
    # 10-frame recording (one window only) finds none.
    plans, rejections, _ = planning.plan_recording(
        "rec.wav", 100, 96.0, [ann(40.0, 40.2, line=2), ann(40.1, 40.3, line=3)], False, CONFIG
    )
    assert len({p.first_frame for p in plans}) == 2 and rejections == []
    _, rejections, _ = planning.plan_recording(
        "rec.wav", 10, 9.6, [ann(4.0, 4.2, line=2), ann(4.1, 4.3, line=3)], False, CONFIG
    )
    assert [(r.annotation.line, r.reason) for r in rejections] == [(3, planning.DUPLICATE_WINDOW)]


def test_background_windows_overlap_no_annotation_at_the_asked_rate():
    rows = [ann(s, s + 0.5, label) for s, label in ((100.0, "gunshot"), (400.0, "door"), (700.0, "wind"))]
    config = planning.PlanConfig(window_frames=10, negatives_per_hour=60.0)
    hours = 0
    written = 0
    for i in range(40):  # 40 recordings of 15 minutes: 15 background windows per hour each on average
        plans, _, counts = planning.plan_recording(f"r{i}.wav", 937, 900.0, rows, True, config)
        background = [p for p in plans if p.origin == "background"]
        assert all(
            not planning._overlaps(p.first_frame, 10, a.start_seconds, a.end_seconds)
            for p in background
            for a in rows
        )
        assert all(p.first_frame % 10 == 0 and p.tag == "no_gunshot" for p in background)
        assert len(background) == counts["background_wanted"] in (15, 16)
        hours += 0.25
        written += len(background)
    assert abs(written / hours - 60.0) < 3
    plans, _, counts = planning.plan_recording("r.wav", 937, 900.0, rows, False, config)
    assert not [p for p in plans if p.origin == "background"] and counts["background_wanted"] == 0


# ---- splitting and options ------------------------------------------------------------------------


def test_groups_and_split_assignment():
    assert splitting.group_of("gs://b/field/site7/2024/rec.wav", r"field/([^/]+)/") == "site7"
    assert splitting.group_of("gs://b/other/rec.wav", r"field/([^/]+)/") is None
    assert splitting.group_of("/d/site1/a.zip!inner/rec.wav", None) == "/d/site1/a.zip!inner"
    groups = [f"site{i}" for i in range(20)]
    first = splitting.assign_splits(groups, [("train", 0.7), ("eval", 0.3)], seed=0)
    assert first == splitting.assign_splits(list(reversed(groups)), [("train", 0.7), ("eval", 0.3)], seed=0)
    assert sorted(first.values()).count("eval") == 6
    assert first != splitting.assign_splits(groups, [("train", 0.7), ("eval", 0.3)], seed=1)
    assert set(splitting.assign_splits(["a", "b", "c"], [("train", 0.67), ("eval", 0.33)], 0).values()) == {
        "train",
        "eval",
    }
    report = splitting.leakage(
        [
            {"group": "g1", "split": "train", "source": "/x/g1/a.wav"},
            {"group": "g2", "split": "eval", "source": "/x/g2/a.wav"},
            {"group": "g2", "split": "eval", "source": "/x/g2/b.wav"},
        ],
        ["train", "eval"],
    )
    assert (report["groups"], report["recording_names"], report["examples"]) == (0, 1, ["recording a.wav"])


def test_options_reject_bad_combinations(capsys):
    base = ["--annotations", "a/", "--output", "o/"]
    for bad in (
        [],  # neither --audio nor --embeddings
        ["--audio", "x/", "--embeddings", "e/"],
        ["--audio", "x/", "--split", "train=0.5", "--split", "eval=0.2"],
        ["--audio", "x/", "--split", "train"],
        ["--audio", "x/", "--positive", "shot", "--negative", "Shot"],
        ["--audio", "x/", "--group_pattern", "("],
    ):
        with pytest.raises(SystemExit):
            options.parse_known_args(base + bad)
    args, beam_args = options.parse_known_args(
        base + ["--audio", "x/", "--positive", "Shot", "--runner", "DirectRunner"]
    )
    assert args.positive == ["shot"] and args.split == [("train", 0.8), ("eval", 0.2)]
    assert beam_args == ["--runner", "DirectRunner"]


# ---- end to end ------------------------------------------------------------------------------------

SITES = ("siteA", "siteB", "siteC", "siteD")  # siteD's recording is a member of field/siteD.zip
NEGATIVE = ["speech", "footsteps", "click", "branch"]


def _bad_annotations(directory: pathlib.Path, sites_root: pathlib.Path) -> None:
    """Annotation files of every kind of problem, next to the good Raven tables."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "garbage.txt").write_bytes(b"\x00\x01 not an annotation file \xff\n")
    (directory / "no_start.csv").write_text("file,begin,end_seconds,label\nsiteA_rec00.wav,1,2,gunshot\n")
    (directory / "rows.csv").write_text(
        "file,start_seconds,end_seconds,label\n"
        "siteA_rec00.wav,abc,2,gunshot\n"  # non_numeric
        "siteA_rec00.wav,5,4,gunshot\n"  # end_before_start
        "siteA_rec00.wav,300,301,gunshot\n"  # beyond_end (the recording is 60 s)
        "siteB_rec00.wav,20,21,rain\n"  # ignored label
        "nowhere.wav,1,2,gunshot\n"  # missing_recording
        "corrupt.wav,1,2,gunshot\n"  # recording_failed (undecodable audio)
    )
    (directory / "nowhere_else.txt").write_text("1.0\t2.0\tgunshot\n")  # Audacity, no such recording
    shutil.copyfile(SEED_WAVS / "pistol_shot.wav", sites_root / "corrupt.wav")
    data = (sites_root / "corrupt.wav").read_bytes()
    (sites_root / "corrupt.wav").write_bytes(data[:44] + b"\x00" * 8)  # a header and almost nothing


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    sites = root / "field"
    insertions = field_sites.make_sites(sites, sites=SITES, recordings_per_site=1, minutes=1.0, seed=3)
    member = sites / "siteD" / "siteD_rec00.wav"
    with zipfile.ZipFile(sites / "siteD.zip", "w") as z:
        z.write(member, "siteD/siteD_rec00.wav")
    member.unlink()  # its Raven table stays in field/siteD/ and names "siteD/siteD_rec00.wav"
    os.replace(sites / field_sites.GROUND_TRUTH, root / field_sites.GROUND_TRUTH)  # not an annotation file
    _bad_annotations(root / "bad", sites)
    return root, insertions


def _dataset_argv(field, random_vggish, output, *source):
    ckpt, pca = random_vggish
    return [
        *source,
        "--annotations",
        str(field / "field"),
        "--annotations",
        str(field / "bad"),
        "--negative",
        *NEGATIVE,
        "--group_pattern",
        r"field/([^/!.]+)",
        "--split",
        "train=0.67",
        "--split",
        "eval=0.33",
        "--positive_shifts",
        "2",
        "--output",
        str(output),
        "--checkpoint",
        ckpt,
        "--pca",
        pca,
    ]


@pytest.fixture(scope="module")
def built(field, random_vggish):
    field, _ = field
    from pipelines import score
    from pipelines.dataset import pipeline

    ckpt, pca = random_vggish
    scores = field / "scores"
    score.run(
        [
            "--input",
            str(field / "field"),
            "--output",
            str(scores),
            "--write_embeddings",
            "--checkpoint",
            ckpt,
            "--pca",
            pca,
        ],
        save_main_session=False,
    )
    from_audio = field / "from_audio"
    stats = pipeline.run(
        _dataset_argv(field, random_vggish, from_audio, "--audio", str(field / "field")),
        save_main_session=False,
    )
    from_embeddings = field / "from_embeddings"
    stats_e = pipeline.run(
        _dataset_argv(field, random_vggish, from_embeddings, "--embeddings", str(scores)),
        save_main_session=False,
    )
    return {
        "audio": from_audio,
        "embeddings": from_embeddings,
        "scores": scores,
        "stats": stats,
        "stats_e": stats_e,
    }


def _files(directory):
    return sorted(str(p.relative_to(directory)) for p in pathlib.Path(directory).rglob("*") if p.is_file())


@pytest.mark.slow
def test_from_embeddings_gives_byte_identical_examples(built):
    audio, embeddings = built["audio"], built["embeddings"]
    assert _files(audio) == _files(embeddings)
    for name in _files(audio):
        if name == "stats.json":
            continue  # its options name the inputs, which differ
        assert (audio / name).read_bytes() == (embeddings / name).read_bytes(), name
    a, e = dict(built["stats"]), dict(built["stats_e"])
    a.pop("options"), e.pop("options")
    assert a == e


@pytest.mark.slow
def test_records_hold_the_frames_gunshot_batch_embedded(built):
    emb = pq.read_table(glob.glob(str(built["scores"] / "embeddings-*.parquet"))[0]).to_pylist()
    frames = {}
    for row in emb:
        frames.setdefault(row["source"], {})[row["frame_index"]] = row["embedding"]
    examples = pq.read_table(glob.glob(str(built["audio"] / "examples-*.parquet"))[0]).to_pylist()
    by_key = {records.clip_key(r["video_id"], r["start_time_seconds"]): r for r in examples}
    seen = 0
    for path in sorted(glob.glob(str(built["audio"] / "*" / "examples-*.tfrecord"))):
        split = os.path.basename(os.path.dirname(path))
        with open(path, "rb") as f:
            for slot in records.read_tfrecords(f):
                context, window = records.decode_sequence_example(slot.data)
                row = by_key[records.clip_key(context.video_id, context.start_time)]
                assert row["split"] == split
                want = b"".join(
                    frames[row["source"]][row["first_frame"] + i] for i in range(row["num_frames"])
                )
                assert window.tobytes() == want
                seen += 1
    assert seen == len(examples) > 0


@pytest.mark.slow
def test_every_annotation_row_ends_as_an_example_or_an_error(built, field):
    field, _ = field
    examples = pq.read_table(glob.glob(str(built["audio"] / "examples-*.parquet"))[0]).to_pylist()
    errors = pq.read_table(glob.glob(str(built["audio"] / "errors-*.parquet"))[0]).to_pylist()
    # The input rows, read independently of the job.
    wanted = set()
    files = sorted(glob.glob(str(field / "field" / "*" / "*.txt")) + glob.glob(str(field / "bad" / "*")))
    bad_files = set()
    for path in files:
        parsed = annotations.read_annotations(path)
        wanted |= {(a.annotation_file, a.line) for a in parsed.rows}
        wanted |= {(e.annotation_file, e.line) for e in parsed.errors if e.line}
        bad_files |= {e.annotation_file for e in parsed.errors if not e.line}
    got_examples = {(r["annotation_file"], r["annotation_line"]) for r in examples if r["annotation_file"]}
    got_errors = {(r["annotation_file"], r["annotation_line"]) for r in errors if r["annotation_line"]}
    assert got_examples | got_errors == wanted
    assert not got_examples & got_errors
    assert {r["annotation_file"] for r in errors if r["annotation_line"] == 0} == bad_files
    reasons = {(os.path.basename(r["annotation_file"] or r["source"]), r["reason"]) for r in errors}
    assert reasons >= {
        ("garbage.txt", "malformed_file"),
        ("no_start.csv", "missing_column"),
        ("rows.csv", "non_numeric"),
        ("rows.csv", "end_before_start"),
        ("rows.csv", "beyond_end"),
        ("rows.csv", "ignored"),
        ("rows.csv", "missing_recording"),
        ("rows.csv", "recording_failed"),
        ("nowhere_else.txt", "missing_recording"),
    }
    stats = built["stats"]
    assert stats["annotations"]["labels_ignored"] == {"rain": 1}
    assert stats["annotations"]["rows_with_example"] == len(got_examples)


@pytest.mark.slow
def test_splits_are_whole_sites_and_examples_have_their_tags(built, field):
    examples = pq.read_table(glob.glob(str(built["audio"] / "examples-*.parquet"))[0]).to_pylist()
    split_of = {}
    for row in examples:
        assert split_of.setdefault(row["group"], row["split"]) == row["split"]
    assert set(split_of) == set(SITES) and set(split_of.values()) == {"train", "eval"}
    zipped = [r for r in examples if r["group"] == "siteD"]
    assert zipped and all(r["source"].endswith("siteD.zip!siteD/siteD_rec00.wav") for r in zipped)
    assert {r["member"] for r in zipped} == {"siteD/siteD_rec00.wav"}
    assert built["stats"]["leakage"]["groups"] == 0 and built["stats"]["leakage"]["recording_names"] == 0
    field, insertions = field
    truth = [i for i in insertions if i.annotated]
    positives = [r for r in examples if r["origin"] == "annotation" and r["shift"] == 0]
    assert len(positives) == sum(1 for i in truth if i.label == "gunshot")
    for row in examples:
        assert row["end_seconds"] - row["start_seconds"] == pytest.approx(row["num_frames"] * F)
        if row["origin"] == "background":
            events = [i for i in truth if os.path.basename(i.file) == os.path.basename(row["source"])]
            assert all(i.end <= row["start_seconds"] or i.start >= row["end_seconds"] for i in events)
        else:
            assert row["start_seconds"] <= row["event_start_seconds"] + 1e-6
            assert row["event_end_seconds"] <= row["end_seconds"] + 1e-6
            assert row["tag"] == ("gunshot" if row["label"] == "gunshot" else "no_gunshot")
    assert {r["shift"] for r in examples if r["tag"] == "gunshot"} == {0, 1, 2}


@pytest.mark.slow
def test_training_data_reads_the_dataset(built):
    from training import data

    for split in ("train", "eval"):
        pattern = str(built["audio"] / split)
        tags = data.load_tag_table(data.find_tag_table(pattern))
        clips = data.load_clips(pattern, tags)
        assert clips.errors == []
        assert len(clips) == built["stats"]["splits"][split]["examples"] > 0
        assert set(clips.tags) == {"gunshot", "no_gunshot"}
        assert all(f.shape == (10, 128) for f in clips.frames)
    # Mixed with another source of records: comma-separated parts find each part's table.
    both = f"{built['audio'] / 'train'},{built['embeddings'] / 'eval'}"
    assert data.find_tag_table(both).count("examples-*.parquet") == 2


@pytest.mark.slow
def test_rerun_is_byte_identical(built, field, random_vggish, tmp_path):
    from pipelines.dataset import pipeline

    field, _ = field
    again = tmp_path / "again"
    pipeline.run(
        _dataset_argv(field, random_vggish, again, "--embeddings", str(built["scores"])),
        save_main_session=False,
    )
    for name in _files(built["embeddings"]):
        assert (again / name).read_bytes() == (built["embeddings"] / name).read_bytes(), name


def test_embeddings_folder_without_the_table_fails_at_launch_with_the_fix(tmp_path):
    from pipelines.dataset import recordings

    with pytest.raises(FileNotFoundError, match="--write_embeddings"):
        recordings._table_files(str(tmp_path), "embeddings")


def test_side_input_derivations_are_built_once_per_list():
    from pipelines.dataset import annotation_io

    calls = []
    keys = ["site1/rec01.wav", "rec02"]

    def build(side):
        calls.append(1)
        return frozenset(side)

    assert annotation_io.derived(keys, "test", build) is annotation_io.derived(keys, "test", build)
    assert len(calls) == 1
    assert annotation_io.may_be_meant("gs://b/x/rec01.wav", keys)
    assert annotation_io.may_be_meant("gs://b/x/rec02.flac", keys)
    assert not annotation_io.may_be_meant("gs://b/x/rec03.wav", keys)
    assert annotation_io.may_be_meant("gs://b/x/rec03.wav", keys, ("gs://b/x/*",))


@pytest.mark.slow
def test_transform_train_and_evaluate_read_the_dataset_unchanged(built, tmp_path):
    import json

    from training import evaluate, train, transform

    ds = built["audio"]
    tft, head, report = tmp_path / "tft", tmp_path / "head", tmp_path / "eval"
    transform.run(["--train", str(ds / "train"), "--eval", str(ds / "eval"), "--output", str(tft)])
    info = json.loads((tft / "transform_info.json").read_text())
    assert info["train_tag_counts"] == built["stats"]["splits"]["train"]["tags"]
    argv = ["--transformed", str(tft), "--model", "logreg", "--epochs", "1", "--verbose", "0"]
    assert train.main([*argv, "--output", str(head)]) == 0
    assert evaluate.main(["--model", str(head), "--data", str(ds / "eval"), "--output", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())

    def counts(node):  # every (clips, positives) pair in the report
        if isinstance(node, dict):
            if "clips" in node and "positives" in node:
                yield node["clips"], node["positives"]
            for value in node.values():
                yield from counts(value)

    want = built["stats"]["splits"]["eval"]
    assert (want["examples"], want["tags"]["gunshot"]) in set(counts(metrics))
    assert not list(tft.glob("errors/*/*")) or all(p.stat().st_size == 0 for p in tft.glob("errors/*/*"))
