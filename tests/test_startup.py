"""gunshot_core.startup: imports with the garbage collector paused, frozen afterwards when asked."""

import gc

import pytest

from gunshot_core import startup


@pytest.fixture(autouse=True)
def _collector_restored():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_collector_is_paused_inside_and_restored_after():
    gc.enable()
    frozen = gc.get_freeze_count()  # earlier tests may have run commands, which freeze
    with startup.imports_without_gc():
        assert not gc.isenabled()
        kept = [[i] for i in range(1000)]  # noqa: F841
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # no freeze unless asked


def test_nested_blocks_leave_the_collector_to_the_outermost():
    gc.enable()
    with startup.imports_without_gc():
        with startup.imports_without_gc():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled():
    gc.disable()
    with startup.imports_without_gc(freeze=True):
        pass
    assert not gc.isenabled()


def test_freeze_takes_existing_objects_out_of_collections():
    gc.enable()
    gc.unfreeze()
    with startup.imports_without_gc(freeze=True):
        kept = [[i] for i in range(1000)]  # noqa: F841 - objects created inside the block
    assert gc.isenabled()
    assert gc.get_freeze_count() >= 1000


def test_collector_is_restored_when_an_import_fails():
    gc.enable()
    with pytest.raises(ModuleNotFoundError):
        with startup.imports_without_gc(freeze=True):
            import gunshot_core_no_such_module  # noqa: F401
    assert gc.isenabled()


def _fresh_python(code: str) -> str:
    """Runs `code` in a new interpreter (TensorFlow is already imported in the test process)."""
    import os
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    # tensorflow_transform sets TF_USE_LEGACY_KERAS=1 in the test process when imported (tf.keras is
    # then tf_keras): a new interpreter gets the environment a user's shell has.
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(PYTHONPATH=str(repo), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_tensorflow_leaves_keras_out_and_importable_later():
    out = _fresh_python(
        "import sys\n"
        "from gunshot_core import startup\n"
        "tf = startup.import_tensorflow()\n"
        "print(sorted(m for m in ('keras', 'keras.src.optimizers', 'sklearn') if m in sys.modules))\n"
        "print(tf.constant([1.0, 2.0]).numpy().sum())\n"
        "keras = startup.import_keras()\n"
        "print(type(sys.modules['keras.src.optimizers']).__name__, keras.optimizers.Adam.__name__)\n"
        "print(tf.keras.layers.Dense is keras.layers.Dense)\n"
    )
    assert out.splitlines() == ["[]", "3.0", "module Adam", "True"]


def test_import_tensorflow_and_import_keras_from_two_threads():
    """A head that imports Keras while a worker's loader thread imports TensorFlow gets all of Keras."""
    out = _fresh_python(
        "import threading\n"
        "from gunshot_core import startup\n"
        "results = {}\n"
        "def run(name, f):\n"
        "    try:\n"
        "        results[name] = f().__name__\n"
        "    except BaseException as e:\n"
        "        results[name] = repr(e)\n"
        "threads = [threading.Thread(target=run, args=('tf', startup.import_tensorflow)),\n"
        "           threading.Thread(target=run, args=('keras', startup.import_keras))]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "import keras\n"
        "print(results['tf'], results['keras'], keras.optimizers.SGD.__name__)\n"
    )
    assert out.split() == ["tensorflow", "keras", "SGD"]


def test_import_tensorflow_after_keras_is_the_plain_import():
    out = _fresh_python(
        "import sys\n"
        "import keras\n"
        "from gunshot_core import startup\n"
        "tf = startup.import_tensorflow()\n"
        "print(sys.modules['keras.src.optimizers'] is not None, tf.__name__)\n"
    )
    assert out.split() == ["True", "tensorflow"]


def test_exit_process_runs_exit_handlers_flushes_and_keeps_the_status(tmp_path):
    """A finished command leaves through exit_process: atexit work done, buffered output kept, status kept;
    the interpreter's own teardown (where C++ thread pools race at exit) is skipped."""
    import os
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys, weakref\n"
        "from gunshot_core import startup\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "class Kept: pass\n"
        "k = Kept()\n"
        "weakref.finalize(k, print, ' [finalizer ran]')  # as TemporaryDirectory cleans up\n"
        "sys.stdout.write('buffered, no newline')\n"
        "startup.exit_process(3)\n"
        "print('never')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newline [finalizer ran]\n"
    assert marker.read_text() == "yes"


@pytest.mark.parametrize(
    "flags, local",
    [
        ([], True),
        (["--runner=DirectRunner"], True),
        (["--runner=FnApiRunner", "--direct_running_mode=multi_threading"], True),
        (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], False),
        (["--runner=DataflowRunner"], False),
    ],
)
def test_tensorflow_is_imported_ahead_only_where_the_workers_are_this_process(flags, local):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.io import launch

    assert launch.runs_in_this_process(PipelineOptions(flags)) is local


def test_exit_process_under_a_profiler_is_the_ordinary_exit(tmp_path):
    """`python -m cProfile` (or pyinstrument, coverage) writes its results after the program returns."""
    import os
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    script = tmp_path / "command.py"
    script.write_text("from gunshot_core import startup\nstartup.exit_process(0)\n")
    stats = tmp_path / "profile.out"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(stats), str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert stats.stat().st_size > 0


def test_no_ipython_probe_answers_beams_notebook_check_without_importing_ipython():
    """Beam's is_in_ipython() inside the block: False, IPython not imported, and the block leaves
    sys.modules as it found it."""
    out = _fresh_python(
        "import sys\n"
        "from apache_beam.utils.interactive_utils import is_in_ipython\n"
        "from gunshot_core import startup\n"
        "with startup.no_ipython_probe():\n"
        "    print(is_in_ipython(), 'IPython' in sys.modules)\n"
        "print('IPython' in sys.modules)\n"
    )
    assert out.splitlines() == ["False True", "False"]


def test_no_ipython_probe_changes_nothing_where_ipython_is_imported():
    """In an IPython session (IPython already imported) the block leaves the module in place; outside
    the block `import IPython` works as before."""
    import importlib.util

    if importlib.util.find_spec("IPython") is None:
        pytest.skip("IPython is not installed (it is not a dependency of the project)")
    out = _fresh_python(
        "import sys\n"
        "from apache_beam.utils.interactive_utils import is_in_ipython\n"
        "from gunshot_core import startup\n"
        "with startup.no_ipython_probe():\n"
        "    pass\n"
        "import IPython\n"
        "with startup.no_ipython_probe():\n"
        "    print(sys.modules['IPython'] is IPython, is_in_ipython())\n"
        "print(sys.modules['IPython'] is IPython)\n"
    )
    assert out.splitlines() == ["True False", "True"]
