"""Audio decoding: formats, subtypes, rates, channels, short/silent/clipped clips and bad files."""

import io

import numpy as np
import pytest
import soundfile

from gunshot_core import audio, features, resample
from gunshot_core.errors import AudioDecodeError
from gunshot_core.vggish import VGGish  # noqa: F401  (import check: no Beam in gunshot_core)

RATE = 44100


def tone(seconds, rate=RATE, channels=1, freq=440.0, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    mono = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels == 1:
        return mono
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


def write(path, data, rate=RATE, **kwargs):
    soundfile.write(str(path), data, rate, **kwargs)
    return str(path)


@pytest.mark.parametrize(
    "fmt,subtype,atol",
    [
        ("WAV", "PCM_U8", 1e-2),
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "PCM_32", 1e-6),
        ("WAV", "FLOAT", 0),
        ("WAV", "DOUBLE", 1e-7),
        ("FLAC", "PCM_16", 1e-4),
        ("OGG", "VORBIS", None),
        ("MP3", "MPEG_LAYER_III", None),
    ],
)
def test_formats_and_subtypes_decode_to_the_same_audio(tmp_path, fmt, subtype, atol):
    data = tone(2.0, rate=16000)
    ext = {"WAV": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}[fmt]
    path = write(tmp_path / f"x.{ext}", data, 16000, format=fmt, subtype=subtype)
    info = audio.probe(path)
    assert (info.format, info.subtype, info.channels, info.sample_rate) == (fmt, subtype, 1, 16000)
    waveform = audio.load_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    if atol is not None:
        np.testing.assert_allclose(waveform, data, atol=atol)
    else:  # lossy codecs: same length within codec padding, clearly the same tone
        assert abs(waveform.size - data.size) < 3000
        n = min(waveform.size, data.size) - 4000
        assert (
            np.corrcoef(waveform[2000:n], data[2000:n])[0, 1] > 0.9
            or abs(np.std(waveform) - np.std(data)) < 0.05
        )


def test_int16_scaling_is_the_reference_one(tmp_path):
    ints = np.array([-32768, -1, 0, 1, 16384, 32767], np.int16)
    path = write(tmp_path / "i.wav", ints, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(audio.load_audio(path), ints / np.float32(32768.0))


def test_stereo_is_averaged_before_resampling(tmp_path):
    stereo = tone(1.5, channels=2)
    path = write(tmp_path / "s.wav", stereo, subtype="FLOAT")
    expected = resample.resample(stereo.mean(axis=1), RATE, 16000)
    np.testing.assert_allclose(audio.load_audio(path), expected, atol=1e-6)
    assert audio.probe(path).channels == 2


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000, 96000, 12345])
@pytest.mark.parametrize("resampler", resample.RESAMPLERS)
def test_odd_rates_give_the_right_length_and_blocks_join_exactly(tmp_path, rate, resampler):
    data = tone(3.3, rate=rate, freq=300.0)
    path = write(tmp_path / "r.wav", data, rate, subtype="FLOAT")
    whole = resample.resample(data, rate, 16000, resampler)
    assert whole.size == int(data.size * 16000 / rate)
    blocks = list(audio.iter_waveform(path, resampler=resampler, block_seconds=0.7))
    assert len(blocks) > 3
    joined = np.concatenate(blocks)
    assert joined.size == whole.size
    np.testing.assert_allclose(joined, whole, atol=1e-5)


def test_short_clip_gives_no_examples(tmp_path):
    path = write(tmp_path / "short.wav", tone(0.3), subtype="PCM_16")
    waveform = audio.load_audio(path)
    assert waveform.size == int(0.3 * RATE) * 16000 // RATE
    assert features.waveform_to_examples(waveform).shape == (0, 96, 64)
    assert list(audio.iter_examples(path)) == []


def test_silence_and_clipping_are_finite(tmp_path):
    silent = write(tmp_path / "silent.wav", np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    examples = features.waveform_to_examples(audio.load_audio(silent))
    assert examples.shape == (2, 96, 64)
    np.testing.assert_allclose(examples, np.log(0.01), atol=1e-6)  # log(0 + LOG_OFFSET)
    clipped = np.clip(tone(2.0, rate=16000, amplitude=3.0), -1, 1)
    path = write(tmp_path / "clipped.wav", clipped, 16000, subtype="PCM_16")
    assert np.isfinite(features.waveform_to_examples(audio.load_audio(path))).all()


def test_file_objects_decode_like_paths(tmp_path):
    path = write(tmp_path / "f.flac", tone(1.2), format="FLAC")
    with open(path, "rb") as f:
        from_file = audio.load_audio(io.BytesIO(f.read()))
    np.testing.assert_array_equal(from_file, audio.load_audio(path))


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty"),
        (b"\x00\x01garbage bytes that are no audio" * 10, None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),  # truncated header
    ],
)
def test_bad_files_raise_audio_decode_error(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as error:
        audio.load_audio(str(path))
    assert str(path) in str(error.value)
    if reason:
        assert error.value.reason == reason
    assert error.value.reason in ("corrupt", "empty", "unsupported", "unreadable")


def test_missing_file_and_bad_resampler(tmp_path):
    with pytest.raises(AudioDecodeError, match="no such file") as error:
        audio.load_audio(str(tmp_path / "missing.wav"))
    assert error.value.reason == "unreadable"
    with pytest.raises(ValueError, match="resampler"):
        resample.resample(np.zeros(10, np.float32), 44100, 16000, "linear")


def test_truncated_wav_decodes_what_is_there(tmp_path):
    path = write(tmp_path / "t.wav", tone(3.0, rate=16000), 16000, subtype="PCM_16")
    raw = open(path, "rb").read()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: len(raw) // 2])
    waveform = audio.load_audio(str(cut))
    assert 0 < waveform.size <= 3 * 16000


@pytest.mark.parametrize("resampler", resample.RESAMPLERS)
def test_example_ranges_join_into_the_whole_file(tmp_path, resampler):
    """Stretches [0, 4), [4, 9), [9, end) decoded separately equal one whole-file decode."""
    rng = np.random.default_rng(3)
    data = (0.2 * rng.standard_normal((int(12.5 * RATE), 2))).astype(np.float32)
    path = write(tmp_path / "long.wav", data, subtype="FLOAT")
    whole = features.waveform_to_examples(audio.load_audio(path, resampler=resampler))
    parts = []
    for start, stop in ((0, 4), (4, 9), (9, None)):
        chunks = list(
            audio.iter_examples(
                path, resampler=resampler, chunk_seconds=2.0, start_example=start, stop_example=stop
            )
        )
        assert chunks[0][0] == start
        parts.extend(block for _, block in chunks)
    joined = np.concatenate(parts)
    assert joined.shape == whole.shape == (13, 96, 64)
    np.testing.assert_allclose(joined, whole, atol=1e-4)


def test_example_ranges_must_start_on_an_input_sample(tmp_path):
    path = write(tmp_path / "odd.wav", tone(3.0, rate=44056), 44056, subtype="PCM_16")
    assert not audio.example_boundaries_on_input_samples(44056)
    assert audio.example_boundaries_on_input_samples(44100) and audio.example_boundaries_on_input_samples(
        48000
    )
    with pytest.raises(ValueError, match="between input samples"):
        list(audio.iter_examples(path, start_example=1))


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_mix_down_is_the_mean_over_channels(tmp_path, channels):
    rng = np.random.default_rng(channels)
    data = (0.3 * rng.standard_normal((16000, channels))).astype(np.float32)
    path = write(tmp_path / "multi.wav", data, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(audio.load_audio(path), data.mean(axis=1, dtype=np.float32))


@pytest.mark.parametrize("multiple, stop", [(4, None), (32, None), (4, 11)])
def test_chunks_hold_multiples_of_chunk_multiple_and_join_into_the_whole(tmp_path, multiple, stop):
    """Every chunk but the last is a multiple of `chunk_multiple`; nothing is lost or repeated."""
    rng = np.random.default_rng(5)
    data = (0.2 * rng.standard_normal((int(20.3 * RATE), 2))).astype(np.float32)
    path = write(tmp_path / "long.wav", data, subtype="FLOAT")
    whole = features.waveform_to_examples(audio.load_audio(path))[:stop]
    chunks = list(audio.iter_examples(path, chunk_seconds=1.7, chunk_multiple=multiple, stop_example=stop))
    sizes = [block.shape[0] for _, block in chunks]
    assert all(size % multiple == 0 for size in sizes[:-1]) and 0 < sizes[-1]
    assert [start for start, _ in chunks] == list(np.cumsum([0] + sizes[:-1]))
    joined = np.concatenate([block for _, block in chunks])
    assert joined.shape == whole.shape
    np.testing.assert_allclose(joined, whole, atol=1e-4)
    with pytest.raises(ValueError, match="chunk_multiple"):
        list(audio.iter_examples(path, chunk_multiple=0))


def test_odd_rates_split_every_25_examples_and_join_into_the_whole(tmp_path):
    """At 44056 Hz only every 25th example starts on an input sample; stretches split there join up."""
    assert audio.example_start_step(44056) == 25 and audio.example_start_step(44100) == 1
    rng = np.random.default_rng(11)
    data = (0.2 * rng.standard_normal(int(52 * 44056))).astype(np.float32)
    path = write(tmp_path / "odd.wav", data, 44056, subtype="FLOAT")
    whole = features.waveform_to_examples(audio.load_audio(path))
    parts = [
        block
        for start, stop in ((0, 25), (25, 50), (50, None))
        for _, block in audio.iter_examples(path, chunk_seconds=7.0, start_example=start, stop_example=stop)
    ]
    joined = np.concatenate(parts)
    assert joined.shape == whole.shape == (54, 96, 64)
    np.testing.assert_allclose(joined, whole, atol=1e-4)
