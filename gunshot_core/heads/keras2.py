"""The original project's Keras 2.2.4 `.h5` heads: an h5py reader and a vectorised NumPy forward pass.

Stage: heads (format: Keras 2 `.h5`). The `model_config` JSON attribute and the weight datasets are
read with h5py; no code from the file is executed. A float32 NumPy forward pass is built from an
allow-list of layer types (`SUPPORTED_H5_LAYERS`) with Keras 2.2.4 semantics: LSTM gates in the order
i, f, c, o; `hard_sigmoid` = clip(0.2 x + 0.5, 0, 1); BatchNormalization with its moving statistics;
Dropout inactive. Any other layer type (`Lambda` included) raises ModelFileError.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from gunshot_core import params
from gunshot_core.errors import ModelFileError
from gunshot_core.heads.activations import _NP_ACTIVATIONS, _sigmoid

#: Layer types the .h5 reader accepts (Keras 2 class names). Anything else raises ModelFileError.
SUPPORTED_H5_LAYERS = (
    "InputLayer",
    "BatchNormalization",
    "Dropout",
    "SpatialDropout1D",
    "LSTM",
    "Dense",
    "Flatten",
    "Activation",
)
_ACTIVATIONS = ("linear", "relu", "sigmoid", "hard_sigmoid", "tanh")


@dataclasses.dataclass
class _Layer:
    """One layer of a parsed Keras 2 head: its class name, Keras config subset and float32 weights."""

    kind: str
    name: str
    config: dict
    weights: dict[str, np.ndarray]

    def describe(self) -> str:
        c = self.config
        if self.kind == "LSTM":
            return (
                f"LSTM({c['units']}, activation={c['activation']}, recurrent_activation="
                f"{c['recurrent_activation']}, return_sequences={c['return_sequences']})"
            )
        if self.kind == "Dense":
            return f"Dense({c['units']}, activation={c['activation']})"
        if self.kind == "BatchNormalization":
            return f"BatchNormalization(epsilon={c['epsilon']})"
        if self.kind in ("Dropout", "SpatialDropout1D"):
            return f"{self.kind}({c.get('rate')}, inactive)"
        if self.kind == "Activation":
            return f"Activation({c['activation']})"
        return self.kind

    def __call__(self, x: np.ndarray, *, final_linear: bool = False) -> np.ndarray:
        """Applies the layer to float32 x ([batch, time, features] or [batch, features])."""
        c, w = self.config, self.weights
        if self.kind in ("InputLayer", "Dropout", "SpatialDropout1D"):
            return x
        if self.kind == "Flatten":
            return x.reshape(x.shape[0], -1)
        if self.kind == "BatchNormalization":
            inv = w["gamma"] / np.sqrt(w["moving_variance"] + np.float32(c["epsilon"]))
            return x * inv + (w["beta"] - w["moving_mean"] * inv)
        if self.kind == "Dense":
            z = x @ w["kernel"]
            if "bias" in w:
                z = z + w["bias"]
            return z if final_linear else _NP_ACTIVATIONS[c["activation"]](z)
        if self.kind == "Activation":
            return x if final_linear else _NP_ACTIVATIONS[c["activation"]](x)
        if self.kind == "LSTM":
            return self._lstm(x)
        raise AssertionError(self.kind)  # parse time rejects other kinds

    def _lstm(self, x: np.ndarray) -> np.ndarray:
        c, w = self.config, self.weights
        units = c["units"]
        act = _NP_ACTIVATIONS[c["activation"]]
        rec_act = _NP_ACTIVATIONS[c["recurrent_activation"]]
        batch, steps = x.shape[0], x.shape[1]
        xz = x @ w["kernel"]  # [batch, time, 4 units], every step's input projection in one matmul
        if "bias" in w:
            xz = xz + w["bias"]
        h = np.zeros((batch, units), np.float32)
        cell = np.zeros((batch, units), np.float32)
        order = range(steps - 1, -1, -1) if c["go_backwards"] else range(steps)
        outputs = []
        for t in order:
            z = xz[:, t] + h @ w["recurrent_kernel"]
            i = rec_act(z[:, :units])
            f = rec_act(z[:, units : 2 * units])
            g = act(z[:, 2 * units : 3 * units])
            o = rec_act(z[:, 3 * units :])
            cell = f * cell + i * g
            h = o * act(cell)
            outputs.append(h)
        if c["return_sequences"]:
            if not outputs:
                return np.zeros((batch, 0, units), np.float32)
            return np.stack(outputs, axis=1)
        return h


class _NumpyNet:
    """A chain of `_Layer`s ending in a sigmoid; plain numpy arrays, so it pickles cheaply."""

    def __init__(self, layers: list[_Layer]):
        self.layers = layers

    def logits(self, x: np.ndarray) -> np.ndarray:
        """float32 [batch, time, 128] -> float32 [batch] pre-sigmoid outputs."""
        for layer in self.layers[:-1]:
            x = layer(x)
        z = self.layers[-1](x, final_linear=True)
        return z.reshape(z.shape[0])

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self.logits(x)
        return _sigmoid(z), z

    def describe(self) -> list[str]:
        return [layer.describe() for layer in self.layers]


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _chain_layers(model_config: dict, path: str) -> list[dict]:
    """The layer configs of a Sequential model, or of a functional Model that is a single chain."""
    kind = model_config.get("class_name")
    config = model_config.get("config")
    if kind == "Sequential":
        layers = config if isinstance(config, list) else (config or {}).get("layers")
        if not isinstance(layers, list):
            raise ModelFileError(f"{path}: Sequential model_config has no layer list")
        return layers
    if kind in ("Model", "Functional"):
        layers = (config or {}).get("layers") or []
        previous = None
        for layer in layers:
            inbound = layer.get("inbound_nodes") or []
            sources = [node[0] for nodes in inbound for node in nodes] if inbound else []
            if previous is None and sources:
                raise ModelFileError(f"{path}: functional model does not start with an InputLayer")
            if previous is not None and sources != [previous]:
                raise ModelFileError(
                    f"{path}: only single-chain models are supported; layer {layer.get('name')!r} "
                    f"takes inputs {sources}"
                )
            previous = layer.get("name")
        return layers
    raise ModelFileError(f"{path}: unsupported model class {kind!r} (expected Sequential or a chain Model)")


def _input_shape(layer_configs: list[dict], path: str) -> list:
    for layer in layer_configs:
        cfg = layer.get("config") or {}
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if shape is not None:
            if len(shape) != 3 or shape[2] != params.EMBEDDING_SIZE:
                raise ModelFileError(
                    f"{path}: head input must be [batch, frames, {params.EMBEDDING_SIZE}], got {shape}"
                )
            return shape
    raise ModelFileError(f"{path}: model_config declares no input shape")


def _read_weights(group, layer_name: str, path: str) -> dict[str, np.ndarray]:
    """{short name ('kernel', 'bias', ...): float32 array} of one layer's weights in an .h5 group."""
    if layer_name not in group:
        raise ModelFileError(f"{path}: no weights stored for layer {layer_name!r}")
    layer_group = group[layer_name]
    out = {}
    for full in layer_group.attrs.get("weight_names", []):
        full = _decode(full)
        short = full.split("/")[-1].split(":")[0]
        try:
            out[short] = np.asarray(layer_group[full][()], dtype=np.float32)
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise ModelFileError(f"{path}: cannot read weight {full!r}: {e}") from e
    return out


def _expect_shape(path: str, layer: str, name: str, weights: dict, shape: tuple):
    if name not in weights:
        raise ModelFileError(f"{path}: layer {layer!r} is missing weight {name!r}")
    if tuple(weights[name].shape) != shape:
        raise ModelFileError(
            f"{path}: layer {layer!r} weight {name!r} has shape {weights[name].shape}, expected {shape}"
        )


def _parse_h5(path: str) -> tuple[list[_Layer], int | None]:
    """Reads a Keras 2 .h5 head into layers without executing anything from the file.

    Returns:
      (layers, frames): the allow-listed layers with float32 weights and the fixed input length
      (None if the model takes any number of frames).
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable HDF5 model file ({e})") from e
    with f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ModelFileError(f"{path}: no model_config attribute (a weights-only file is not a head)")
        try:
            model_config = json.loads(_decode(raw))
        except json.JSONDecodeError as e:
            raise ModelFileError(f"{path}: model_config is not valid JSON: {e}") from e
        layer_configs = _chain_layers(model_config, path)
        shape = _input_shape(layer_configs, path)
        weights_group = f["model_weights"] if "model_weights" in f else f
        layers: list[_Layer] = []
        features, seq = params.EMBEDDING_SIZE, True  # width and whether a time axis is still present
        frames = shape[1]
        for spec in layer_configs:
            kind = spec.get("class_name")
            cfg = spec.get("config") or {}
            name = cfg.get("name", "?")
            if kind not in SUPPORTED_H5_LAYERS:
                raise ModelFileError(
                    f"{path}: layer {name!r} has type {kind!r}, which is not allowed in a head file "
                    f"(allowed: {', '.join(SUPPORTED_H5_LAYERS)})"
                )
            w = {} if kind in ("InputLayer", "Dropout", "SpatialDropout1D", "Flatten", "Activation") else None
            if w is None:
                w = _read_weights(weights_group, name, path)
            keep: dict[str, Any] = {}
            if kind == "BatchNormalization":
                axis = cfg.get("axis", -1)
                if axis not in (-1, 2 if seq else 1):
                    raise ModelFileError(
                        f"{path}: BatchNormalization {name!r} on axis {axis} is not supported"
                    )
                keep["epsilon"] = float(cfg.get("epsilon", 1e-3))
                w.setdefault("gamma", np.ones(features, np.float32))
                w.setdefault("beta", np.zeros(features, np.float32))
                for key in ("gamma", "beta", "moving_mean", "moving_variance"):
                    _expect_shape(path, name, key, w, (features,))
            elif kind == "Dense":
                units = int(cfg["units"])
                keep.update(units=units, activation=cfg.get("activation", "linear"))
                _expect_shape(path, name, "kernel", w, (features, units))
                if cfg.get("use_bias", True):
                    _expect_shape(path, name, "bias", w, (units,))
                features = units
            elif kind == "LSTM":
                if not seq:
                    raise ModelFileError(f"{path}: LSTM {name!r} needs a time axis")
                if cfg.get("return_state"):
                    raise ModelFileError(f"{path}: LSTM {name!r} with return_state is not supported")
                units = int(cfg["units"])
                keep.update(
                    units=units,
                    activation=cfg.get("activation", "tanh"),
                    recurrent_activation=cfg.get("recurrent_activation", "hard_sigmoid"),
                    return_sequences=bool(cfg.get("return_sequences", False)),
                    go_backwards=bool(cfg.get("go_backwards", False)),
                )
                _expect_shape(path, name, "kernel", w, (features, 4 * units))
                _expect_shape(path, name, "recurrent_kernel", w, (units, 4 * units))
                if cfg.get("use_bias", True):
                    _expect_shape(path, name, "bias", w, (4 * units,))
                features, seq = units, keep["return_sequences"]
            elif kind == "Flatten":
                if not seq:
                    raise ModelFileError(f"{path}: Flatten {name!r} has no time axis to flatten")
                if frames is None:
                    raise ModelFileError(f"{path}: Flatten {name!r} needs a fixed number of input frames")
                features, seq = features * frames, False
            elif kind == "Activation":
                keep["activation"] = cfg.get("activation")
            elif kind in ("Dropout", "SpatialDropout1D"):
                keep["rate"] = cfg.get("rate")
            for key in ("activation", "recurrent_activation"):
                if key in keep and keep[key] not in _ACTIVATIONS:
                    raise ModelFileError(
                        f"{path}: layer {name!r} uses {key} {keep[key]!r}; supported: {', '.join(_ACTIVATIONS)}"
                    )
            layers.append(_Layer(kind, name, keep, w))
        body = [layer for layer in layers if layer.kind != "InputLayer"]
        last = body[-1] if body else None
        if last is None or last.config.get("activation") != "sigmoid" or seq or features != 1:
            raise ModelFileError(
                f"{path}: a head must end in a single sigmoid output (Dense(1, activation='sigmoid')); "
                f"got {last.describe() if last else 'no layers'} with output width {features}"
            )
        return body, frames
