"""The Beam subset builder end to end on synthetic shards that carry real AudioSet ids and labels.

Expected counts and selections come from an independent pandas computation on the same segments CSV
(tags by set membership of MIDs, ranks by the documented hash formula), not from the pipeline's code.
Runs use the DirectRunner's engine (FnApiRunner) directly: `--runner DirectRunner` would first try to
download the Prism runner binary.
"""

import gzip
import hashlib
import json
import operator
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from gunshot_core import labels as labels_lib
from gunshot_core import records
from pipelines import build_subset, schemas
from pipelines.io import errors as io_errors
from pipelines.io import matching, tables
from pipelines.subset import balance
from pipelines.subset import config as subset_config
from pipelines.subset import tag as subset_tag
from tests import fixtures_audioset as fx
from tests.conftest import AUDIOSET
from tests.gcs_emulator import gcs_emulator  # noqa: F401  (pytest fixture)

# Keep this module's tests on one xdist worker: they share the module-scoped shard fixtures.
pytestmark = pytest.mark.xdist_group("build_subset")

BEAM = ["--runner=FnApiRunner"]
EVAL_CSV = AUDIOSET / "eval_segments.csv"
TRAIN_CSV = AUDIOSET / "balanced_train_segments.csv"


# ---- Independent expectations ---------------------------------------------------------------------


def segments_frame(path) -> pd.DataFrame:
    df = pd.read_csv(
        path,
        skiprows=3,
        header=None,
        names=["ytid", "start", "end", "mids"],
        skipinitialspace=True,
        quotechar='"',
    )
    df["mid_list"] = df["mids"].str.split(",")
    return df


def mids_of(names) -> set:
    table = pd.read_csv(AUDIOSET / "class_labels_indices.csv")
    by_name = dict(zip(table.display_name, table.mid, strict=True))
    return {by_name[n] for n in names}


def expected_tags(df: pd.DataFrame, groups: list[tuple[str, set]], policy: str) -> pd.Series:
    exploded = df[["mid_list"]].explode("mid_list")
    hits = pd.DataFrame(
        {name: exploded["mid_list"].isin(mids).groupby(level=0).any() for name, mids in groups}
    )
    n_hits = hits.sum(axis=1)
    tag = pd.Series("other", index=df.index)
    for name, _ in reversed(groups):  # the first group in order wins under "priority"
        tag[hits[name]] = name
    if policy == "drop":
        tag[n_hits > 1] = "other"
    return tag


def expected_rank(ytid: str, start: float, seed: int) -> int:
    key = f"{seed}:{ytid}:{round(start * 1000)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def expected_selection(df, tag, names, seed, ratio=None, max_per_class=None):
    ranks = pd.Series(
        [expected_rank(y, s, seed) for y, s in zip(df.ytid, df.start, strict=True)], index=df.index
    )
    counts = {n: int((tag == n).sum()) for n in names}
    ratio = ratio or [1] * len(names)
    scale = min(counts[n] / r for n, r in zip(names, ratio, strict=True))
    if max_per_class is not None:
        scale = min(scale, max_per_class / max(ratio))
    selected = set()
    for n, r in zip(names, ratio, strict=True):
        quota = int(np.floor(scale * r + 1e-9))
        chosen = ranks[tag == n].sort_values().index[:quota]
        selected |= {f"{df.ytid[i]}:{round(df.start[i] * 1000)}" for i in chosen}
    return counts, selected


# ---- Fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("audioset")
    catalog = labels_lib.ClassCatalog.from_files()
    eval_segments = fx.read_segments(EVAL_CSV, catalog)
    train_segments = fx.read_segments(TRAIN_CSV, catalog)
    return {
        "root": root,
        "eval_segments": eval_segments,
        "eval": fx.write_shards(root / "eval", eval_segments, num_shards=8),
        "eval3": fx.write_shards(root / "eval3", eval_segments, num_shards=3),
        "train": fx.write_shards(root / "train", train_segments, num_shards=6),
    }


def run_builder(args, output):
    build_subset.run([*args, "--output", str(output), *BEAM], save_main_session=False)
    with open(os.path.join(output, "stats.json")) as handle:
        stats = json.load(handle)
    tagged = tables.read_table(str(output), "tagged")
    errors = tables.read_table(str(output), "errors")
    return stats, tagged, errors


def split_rows(table, split):
    return table.filter(pc.equal(table["split"], split))


def subset_records(output, split):
    paths = sorted(
        matching.expand_patterns(os.path.join(output, split, "subset-*.tfrecord")), key=lambda m: m.path
    )
    out = {}
    for meta in paths:
        with open(meta.path, "rb") as handle:
            out[os.path.basename(meta.path)] = [r.data for r in records.read_tfrecords(handle)]
    return out


def file_bytes(output, split):
    return {
        name: open(os.path.join(output, split, name), "rb").read()
        for name in sorted(os.listdir(os.path.join(output, split)))
    }


@pytest.fixture(scope="module")
def default_run(shards, tmp_path_factory):
    output = tmp_path_factory.mktemp("default_out")
    args = ["--split", f"eval={shards['root']}/eval/*.tfrecord", "--split", f"train={shards['root']}/train/*"]
    return (output, *run_builder(args, output))


# ---- Tests -------------------------------------------------------------------------------------------


def test_default_tags_and_balance_match_pandas(default_run):
    output, stats, tagged, errors = default_run
    groups = [
        ("gunshot", mids_of(labels_lib.DEFAULT_POSITIVE)),
        ("no_gunshot", mids_of(labels_lib.DEFAULT_NEGATIVE)),
    ]
    assert errors.num_rows == 0
    for split, csv_path in (("eval", EVAL_CSV), ("train", TRAIN_CSV)):
        df = segments_frame(csv_path)
        tag = expected_tags(df, groups, "priority")
        counts, selected = expected_selection(df, tag, ["gunshot", "no_gunshot"], seed=0)
        entry = stats["splits"][split]
        assert entry["records_read"] == len(df)
        assert entry["tagged"] == counts
        assert entry["other"] == int((tag == "other").sum())
        assert entry["accounted"] is True
        pos, neg = (df.index[df.mid_list.map(lambda m, g=g: bool(set(m) & g))] for _, g in groups)
        assert entry["co_occurrence"]["gunshot+no_gunshot"]["outcome"] == {
            "gunshot": len(set(pos) & set(neg))
        }
        quota = min(counts.values())
        assert {t: v["after"] for t, v in entry["tags"].items()} == {"gunshot": quota, "no_gunshot": quota}

        rows = split_rows(tagged, split)
        assert rows.num_rows == sum(counts.values())
        table_selected = {
            k for k, s in zip(rows["clip_key"].to_pylist(), rows["selected"].to_pylist(), strict=True) if s
        }
        assert table_selected == selected

        written = [data for shard in subset_records(output, split).values() for data in shard]
        assert len(written) == len(selected)
        assert {records.decode_context(d).key for d in written} == selected
    # The original project's eval subset: 292 gunshot clips and as many negatives.
    assert stats["splits"]["eval"]["tags"]["gunshot"]["after"] == 292
    assert stats["leakage"]["video_ids"] == 0  # eval and balanced_train share no video


def test_outputs_are_byte_exact_sorted_and_typed(default_run, shards):
    output, _, tagged, _ = default_run
    assert tagged.schema.equals(schemas.SUBSET_TAGGED, check_metadata=False)
    originals = {
        records.clip_key(s.video_id, s.start_time): fx.encode_segment(s) for s in shards["eval_segments"]
    }
    shards_out = subset_records(output, "eval")
    assert sorted(shards_out) == [f"subset-{i:05d}-of-00004.tfrecord" for i in range(4)]
    for data_list in shards_out.values():
        keys = [records.decode_context(d) for d in data_list]
        assert keys == sorted(keys, key=lambda c: (c.video_id, c.start_time))
        for data, ctx in zip(data_list, keys, strict=True):
            assert data == originals[ctx.key]  # records unchanged, byte for byte
    row = tagged.slice(0, 1).to_pylist()[0]
    assert row["label_names"] == [labels_lib.ClassCatalog.from_files().name(i) for i in row["labels"]]
    assert row["clip_key"] == records.clip_key(row["video_id"], row["start_time_seconds"])


def test_same_selection_across_workers_and_input_sharding(default_run, shards, tmp_path):
    output, _, tagged, _ = default_run
    args = [
        "--split",
        f"eval={shards['root']}/eval3/*",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    ]
    _, tagged2, _ = run_builder(args, tmp_path)
    assert file_bytes(tmp_path, "eval") == file_bytes(output, "eval")
    columns = [c for c in schemas.SUBSET_TAGGED.names if c not in ("source", "record_index")]
    first = split_rows(tagged, "eval").select(columns)
    assert tagged2.select(columns).equals(first)


def test_seed_changes_selection_not_counts(default_run, shards, tmp_path):
    _, stats, tagged, _ = default_run
    stats2, tagged2, _ = run_builder(["--split", f"eval={shards['root']}/eval/*", "--seed", "7"], tmp_path)
    assert (
        stats2["splits"]["eval"]["tags"]["no_gunshot"]["after"]
        == stats["splits"]["eval"]["tags"]["no_gunshot"]["after"]
    )
    eval_rows = split_rows(tagged, "eval")
    assert eval_rows["selected"].to_pylist() != tagged2["selected"].to_pylist()


def test_bad_shards_become_error_rows(shards, tmp_path):
    src = tmp_path / "in"
    segments = shards["eval_segments"][:1200]
    paths = fx.write_shards(src, segments, num_shards=6, extra={5: list(fx.malformed_records().values())})
    fx.corrupt_payload_crc(paths[0], 5)
    fx.truncate(paths[1], keep_records=100)
    fx.append_garbage(paths[2])
    # A gzip shard named like a plain one, a .gz shard, and a gzip shard cut short.
    for i in (3, 4):
        data = open(paths[i], "rb").read()
        os.remove(paths[i])
        name = paths[i] if i == 3 else paths[i] + ".gz"
        with gzip.GzipFile(name, "wb", mtime=0) as handle:
            handle.write(data)
    cut = src / "shard-cut.tfrecord.gz"
    full = gzip.compress(open(paths[5], "rb").read(), mtime=0)
    cut.write_bytes(full[: len(full) // 2])
    (src / "empty.tfrecord").write_bytes(b"")

    stats, tagged, errors = run_builder(["--input", f"{src}/*", "--balance", "none"], tmp_path / "out")
    entry = stats["splits"]["subset"]
    assert entry["accounted"] is True
    assert entry["records_read"] == entry["tagged_total"] + entry["other"] + entry["errors_total"]
    rows = {(os.path.basename(r["source"]), r["record_index"], r["reason"]) for r in errors.to_pylist()}
    assert ("shard-00000.tfrecord", 5, "bad_data_crc") in rows
    assert ("shard-00001.tfrecord", 100, "truncated") in rows
    assert ("shard-00002.tfrecord", 200, "bad_length_crc") in rows
    for reason in fx.malformed_records():
        assert any(r[0] == "shard-00005.tfrecord" and r[2] == reason for r in rows), reason
    cut_rows = [r for r in rows if r[0] == "shard-cut.tfrecord.gz"]
    assert len(cut_rows) == 1 and cut_rows[0][2] in ("unreadable", "truncated")
    assert entry["errors"]["bad_data_crc"] == 1
    # Every good record of the gzip shards was read: 200 per shard.
    sources = tagged["source"].to_pylist()
    n_tagged = {os.path.basename(s) for s in sources}
    assert {"shard-00003.tfrecord", "shard-00004.tfrecord.gz"} <= n_tagged
    good = 1200 - 1 - (200 - 100)  # one bad CRC, the truncated tail
    assert entry["tagged_total"] + entry["other"] >= good  # plus the readable half of the cut gzip shard
    errors_by_reason = {}
    for r in errors.to_pylist():
        errors_by_reason[r["reason"]] = errors_by_reason.get(r["reason"], 0) + 1
    assert errors_by_reason == entry["errors"]


def test_nway_drop_ratio_and_weights_match_pandas(shards, tmp_path):
    df = segments_frame(EVAL_CSV)
    groups = [
        ("gun", mids_of(["Gunshot, gunfire", "Machine gun"])),
        ("fireworks", mids_of(["Fireworks", "Firecracker"])),
        ("speech", mids_of(["Speech"])),
    ]
    tag = expected_tags(df, groups, "drop")
    args = [
        "--split",
        f"eval={shards['root']}/eval/*",
        "--class",
        'gun="Gunshot, gunfire",Machine gun',
        "--class",
        "fireworks=Fireworks,Firecracker",
        "--class",
        "speech=Speech",
        "--ratio",
        "1:1:3",
        "--max_per_class",
        "150",
    ]
    stats, tagged, _ = run_builder(args, tmp_path / "a")
    counts, selected = expected_selection(df, tag, ["gun", "fireworks", "speech"], 0, [1, 1, 3], 150)
    entry = stats["splits"]["eval"]
    assert entry["tagged"] == counts
    assert entry["co_occurrence_dropped"] == int(
        ((tag == "other") & df.index.isin(_multi_hit(df, groups))).sum()
    )
    assert {
        k for k, s in zip(tagged["clip_key"].to_pylist(), tagged["selected"].to_pylist(), strict=True) if s
    } == selected
    after = {t: v["after"] for t, v in entry["tags"].items()}
    assert after["speech"] == 3 * after["gun"] == 3 * after["fireworks"] == 150

    stats_w, tagged_w, _ = run_builder([*args[:8], "--balance", "weights"], tmp_path / "b")
    kept = stats_w["splits"]["eval"]["tags"]
    assert {t: v["after"] for t, v in kept.items()} == counts
    total = sum(counts.values())
    for t, v in kept.items():
        assert v["weight"] == pytest.approx(total / (3 * counts[t]))
    weights = dict(zip(tagged_w["tag"].to_pylist(), tagged_w["weight"].to_pylist(), strict=True))
    assert weights["speech"] == pytest.approx(total / (3 * counts["speech"]), rel=1e-6)


def _multi_hit(df, groups):
    hits = sum(df.mid_list.map(lambda m, g=g: bool(set(m) & g)).astype(int) for _, g in groups)
    return df.index[hits > 1]


def test_leakage_is_reported_and_dropped(shards, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for p in shards["eval"][:4]:
        shutil.copy(p, a)
    for p in shards["eval"][2:6]:
        shutil.copy(p, b)
    common_args = ["--split", f"first={a}/*", "--split", f"second={b}/*", "--balance", "none"]
    stats, tagged, _ = run_builder(common_args, tmp_path / "report")
    overlap = {r.video_id for p in shards["eval"][2:4] for r in _contexts(p)}
    first = split_rows(tagged, "first")
    leaked_expected = overlap & set(first["video_id"].to_pylist())
    assert stats["leakage"]["video_ids"] == len(leaked_expected)
    assert stats["leakage"]["by_splits"] == {"first+second": len(leaked_expected)}
    assert set(stats["leakage"]["examples"]) <= leaked_expected
    assert all(tagged["selected"].to_pylist())

    # The form a flex-template job passes: all splits in one value, the switch as =true.
    one_value = ["--split", f"first={a}/*;second={b}/*", "--balance", "none", "--drop_leakage=true"]
    stats2, tagged2, _ = run_builder(one_value, tmp_path / "drop")
    rows = tagged2.to_pylist()
    assert all(r["selected"] for r in rows if r["split"] == "first")
    assert {r["video_id"] for r in rows if r["split"] == "second" and not r["selected"]} == leaked_expected
    second_after = sum(v["after"] for v in stats2["splits"]["second"]["tags"].values())
    assert second_after == stats["splits"]["second"]["tagged_total"] - len(leaked_expected)


def _contexts(path):
    with open(path, "rb") as handle:
        return [records.decode_context(r.data) for r in records.read_tfrecords(handle)]


def test_segments_csv_labels_and_cross_check(shards, tmp_path):
    from gunshot_core import cli

    segments = shards["eval_segments"][:400]
    wrong = [
        fx.Segment(s.video_id, s.start_time, s.end_time, (427,)) if i < 10 else s
        for i, s in enumerate(segments)
    ]
    extra = fx.Segment("notInCsv000", 0.0, 10.0, (427,))
    src = tmp_path / "in"
    fx.write_shards(src, [*wrong, extra], num_shards=2)
    base = ["--input", f"{src}/*", "--segments_csv", str(EVAL_CSV), "--balance", "none", *BEAM]

    assert cli.main(["subset", *base, "--output", str(tmp_path / "check")]) == 0
    stats = json.load(open(tmp_path / "check" / "stats.json"))
    changed = sum(1 for s in segments[:10] if tuple(sorted(set(s.labels))) != (427,))
    assert stats["splits"]["subset"]["label_check"] == {
        "match": 400 - changed,
        "mismatch": changed,
        "not_in_csv": 1,
    }

    stats_csv, tagged, errors = run_builder([*base[:-1], "--label_source", "csv"], tmp_path / "csv")
    assert errors["reason"].to_pylist() == ["not_in_segments_csv"]
    by_key = dict(zip(tagged["clip_key"].to_pylist(), tagged["labels"].to_pylist(), strict=True))
    for s in segments[:10]:
        key = records.clip_key(s.video_id, s.start_time)
        if key in by_key:
            assert by_key[key] == sorted(set(s.labels))


def test_gs_paths_with_storage_emulator(gcs_emulator, shards):  # noqa: F811
    bucket = gcs_emulator.create_bucket("audioset-test")
    for p in shards["eval"][:2]:
        gcs_emulator.upload(p, f"{bucket}/eval/{os.path.basename(p)}")
    output = f"{bucket}/out"
    build_subset.run(["--split", f"eval={bucket}/eval/*", "--output", output, *BEAM], save_main_session=False)
    names = gcs_emulator.list(output)
    assert f"{output}/stats.json" in names and f"{output}/tagged-00000-of-00004.parquet" in names
    stats = json.loads(gcs_emulator.read(f"{output}/stats.json"))
    assert stats["splits"]["eval"]["records_read"] == sum(len(_contexts(p)) for p in shards["eval"][:2])
    data = gcs_emulator.read(f"{output}/eval/subset-00000-of-00004.tfrecord")
    assert data  # official framing, readable
    import io

    assert all(r.reason is None for r in records.read_tfrecords(io.BytesIO(data)))


def test_cli_errors_are_loud(shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        build_subset.run(
            [
                "--input",
                f"{shards['root']}/eval/*",
                "--output",
                str(tmp_path),
                "--positive_classes",
                "Gunshots",
            ]
        )
    assert info.value.code == 2
    assert "Gunshot, gunfire" in capsys.readouterr().err
    from gunshot_core.errors import InputError

    with pytest.raises(InputError, match="no file matches"):  # gunshot subset: one line, exit 2
        build_subset.run(["--input", str(tmp_path / "nothing-*.tfrecord"), "--output", str(tmp_path)])
    with pytest.raises(SystemExit):
        build_subset.run(
            ["--input", f"{shards['root']}/eval/*", "--output", str(tmp_path), "--ratio", "1:2:3"]
        )
    with pytest.raises(SystemExit):
        build_subset.run(["--input", "x", "--output", str(tmp_path), "--postive_classes", "Speech"])


def test_quotas_and_weights():
    ratio = {"a": 1, "b": 3}
    assert balance.quotas({"a": 10, "b": 100}, ratio, "downsample", None) == {"a": 10, "b": 30}
    assert balance.quotas({"a": 10, "b": 12}, ratio, "downsample", None) == {"a": 4, "b": 12}
    assert balance.quotas({"a": 10, "b": 100}, ratio, "downsample", 9) == {"a": 3, "b": 9}
    assert balance.quotas({"b": 100}, ratio, "downsample", None) == {"a": 0, "b": 0}
    assert balance.quotas({"a": 10, "b": 100}, ratio, "none", 50) == {"a": 10, "b": 50}
    assert balance.class_weights({"a": 10, "b": 30}) == {"a": 2.0, "b": pytest.approx(2 / 3)}
    line = '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"'
    mid_to_index = {"/m/09x0r": 0, "/t/dd00088": 138}
    assert subset_tag.parse_segment_line(line, mid_to_index) == ("--PJHxphWEs:30000", (0, 138))
    assert subset_tag.parse_segment_line("# comment", mid_to_index) is None
    with pytest.raises(ValueError, match="unknown MIDs"):
        subset_tag.parse_segment_line('x, 0, 10, "/m/nope"', mid_to_index)


# ---- Shared plumbing (pipelines.options, pipelines.io) ------------------------------------------------------------


def test_expand_patterns_directories_globs_and_errors(shards):
    eval_dir = str(shards["root"] / "eval")
    expected = sorted(shards["eval"])
    assert [m.path for m in matching.expand_patterns(eval_dir)] == expected
    assert [m.path for m in matching.expand_patterns(eval_dir + "/")] == expected
    both = matching.expand_patterns([f"{eval_dir}/*.tfrecord", expected[0]])
    assert [m.path for m in both] == expected  # sorted, without duplicates
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        matching.expand_patterns(f"{eval_dir}/nothing-here*")


def test_write_table_is_deterministic_and_writes_empty_tables(tmp_path):
    import apache_beam as beam
    import pyarrow as pa

    schema = pa.schema([("k", pa.string()), ("v", pa.int64())])
    rows = [{"k": f"key{i:03d}", "v": i * 7 % 11} for i in range(50)]

    def write(directory, elements, batched, **sorting):
        with beam.Pipeline(runner="FnApiRunner") as p:
            pcoll = p | beam.Create(elements)
            pcoll | tables.WriteTable(str(directory), "t", schema, num_shards=3, batched=batched, **sorting)
            (
                p
                | "Empty" >> beam.Create([])
                | "WriteEmpty" >> tables.WriteTable(str(directory), "e", schema, **sorting)
            )

    by_key = {"sort_key": operator.itemgetter("k"), "shard_key": operator.itemgetter("k")}
    by_columns = {"sort_columns": ["k"], "shard_key": operator.itemgetter("k")}
    write(tmp_path / "a", rows, False, **by_key)
    write(tmp_path / "b", [rows[30:], rows[:30][::-1]], True, **by_key)  # other order, batched
    write(tmp_path / "c", [rows[:10], rows[10:][::-1]], True, **by_columns)  # Arrow path
    write(tmp_path / "d", rows[::-1], False, **by_columns)
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == ["e-00000-of-00001.parquet"] + [f"t-{i:05d}-of-00003.parquet" for i in range(3)]
    for other in "bcd":
        assert sorted(os.listdir(tmp_path / other)) == names
        for name in names:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / other / name).read_bytes(), (
                other,
                name,
            )
    table = tables.read_table(str(tmp_path / "a"), "t")
    assert sorted(table.to_pylist(), key=lambda r: r["k"]) == rows
    empty = tables.read_table(str(tmp_path / "a"), "e")
    assert empty.num_rows == 0 and empty.schema.equals(schema)


def test_batch_size_does_not_change_outputs(shards, tmp_path, monkeypatch):
    src = tmp_path / "in"
    fx.write_shards(src, shards["eval_segments"][:900], num_shards=2)
    args = ["--input", f"{src}/*", "--ratio", "1:2"]
    run_builder(args, tmp_path / "big")
    monkeypatch.setattr(subset_tag, "MAX_BATCH", 7)
    run_builder(args, tmp_path / "small")
    names = sorted(n for n in os.listdir(tmp_path / "big") if n.endswith((".json", ".parquet")))
    assert names == sorted(n for n in os.listdir(tmp_path / "small") if n.endswith((".json", ".parquet")))
    assert len(names) == 6  # stats, 4 tagged shards, errors
    for name in names:
        assert (tmp_path / "big" / name).read_bytes() == (tmp_path / "small" / name).read_bytes()
    assert file_bytes(tmp_path / "big", "subset") == file_bytes(tmp_path / "small", "subset")


def test_validate_all_checks_untagged_embeddings(tmp_path):
    good = fx.Segment("untagged001", 0.0, 10.0, (137,))  # Music: no tag of the defaults
    example = records.SequenceExample.FromString(fx.encode_segment(good))
    example.feature_lists.feature_list[records.EMBEDDING].feature[0].bytes_list.value[0] = b"\x00" * 100
    narrow = example.SerializeToString(deterministic=True)
    fx.write_tfrecord_file(tmp_path / "in" / "a.tfrecord", [fx.encode_segment(good), narrow])
    stats, _, errors = run_builder(["--input", f"{tmp_path}/in/*"], tmp_path / "context_only")
    assert stats["splits"]["subset"]["other"] == 2 and errors.num_rows == 0
    stats, _, errors = run_builder(["--input", f"{tmp_path}/in/*", "--validate_all"], tmp_path / "all")
    assert stats["splits"]["subset"]["other"] == 1
    assert errors.to_pylist()[0]["reason"] == "bad_embedding_width"
    assert errors.to_pylist()[0]["video_id"] == "untagged001"


def test_read_and_tag_dofn_outputs(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    gun = fx.Segment("gunclip0001", 10.0, 20.0, (427,))
    speech = fx.Segment("speechclip1", 0.0, 10.0, (0,))
    both = fx.Segment("bothclip001", 0.0, 10.0, (427, 0))
    music = fx.Segment("musicclip01", 0.0, 10.0, (137,))
    bad = fx.malformed_records()["missing_labels"]
    path = fx.write_tfrecord_file(
        tmp_path / "a.tfrecord", [fx.encode_segment(s) for s in (gun, speech, both, music)] + [bad]
    )
    args = subset_config.build_parser().parse_args(["--input", path, "--output", str(tmp_path / "out")])
    config = subset_config.Config(args)
    with TestPipeline(runner="FnApiRunner") as p:
        out = (
            p
            | beam.Create([("s", path)])
            | beam.ParDo(subset_tag.ReadAndTag(config)).with_outputs(
                "stats", io_errors.ERRORS_TAG, main="clips"
            )
        )
        tags = out.clips | beam.FlatMap(
            lambda batch: [(row["video_id"], row["tag"], row["co_labels"]) for row, _ in batch]
        )
        assert_that(
            tags,
            equal_to(
                [
                    ("gunclip0001", "gunshot", []),
                    ("speechclip1", "no_gunshot", []),
                    ("bothclip001", "gunshot", [0]),
                ]
            ),
            label="Tags",
        )
        reasons = out[io_errors.ERRORS_TAG] | beam.Map(lambda r: (r["record_index"], r["reason"]))
        assert_that(reasons, equal_to([(4, "missing_labels")]), label="Errors")
        stats = out.stats | beam.Filter(lambda kv: kv[0][0] in ("read", "other"))
        assert_that(stats, equal_to([(("read", "s"), 5), (("other", "s"), 1)]), label="Stats")


def test_one_split_value_may_hold_several_entries():
    import argparse

    assert subset_config._split_arg("train=gs://b/t/*; eval=gs://b/e/*") == [
        ("train", "gs://b/t/*"),
        ("eval", "gs://b/e/*"),
    ]
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=PATTERN"):
        subset_config._split_arg("train=gs://b/t/*;oops")
