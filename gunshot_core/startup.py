"""Start-up and exit costs of the commands: large imports without cyclic garbage collection.

Importing TensorFlow and Apache Beam creates ~600,000 Python objects that live until the process
exits. While they are being created, Python's cyclic garbage collector runs over all of them again
and again (8 full collections, and many young ones) and frees almost nothing: ~1.5 s of the ~5 s of
CPU the two imports take on this project's 2-core machines. When the interpreter exits it collects
them all once more, another 1-3 s between the last output line and the shell prompt.

`imports_without_gc()` pauses the collector for a block of imports and can then move everything that
exists out of its way (`gc.freeze()`); `exit_process()` ends a finished command without the
interpreter's teardown (neither that last collection nor the C++ libraries' exit races).
Reference counting is unaffected: objects that are not part of a reference cycle are freed as always.

`import_tensorflow()` is how the VGGish code paths (scoring workers, `gunshot score`, the dataset and
search jobs) import TensorFlow. TensorFlow's `__init__` ends with an eager
`import keras.src.optimizers`, which loads all of Keras 3 and, through its scikit-learn wrapper,
scikit-learn and SciPy's statistics: ~1 s of the ~2.7 s import on this project's machines, on the
critical path of every scoring worker, for a library the VGGish forward pass never touches.
`import_tensorflow()` skips that one eager import (TensorFlow guards it with `except ImportError`);
Keras still imports normally later (`import_keras()`, or any `import keras` once TensorFlow is in),
and `tf.keras` is still the lazy alias it always is. `import_keras()` shares the lock, so a head
loaded in another thread never sees Keras half-hidden. Training imports TensorFlow plainly.
"""

import atexit
import contextlib
import gc
import os
import sys
import threading
from typing import NoReturn


@contextlib.contextmanager
def imports_without_gc(*, freeze: bool = False):
    """Runs a block of large imports with the cyclic garbage collector paused.

    Args:
      freeze: afterwards, exempt every object that exists from future collections (`gc.freeze()`):
        right for the long-lived modules a command or a worker imports once; any cyclic garbage that
        exists at that moment is kept until exit, so use it where little else is going on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:  # nested blocks leave the collector to the outermost one
            gc.enable()


def exit_process(status: int = 0) -> NoReturn:
    """Ends the process of a command that has finished, without the interpreter's teardown.

    Call it as the last step of a command run as a program, after its outputs are written and closed.
    It runs what was registered with `atexit` (logging's flush, multiprocessing's children, library
    finalizers), flushes stdout and stderr, and leaves with `os._exit(status)`. Skipped are the final
    garbage collection over the ~600,000 objects of TensorFlow and Beam (1-3 s) and the destruction of
    C++ libraries' static thread pools, which races with their own threads: a few percent of finished
    runs used to end in `terminate called without an active exception` (exit status 134) after their
    last line, although every output was complete (a known teardown race of Arrow's thread pools at
    interpreter exit).

    Under a profiler or tracer (`python -m cProfile`, pyinstrument, a debugger, coverage), which
    writes its results when the program returns, it raises SystemExit(status) instead: the ordinary
    exit.

    Args:
      status: the exit status.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(status)
    try:
        atexit._run_exitfuncs()  # what the interpreter would run first at exit
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream must not change the status
                pass
        os._exit(status)


#: The module TensorFlow's __init__ imports eagerly "so that optimizers register with SavedModel";
#: a None entry in sys.modules makes that import raise ModuleNotFoundError, which TensorFlow catches.
_KERAS_EAGER_MODULE = "keras.src.optimizers"
_IMPORT_LOCK = threading.RLock()


def import_tensorflow(*, freeze: bool = False):
    """Imports TensorFlow for inference, without the eager Keras import of its `__init__`.

    Safe from any thread: concurrent callers, and `import_keras()`, wait for the one import. Once
    TensorFlow is in, this is a dictionary lookup.

    Args:
      freeze: see `imports_without_gc` (for the long-lived worker processes that import it once).
    Returns:
      the `tensorflow` module.
    """
    module = sys.modules.get("tensorflow")
    if module is not None and not _initializing(module):
        return module
    with _IMPORT_LOCK, imports_without_gc(freeze=freeze):
        with _blocked_import(_KERAS_EAGER_MODULE, block="keras" not in sys.modules):
            import tensorflow
    return tensorflow


@contextlib.contextmanager
def _blocked_import(name: str, block: bool = True):
    """A block in which `import name` raises ImportError at once (`sys.modules[name] = None`), unless
    the module is already imported or `block` is false; the entry is removed afterwards if it is
    still the block's, so the module imports normally later."""
    skip = block and name not in sys.modules
    if skip:
        sys.modules[name] = None
    try:
        yield
    finally:
        if skip and sys.modules.get(name, 0) is None:
            del sys.modules[name]


#: What `import openvino` imports last, guarded by `except ImportError`: the model-conversion API
#: (`openvino.convert_model`) with its command-line parser and telemetry client.
_OPENVINO_CONVERTER = "openvino.tools.ovc"


def import_openvino():
    """Imports OpenVINO for inference, without its model-conversion API (the int8 VGGish runtime).

    `openvino/__init__.py` ends with `from openvino.tools.ovc import convert_model` inside
    `except ImportError`: the converter, its argument parser and a telemetry client, ~0.15-0.4 s of
    every int8 process's start-up for a function inference never calls. That one import is skipped;
    `openvino.convert_model` is then imported on first use (a module `__getattr__`), and
    `import openvino.tools.ovc` works as always.

    Returns:
      the `openvino` module.
    """
    module = sys.modules.get("openvino")
    if module is not None and not _initializing(module):
        return module
    with _IMPORT_LOCK:
        with _blocked_import(_OPENVINO_CONVERTER):
            import openvino
        if not hasattr(openvino, "convert_model") and "__getattr__" not in vars(openvino):
            openvino.__getattr__ = _openvino_convert_model
    return openvino


def _openvino_convert_model(name: str):
    if name != "convert_model":
        raise AttributeError(f"module 'openvino' has no attribute {name!r}")
    from openvino.tools.ovc import convert_model

    return convert_model


@contextlib.contextmanager
def no_ipython_probe():
    """A block in which `import IPython` fails at once, unless IPython is already imported.

    Apache Beam asks `is_in_ipython()` for every transform applied and again when a pipeline runs;
    its first call imports IPython (~0.1-0.25 s of every command's start-up here) only to learn that
    no IPython kernel runs. A process in which IPython has not been imported is not inside one, so the
    answer is the same without the import (Beam catches the ImportError). In an IPython session or
    notebook IPython is already in `sys.modules` and nothing changes.
    """
    with _blocked_import("IPython"):
        yield


def import_keras():
    """Imports Keras 3 (after any `import_tensorflow()` in progress in another thread); returns it."""
    module = sys.modules.get("keras")
    if module is not None and not _initializing(module):
        return module
    with _IMPORT_LOCK:
        import keras
    return keras


def _initializing(module) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))
