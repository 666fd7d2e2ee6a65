"""AudioSet record encode/decode and the record-by-record TFRecord reader."""

import gzip
import io

import numpy as np
import pytest

from gunshot_core import records
from tests import fixtures_audioset as fx


def _embedding(n=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 128), dtype=np.uint8)


def test_encode_decode_round_trip():
    emb = _embedding(7)
    data = records.encode_sequence_example("abcdefghijk", 30.0, 40.0, [427, 0, 5], emb)
    context, decoded = records.decode_sequence_example(data)
    assert context == records.ClipContext("abcdefghijk", 30.0, 40.0, (427, 0, 5))
    assert decoded.dtype == np.uint8 and decoded.shape == (7, 128)
    np.testing.assert_array_equal(decoded, emb)
    assert records.decode_context(data) == context
    assert records.validate_record(data) == (context, 7)


def test_encoding_is_tensorflow_sequence_example():
    tf = pytest.importorskip("tensorflow")
    emb = _embedding(3)
    data = records.encode_sequence_example("vid", 1.5, 11.5, [1, 2], emb)
    context, lists = tf.io.parse_single_sequence_example(
        data,
        context_features={
            records.VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
            records.START_TIME: tf.io.FixedLenFeature([], tf.float32),
            records.END_TIME: tf.io.FixedLenFeature([], tf.float32),
            records.LABELS: tf.io.VarLenFeature(tf.int64),
        },
        sequence_features={records.EMBEDDING: tf.io.FixedLenSequenceFeature([], tf.string)},
    )
    assert context[records.VIDEO_ID].numpy() == b"vid"
    assert context[records.START_TIME].numpy() == 1.5
    assert list(context[records.LABELS].values.numpy()) == [1, 2]
    frames = tf.io.decode_raw(lists[records.EMBEDDING], tf.uint8).numpy()
    np.testing.assert_array_equal(frames, emb)
    # And TF's own message serialises to the same bytes.
    assert tf.train.SequenceExample.FromString(data).SerializeToString(deterministic=True) == data


def test_encode_rejects_wrong_embedding():
    with pytest.raises(ValueError, match=r"uint8 \[n, 128\].*float32 \[10, 128\]"):
        records.encode_sequence_example("v", 0, 10, [0], np.zeros((10, 128), np.float32))
    with pytest.raises(ValueError, match=r"\[10, 64\]"):
        records.encode_sequence_example("v", 0, 10, [0], np.zeros((10, 64), np.uint8))


@pytest.mark.parametrize("reason", sorted(fx.malformed_records()))
def test_malformed_records_have_reasons(reason):
    data = fx.malformed_records()[reason]
    with pytest.raises(records.RecordError) as info:
        records.validate_record(data)
    assert info.value.reason == reason


def test_clip_key_matches_csv_and_float32_starts():
    assert records.clip_key("abc", 30.0) == "abc:30000"
    assert records.clip_key("abc", float(np.float32(0.96 * 3))) == records.clip_key("abc", 2.88)


def _framed(payloads):
    buf = io.BytesIO()
    assert records.write_tfrecords(buf, payloads) == len(payloads)
    return buf.getvalue()


def test_framing_matches_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    payloads = [bytes([i]) * (i * 37) for i in range(20)]
    path = tmp_path / "x.tfrecord"
    path.write_bytes(_framed(payloads))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == payloads
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for p in payloads:
            writer.write(p)
    assert (tmp_path / "tf.tfrecord").read_bytes() == path.read_bytes()


def test_reader_reports_bad_crc_and_continues():
    payloads = [b"a" * 50, b"b" * 60, b"c" * 70]
    data = bytearray(_framed(payloads))
    data[16 + 50 + 12 + 3] ^= 0xFF  # a byte inside the second payload
    out = list(records.read_tfrecords(io.BytesIO(bytes(data))))
    assert [r.reason for r in out] == [None, "bad_data_crc", None]
    assert out[0].data == payloads[0] and out[2].data == payloads[2]
    assert [r.index for r in out] == [0, 1, 2]
    assert out[1].offset == 16 + 50


@pytest.mark.parametrize("cut, reason", [(16 + 50 + 5, "truncated"), (16 + 50 + 30, "truncated")])
def test_reader_stops_at_truncation(cut, reason):
    data = _framed([b"a" * 50, b"b" * 60])[:cut]
    out = list(records.read_tfrecords(io.BytesIO(data)))
    assert [r.reason for r in out] == [None, reason]
    assert out[1].index == 1 and out[1].offset == 66


def test_reader_stops_at_bad_length():
    data = _framed([b"a" * 50]) + b"\x05garbage-garbage-garbage"
    out = list(records.read_tfrecords(io.BytesIO(data)))
    assert [r.reason for r in out] == [None, "bad_length_crc"]


def test_reader_reports_broken_gzip_as_unreadable():
    compressed = gzip.compress(_framed([b"a" * 500, b"b" * 500]), mtime=0)
    broken = compressed[:20] + bytes(b ^ 0x55 for b in compressed[20:40]) + compressed[40:]
    out = list(records.read_tfrecords(gzip.GzipFile(fileobj=io.BytesIO(broken))))
    assert out[-1].reason in ("unreadable", "bad_length_crc", "bad_data_crc", "truncated")
    assert all(r.reason is None for r in out[:-1])


def test_empty_file_has_no_records():
    assert list(records.read_tfrecords(io.BytesIO(b""))) == []
