"""The whole-shard reader of the subset builder (`--fast_read`) against the record-by-record reader.

Each case builds the same inputs, runs the builder with `--fast_read off` and `--fast_read on`, and
requires every output file (subset TFRecords, tagged and errors tables, stats.json) to be byte-identical;
the Beam counters show which reader handled each shard, so a case cannot pass by never taking the
path it is about. `gunshot_core.record_batch` is also checked directly against `gunshot_core.records`.
"""

import gzip
import os

import numpy as np
import pytest

from gunshot_core import labels as labels_lib
from gunshot_core import record_batch, records
from pipelines import build_subset
from pipelines.subset import tag as subset_tag
from tests import fixtures_audioset as fx
from tests.conftest import AUDIOSET
from tests.gcs_emulator import gcs_emulator  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.xdist_group("build_subset")

tf = pytest.importorskip("tensorflow")

BEAM = ["--runner=FnApiRunner"]


@pytest.fixture(scope="module")
def segments():
    catalog = labels_lib.ClassCatalog.from_files()
    return fx.read_segments(AUDIOSET / "eval_segments.csv", catalog)[:1200]


def _counter(result, name):
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace("build_subset").with_name(name))
    return sum(c.committed for c in found["counters"])


def run_both(tmp_path, args, label="run"):
    """Runs the builder with either reader; returns the outputs' bytes and the read counters of each."""
    outputs, counts = {}, {}
    for mode in ("off", "on"):
        out = tmp_path / f"{label}-{mode}"
        result = build_subset.run(
            [*args, "--output", str(out), "--fast_read", mode, *BEAM], save_main_session=False
        )
        outputs[mode] = {
            os.path.relpath(os.path.join(d, f), out): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(out)
            for f in names
        }
        counts[mode] = {
            "whole": _counter(result, "shards_read_whole"),
            "reread": _counter(result, "shards_reread_record_by_record"),
            "shards": _counter(result, "shards_read"),
        }
    assert sorted(outputs["off"]) == sorted(outputs["on"])
    for name in outputs["off"]:
        assert outputs["off"][name] == outputs["on"][name], name
    assert counts["off"]["whole"] == counts["off"]["reread"] == 0
    return outputs["on"], counts["on"]


def test_clean_shards_are_read_whole_with_identical_outputs(segments, tmp_path):
    src = tmp_path / "in"
    fx.write_shards(src, segments, num_shards=4)
    outputs, counts = run_both(tmp_path, ["--input", f"{src}/*", "--ratio", "1:2"])
    assert counts == {"whole": 4, "reread": 0, "shards": 4}
    assert len([n for n in outputs if n.startswith("subset")]) == 4


def test_nway_drop_weights_and_two_splits(segments, tmp_path):
    fx.write_shards(tmp_path / "a", segments[:700], num_shards=2)
    # The second split repeats some videos of the first: leakage is reported and dropped the same way.
    fx.write_shards(tmp_path / "b", segments[600:], num_shards=3)
    args = [
        "--split",
        f"eval={tmp_path}/a/*",
        "--split",
        f"train={tmp_path}/b/*",
        "--class",
        'gunshot="Gunshot, gunfire",Machine gun,Explosion',
        "--class",
        'speech=Speech,"Male speech, man speaking"',
        "--class",
        "music=Music",
        "--balance",
        "weights",
        "--drop_leakage",
    ]
    _, counts = run_both(tmp_path, args)
    assert counts == {"whole": 5, "reread": 0, "shards": 5}


def test_damaged_shards_are_reread_record_by_record(segments, tmp_path):
    src = tmp_path / "in"
    paths = fx.write_shards(src, segments, num_shards=6, extra={5: list(fx.malformed_records().values())})
    fx.corrupt_payload_crc(paths[0], 5)  # bad CRC in the middle
    fx.truncate(paths[1], keep_records=100)  # file ends inside a record
    fx.append_garbage(paths[2])  # bad length CRC after 200 good records
    data = open(paths[3], "rb").read()  # gzip shard (name without .gz)
    with gzip.GzipFile(paths[3], "wb", mtime=0) as handle:
        handle.write(data)
    (src / "empty.tfrecord").write_bytes(b"")
    _, counts = run_both(tmp_path, ["--input", f"{src}/*", "--balance", "none"])
    # Shards 0-2 and 5 fall back; the gzip shard 3 and shard 4 are read whole; the empty file has no record.
    assert counts == {"whole": 2, "reread": 4, "shards": 7}


@pytest.mark.parametrize("reason", sorted(fx.malformed_records()))
def test_each_malformed_record_makes_its_shard_fall_back(segments, tmp_path, reason):
    src = tmp_path / "in"
    bad = fx.malformed_records()[reason]
    fx.write_shards(src, segments[:300], num_shards=2, extra={0: [bad]})
    _, counts = run_both(tmp_path, ["--input", f"{src}/*"])
    assert counts == {"whole": 1, "reread": 1, "shards": 2}


def _record(video_id=b"oddclip0001", labels=(427,), widths=(128,) * 10, start=1.5, frames_values=1):
    example = records.SequenceExample()
    context = example.context.feature
    context[records.VIDEO_ID].bytes_list.value.append(video_id)
    context[records.START_TIME].float_list.value.append(start)
    context[records.END_TIME].float_list.value.append(start + 10)
    context[records.LABELS].int64_list.SetInParent()  # present, also when empty
    context[records.LABELS].int64_list.value.extend(labels)
    frames = example.feature_lists.feature_list[records.EMBEDDING].feature
    for w in widths:
        frames.add().bytes_list.value.extend([b"\x07" * w] * frames_values)
    return example.SerializeToString(deterministic=True)


def _with_int_start():
    example = records.SequenceExample.FromString(_record())
    feature = example.context.feature[records.START_TIME]
    feature.ClearField("float_list")
    feature.int64_list.value.append(3)
    return example.SerializeToString(deterministic=True)


ODD_RECORDS = {
    "no_labels_untagged": _record(labels=()),
    "not_utf8_video_id": _record(video_id=b"\xff\xfe bad"),
    "narrow_frame_untagged": _record(labels=(137,), widths=(128, 64, 128)),
    "empty_embedding": _record(widths=()),
    "two_values_per_frame": _record(frames_values=2),
    "start_time_as_int64": _with_int_start(),
}


@pytest.mark.parametrize("name", sorted(ODD_RECORDS))
def test_odd_records_give_the_same_outputs(segments, tmp_path, name):
    src = tmp_path / "in"
    fx.write_shards(src, segments[:200], num_shards=1, extra={0: [ODD_RECORDS[name]]})
    for extra in ([], ["--validate_all"]):
        _, counts = run_both(tmp_path, ["--input", f"{src}/*", *extra], label=f"run{len(extra)}")
        assert counts == {"whole": 0, "reread": 1, "shards": 1}


def test_segments_csv_labels_always_read_record_by_record(segments, tmp_path):
    src = tmp_path / "in"
    fx.write_shards(src, segments[:300], num_shards=2)
    args = ["--input", f"{src}/*", "--segments_csv", str(AUDIOSET / "eval_segments.csv")]
    _, counts = run_both(tmp_path, args)
    assert counts == {"whole": 0, "reread": 0, "shards": 2}


def test_gs_paths_are_read_whole(gcs_emulator, segments, tmp_path):  # noqa: F811
    paths = fx.write_shards(tmp_path / "in", segments[:400], num_shards=2)
    bucket = gcs_emulator.create_bucket("audioset-fast")
    for p in paths:
        gcs_emulator.upload(p, f"{bucket}/eval/{os.path.basename(p)}")
    data = {}
    for mode in ("off", "on"):
        output = f"{bucket}/out-{mode}"
        result = build_subset.run(
            ["--split", f"eval={bucket}/eval/*", "--output", output, "--fast_read", mode, *BEAM],
            save_main_session=False,
        )
        if mode == "on":
            assert _counter(result, "shards_read_whole") == 2
        data[mode] = {n.removeprefix(output): gcs_emulator.read(n) for n in gcs_emulator.list(output)}
    assert data["off"] == data["on"] and len(data["on"]) == 10


# ---- gunshot_core.record_batch directly ----------------------------------------------------------


def test_parse_contexts_equals_the_record_by_record_decoder(segments):
    payloads = [fx.encode_segment(s, num_frames=1 + i % 12) for i, s in enumerate(segments[:300])]
    buffer = b"".join(records.frame_record(p) for p in payloads)
    framed = record_batch.split_framed(buffer)
    assert framed.payloads == payloads
    expected_offsets = np.cumsum([0] + [16 + len(p) for p in payloads[:-1]])
    np.testing.assert_array_equal(framed.offsets, expected_offsets)
    contexts = record_batch.parse_contexts(tf, framed.payloads)
    for i, payload in enumerate(payloads):
        context, num_frames = records.validate_record(payload)
        assert contexts.video_ids[i].decode() == context.video_id
        assert contexts.start_times[i].item() == context.start_time
        assert contexts.end_times[i].item() == context.end_time
        assert contexts.labels(i) == context.labels
        assert contexts.num_frames[i] == num_frames
    gunshot = labels_lib.default_tags()[0].indices
    hits = record_batch.rows_with_any(contexts, gunshot)
    assert hits.tolist() == [i for i in range(len(payloads)) if set(contexts.labels(i)) & gunshot]
    tags = labels_lib.default_tags()
    per_tag = record_batch.tag_hits(contexts, [t.indices for t in tags])
    expected = [[bool(set(contexts.labels(i)) & t.indices) for i in range(len(payloads))] for t in tags]
    assert per_tag.tolist() == expected and per_tag.any()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-3], "file ends inside a record"),
        (lambda b: b[:7], "file ends inside a record header"),
        (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "payload CRC mismatch"),
        (lambda b: bytes([b[0] ^ 1]) + b[1:], "length field CRC mismatch"),
    ],
)
def test_split_framed_rejects_damage(segments, damage, message):
    buffer = b"".join(records.frame_record(fx.encode_segment(s)) for s in segments[:3])
    with pytest.raises(record_batch.ShardAnomaly, match=message):
        record_batch.split_framed(damage(buffer))


def test_fast_read_auto_needs_size_or_a_loaded_tensorflow():
    assert subset_tag.use_fast_read("on", 0) and not subset_tag.use_fast_read("off", 1 << 40)
    assert subset_tag.use_fast_read("auto", subset_tag.FAST_READ_MIN_BYTES)
    # tensorflow is imported by this module, so auto is on for small inputs too.
    assert subset_tag.use_fast_read("auto", 0)


def test_read_record_at_rereads_exactly_or_fails_loudly(segments, tmp_path):
    import io

    payloads = [fx.encode_segment(s) for s in segments[:5]]
    buffer = b"".join(records.frame_record(p) for p in payloads)
    offsets = record_batch.split_framed(buffer).offsets.tolist()
    handle = io.BytesIO(buffer)
    assert [records.read_record_at(handle, o) for o in reversed(offsets)] == payloads[::-1]
    with pytest.raises(ValueError, match="length field CRC mismatch"):
        records.read_record_at(handle, offsets[2] + 1)
    damaged = bytearray(buffer)
    damaged[offsets[3] + 40] ^= 0xFF
    with pytest.raises(ValueError, match="payload truncated or CRC mismatch"):
        records.read_record_at(io.BytesIO(bytes(damaged)), offsets[3])
    with pytest.raises(ValueError, match="the file ends there"):
        records.read_record_at(handle, len(buffer))
