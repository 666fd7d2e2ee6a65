"""The VGGish network in TF2/Keras, loading the official TF1 checkpoint by variable name.

Architecture (vggish_slim.py): conv 64 -> pool -> conv 128 -> pool -> conv 256 x2 -> pool ->
conv 512 x2 -> pool -> flatten -> fc 4096 x2 -> fc 128 (linear). 3x3 convolutions with stride 1,
SAME padding and ReLU; 2x2 max pooling with stride 2, SAME padding; NHWC layout throughout, so the
flattened [6, 4, 512] feature map has the same order as the reference and fc1_1 weights apply as is.
"""

import logging
import os
import pathlib
import shutil
import tempfile
import threading

import numpy as np

from gunshot_core import params, startup
from gunshot_core.errors import ModelFileError

log = logging.getLogger(__name__)

#: (checkpoint variable scope, kind, kernel shape) of every layer, in graph order.
LAYERS = (
    ("vggish/conv1", "conv", (3, 3, 1, 64)),
    ("vggish/conv2", "conv", (3, 3, 64, 128)),
    ("vggish/conv3/conv3_1", "conv", (3, 3, 128, 256)),
    ("vggish/conv3/conv3_2", "conv", (3, 3, 256, 256)),
    ("vggish/conv4/conv4_1", "conv", (3, 3, 256, 512)),
    ("vggish/conv4/conv4_2", "conv", (3, 3, 512, 512)),
    ("vggish/fc1/fc1_1", "dense", (12288, 4096)),
    ("vggish/fc1/fc1_2", "dense", (4096, 4096)),
    ("vggish/fc2", "dense", (4096, params.EMBEDDING_SIZE)),
)
#: Convolutions followed by a 2x2 max pool (the last of each block).
_POOL_AFTER = {"vggish/conv1", "vggish/conv2", "vggish/conv3/conv3_2", "vggish/conv4/conv4_2"}
#: Examples per forward pass. Every pass has exactly this shape (the last block is zero-padded):
#: TF's CPU kernels choose different algorithms for different batch shapes, whose results differ in
#: the last float bits (up to ~1e-5, enough to flip a quantised byte now and then). With one fixed
#: shape an example's embedding does not depend on how callers group examples, so the CLI, the
#: pipelines and any chunking agree bit for bit. On 2 cores, over the 1,872 examples of 30 minutes
#: of recordings: 32 -> 265, 64 -> 273, 128 -> 273 examples/s. 64 takes the gain for archive-scale
#: scoring while a 10-s clip still costs one ~0.24 s pass.
DEFAULT_BATCH_SIZE = 64


def _check_checkpoint(path: str):
    """Validates a VGGish checkpoint's variables; returns whether it is a V2 checkpoint (prefix)."""
    tf = startup.import_tensorflow()

    v2 = tf.io.gfile.exists(path + ".index")
    if not (v2 or os.path.exists(path)):
        raise ModelFileError(
            f"VGGish checkpoint not found: {path}. Run `gunshot models download` or pass --checkpoint."
        )
    try:
        shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    except Exception as e:  # TF raises DataLossError, NotFoundError, ... for bad files
        raise ModelFileError(f"{path}: not a readable TensorFlow checkpoint: {e}") from e
    for scope, _, kernel_shape in LAYERS:
        for name, shape in ((f"{scope}/weights", kernel_shape), (f"{scope}/biases", kernel_shape[-1:])):
            if name not in shapes:
                raise ModelFileError(
                    f"{path}: checkpoint has no variable {name!r}; is it a VGGish checkpoint?"
                )
            if tuple(shapes[name]) != tuple(shape):
                raise ModelFileError(f"{path}: variable {name!r} has shape {shapes[name]}, expected {shape}")
    return v2


def _variable_names() -> list[str]:
    return [f"{scope}/{kind}" for scope, _, _ in LAYERS for kind in ("weights", "biases")]


#: Subfolder of the user's cache (gunshot_core.models.user_cache_dir) with V2 copies of V1 checkpoints.
DERIVED_DIR = "derived"


def _restore(path: str, v2: bool, names: list[str]) -> list:
    """The named float32 tensors of a checkpoint, read by TF restore ops inside a tf.function (which
    run without holding Python's GIL)."""
    tf = startup.import_tensorflow()

    @tf.function(autograph=False)
    def restore():
        if v2:
            return tf.raw_ops.RestoreV2(
                prefix=path,
                tensor_names=names,
                shape_and_slices=[""] * len(names),
                dtypes=[tf.float32] * len(names),
            )
        return [tf.raw_ops.Restore(file_pattern=path, tensor_name=name, dt=tf.float32) for name in names]

    return restore()


def derived_v2_prefix(path: str) -> pathlib.Path:
    """Where the V2 copy of the V1 checkpoint `path` is kept: keyed by the file's sha256."""
    from gunshot_core import hashes

    digest = hashes.file_sha256(path)  # from the hash cache after the first time
    return hashes.user_cache_dir() / DERIVED_DIR / f"vggish-{digest[:16]}" / "weights"


def _write_v2_copy(tensors: dict, prefix: pathlib.Path) -> None:
    """Saves `tensors` as a V2 checkpoint at `prefix`, atomically (a folder renamed into place);
    a cache that cannot be written is skipped."""
    tf = startup.import_tensorflow()

    final = prefix.parent
    staging = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
        names = list(tensors)
        tf.raw_ops.SaveV2(
            prefix=str(staging / prefix.name),
            tensor_names=names,
            shape_and_slices=[""] * len(names),
            tensors=[tensors[n] for n in names],
        )
        os.rename(staging, final)  # fails if another process got there first: its copy is as good
    except (OSError, tf.errors.OpError) as e:
        log.debug("V2 copy of the checkpoint not kept at %s: %s", final, e)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def read_checkpoint_tensors(path: str, *, cache: bool = True) -> dict:
    """Reads the VGGish variables from a TF checkpoint (V1 single file or V2 prefix) as tf.Tensors.

    The tensors are restored by TensorFlow's own restore ops inside a tf.function, which run without
    holding Python's GIL: reading the 288 MB checkpoint in a loader thread (as scoring workers do)
    does not stall the other threads, as `CheckpointReader.get_tensor` did for ~0.4 s.

    The official checkpoint is in the V1 format, whose tensors are parsed from protocol buffers
    (~0.6 s on 2 cores); V2 stores raw bytes (~0.1 s). So the first read of a V1 checkpoint also
    writes a V2 copy into the user's cache (DERIVED_DIR, keyed by the file's sha256; 288 MB), and
    later reads use it. `cache=False` reads the file given and writes nothing.

    Returns:
      {scope + '/weights' or '/biases': float32 tf.Tensor} for the 9 layers in LAYERS.
    Raises:
      ModelFileError: missing/unreadable file, or a variable absent or of the wrong shape.
    """
    path = str(path)
    v2 = _check_checkpoint(path)
    names = _variable_names()
    copy = derived_v2_prefix(path) if cache and not v2 else None
    if copy is not None and copy.with_suffix(".index").exists():
        try:
            return dict(zip(names, _restore(str(copy), True, names), strict=True))
        except Exception as e:  # noqa: BLE001 - a damaged copy: read the original, write a new one
            log.warning("ignoring the damaged V2 copy %s of %s: %s", copy.parent, path, e)
            shutil.rmtree(copy.parent, ignore_errors=True)
    try:
        tensors = dict(zip(names, _restore(path, v2, names), strict=True))
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data past the index
        raise ModelFileError(f"{path}: cannot read the checkpoint's tensors: {e}") from e
    if copy is not None:
        _write_v2_copy(tensors, copy)
    return tensors


def read_checkpoint_weights(path: str) -> dict[str, np.ndarray]:
    """Reads the VGGish variables from a TF checkpoint (V1 single file or V2 prefix).

    Returns:
      {scope + '/weights' or '/biases': float32 array} for the 9 layers in LAYERS.
    Raises:
      ModelFileError: missing/unreadable file, or a variable absent or of the wrong shape.
    """
    return {name: tensor.numpy() for name, tensor in read_checkpoint_tensors(path).items()}


def build_model(weights: dict[str, np.ndarray]):
    """The VGGish Keras model from {variable name: array}; input float32 [n, 96, 64].

    For users who want a Keras model (fine-tuning, export); inference uses `build_forward`.
    """
    keras = startup.import_keras()

    inputs = keras.Input(shape=(params.NUM_FRAMES, params.NUM_BANDS), name="log_mel_examples")
    x = keras.layers.Reshape((params.NUM_FRAMES, params.NUM_BANDS, 1))(inputs)
    for scope, kind, _ in LAYERS:
        name = scope.split("/")[-1]
        kernel, bias = weights[f"{scope}/weights"], weights[f"{scope}/biases"]
        if kind == "conv":
            layer = keras.layers.Conv2D(kernel.shape[-1], 3, padding="same", activation="relu", name=name)
            x = layer(x)
            layer.set_weights([kernel, bias])
            if scope in _POOL_AFTER:
                x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool_{name}")(x)
        else:
            if name == "fc1_1":
                x = keras.layers.Flatten(name="flatten")(x)
            activation = None if name == "fc2" else "relu"
            layer = keras.layers.Dense(kernel.shape[-1], activation=activation, name=name)
            x = layer(x)
            layer.set_weights([kernel, bias])
    return keras.Model(inputs, x, name="vggish")


def build_forward(weights: dict, *, bf16: bool = False):
    """The inference graph as plain TF2 ops: a tf.function float32 [n, 96, 64] -> float32 [n, 128].

    The same ops Keras' Conv2D/MaxPooling2D/Dense run (conv2d + bias_add + relu, SAME padding, NHWC),
    without building Keras layers: ~0.3 s from weights to a traced function instead of ~1.1 s, which
    every `gunshot score` start and every pipeline worker pays. Tested equal to `build_model`.

    bf16=True: every layer but the last computes in bfloat16 (weights stored in bfloat16; oneDNN's
    AVX512_BF16/AMX kernels, ~1.9x float32 on such CPUs); fc2, the 4096 -> 128 projection whose
    output is quantised to the embedding bytes, stays float32, which keeps the heads' scores within
    ~0.002 of float32 (docs/precision.md).
    """
    tf = startup.import_tensorflow()

    def dtype(name):
        return tf.bfloat16 if bf16 and not name.startswith("vggish/fc2/") else tf.float32

    variables = {
        name: tf.Variable(tf.cast(value, dtype(name)), trainable=False, name=name.replace("/", "_"))
        for name, value in weights.items()
    }
    spec = tf.TensorSpec([None, params.NUM_FRAMES, params.NUM_BANDS], tf.float32)

    # No autograph: the loop and the branches are over Python constants, so the graph is the same,
    # and converting the function's source first cost ~0.13 s of CPU in every new process.
    @tf.function(input_signature=[spec], autograph=False)
    def forward(examples):
        net = tf.reshape(examples, [-1, params.NUM_FRAMES, params.NUM_BANDS, 1])
        net = tf.cast(net, dtype("vggish/conv1/"))
        for scope, kind, _ in LAYERS:
            kernel, bias = variables[f"{scope}/weights"], variables[f"{scope}/biases"]
            if kind == "conv":
                net = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(net, kernel, 1, "SAME"), bias))
                if scope in _POOL_AFTER:
                    net = tf.nn.max_pool2d(net, 2, 2, "SAME")
            else:
                if scope == "vggish/fc1/fc1_1":
                    net = tf.reshape(net, [-1, kernel.shape[0]])
                net = tf.cast(net, kernel.dtype)
                net = tf.nn.bias_add(tf.matmul(net, kernel), bias)
                if scope != "vggish/fc2":
                    net = tf.nn.relu(net)
        return net

    forward.variables = variables  # keep the weights alive with the function
    return forward


#: Friendly name of the last layer's MatMul in the OpenVINO graph (kept float32 by int8).
_OV_FC2 = "vggish/fc2/MatMul"
#: Version of `build_openvino_model`'s graph; part of the int8 cache key.
_OV_GRAPH_VERSION = 1


def build_openvino_model(weights: dict):
    """The inference graph as an OpenVINO model: float32 [batch, 96, 64] -> float32 [batch, 128].

    The same network as `build_forward`, in OpenVINO's NCHW layout (kernels HWIO -> OIHW; the feature
    map is transposed back to NHWC before flattening, so fc1_1's weights apply as is). The batch
    dimension is dynamic; `precision.OpenVINOBlocks` fixes it to the block size.
    """
    import openvino as ov
    import openvino.opset13 as ops

    def const(value):
        return ops.constant(np.ascontiguousarray(value))

    examples = ops.parameter([-1, params.NUM_FRAMES, params.NUM_BANDS], np.float32, name="examples")
    net = ops.reshape(examples, const(np.array([-1, 1, params.NUM_FRAMES, params.NUM_BANDS])), False)
    for scope, kind, _ in LAYERS:
        kernel = np.asarray(weights[f"{scope}/weights"], np.float32)
        bias = np.asarray(weights[f"{scope}/biases"], np.float32)
        if kind == "conv":
            net = ops.convolution(net, const(kernel.transpose(3, 2, 0, 1)), [1, 1], [1, 1], [1, 1], [1, 1])
            net = ops.relu(ops.add(net, const(bias.reshape(1, -1, 1, 1))))
            if scope in _POOL_AFTER:  # even sizes at every pool: SAME padding adds nothing
                net = ops.max_pool(net, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)
        else:
            if scope == "vggish/fc1/fc1_1":
                net = ops.transpose(net, const(np.array([0, 2, 3, 1])))
                net = ops.reshape(net, const(np.array([-1, kernel.shape[0]])), False)
            matmul = ops.matmul(net, const(kernel), False, False)
            matmul.set_friendly_name(f"{scope}/MatMul")
            net = ops.add(matmul, const(bias))
            if scope != "vggish/fc2":
                net = ops.relu(net)
    return ov.Model([net], [examples], "vggish")


def _weights_numpy(weights: dict) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        for name, value in weights.items()
    }


def _weights_and_hash(weights, weights_sha256: str | None):
    """(function returning the weights, their sha256) for the OpenVINO builders: `weights` is a dict
    or a function returning it; without `weights_sha256` the arrays are read and hashed now."""
    from gunshot_core import precision

    read_weights = weights if callable(weights) else (lambda: weights)
    if weights_sha256 is None:
        arrays = _weights_numpy(read_weights())
        weights_sha256 = precision.array_sha256(*(arrays[n] for n in _variable_names()))
    return read_weights, weights_sha256


def int8_forward(weights: dict, *, block: int, weights_sha256: str | None = None):
    """The int8 network (OpenVINO, NNCF post-training quantisation), built once and cached.

    The quantised model is cached under the user's cache (`precision.cached_build`), keyed by the
    weights' hash, the calibration set's hash, the OpenVINO and NNCF versions and the graph version:
    ~20-50 s the first time, ~1 s to load afterwards.

    Args:
      weights: {variable name: array or tf.Tensor}, or a function returning it (called only when the
        model has to be built: a cached model needs no weights, ~0.8 s less per process).
      block: examples per forward pass (the compiled shape).
      weights_sha256: the checkpoint file's sha256 (default: hash the arrays).
    Returns:
      callable float32 [block, 96, 64] -> float32 [block, 128].
    """
    from gunshot_core import precision

    ov = startup.import_openvino()  # no model-conversion API: ~0.15-0.4 s less per process
    read_weights, weights_sha256 = _weights_and_hash(weights, weights_sha256)
    key = {
        "model": "vggish",
        "graph_version": _OV_GRAPH_VERSION,
        "weights_sha256": weights_sha256,
        "calibration_sha256": precision.calibration_sha256(),
        "runtime": precision.embedding_runtime(precision.INT8),
        "kept_float": [_OV_FC2],
    }

    def build(folder: pathlib.Path):
        arrays = _weights_numpy(read_weights())  # first: a bad checkpoint fails as with fp32
        log.info("quantising VGGish to int8 (once; cached in %s)", precision.cache_root())
        calibration = precision.calibration_examples()
        precision.check_calibration(calibration, key["calibration_sha256"])
        model = precision.quantize_openvino(
            build_openvino_model(arrays),
            calibration,
            DEFAULT_BATCH_SIZE,
            ignored_names=[_OV_FC2],
        )
        ov.save_model(model, str(folder / "vggish_int8.xml"), compress_to_fp16=False)

    def load(folder: pathlib.Path):
        return precision.OpenVINOBlocks(ov.Core().read_model(str(folder / "vggish_int8.xml")), block)

    return precision.cached_build(key, build, load)


def bf16_forward(weights, *, block: int, weights_sha256: str | None = None):
    """The bf16 network on OpenVINO: every layer in bfloat16 but the last (fc2), which stays float32.

    The float32 OpenVINO model (`build_openvino_model`) is cached under the user's cache
    (`precision.cached_build`, keyed by the weights' hash, the OpenVINO version and the graph
    version), so a process with a cached model imports neither TensorFlow nor reads the checkpoint's
    tensors. It is compiled as two fixed-shape models: everything up to fc2's input with OpenVINO's
    bf16 inference precision, and fc2 in float32 (OpenVINO's bf16 would round fc2's weights to
    bfloat16 too, which doubled the heads' largest score change: 0.005 instead of 0.002).

    Args:
      weights, weights_sha256: as `int8_forward`.
      block: examples per forward pass (the compiled shape).
    Returns:
      callable float32 [block, 96, 64] -> float32 [block, 128].
    """
    from gunshot_core import precision

    ov = startup.import_openvino()
    read_weights, weights_sha256 = _weights_and_hash(weights, weights_sha256)
    key = {
        "model": "vggish",
        "graph_version": _OV_GRAPH_VERSION,
        "weights_sha256": weights_sha256,
        "runtime": f"openvino {ov.__version__}",
        "stored": "float32",
    }

    def build(folder: pathlib.Path):
        arrays = _weights_numpy(read_weights())  # a bad checkpoint fails as with fp32
        ov.save_model(build_openvino_model(arrays), str(folder / "vggish_fp32.xml"), compress_to_fp16=False)

    def load(folder: pathlib.Path):
        body, fc2 = _split_last_layer(ov, ov.Core().read_model(str(folder / "vggish_fp32.xml")))
        return _Chain(
            precision.OpenVINOBlocks(body, block, "bf16"),
            precision.OpenVINOBlocks(fc2, block, "f32"),
        )

    return precision.cached_build(key, build, load)


def _split_last_layer(ov, model):
    """(everything up to fc2's input, fc2 alone) of a `build_openvino_model` model."""
    import openvino.opset13 as ops

    matmul = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == _OV_FC2)
    add = next(iter(matmul.output(0).get_target_inputs())).get_node()
    kernel = matmul.input_value(1).get_node().get_data()
    bias = add.input_value(1).get_node().get_data()
    body = ov.Model([matmul.input_value(0)], model.get_parameters(), "vggish_to_fc2")
    hidden = ops.parameter([-1, kernel.shape[0]], np.float32, name="hidden")
    out = ops.add(ops.matmul(hidden, ops.constant(np.array(kernel)), False, False), ops.constant(np.array(bias)))
    return body, ov.Model([out], [hidden], "vggish_fc2")


class _Chain:
    """Two fixed-block networks one after the other: block -> first -> second."""

    def __init__(self, first, second):
        self._first, self._second = first, second

    def __call__(self, block: np.ndarray) -> np.ndarray:
        return self._second(self._first(block))


class VGGish:
    """VGGish embedding network: float32 [n, 96, 64] log-mel examples -> float32 [n, 128].

    Build once per process (the fc layers hold ~290 MB of weights) and call `embed` with as many
    examples as convenient; they are run in compiled batches of exactly `batch_size` examples, so
    results are the same bits however the examples are grouped into calls.

    `precision` (gunshot_core.precision): fp32 (default, the reference), bf16 (OpenVINO where
    installed, else TensorFlow; fc2 in float32) or int8 (OpenVINO, built once and cached); `auto` is
    resolved by the caller. `weights`: {variable name: array or tf.Tensor}, or a function returning
    it (called only when needed; see `int8_forward`).
    """

    def __init__(
        self,
        weights,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str = "fp32",
        weights_sha256: str | None = None,
    ):
        from gunshot_core import precision as precisions

        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if precision not in precisions.PRECISIONS:
            raise precisions.PrecisionError(
                f"unknown precision {precision!r}: choose one of {', '.join(precisions.PRECISIONS)}"
            )
        self.batch_size = batch_size
        self.precision = precision
        if precision == precisions.INT8:
            self._forward = int8_forward(weights, block=batch_size, weights_sha256=weights_sha256)
        elif precision == precisions.BF16 and precisions.bf16_on_openvino():
            self._forward = bf16_forward(weights, block=batch_size, weights_sha256=weights_sha256)
        else:
            if callable(weights):
                weights = weights()
            self._forward = build_forward(weights, bf16=precision == precisions.BF16)
        self._lock = threading.Lock()

    def trace(self) -> None:
        """Compiles the forward pass for the block shape without running it (a loader thread can pay
        the ~0.25 s of tracing before the first `embed`)."""
        if hasattr(self._forward, "get_concrete_function"):  # int8 models are compiled when built
            self._forward.get_concrete_function(
                np.zeros((self.batch_size, params.NUM_FRAMES, params.NUM_BANDS), np.float32)
            )

    @classmethod
    def from_checkpoint(
        cls, path: str, *, batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "fp32"
    ) -> "VGGish":
        """Loads the official `vggish_model.ckpt` (or any checkpoint with the same variable names)."""
        from gunshot_core import precision as precisions

        log.info("loading VGGish checkpoint %s (%s)", path, precision)
        path = str(path)
        on_openvino = not precisions.uses_tensorflow(precision) if precision in precisions.PRECISIONS else False
        if on_openvino and os.path.isfile(path) and not os.path.exists(path + ".index"):
            from gunshot_core import hashes

            # A local V1 file. The cached int8/bf16 model is keyed by the file's sha256 (from the hash
            # cache) and needs neither its tensors nor TensorFlow: an entry exists only for a file
            # whose bytes were checked and read when it was built. The checkpoint is checked (the
            # same errors as fp32) and read only to build the model, on a cache miss.
            return cls(
                lambda: read_checkpoint_tensors(path),
                batch_size=batch_size,
                precision=precision,
                weights_sha256=hashes.file_sha256(path),
            )
        if on_openvino and not _check_checkpoint(path):  # e.g. gs://: the same errors as fp32
            from gunshot_core import hashes

            return cls(
                lambda: read_checkpoint_tensors(path),
                batch_size=batch_size,
                precision=precision,
                weights_sha256=hashes.file_sha256(path),
            )
        return cls(read_checkpoint_tensors(path), batch_size=batch_size, precision=precision)

    def embed(self, examples: np.ndarray) -> np.ndarray:
        """Raw (pre-PCA) embeddings.

        Args:
          examples: float32 [n, 96, 64] log-mel examples (n may be 0).
        Returns:
          float32 [n, 128]; row i depends only on examples[i].
        """
        examples = np.asarray(examples, dtype=np.float32)
        if examples.ndim != 3 or examples.shape[1:] != (params.NUM_FRAMES, params.NUM_BANDS):
            raise ValueError(f"examples must be [n, 96, 64], got shape {examples.shape}")
        n = examples.shape[0]
        if n == 0:
            return np.zeros((0, params.EMBEDDING_SIZE), np.float32)
        size = self.batch_size
        out = np.empty((n, params.EMBEDDING_SIZE), np.float32)
        with self._lock:  # one forward pass at a time: the model is shared by threads of a worker
            for start in range(0, n, size):
                block = examples[start : start + size]
                if block.shape[0] < size:  # zero-pad the last block to the one compiled shape
                    padding = np.zeros((size - block.shape[0],) + block.shape[1:], np.float32)
                    block = np.concatenate([block, padding])
                out[start : start + size] = np.asarray(self._forward(block))[: n - start]
        return out
