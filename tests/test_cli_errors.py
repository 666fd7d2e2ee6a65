"""Every `gunshot` subcommand meets a user error with one line, no traceback and exit status 2.

For each command in gunshot_core.cli.COMMANDS: a missing input, a mistyped flag and (for the commands
that load model files) missing model files. The commands run in this process through the dispatcher
(`gunshot_core.cli.main(argv)`, as the `gunshot` program calls it); two run as the real program in a
subprocess. A command added to COMMANDS without cases here fails `test_every_command_has_cases`.
"""

import os
import subprocess
import sys

import pytest

from gunshot_core import cli
from tests.conftest import REPO

EXAMPLE = str(REPO / "examples" / "pistol_shot.wav")
NOWHERE = "/nonexistent/gunshot-test"

# command -> (missing input, mistyped flag (typo, suggested flag), missing models or None)
CASES = {
    "score": (
        ["score", f"{NOWHERE}/missing.flac"],
        (["score", EXAMPLE, "--jsno"], "--jsno", "--json"),
        ["score", EXAMPLE, f"--checkpoint={NOWHERE}/vggish.ckpt"],
    ),
    "models": (
        ["models", "info", f"{NOWHERE}/head.h5"],
        (["models", "list", "--verfy"], "--verfy", "--verify"),
        ["models", "info", "vggish_model.ckpt"],  # with $GUNSHOT_VGGISH_CHECKPOINT pointing nowhere
    ),
    "subset": (
        ["subset", f"--input={NOWHERE}/*.tfrecord", "--output={out}"],
        (
            ["subset", f"--input={NOWHERE}/*.tfrecord", "--output={out}", "--postive_classes=Speech"],
            "--postive_classes",
            "--positive_classes",
        ),  # fmt: skip
        None,  # reads embedding records: no model files
    ),
    "batch": (
        ["batch", f"--input={NOWHERE}/missing.wav", "--output={out}"],
        (["batch", f"--input={EXAMPLE}", "--outptu={out}"], "--outptu", "--output"),
        ["batch", f"--input={EXAMPLE}", "--output={out}", f"--pca={NOWHERE}/pca.npz"],
    ),
    "report": (
        ["report", f"--scores={NOWHERE}", "--output={out}"],
        (["report", f"--scores={NOWHERE}", "--output={out}", "--tpo=3"], "--tpo", "--top"),
        None,  # reads tables and audio: no model files
    ),
    "search": (
        ["search", f"--embeddings={NOWHERE}", f"--query={EXAMPLE}", "--output={out}"],
        (["search", f"--embeddings={NOWHERE}", f"--qeury={EXAMPLE}", "--output={out}"], "--qeury", "--query"),
        None,  # a query that needs VGGish without model files is a failed query (exit 1), not a usage error
    ),
    "dataset": (
        ["dataset", f"--embeddings={NOWHERE}/*.tfrecord", f"--annotations={NOWHERE}.csv", "--output={out}"],
        (
            ["dataset", f"--audio={EXAMPLE}", "--annotations=a.csv", "--output={out}", "--postive=gunshot"],
            "--postive",
            "--positive",
        ),  # fmt: skip
        [
            "dataset",
            f"--audio={EXAMPLE}",
            f"--annotations={NOWHERE}.csv",
            "--output={out}",
            f"--checkpoint={NOWHERE}/vggish.ckpt",
        ],  # fmt: skip
    ),
    "transform": (
        ["transform", f"--train={NOWHERE}/*.tfrecord", "--output={out}"],
        (
            ["transform", f"--train={NOWHERE}/*.tfrecord", "--output={out}", "--frmaes=10"],
            "--frmaes",
            "--frames",
        ),
        None,  # reads records: no model files
    ),
    "train": (
        ["train", f"--transformed={NOWHERE}", "--output={out}"],
        (["train", f"--transfromed={NOWHERE}", "--output={out}"], "--transfromed", "--transformed"),
        None,  # reads transformed records: no model files
    ),
    "evaluate": (
        ["evaluate", f"--model={EXAMPLE}", f"--data={NOWHERE}/*.tfrecord", "--output={out}"],
        (["evaluate", f"--modle={NOWHERE}", f"--data={NOWHERE}", "--output={out}"], "--modle", "--model"),
        [
            "evaluate",
            f"--model={NOWHERE}/head.h5",
            f"--data={EXAMPLE}",
            f"--tags={EXAMPLE}",
            "--output={out}",
        ],
    ),
    "analyze": (
        ["analyze", f"--data={NOWHERE}/*.tfrecord", "--output={out}"],
        (["analyze", f"--data={NOWHERE}/*.tfrecord", "--output={out}", "--sampel=5"], "--sampel", "--sample"),
        None,  # reads records: no model files
    ),
    "evaluate-events": (
        ["evaluate-events", f"--scores=a={NOWHERE}", f"--annotations={NOWHERE}/*.txt", "--output={out}"],
        (
            [
                "evaluate-events",
                f"--scores=a={NOWHERE}",
                f"--annotations={NOWHERE}",
                "--output={out}",
                "--tolerance_secnods=1",
            ],
            "--tolerance_secnods",
            "--tolerance_seconds",
        ),  # fmt: skip
        None,  # reads scoring runs: no model files
    ),
    "review": (
        ["review", "sample", f"--scores={NOWHERE}", "--output={out}", "--size=5"],
        (["review", "sample", f"--scores={NOWHERE}", "--output={out}", "--szie=5"], "--szie", "--size"),
        None,  # reads scoring runs: no model files
    ),
    "calibrate": (
        ["calibrate", f"--verdicts={NOWHERE}", "--output={out}"],
        (
            ["calibrate", f"--verdicts={NOWHERE}", "--output={out}", "--target_precison=0.9"],
            "--target_precison",
            "--target_precision",
        ),
        None,  # reads verdicts and scoring runs: no model files
    ),
}

# commands whose errors name a sub-subcommand: `gunshot review sample: error: ...`
PROGRAM = {"review": "review sample"}


def test_every_command_has_cases():
    assert set(CASES) == set(cli.COMMANDS)


@pytest.fixture(autouse=True)
def _models_nowhere(monkeypatch, tmp_path):
    """Model lookups find nothing unless a case names a file: no installed models, no overrides."""
    monkeypatch.setenv("GUNSHOT_MODELS_DIR", str(tmp_path / "no-models"))
    for name in ("GUNSHOT_VGGISH_CHECKPOINT", "GUNSHOT_PCA_PARAMS", "GUNSHOT_HEAD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _own_logging_and_environment(monkeypatch):
    """The dispatcher configures logging and quiet-mode variables as for a program: undo it after."""
    import logging

    from gunshot_core import logs

    for name in (logs.QUIET_ENV, "TF_CPP_MIN_LOG_LEVEL"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:  # recorded as unset, so monkeypatch removes what the command sets
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
    names = ["", *logs.PROJECT_LOGGERS, *logs._LIBRARY_LOGGERS, *logs._LIBRARY_INFO_KEPT]
    levels = {name: logging.getLogger(name).level for name in names}
    handlers = list(logging.getLogger().handlers)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = handlers
    logs._remove_hooks()


def _run(argv, tmp_path, capsys):
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own exit (usage errors)
        code = e.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()], err


def _assert_one_line(name, code, lines, err):
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gunshot {PROGRAM.get(name, name)}: error: "), err


@pytest.mark.parametrize("name", list(CASES))
def test_missing_input_is_one_line(name, tmp_path, capsys):
    code, lines, err = _run(CASES[name][0], tmp_path, capsys)
    _assert_one_line(name, code, lines, err)
    assert not os.path.exists(tmp_path / "out" / "run.json")


@pytest.mark.parametrize("name", list(CASES))
def test_mistyped_flag_names_the_closest_one(name, tmp_path, capsys):
    argv, typo, meant = CASES[name][1]
    code, lines, err = _run(argv, tmp_path, capsys)
    assert code == 2 and "Traceback" not in err, err
    usage = f"usage: gunshot {PROGRAM.get(name, name)}"
    assert len(lines) == 2 and lines[0].startswith(usage) and len(lines[0]) < 200, err
    assert (
        lines[1]
        == f"gunshot {PROGRAM.get(name, name)}: error: unrecognized flag {typo}; did you mean {meant}?"
    ), err


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[2] is not None])
def test_missing_models_are_one_line(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GUNSHOT_VGGISH_CHECKPOINT", f"{NOWHERE}/vggish.ckpt")
    code, lines, err = _run(CASES[name][2], tmp_path, capsys)
    _assert_one_line(name, code, lines, err)
    assert NOWHERE in lines[0], err  # names the file it looked for


def test_top_level_help_lists_every_command_and_framepool(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in CASES) and "framepool" in out
    assert cli.main(["scroe"]) == 2
    assert "did you mean 'score'?" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["batch", "train"])
def test_help_names_the_gunshot_program(name, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: gunshot {name} ")


def test_verbose_adds_the_traceback(tmp_path, capsys):
    code, _, err = _run(CASES["batch"][0] + ["--verbose"], tmp_path, capsys)
    assert (
        code == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("gunshot batch: error:")
    )


def _program(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNSHOT_", "PYTHON"))}
    env.update(PYTHONPATH=str(REPO), GUNSHOT_MODELS_DIR=str(tmp_path / "no-models"))
    return subprocess.run(
        [sys.executable, "-m", "gunshot_core.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_batch_on_an_empty_folder_or_input_list_is_one_line(random_vggish, tmp_path, capsys):
    ckpt, pca = random_vggish
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("# nothing yet\n")
    models = [f"--checkpoint={ckpt}", f"--pca={pca}", "--output={out}"]
    for inputs, text in (
        ([f"--input={tmp_path / 'empty'}"], "no recordings to score: nothing matches"),
        ([f"--input_list={tmp_path / 'list.txt'}"], "lists no inputs"),
        ([f"--input_list={tmp_path / 'missing.txt'}"], "cannot be read"),
    ):
        code, lines, err = _run(["batch", *inputs, *models], tmp_path, capsys)
        _assert_one_line("batch", code, lines, err)
        assert text in lines[0], err
    assert not os.path.exists(tmp_path / "out")


def test_the_program_batch_with_a_missing_input_says_so(random_vggish, tmp_path):
    """At the default log level `gunshot batch --input missing.wav` used to print nothing and exit 1."""
    ckpt, pca = random_vggish
    args = [
        "batch",
        f"--input={tmp_path / 'missing.wav'}",
        "--output=o",
        f"--checkpoint={ckpt}",
        f"--pca={pca}",
    ]
    done = _program(args, tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("gunshot batch: error: no recordings to score: nothing matches"), done.stderr


def test_the_program_batch_without_models_and_with_a_missing_input(tmp_path):
    """The real program: missing model files found before Beam starts; then a missing input."""
    done = _program(["batch", f"--input={EXAMPLE}", f"--output={tmp_path / 'o'}"], tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("gunshot batch: error: vggish_model.ckpt not found"), done.stderr
    assert "gunshot models download" in lines[0]
    done = _program(["score", f"{NOWHERE}/missing.flac"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip() == f"gunshot score: error: no such file: {NOWHERE}/missing.flac (check the path)"
    )


def test_output_piped_into_a_reader_that_stops_early_gives_no_traceback(tmp_path):
    """`gunshot models info | head -2` printed a BrokenPipeError traceback once head had left."""
    env = dict(os.environ, PYTHONPATH=str(REPO), GUNSHOT_MODELS_DIR=str(tmp_path))
    reader_gone = subprocess.Popen(
        [sys.executable, "-m", "gunshot_core.cli", "models", "info", "head"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader_gone.stdout.close()  # before the program has written a line
    stderr = reader_gone.stderr.read().decode()
    reader_gone.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert reader_gone.returncode == 141, stderr


def test_score_with_a_missing_head_fails_before_the_models_load(tmp_path, capsys, monkeypatch):
    """`gunshot score --head typo/ clip.wav` loaded VGGish (seconds) before saying the head was missing."""
    from gunshot_core import score_cli

    def no_model_load(*args, **kwargs):
        raise AssertionError("the models were loaded")

    monkeypatch.setattr(score_cli, "Scorer", no_model_load)
    assert cli.main(["score", "--head", str(tmp_path / "heads" / "typo"), EXAMPLE]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gunshot score: error: --head ") and "no such file or folder" in err, err
    assert "gunshot train" in err and len(err.splitlines()) == 1, err
