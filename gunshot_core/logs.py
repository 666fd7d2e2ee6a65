"""Log output of the command-line entry points: quiet by default, everything with --verbose.

By default a command shows the project's own progress and summary (loggers `gunshot_core`,
`pipelines`, `training`, `benchmarks` and the root logger at INFO, in a short format) and real
warnings and errors from the libraries. TensorFlow's and absl's start-up lines, the CUDA `failed call to cuInit` of a
machine without a GPU, matplotlib's font cache notice, Beam's INFO lines and a few known spurious
library warnings are hidden. `--verbose` shows all of them (the libraries at INFO) and the
project's details at DEBUG (every Beam counter, every table file written); `--log_level LEVEL`
sets every logger to LEVEL (DEBUG: everything; WARNING: warnings and errors only, no progress).

Usage in a command (do both: the dispatcher configures before the command's module is imported,
the command's parser accepts and documents the flags):

    from gunshot_core import logs

    def build_parser():
        parser = argparse.ArgumentParser(...)
        ...
        logs.add_logging_flags(parser)          # -v/--verbose and --log_level, in a "logging" group
        return parser

    if __name__ == "__main__":                  # `python -m package.module`
        logs.configure_logging(logs.flags_from_argv(sys.argv[1:]))
        run()

`gunshot COMMAND` (gunshot_core/cli.py) calls `configure_logging(flags_from_argv(argv))` before it
imports the command's module, so a command reached through it needs only `add_logging_flags`.
A package whose modules import TensorFlow at module level calls `configure_if_run_as_module` in
its `__init__` (training does), so `python -m package.module` is quiet from the first line too.
Library functions (`run(argv)`, `main(argv)`) never configure logging themselves; tests and
notebooks keep their own logging set-up.

TensorFlow >= 2.19 writes its import-time lines through absl before `TF_CPP_MIN_LOG_LEVEL` takes
effect, so in quiet mode `configure_logging` also arranges that the first `import tensorflow`
(wherever it happens) runs with the process's stderr filtered: the known start-up lines (and the
cuInit error of the device probe run right after the import) are dropped, anything else is passed
through. If TensorFlow is already imported when `configure_logging` runs, only the later lines can
be quietened. Worker processes started by the command (Beam's multi-process DirectRunner) inherit
quiet mode through the GUNSHOT_QUIET_NATIVE_LOGS environment variable, which `gunshot_core`'s
import reads; relayed worker warnings that are known to be spurious are dropped too.

Error rows are the other half of readable output: build their text with
`gunshot_core.errors.describe(e)` (deterministic, no memory addresses or temporary paths) and name
the input in it.
"""

import argparse
import atexit
import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import threading

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PROJECT_LOGGERS = ("gunshot_core", "pipelines", "training", "benchmarks", "__main__")

# Library loggers that are chatty at INFO; quiet mode keeps them at WARNING.
_LIBRARY_LOGGERS = ("apache_beam", "tensorflow", "absl", "matplotlib", "PIL", "h5py", "urllib3", "numba")

# Library INFO lines a user needs even in quiet mode: where to follow a submitted Dataflow job.
_LIBRARY_INFO_KEPT = {
    "apache_beam.runners.dataflow.internal.apiclient": (
        "Submitted job:",
        "To access the Dataflow monitoring console",
    ),
}

# Known warnings that are not about the user's job (hidden unless --verbose/--log_level), also when
# a worker process's record is relayed by Beam ("Worker: severity: WARN ... message: ...").
_SPURIOUS_WARNINGS = (
    # Beam 2.77 on Linux: RunInference's memory probe when an optional import failed.
    "Resource module is not available for current platform",
    # Beam's workers re-parsing the launch flags (ours were checked by pipelines.options.split_args).
    "Discarding unparseable args",
    "No semi_persistent_directory found",
    # tf.Transform: advice about its own input format (TFXIO), once per analyze/transform step.
    "which will not provide optimal performance. Consider",
)
# Environment variable that carries quiet mode into worker processes (read in gunshot_core/__init__).
QUIET_ENV = "GUNSHOT_QUIET_NATIVE_LOGS"

# Native (C++) log lines of TensorFlow/XLA/absl written to fd 2 at import and device probe.
_NATIVE_RECORD = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"  # absl: I0000 00:00:1796400232.48 7742 port.cc:153]
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\])"  # tsl: 2025-09-17 14:44:05.157831: I x.cc:32]
)
_NATIVE_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^To enable the following instructions: .*rebuild TensorFlow"),  # cpu_feature_guard, 2nd line
    re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"),  # a TFLite interpreter's start
)
# Native ERROR lines that only say "no GPU here" (kept visible when a GPU may be in use: --verbose).
_NATIVE_NOISE_ERRORS = re.compile(
    r"failed call to cuInit|Unable to register cu(?:DNN|FFT|BLAS) factory|"
    r"could not retrieve CUDA device count|Could not find cuda drivers"
)

_HANDLER_MARK = "_gunshot_logs_handler"
_state_lock = threading.Lock()


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    """Adds `-v/--verbose` and `--log_level LEVEL` to a command's parser, in a "logging" group.

    A parser that already has its own `--verbose` (training.train: Keras progress 0|1|2) keeps it
    and gets only `--log_level`.
    """
    group = parser.add_argument_group("logging")
    taken = {s for action in parser._actions for s in action.option_strings}
    if "--verbose" not in taken:
        flags = ["-v", "--verbose"] if "-v" not in taken else ["--verbose"]
        group.add_argument(
            *flags,
            action="store_true",
            help="show every library's log lines (TensorFlow, absl, Beam, matplotlib, ...) at INFO and "
            "the project's details (Beam counters, files written) at DEBUG",
        )
    group.add_argument(
        "--log_level",
        type=str.upper,
        choices=LEVELS,
        default=None,
        help="log level of every logger (WARNING: no progress lines); default: the project's progress "
        "and summary, and only warnings and errors of the libraries",
    )


def flags_from_argv(argv) -> argparse.Namespace:
    """Reads `--verbose`/`-v` and `--log_level` out of a command line without touching the rest.

    For dispatchers that must configure logging before importing the command (and its TensorFlow).
    `--verbose 0|1|2` (training.train's Keras progress level) is not taken as verbose logging.

    Returns:
      Namespace(verbose: bool, log_level: str | None); an invalid level is left for the command's
      own parser to reject.
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("-v", "--verbose", nargs="?", const=True, default=False)
    pre.add_argument("--log_level", default=None)
    try:
        known, _ = pre.parse_known_args(list(argv))
    except SystemExit:  # e.g. `--log_level` without a value: the command's parser will say so
        return argparse.Namespace(verbose=False, log_level=None)
    verbose = known.verbose is True or (bool(known.verbose) and known.verbose not in ("0", "1", "2"))
    level = known.log_level.upper() if known.log_level and known.log_level.upper() in LEVELS else None
    return argparse.Namespace(verbose=verbose, log_level=level)


def configure_if_run_as_module(package: str) -> None:
    """Configures logging from the command line when this process is `python -m PACKAGE.MODULE ...`.

    For a package whose modules import TensorFlow at module level (`training`): called from the
    package's `__init__`, which Python imports before the module's own body, so quiet mode is in
    place before TensorFlow's first import. Any other process (tests, notebooks, `gunshot`, Beam's
    workers) is left alone.
    """
    argv = list(getattr(sys, "orig_argv", None) or ())
    if sys.argv[:1] != ["-m"] or "-m" not in argv:  # sys.argv[0] is "-m" while -m imports the module
        return
    at = argv.index("-m")
    if at + 1 < len(argv) and argv[at + 1].startswith(package + "."):
        configure_logging(flags_from_argv(argv[at + 2 :]))


class _Formatter(logging.Formatter):
    """`HH:MM:SS message` for INFO lines; level and logger name for everything else."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")
        self._detailed = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return super().format(record)
        return self._detailed.format(record)


# Folders of the project's packages: INFO lines logged from code in them are the project's own,
# also when that code logs on the root logger (training's modules do; so does some library code).
_PROJECT_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name) + os.sep
    for name in PROJECT_LOGGERS
    if name != "__main__"
)


class _QuietFilter(logging.Filter):
    """Quiet mode: INFO and below only from the project's code; known spurious warnings dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.INFO:
            if record.name in _LIBRARY_INFO_KEPT:
                return record.getMessage().startswith(_LIBRARY_INFO_KEPT[record.name])
            return record.name.split(".", 1)[0] in PROJECT_LOGGERS or (record.pathname or "").startswith(
                _PROJECT_DIRS
            )
        message = record.getMessage()
        return not any(text in message for text in _SPURIOUS_WARNINGS)


def configure_logging(args: argparse.Namespace | None = None) -> None:
    """Sets up logging for a command-line run from `--verbose`/`--log_level` (idempotent).

    Args:
      args: namespace with optional `verbose` (bool; ints from training.train's own flag are
        ignored) and `log_level` (one of LEVELS or None); None: the quiet default.
    """
    verbose = getattr(args, "verbose", False) is True
    level_name = getattr(args, "log_level", None) or ("INFO" if verbose else None)
    quiet = level_name is None
    level = logging.INFO if quiet else getattr(logging, level_name)
    project_level = logging.DEBUG if verbose and not getattr(args, "log_level", None) else level
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # set before TF is imported; the user's wins
        os.environ[QUIET_ENV] = "1"  # worker processes started from here quieten their TF import too
    else:
        os.environ.pop(QUIET_ENV, None)
    if level_name == "DEBUG":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    with _state_lock:
        root = logging.getLogger()
        handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
        if handler is None and not root.handlers:
            handler = logging.StreamHandler(sys.stderr)
            setattr(handler, _HANDLER_MARK, True)
            handler.setFormatter(_Formatter())
            root.addHandler(handler)
        if handler is not None:
            handler.filters = [f for f in handler.filters if not isinstance(f, _QuietFilter)]
            if quiet:
                handler.addFilter(_QuietFilter())
        root.setLevel(level)  # training's modules log progress on the root logger
        for name in PROJECT_LOGGERS:
            logging.getLogger(name).setLevel(project_level)
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING if quiet else level)
        for name in _LIBRARY_INFO_KEPT:
            logging.getLogger(name).setLevel(logging.INFO if quiet else logging.NOTSET)
        if "absl.logging" in sys.modules:
            sys.modules["absl.logging"].set_verbosity("warning" if quiet else level_name.lower())
        _install_tensorflow_hook(quiet)


class _Capture:
    """File descriptor 2 redirected into a temporary file; `release` restores it exactly once and
    passes on what was captured, minus the known noise."""

    def __init__(self, saved: int, capture, drop_gpu_errors: bool):
        self._saved = saved
        self._capture = capture
        self._drop_gpu_errors = drop_gpu_errors
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            _flush_stderr()
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._capture.seek(0)
            kept = _drop_native_noise(self._capture.read().decode("utf-8", "replace"), self._drop_gpu_errors)
            if kept:
                os.write(2, kept.encode("utf-8", "replace"))


# Captures in progress. A process that ends while one is open (a TensorFlow import in a background
# thread that outlives a short job) would otherwise exit with its last lines, the summary or the
# error, still in the temporary file: they are released at exit (atexit, which
# `startup.exit_process` runs too).
_open_captures: list = []


@atexit.register
def _release_open_captures() -> None:
    while _open_captures:
        try:
            _open_captures.pop().release()
        except (OSError, ValueError):  # a closed descriptor or file: nothing left to pass on
            pass


@contextlib.contextmanager
def filtered_stderr(drop_gpu_errors: bool = True):
    """Captures file descriptor 2 (native and Python writes) and passes on all but known noise.

    What is captured is passed on when the block ends, or at process exit if the block is still open
    then (e.g. in a daemon thread).

    Args:
      drop_gpu_errors: also drop the native "no CUDA device" errors (cuInit, factory registration).
    """
    try:
        _flush_stderr()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable file descriptor 2 (a detached process): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        state = _Capture(saved, capture, drop_gpu_errors)
        _open_captures.append(state)
        try:
            yield
        finally:
            state.release()
            if state in _open_captures:
                _open_captures.remove(state)


_native_lines_lock = threading.Lock()


@contextlib.contextmanager
def quiet_native_lines():
    """`filtered_stderr()` in quiet mode (the command's default, see QUIET_ENV), else a no-op.

    For native libraries that log at run time rather than at import, e.g. the TFLite interpreter
    that BirdNET runs in ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."). Blocks of
    several threads run one at a time: two overlapping captures would restore file descriptor 2 in
    the wrong order and leave it pointing at a closed capture.
    """
    if not os.environ.get(QUIET_ENV):
        yield
        return
    with _native_lines_lock, filtered_stderr():
        yield


def _flush_stderr() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()


def _drop_native_noise(text: str, drop_gpu_errors: bool) -> str:
    kept = []
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\n")
        if any(p.search(bare) for p in _NATIVE_NOISE):
            continue
        if _NATIVE_RECORD.match(bare):
            severity = bare[0] if bare[0] in "IWEF" else bare.split(": ", 1)[1][0]
            if severity in "IW":
                continue
            if severity == "E" and drop_gpu_errors and _NATIVE_NOISE_ERRORS.search(bare):
                continue
        kept.append(line)
    return "".join(kept)


class _QuietTensorflowLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` under `filtered_stderr`, then probes the devices."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self._loader.exec_module(module)
            try:  # the first device probe logs cuInit's error on machines without a GPU: do it here
                module.config.list_physical_devices("GPU")
            except Exception:  # a broken CUDA set-up shows up again where TF really needs the device
                pass

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _TensorflowImportHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        _remove_hooks()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietTensorflowLoader(spec.loader)
        return spec


def _remove_hooks() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TensorflowImportHook)]


def _install_tensorflow_hook(quiet: bool) -> None:
    _remove_hooks()
    if quiet and "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _TensorflowImportHook())


def quiet_tensorflow_import() -> None:
    """Filters the start-up lines of this process's first `import tensorflow` (see module docstring).

    For worker processes of a quiet command, which do not run `configure_logging` themselves.
    """
    _install_tensorflow_hook(True)
