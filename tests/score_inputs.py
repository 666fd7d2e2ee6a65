"""Builders of scoring-pipeline test inputs: broken files, archives, embedding TFRecords, long tones."""

import io
import os
import pathlib
import shutil
import tarfile
import zipfile

import numpy as np
import soundfile

from gunshot_core import records
from tests.conftest import GOLDEN, SEED_WAVS

GOLDEN_WAVS = ("pistol_shot", "ultimate_gunshot", "spanishclass", "footsteps_shuffle")


def tone(seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """float32 [n, channels]: a chirp with bursts of noise, so embeddings vary along the recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * (300 + 40 * t) * t)
    bursts = (np.sin(2 * np.pi * 0.13 * t) > 0.9) * rng.standard_normal(t.size) * 0.2
    mono = (signal + bursts).astype(np.float32)
    return np.stack([mono * (1.0 - 0.1 * c) for c in range(channels)], axis=1)


def write_wav(path, seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0, **kwargs) -> str:
    soundfile.write(str(path), tone(seconds, rate, channels, seed), rate, subtype="PCM_16", **kwargs)
    return str(path)


def broken_files(directory: pathlib.Path) -> dict[str, str]:
    """{case: path} of bad and odd inputs, each of which must give exactly one recordings row."""
    directory.mkdir(parents=True, exist_ok=True)
    cases = {}
    good = (SEED_WAVS / "pistol_shot.wav").read_bytes()
    cases["truncated"] = str(directory / "truncated.wav")
    pathlib.Path(cases["truncated"]).write_bytes(good[: len(good) // 3])  # header promises 10 s
    cases["zero_length"] = str(directory / "zero_length.wav")
    pathlib.Path(cases["zero_length"]).write_bytes(b"")
    cases["random_bytes"] = str(directory / "random_bytes.wav")
    pathlib.Path(cases["random_bytes"]).write_bytes(np.random.default_rng(1).bytes(50_000))
    cases["wrong_extension"] = str(directory / "notes.flac")  # text named as audio
    pathlib.Path(cases["wrong_extension"]).write_text("recorder log\n" * 100)
    cases["short_0p3s"] = write_wav(directory / "short_0p3s.wav", 0.3, 22050, 1)
    cases["five_minutes"] = write_wav(directory / "five_minutes.flac", 300.0, 44100, 2, format="FLAC")
    cases["ogg"] = str(directory / "three_seconds.ogg")
    pathlib.Path(cases["ogg"]).write_bytes(encoded(3.0, "OGG", 48000, 2))
    cases["mp3"] = str(directory / "three_seconds.mp3")
    pathlib.Path(cases["mp3"]).write_bytes(encoded(3.0, "MP3", 22050, 1))
    return cases


def encoded(seconds: float, fmt: str, rate: int = 44100, channels: int = 2) -> bytes:
    """A recording encoded in memory as OGG (Vorbis) or MP3."""
    buffer = io.BytesIO()
    subtype = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    soundfile.write(buffer, tone(seconds, rate, channels, seed=3), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def make_zip(path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def make_tar_gz(path, members: dict[str, bytes], mode: str = "w:gz") -> str:
    """A tar archive of `members` (gzip-compressed unless `mode` says otherwise, e.g. "w")."""
    with tarfile.open(path, mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return str(path)


def golden_tfrecord(path, names=GOLDEN_WAVS, corrupt_tail: bool = False) -> str:
    """A TFRecord of the golden postprocessed frames, one SequenceExample per clip (start 0, end 10)."""
    payloads = []
    for i, name in enumerate(names):
        frames = np.load(GOLDEN / f"{name}.npz")["postprocessed"]
        payloads.append(records.encode_sequence_example(name, 10.0 * i, 10.0 * i + 10.0, [0], frames))
    payloads.append(b"not a sequence example")
    with open(path, "wb") as f:
        records.write_tfrecords(f, payloads)
        if corrupt_tail:
            f.write(b"\x07" * 9)
    return str(path)


def copy_as(src, directory: pathlib.Path, name: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return shutil.copyfile(src, os.path.join(directory, name))
