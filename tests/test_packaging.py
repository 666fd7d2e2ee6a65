"""The package Dataflow workers install: sdist from setup.py -> wheel -> a clean virtualenv -> a pipeline run.

With `--setup_file`, Beam builds an sdist of this project and every Dataflow worker pip-installs it; the
container in deploy/ installs the same package. This test does the same locally:

1. copies the project's packaging inputs (no tests, no .git) into a temporary directory and builds the
   sdist there with `python setup.py sdist` (Beam's own command), then a wheel *from that sdist* with
   pip, so a file missing from the sdist (MANIFEST.in / package_data) fails the build or the run;
2. checks the wheel holds the bundled head, the AudioSet class files and the deploy/ templates;
3. installs the wheel into a fresh virtualenv created with `--system-site-packages`: the heavy pinned
   dependencies (TensorFlow, Beam, pyarrow, ...) are taken from this machine instead of being downloaded
   again (the suite runs offline and must stay fast); the project itself comes only from the wheel
   (`--ignore-installed`, and the run checks that `gunshot_core` and `pipelines` import from the venv,
   not from the checkout or its editable install);
4. runs `python -m pipelines.build_subset` with the venv's interpreter from a temporary working
   directory (so the checkout is not on sys.path), on the DirectRunner in multi_processing mode (so the
   worker processes import the installed package too), and compares its outputs byte for byte with an
   in-process run on the same input.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from tests import fixtures_audioset
from tests.conftest import AUDIOSET, REPO

pytestmark = pytest.mark.slow

PACKAGING_FILES = ("setup.py", "MANIFEST.in", "README.md", "LICENSE", "requirements.txt", "pyproject.toml")
PACKAGES = ("gunshot_core", "pipelines", "training", "deploy")
HEAD = "gunshot_core/data/heads/1LayerLSTM__Loss=BinCE_20Epochs_july02.h5"


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args, cwd, timeout=600):
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist path, wheel path) built from a copy of the packaging inputs."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    for name in PACKAGING_FILES:
        shutil.copy2(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = root / "dist"
    _run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", dist], cwd=src)
    (sdist,) = dist.glob("gunshot-spotter-*.tar.gz")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--wheel-dir",
            dist,
            sdist,
        ],
        cwd=root,
    )
    (wheel,) = dist.glob("gunshot_spotter-*.whl")
    return sdist, wheel


def test_sdist_and_wheel_hold_code_head_and_templates(built):
    sdist, wheel = built
    with tarfile.open(sdist) as tar:
        in_sdist = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
    for name in (
        HEAD,
        "gunshot_core/data/class_labels_indices.csv",
        "gunshot_core/data/ontology.json",
        "deploy/templates/build_subset.json",
        "deploy/templates/score.json",
        "deploy/templates/transform.json",
        "deploy/Dockerfile",
        "deploy/launch.sh",
        "deploy/flex/score_main.py",
        "pipelines/scoring/model_cache.py",
        "training/transform.py",
    ):
        assert name in in_sdist, f"sdist lacks {name}"
        assert name in in_wheel, f"wheel lacks {name}"
    assert "requirements.txt" in in_sdist  # setup.py reads the pins from it when pip builds the sdist
    assert not [n for n in in_wheel if n.startswith("tests/")]


def test_wheel_installs_into_a_clean_venv_and_runs_build_subset(built, tmp_path):
    from pipelines import build_subset

    _, wheel = built
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel],
        cwd=tmp_path,
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(
        [
            python,
            "-c",
            "import gunshot_core.heads as h, pipelines, deploy, os; "
            "print(h.__file__); print(pipelines.__file__); print(os.path.exists(h.DEFAULT_HEAD_PATH)); "
            "print(h.DEFAULT_HEAD_PATH)",
        ],
        cwd=work,
    ).split()
    site = str(venv / "lib")
    assert where[0].startswith(site) and where[1].startswith(site), where
    assert where[2] == "True" and where[3].startswith(site)
    assert str(REPO) not in " ".join(where)

    segments = fixtures_audioset.read_segments(AUDIOSET / "eval_segments.csv", limit=400)
    shards = fixtures_audioset.write_shards(tmp_path / "shards", segments, num_shards=3)
    pattern = str(pathlib.Path(shards[0]).parent / "*.tfrecord")
    flags = [f"--split=eval={pattern}", "--num_shards=2", "--seed=5"]
    _run(
        [
            python,
            "-m",
            "pipelines.build_subset",
            *flags,
            f"--output={tmp_path / 'venv_out'}",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ],
        cwd=work,
    )
    build_subset.run([*flags, f"--output={tmp_path / 'here_out'}"])
    produced = sorted(
        p.relative_to(tmp_path / "venv_out") for p in (tmp_path / "venv_out").rglob("*") if p.is_file()
    )
    expected = sorted(
        p.relative_to(tmp_path / "here_out") for p in (tmp_path / "here_out").rglob("*") if p.is_file()
    )
    assert produced == expected and pathlib.Path("stats.json") in produced
    for relative in produced:
        assert (tmp_path / "venv_out" / relative).read_bytes() == (
            tmp_path / "here_out" / relative
        ).read_bytes(), relative

    help_text = _run([venv / "bin" / "gunshot", "--help"], cwd=work)
    assert "score" in help_text
