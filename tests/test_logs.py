"""Quiet by default: the commands show the project's progress and summary, --verbose shows the rest.

The end-to-end tests run the real `gunshot batch` and `gunshot score` in a subprocess with the
random-weight VGGish and read their stderr.
"""

import argparse
import logging
import os
import re
import subprocess
import sys

import pytest

from gunshot_core import logs
from tests.conftest import BIRDNET_TESTS, REPO

# What a first run printed before gunshot_core.logs (TensorFlow/absl native lines, the CUDA probe of
# a machine without a GPU, matplotlib's font cache, Beam's INFO lines and one line per counter).
NATIVE_LINE = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]|\d{4}-\d\d-\d\d [\d:.]+: [IWEF] )", re.M
)
NOISE = (
    "absl::InitializeLog",
    "cuInit",
    "generated new fontManager",
    "Missing pipeline option (runner)",
    "counter score/files_matched",
    "Resource module is not available",
    "Discarding unparseable args",  # relayed from Beam's worker processes
    "No semi_persistent_directory found",
)


def _run(args, tmp_path, *, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP_", "PYTHON", "GUNSHOT_QUIET"))}
    env["PYTHONPATH"] = str(REPO)
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")  # a fresh font cache: matplotlib builds it, and says so
    done = subprocess.run(
        [sys.executable, "-m", "gunshot_core.cli", *map(str, args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def _noise(stderr: str) -> list[str]:
    found = [text for text in NOISE if text in stderr]
    return found + NATIVE_LINE.findall(stderr)


MULTI_PROCESS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags", [(), ("--verbose",), MULTI_PROCESS], ids=["default", "verbose", "multi_process_workers"]
)
def test_gunshot_batch_is_quiet_unless_verbose(random_vggish, tmp_path, flags):
    ckpt, pca = random_vggish
    done = _run(
        [
            "batch",
            f"--input={REPO / 'examples'}/*.wav",
            f"--output={tmp_path / 'out'}",
            f"--checkpoint={ckpt}",
            f"--pca={pca}",
            *flags,
        ],
        tmp_path,
    )
    lines = done.stderr.splitlines()
    print(f"gunshot batch {' '.join(flags)}: {len(lines)} stderr lines\n{done.stderr}")
    summary = [line for line in lines if "scored 2 recordings (0 failed" in line]
    assert len(summary) == 1, done.stderr
    if flags != MULTI_PROCESS:  # (the workers' own progress lines stay in the workers)
        assert "loading VGGish checkpoint" in done.stderr  # the project's progress stays
    if "--verbose" in flags:
        assert NATIVE_LINE.search(done.stderr), done.stderr  # TensorFlow's own lines
        # (matplotlib's "generated new fontManager" shows too where something imports matplotlib.)
        for text in ("absl::InitializeLog", "Missing pipeline option (runner)"):
            assert text in done.stderr, text
        assert "counter score/files_matched = 2" in done.stderr  # the project's details
    else:
        assert not _noise(done.stderr), done.stderr
        assert len(lines) <= 5, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("flags", [(), ("--verbose",)], ids=["default", "verbose"])
def test_gunshot_score_is_quiet_unless_verbose(random_vggish, tmp_path, flags):
    ckpt, pca = random_vggish
    wav = REPO / "examples" / "pistol_shot.wav"
    done = _run(["score", wav, f"--checkpoint={ckpt}", f"--pca={pca}", *flags], tmp_path)
    assert done.stdout.startswith(f"{wav}: score "), done.stdout
    if flags:
        assert NATIVE_LINE.search(done.stderr), done.stderr
    else:
        assert not _noise(done.stderr), done.stderr
        assert "models loaded in" in done.stderr


@pytest.mark.parametrize("flags", [(), ("--verbose",)], ids=["default", "verbose"])
@BIRDNET_TESTS[0]
@BIRDNET_TESTS[1]
def test_gunshot_score_with_birdnet_is_quiet_unless_verbose(tmp_path, flags):
    """The TFLite interpreter BirdNET runs in announces its XNNPACK delegate on stderr at load."""
    wav = REPO / "examples" / "pistol_shot.wav"
    done = _run(["score", "--embedding_model", "birdnet", wav, *flags], tmp_path)
    assert done.stdout.startswith(f"{wav}: score "), done.stdout
    assert ("XNNPACK delegate" in done.stderr) == bool(flags), done.stderr
    if not flags:
        assert not _noise(done.stderr), done.stderr
        assert "models loaded in" in done.stderr


def test_every_command_takes_the_logging_flags(capsys):
    from gunshot_core import score_cli
    from pipelines.scoring import pipeline
    from pipelines.subset import config
    from training import analyze, evaluate, train, transform

    parsers = [pipeline.build_parser, config.build_parser, score_cli.build_parser]
    for build in parsers:
        assert "--log_level" in build().format_help(), build
    for parse in (transform.parse_known_args, train.parse_args, evaluate.parse_args, analyze.parse_args):
        with pytest.raises(SystemExit):
            parse(["--help"])
        text = capsys.readouterr().out
        assert "--log_level" in text and "--verbose" in text, parse


def test_flags_from_argv_reads_only_the_logging_flags():
    assert logs.flags_from_argv(["--input", "x", "--verbose"]) == argparse.Namespace(
        verbose=True, log_level=None
    )
    assert logs.flags_from_argv(["-v", "a.wav"]).verbose  # `gunshot score -v FILE`
    assert not logs.flags_from_argv(["--verbose", "0", "--epochs", "3"]).verbose  # train's Keras level
    assert logs.flags_from_argv(["--log_level=debug"]).log_level == "DEBUG"
    assert logs.flags_from_argv(["--log_level", "LOUD"]).log_level is None  # the command rejects it
    assert logs.flags_from_argv(["--log_level"]) == argparse.Namespace(verbose=False, log_level=None)


def test_the_native_filter_drops_start_up_lines_and_keeps_everything_else():
    captured = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796400232.483552    7742 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796400232.642935    7742 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with flags.\n"
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
        "E0000 00:00:1796400241.577848    7742 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
        "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda\n"
        "E0000 00:00:1796400241.577848    7742 op_kernel.cc:1] real failure\n"
        "Traceback (most recent call last):\n"
        "ImportError: libcudnn.so.9: cannot open shared object file\n"
    )
    kept = logs._drop_native_noise(captured, drop_gpu_errors=True)
    assert kept.splitlines() == [
        "E0000 00:00:1796400241.577848    7742 op_kernel.cc:1] real failure",
        "Traceback (most recent call last):",
        "ImportError: libcudnn.so.9: cannot open shared object file",
    ]
    assert "cuInit" in logs._drop_native_noise(captured, drop_gpu_errors=False)


def test_quiet_filter_keeps_the_projects_lines_warnings_and_where_to_follow_a_dataflow_job():
    def record(name, level, message, pathname="/elsewhere/lib.py"):
        return logging.LogRecord(name, level, pathname, 1, message, None, None)

    keep = logs._QuietFilter().filter
    training_file = str(REPO / "training" / "train.py")
    apiclient = "apache_beam.runners.dataflow.internal.apiclient"
    assert keep(record("pipelines.score", logging.INFO, "scored 2 recordings"))
    assert keep(record("root", logging.INFO, "epoch 3", pathname=training_file))  # training logs on root
    assert keep(record(apiclient, logging.INFO, "To access the Dataflow monitoring console, please navigate"))
    assert not keep(record(apiclient, logging.INFO, "Create job: <Job ...>"))
    assert not keep(record("apache_beam.runners.direct", logging.INFO, "Missing pipeline option (runner)."))
    assert not keep(record("root", logging.INFO, "a library on the root logger"))
    assert not keep(record("root", logging.WARNING, "Resource module is not available for current platform"))
    assert keep(record("apache_beam.io", logging.WARNING, "a real warning"))


@pytest.mark.parametrize("module", ["training.transform", "training.analyze"])
def test_python_m_training_modules_are_quiet_from_their_first_import(module, tmp_path):
    """`python -m training.X` imports TensorFlow at module level, before its own `__main__` block."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP_", "PYTHON", "GUNSHOT_QUIET"))}
    env["PYTHONPATH"] = str(REPO)

    def stderr(*flags):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help", *flags],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return done.stderr

    assert _noise(stderr()) == []
    assert _noise(stderr("--verbose")) != []  # the same lines are there when asked for


def test_configure_if_run_as_module_acts_only_for_its_package(monkeypatch):
    calls = []
    monkeypatch.setattr(logs, "configure_logging", calls.append)
    for argv0, orig_argv in (
        ("-m", ["python", "-m", "pytest", "tests"]),
        ("-m", ["python", "-m", "trainingx.train"]),
        ("script.py", ["python", "script.py", "-m", "training.train"]),
    ):
        monkeypatch.setattr(sys, "argv", [argv0])
        monkeypatch.setattr(sys, "orig_argv", orig_argv)
        logs.configure_if_run_as_module("training")
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["-m"])
    monkeypatch.setattr(
        sys, "orig_argv", ["python", "-X", "importtime", "-m", "training.train", "--log_level", "debug"]
    )
    logs.configure_if_run_as_module("training")
    assert [vars(c) for c in calls] == [{"verbose": False, "log_level": "DEBUG"}]


@pytest.mark.parametrize("ending", ["sys.exit(2)", "startup.exit_process(2)"])
def test_lines_written_while_a_background_capture_is_open_reach_stderr_at_exit(ending):
    # A short job can end while a background thread still imports TensorFlow under filtered_stderr:
    # the job's last lines (its error, its summary) went into the capture and were lost.
    program = f"""
import logging, sys, threading
from gunshot_core import logs, startup
entered, never = threading.Event(), threading.Event()
def hold():
    with logs.filtered_stderr():
        entered.set()
        never.wait()
threading.Thread(target=hold, daemon=True).start()
entered.wait()
logging.basicConfig(level=logging.INFO, format="%(message)s")
logging.error("no training example was made (the error line)")
print("I0000 00:00:00.000000  1 cpu_feature_guard.cc:1] noise", file=sys.stderr)
print('{{"summary": 1}}')
{ending}
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 2
    assert done.stdout.strip() == '{"summary": 1}'
    assert done.stderr.splitlines() == ["no training example was made (the error line)"]
