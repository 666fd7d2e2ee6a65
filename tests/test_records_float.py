"""Training records of float frames (BirdNET): writer, reader, TensorFlow compatibility, errors."""

import numpy as np
import pytest

from gunshot_core import embedding_models, records

BIRDNET = embedding_models.get("birdnet", hop_seconds=1.5)


def _frames(n=5, seed=0):
    return np.random.default_rng(seed).normal(0.0, 1.0, size=(n, 1024)).astype(np.float32)


def test_float_record_round_trip():
    frames = _frames()
    data = records.encode_embedding_record("siteA/rec00", 12.0, 19.0, [1], frames, BIRDNET)
    context, decoded = records.decode_sequence_example(data)
    assert context == records.ClipContext("siteA/rec00", 12.0, 19.0, (1,), "birdnet", 1.5)
    assert decoded.dtype == np.float32 and decoded.shape == (5, 1024)
    np.testing.assert_array_equal(decoded, frames)
    assert records.validate_record(data) == (context, 5)
    assert records.decode_context(data).embedding_model == "birdnet"
    assert data == records.encode_embedding_record("siteA/rec00", 12.0, 19.0, [1], frames, BIRDNET)


def test_vggish_frames_keep_the_audioset_format():
    emb = np.random.default_rng(1).integers(0, 256, size=(4, 128), dtype=np.uint8)
    vggish = embedding_models.get("vggish")
    data = records.encode_embedding_record("v", 0.0, 3.84, [0], emb, vggish)
    assert data == records.encode_sequence_example("v", 0.0, 3.84, [0], emb)
    context, decoded = records.decode_sequence_example(data)
    assert context.embedding_model == "vggish" and context.hop_seconds is None
    assert decoded.dtype == np.uint8


def test_float_record_is_a_tensorflow_sequence_example():
    tf = pytest.importorskip("tensorflow")
    frames = _frames(3)
    data = records.encode_embedding_record("v", 0.0, 5.0, [], frames, BIRDNET)
    context, lists = tf.io.parse_single_sequence_example(
        data,
        context_features={
            records.EMBEDDING_MODEL: tf.io.FixedLenFeature([], tf.string),
            records.EMBEDDING_HOP: tf.io.FixedLenFeature([], tf.float32),
        },
        sequence_features={records.EMBEDDING: tf.io.FixedLenSequenceFeature([1024], tf.float32)},
    )
    assert context[records.EMBEDDING_MODEL].numpy() == b"birdnet"
    assert context[records.EMBEDDING_HOP].numpy() == 1.5
    np.testing.assert_array_equal(lists[records.EMBEDDING].numpy(), frames)


def test_float_record_errors():
    with pytest.raises(ValueError, match=r"float32 \[n, 1024\].*uint8"):
        records.encode_embedding_record("v", 0, 3, [], np.zeros((2, 1024), np.uint8), BIRDNET)
    good = records.encode_embedding_record("v", 0, 3, [], _frames(2), BIRDNET)
    example = records.parse_record(good)
    example.feature_lists.feature_list[records.EMBEDDING].feature[1].float_list.value.pop()
    with pytest.raises(records.RecordError) as info:
        records.validate_record(example.SerializeToString())
    assert info.value.reason == "bad_embedding_width"
    example = records.parse_record(good)
    example.context.feature[records.EMBEDDING_MODEL].bytes_list.value[0] = b"yamnet"
    with pytest.raises(records.RecordError, match="unknown embedding model 'yamnet'") as info:
        records.decode_sequence_example(example.SerializeToString())
    assert info.value.reason == "unknown_embedding_model"
