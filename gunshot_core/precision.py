"""How an embedding network runs: numeric precision (fp32, bf16, int8), its runtime, and `auto`.

Precision is a property of how an embedding model runs, not of one model: this module knows the
choices, which CPU runs which natively, the runtimes, the deterministic int8 calibration set and the
cache of built (quantised) models. The VGGish specifics (its graph) live in `gunshot_core.vggish`.

| precision | runtime | what runs |
| --- | --- | --- |
| fp32 | TensorFlow | today's float32 graph (the default; golden parity) |
| bf16 | OpenVINO (TensorFlow/oneDNN without it) | every layer in bfloat16 except the last (fc2), which stays float32 |
| int8 | OpenVINO + NNCF | post-training static int8 (global min-max ranges), last layer float32 |

OpenVINO runs bf16 where it is installed (the 'precision' extra) and the CPU has native bfloat16: as
fast as TensorFlow's bf16 for the network, and a process that runs it needs no TensorFlow import
(~2 s less start-up per process).

`auto` picks the fastest precision the CPU runs natively (see `auto_precision`). docs/precision.md
has the measured speeds and accuracy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable

import numpy as np

from gunshot_core.errors import GunshotError

log = logging.getLogger(__name__)

FP32, BF16, INT8, AUTO = "fp32", "bf16", "int8", "auto"
PRECISIONS = (FP32, BF16, INT8)
CHOICES = PRECISIONS + (AUTO,)
DEFAULT_PRECISION = FP32
DOCS = "docs/precision.md"

#: /proc/cpuinfo flags that make a precision native: bf16 dot products (AVX-512 BF16 or AMX), int8
#: dot products (VNNI in AVX-512 or AVX, or AMX).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})

#: Python packages of the int8 runtime (`pip install gunshot-spotter[precision]`).
INT8_PACKAGES = ("openvino", "nncf")
#: Python package of the bf16 runtime where installed (else bf16 runs on TensorFlow).
BF16_PACKAGE = "openvino"


class PrecisionError(GunshotError):
    """A precision that cannot run here (unknown name, runtime not installed)."""


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in `path` (empty where there is no such file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def auto_precision(flags: Iterable[str] | None = None) -> str:
    """The fastest precision this CPU runs natively.

    int8 where the CPU has int8 dot products (VNNI/AMX) and the int8 runtime is installed: measured
    3.5-4x fp32 for the network, against ~1.9x for bf16, so it wins wherever both run. Else bf16
    where the CPU has BF16/AMX. Else fp32 (on an AVX2-only CPU neither is native: bf16 is emulated
    and slower, and int8 gains far less).

    Args:
      flags: CPU flags (default: read /proc/cpuinfo).
    """
    flags = cpu_flags() if flags is None else frozenset(flags)
    if flags & INT8_FLAGS and runtime_problem(INT8) is None:
        return INT8
    if flags & BF16_FLAGS and runtime_problem(BF16, flags) is None:
        return BF16
    return FP32


def resolve(choice: str | None, flags: Iterable[str] | None = None) -> str:
    """`choice` (fp32|bf16|int8|auto, None: the default) as a concrete precision, runtime checked.

    Raises:
      PrecisionError: unknown name, or its runtime is not installed (the message says how to install).
    """
    choice = (choice or DEFAULT_PRECISION).lower()
    if choice not in CHOICES:
        raise PrecisionError(f"unknown precision {choice!r}: choose one of {', '.join(CHOICES)}")
    chosen = auto_precision(flags) if choice == AUTO else choice
    problem = runtime_problem(chosen, flags)
    if problem:
        raise PrecisionError(problem)
    if choice == AUTO:
        log.info("--precision auto: %s on this CPU", chosen)
    return chosen


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


#: oneDNN limits (ONEDNN_MAX_CPU_ISA) below AVX-512: no bfloat16 convolutions at all.
_NO_BF16_ISAS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2"})


def runtime_problem(precision: str, flags: Iterable[str] | None = None) -> str | None:
    """Why `precision` cannot run in this environment (None when it can).

    bf16 needs oneDNN's bfloat16 kernels, which need AVX-512 (native with AVX512_BF16/AMX, emulated
    with AVX512BW); without them TensorFlow's bfloat16 convolution fails on every batch.

    Args:
      flags: CPU flags (default: read /proc/cpuinfo).
    """
    if precision == BF16:
        flags = cpu_flags() if flags is None else frozenset(flags)
        limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
        if limit in _NO_BF16_ISAS or not flags & (BF16_FLAGS | {"avx512bw"}):
            where = f"oneDNN is limited to {limit}" if limit in _NO_BF16_ISAS else "this CPU has no AVX-512"
            return (
                f"--precision bf16 needs AVX-512 bfloat16 kernels and {where}: use --precision fp32 or int8"
            )
    if precision == INT8:
        missing = [p for p in INT8_PACKAGES if _version(p) is None]
        if missing:
            return (
                f"--precision int8 needs {' and '.join(missing)}: "
                "pip install 'gunshot-spotter[precision]' (or -r requirements-precision.txt), "
                "or use --precision fp32|bf16"
            )
    return None


def bf16_on_openvino(flags: Iterable[str] | None = None) -> bool:
    """Whether bf16 runs on OpenVINO here: installed, and the CPU has native bf16 dot products
    (AVX512_BF16/AMX; OpenVINO would otherwise compute float32 under a bf16 label). Else bf16 runs
    on TensorFlow (oneDNN; emulated on AVX-512 CPUs without BF16).

    Args:
      flags: CPU flags (default: read /proc/cpuinfo).
    """
    flags = cpu_flags() if flags is None else frozenset(flags)
    return bool(flags & BF16_FLAGS) and _version(BF16_PACKAGE) is not None


def uses_tensorflow(precision: str) -> bool:
    """Whether the embedding network runs on TensorFlow at `precision` (fp32 always; bf16 without
    OpenVINO); processes that run on OpenVINO skip the TensorFlow import (~2 s of CPU)."""
    return precision == FP32 or (precision == BF16 and not bf16_on_openvino())


def embedding_runtime(precision: str) -> str:
    """What computes the embeddings at `precision`, with versions, e.g. 'openvino 2026.4.1 + nncf 3.4.0'.

    Recorded in tables and run.json next to `precision`.
    """
    if precision == INT8:
        return f"openvino {_version('openvino')} + nncf {_version('nncf')}"
    if precision == BF16 and bf16_on_openvino():
        return f"openvino {_version('openvino')}"
    return f"tensorflow {_version('tensorflow')}"


def add_precision_argument(
    parser, default: str | None = DEFAULT_PRECISION, default_help: str = "the embeddings table's precision"
) -> None:
    """--precision fp32|bf16|int8|auto (shared by every command that embeds audio).

    Args:
      default: the default choice; None: the command decides (`gunshot search`: the table's).
      default_help: what the help says the default is when `default` is None.
    """
    parser.add_argument(
        "--precision",
        choices=CHOICES,
        default=default,
        help="numeric precision of the embedding network: fp32 (reference bits), bf16 (~1.9x on "
        "CPUs with AVX512_BF16/AMX), int8 (OpenVINO, ~3.5x on CPUs with VNNI/AMX; needs the "
        "'precision' extra), auto (the fastest this CPU runs natively); scores move by < 0.02. "
        f"See {DOCS} (default {default or default_help})",
    )


# --- int8 calibration ------------------------------------------------------------------------------------

#: Seed of the synthetic calibration audio. Changing it (or the recipe) changes CALIBRATION hashes
#: and so every cached int8 model.
CALIBRATION_SEED = 20_2612


def calibration_waveforms(seconds: float = 8.0, sample_rate: int = 16000) -> list[np.ndarray]:
    """Diverse deterministic synthetic audio for int8 calibration: float32 mono waveforms.

    Silence, near-silence, white/pink/brown noise at several levels, pure tones (low, mid, high,
    full scale), chirps, impulse trains (shot-like clicks with decaying tails), clipped square waves
    and mixtures, so the activation ranges cover quiet and loud, tonal and broadband inputs. The
    ranges are global minima/maxima over all of them (see `quantize_openvino`).

    Returns:
      list of float32 [seconds * sample_rate] arrays in [-1, 1].
    """
    rng = np.random.default_rng(CALIBRATION_SEED)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    freqs[0] = freqs[1]
    pink = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    brown = np.fft.irfft(spectrum / freqs, n)

    def norm(x, peak):
        return x / np.max(np.abs(x)) * peak

    clicks = np.zeros(n)
    for start in rng.integers(0, n - 4000, 12):
        tail = np.exp(-np.arange(4000) / rng.uniform(100, 1500)) * rng.standard_normal(4000)
        clicks[start : start + 4000] += tail * rng.uniform(0.2, 1.0)
    chirp = np.sin(2 * np.pi * (50 * t + (7500 - 50) / (2 * seconds) * t**2))
    waves = [
        np.zeros(n),
        norm(white, 1e-4),
        norm(white, 0.05),
        norm(white, 0.9),
        norm(pink, 0.3),
        norm(brown, 0.8),
        0.5 * np.sin(2 * np.pi * 100 * t),
        0.99 * np.sin(2 * np.pi * 1000 * t),
        0.3 * np.sin(2 * np.pi * 6000 * t),
        0.7 * chirp,
        np.clip(norm(clicks, 1.0), -1, 1),
        np.clip(3 * np.sign(np.sin(2 * np.pi * 440 * t)), -1, 1) * 0.6,
        norm(clicks, 0.9) + norm(pink, 0.1) + 0.05 * np.sin(2 * np.pi * 2500 * t),
        norm(rng.standard_normal(n) * (np.sin(2 * np.pi * 3 * t) > 0), 0.5),  # gated noise bursts
    ]
    return [np.clip(w, -1, 1).astype(np.float32) for w in waves]


def calibration_examples() -> np.ndarray:
    """The fixed int8 calibration set: log-mel examples of `calibration_waveforms`.

    Returns:
      float32 [n, 96, 64] (n = 14 clips x 8 examples = 112), the same bits on every machine that
      computes the same log-mel features.
    """
    from gunshot_core import features, params

    examples = [features.waveform_to_examples(w, params.SAMPLE_RATE) for w in calibration_waveforms()]
    return np.concatenate(examples).astype(np.float32)


def calibration_sha256() -> str:
    """sha256 of `calibration_examples()` (`array_sha256`), part of every int8 cache key.

    Computing the examples costs 0.2-0.8 s of CPU, which every int8 process would pay for its cache
    key alone: the hash is remembered in the cache (`calibration-<fingerprint>.json`) under a
    fingerprint of everything the examples are made from (the seed, the source files of this module
    and of the log-mel frontend, the NumPy and SciPy versions), so a change to any of them computes
    it again. Building a model checks the remembered hash against the examples (`check_calibration`).
    """
    from gunshot_core import features, params, resample

    parts = [str(CALIBRATION_SEED), np.__version__, _version("scipy") or ""]
    for module in (sys.modules[__name__], features, params, resample):
        parts.append(hashlib.sha256(pathlib.Path(module.__file__).read_bytes()).hexdigest())
    memo = cache_root() / f"calibration-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:20]}.json"
    try:
        value = json.loads(memo.read_text())["sha256"]
        if isinstance(value, str) and len(value) == 64:
            return value
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = array_sha256(calibration_examples())
    _write_atomically(memo, json.dumps({"sha256": value}))
    return value


def check_calibration(examples: np.ndarray, expected_sha256: str) -> None:
    """Raises PrecisionError (and forgets the remembered hash) when `examples` do not have the
    calibration hash a cache key was made with (`calibration_sha256`)."""
    if array_sha256(examples) != expected_sha256:
        for memo in cache_root().glob("calibration-*.json"):
            memo.unlink(missing_ok=True)
        raise PrecisionError(
            "the remembered hash of the int8 calibration set was stale and has been removed from "
            f"{cache_root()}: run the command again"
        )


def _write_atomically(path: pathlib.Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file renamed into place; a cache that cannot be
    written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        log.debug("not kept: %s (%s)", path, e)


def array_sha256(*arrays: np.ndarray) -> str:
    """sha256 over the shapes, dtypes and bytes of `arrays`."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


# --- the cache of built models ---------------------------------------------------------------------------

#: Subfolder of the user's cache (gunshot_core.hashes.user_cache_dir) with built int8 models.
CACHE_DIR = "precision"
_MANIFEST = "manifest.json"


def cache_root() -> pathlib.Path:
    from gunshot_core import hashes

    return hashes.user_cache_dir() / CACHE_DIR


def _file_stats(directory: pathlib.Path) -> dict[str, list[int]]:
    """{file name: [size, mtime_ns, ctime_ns, inode]} of every file in `directory`. Any write to a
    file changes its ctime, which no program can set back."""
    stats = {}
    for p in sorted(directory.iterdir()):
        if p.is_file():
            st = p.stat()
            stats[p.name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return stats


def _file_digests(directory: pathlib.Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != _MANIFEST
    }


@contextlib.contextmanager
def file_lock(path):
    """An exclusive lock between processes (flock) and threads (separate open file descriptions) on
    the file `path` (created with its folder when missing); taken by whoever builds a cache entry."""
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_build(key: dict, build: Callable[[pathlib.Path], None], load: Callable[[pathlib.Path], object]):
    """Loads a built model from the user's cache, building it first when absent or damaged.

    The entry is a folder named by the sha256 of `key` (JSON; e.g. checkpoint hash, calibration-set
    hash, runtime versions). `build(folder)` writes the files into a temporary folder, whose
    manifest then records `key` and every file's sha256, and which is renamed into place (atomic:
    a reader sees no entry or a whole one). Builders in several processes at once take a file lock,
    so one builds and the others load its result. An entry whose files no longer match their
    manifest (truncated, overwritten) or that `load` rejects is removed and built again.

    The sha256s are checked once: then the files' sizes, times and inodes are noted beside the entry
    (`<name>.verified`), and later loads hash the files again only when those changed (any write
    changes a file's ctime); ~0.2-0.3 s less per process for a 70 MB model.

    Returns:
      what `load(folder)` returns.
    """
    root = cache_root()
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    final, verified = root / name, root / f"{name}.verified"
    with file_lock(root / f"{name}.lock"):
        if final.is_dir():
            try:
                manifest = json.loads((final / _MANIFEST).read_text())
                if manifest.get("key") != key:
                    raise ValueError("the manifest has another key")
                stats = _file_stats(final)
                if _read_json(verified) != stats:
                    if manifest.get("files") != _file_digests(final):
                        raise ValueError("files differ from the manifest")
                    _write_atomically(verified, json.dumps(stats))
                return load(final)
            except Exception as e:  # noqa: BLE001 - any damage: build again
                log.warning("rebuilding the damaged cached model %s: %s", final, e)
                verified.unlink(missing_ok=True)
                shutil.rmtree(final, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            build(staging)
            manifest = {"key": key, "files": _file_digests(staging)}
            (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("built and cached %s", final)
        return load(final)


def _read_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- OpenVINO (int8) -------------------------------------------------------------------------------------


def quantize_openvino(model, calibration: np.ndarray, block: int, ignored_names: Iterable[str] = ()):
    """Post-training static int8 quantisation of an OpenVINO model with NNCF.

    Activation ranges are the global min and max over the whole calibration set (NNCF's MINMAX
    estimator: the minimum of the per-block minima and the maximum of the maxima). Averaged
    per-example ranges (NNCF's default) clip loud inputs; a pure tone lost ~28 quantisation levels
    of its embedding. Activations are quantised asymmetrically (MIXED preset; weights symmetric per
    channel): the log-mel input is far from zero-centred, and with symmetric activations the seed
    heads' scores moved by up to 0.021 on the 1 kHz golden tone instead of 0.009. The scales are constants of the model: an example's result never depends on
    the other examples of its block.

    Args:
      model: openvino.Model with one input [batch, ...] (batch dimension dynamic).
      calibration: float32 [n, ...] calibration inputs, fed in blocks of `block`.
      ignored_names: friendly names of operations kept in float (e.g. the last layer).
    Returns:
      the quantised openvino.Model.
    """
    import nncf

    logging.getLogger("nncf").setLevel(logging.WARNING)  # not a line per graph node on stdout
    blocks = [calibration[i : i + block] for i in range(0, calibration.shape[0], block)]
    # NNCF draws progress bars on stdout, which belongs to the commands' results (`gunshot score
    # --json`): they go to stderr instead.
    with contextlib.redirect_stdout(sys.stderr):
        return _quantize(nncf, model, blocks, ignored_names)


def _quantize(nncf, model, blocks, ignored_names):
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return nncf.quantize(
        model,
        nncf.Dataset(blocks),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(blocks),
        fast_bias_correction=True,
        ignored_scope=nncf.IgnoredScope(names=list(ignored_names)) if ignored_names else None,
        advanced_parameters=AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        ),
    )


class OpenVINOBlocks:
    """An OpenVINO model compiled for one fixed block shape: float32 [block, ...] -> float32 [block, ...].

    Compiled with the latency hint (one stream over all cores: one block at a time is fastest) and
    the given inference precision for every operation that is not quantised: f32 (so the kept-float
    last layer of an int8 model is float32 also on CPUs whose default would be bf16) or bf16.

    Raises:
      PrecisionError: bf16 asked and OpenVINO would not run it (no native bf16 on this CPU).
    """

    def __init__(self, model, block: int, inference_precision: str = "f32"):
        from gunshot_core import startup

        ov = startup.import_openvino()

        dims = [d.get_length() for d in list(model.input(0).get_partial_shape())[1:]]
        model.reshape({0: ov.PartialShape([block, *dims])})
        core = ov.Core()
        self._compiled = core.compile_model(
            model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
        )
        used = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if used != inference_precision:
            raise PrecisionError(
                f"OpenVINO runs {used} instead of {inference_precision} on this CPU: use --precision fp32"
            )
        self._request = self._compiled.create_infer_request()

    def __call__(self, block: np.ndarray) -> np.ndarray:
        return np.array(self._request.infer({0: block})[0], dtype=np.float32, copy=True)
