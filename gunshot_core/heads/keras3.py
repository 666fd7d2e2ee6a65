"""This project's Keras 3 head artifacts (`MDIR/model.keras`), loaded behind a config allow-list.

Stage: heads (format: Keras 3 `.keras`). `keras.saving.load_model(..., safe_mode=True, compile=False)`
runs only after the archive's config has been checked to reference Keras modules and the objects
registered here (`register_keras_objects`) and nothing else. `_KerasNet` pickles as its paths and
reloads the model on first use.
"""

from __future__ import annotations

import json
import os

import numpy as np

from gunshot_core import startup
from gunshot_core.errors import ModelFileError
from gunshot_core.heads.activations import _sigmoid
from gunshot_core.heads.card import FRAME_POOLINGS

#: Name under which the Keras 2 hard sigmoid is registered for Keras 3 models (safe_mode loading).
KERAS2_HARD_SIGMOID = "gunshot_core>keras2_hard_sigmoid"
_KERAS_PACKAGE = "gunshot_core"
_registered = None


def register_keras_objects():
    """Registers the Keras 3 objects head artifacts may reference by name (idempotent).

    `keras2_hard_sigmoid` (registered as "gunshot_core>keras2_hard_sigmoid"): the Keras 2 hard sigmoid
    clip(0.2 x + 0.5, 0, 1) that the original heads were trained with (Keras 3's `hard_sigmoid` is
    relu6(x + 3) / 6, a different function).

    Returns:
      the registered keras2_hard_sigmoid function.
    """
    global _registered
    if _registered is not None:
        return _registered
    keras = startup.import_keras()

    @keras.saving.register_keras_serializable(package=_KERAS_PACKAGE, name="keras2_hard_sigmoid")
    def keras2_hard_sigmoid(x):
        return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)

    _registered = keras2_hard_sigmoid
    return _registered


_ALLOWED_MODULE_PREFIXES = ("keras",)


def _check_keras_config(node, path: str) -> None:
    """Refuses a .keras config that names a non-Keras module or an object registered outside gunshot_core."""
    if isinstance(node, dict):
        module = node.get("module")
        registered = node.get("registered_name")
        builtin_function = module == "builtins" and node.get("class_name") == "function"
        if (
            isinstance(module, str)
            and not builtin_function
            and not module.startswith(_ALLOWED_MODULE_PREFIXES)
        ):
            raise ModelFileError(
                f"{path}: model config references module {module!r}; only Keras objects are allowed"
            )
        if node.get("class_name") in ("Lambda", "TFOpLambda"):
            raise ModelFileError(
                f"{path}: model contains a {node['class_name']} layer (arbitrary code); refused"
            )
        if (
            isinstance(registered, str)
            and ">" in registered
            and not registered.startswith(_KERAS_PACKAGE + ">")
        ):
            raise ModelFileError(f"{path}: model config references custom object {registered!r}; refused")
        if node.get("class_name") == "function" and isinstance(node.get("config"), str):
            name = node["config"]
            if ">" in name and not name.startswith(_KERAS_PACKAGE + ">"):
                raise ModelFileError(f"{path}: model config references custom function {name!r}; refused")
        for value in node.values():
            _check_keras_config(value, path)
    elif isinstance(node, list):
        for value in node:
            _check_keras_config(value, path)


def _load_keras_model(model_path: str):
    """keras.saving.load_model(safe_mode=True, compile=False) after checking the config's references."""
    import zipfile

    try:
        with zipfile.ZipFile(model_path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{model_path}: not a readable Keras 3 model file ({e})") from e
    _check_keras_config(config, model_path)
    register_keras_objects()
    keras = startup.import_keras()

    try:
        return keras.saving.load_model(model_path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many kinds (ValueError, TypeError, OSError) for bad files
        raise ModelFileError(f"{model_path}: cannot load Keras model: {type(e).__name__}: {e}") from e


def pool_frame_logits(
    frame_logits: np.ndarray, pooling: str, attention_logits: np.ndarray | None = None
) -> np.ndarray:
    """A frame-pooling head's window logits from its frame logits.

    Args:
      frame_logits: float32 [batch, t] per-frame logits z_t.
      pooling: "max" (max_t z_t) or "attention" (sum_t softmax_t(a_t) z_t).
      attention_logits: float32 [batch, t] a_t (attention pooling only).
    Returns:
      float32 [batch] window logits; the window score is their sigmoid.
    """
    z = np.asarray(frame_logits, np.float64)
    if pooling == "max":
        return z.max(axis=1).astype(np.float32)
    if pooling == "attention":
        if attention_logits is None:
            raise ValueError("attention pooling needs attention_logits")
        a = np.asarray(attention_logits, np.float64)
        w = np.exp(a - a.max(axis=1, keepdims=True))
        return ((w * z).sum(axis=1) / w.sum(axis=1)).astype(np.float32)
    raise ValueError(f"pooling must be one of {FRAME_POOLINGS}, got {pooling!r}")


class _KerasNet:
    """A Keras 3 head; pickles as its paths, and an unpickled copy reloads the model on first use."""

    def __init__(self, model_path: str, transform: dict | None, mdir: str, frame_pooling: dict | None = None):
        self.model_path = model_path
        self.transform = transform
        self.mdir = mdir
        self.frame_pooling = frame_pooling
        self._frames = None  # model -> [frame logits, attention logits] of a frame-pooling head
        self._model = None
        self._features = None  # model up to the final sigmoid Dense's input, if there is one
        self._dense = None  # (kernel float32 [k, 1], bias float32 [1]) of that Dense
        self._tft_layer = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_model=None, _features=None, _dense=None, _tft_layer=None, _frames=None)
        return state

    def load(self):
        if self._model is not None:
            return self._model
        keras = startup.import_keras()

        model = _load_keras_model(self.model_path)
        last = model.layers[-1] if model.layers else None
        if (
            isinstance(last, keras.layers.Dense)
            and last.units == 1
            and getattr(last.activation, "__name__", "") == "sigmoid"
        ):
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            self._features = keras.Model(inputs, last.input)
            kernel, *rest = last.get_weights()
            bias = rest[0] if rest else np.zeros(1, np.float32)
            self._dense = (np.asarray(kernel, np.float32), np.asarray(bias, np.float32))
        if self.frame_pooling is not None:
            names = [self.frame_pooling["frame_logits"]]
            if self.frame_pooling["pooling"] == "attention":
                names.append(self.frame_pooling["attention_logits"])
            outputs = []
            for name in names:
                try:
                    layer = model.get_layer(name)
                except ValueError:
                    raise ModelFileError(
                        f"{self.model_path}: the card's frame_pooling names layer {name!r}, which the model lacks"
                    ) from None
                if len(layer.output.shape) != 3 or layer.output.shape[-1] != 1:
                    raise ModelFileError(
                        f"{self.model_path}: frame_pooling layer {name!r} must output [batch, t, 1], "
                        f"got {tuple(layer.output.shape)}"
                    )
                outputs.append(layer.output)
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            self._frames = keras.Model(inputs, outputs)
        if self.transform is not None:
            import tensorflow_transform as tft

            output = tft.TFTransformOutput(os.path.join(self.mdir, self.transform["dir"]))
            self._tft_layer = output.transform_features_layer()
        self._model = model
        return model

    def _apply_transform(self, x: np.ndarray):
        if self._tft_layer is None:
            return x
        import tensorflow as tf

        out = self._tft_layer({self.transform["input_key"]: tf.constant(x)})
        return out[self.transform["output_key"]]

    def frame_logits(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 [batch, t, 128] model input -> (frame logits, attention logits or None), [batch, t]."""
        keras = startup.import_keras()

        self.load()
        if self._frames is None:
            raise ModelFileError(f"{self.model_path}: this head has no frame scores")
        out = self._frames(self._apply_transform(x), training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        arrays = [keras.ops.convert_to_numpy(o).astype(np.float32)[..., 0] for o in out]
        return arrays[0], (arrays[1] if len(arrays) > 1 else None)

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keras = startup.import_keras()

        model = self.load()
        if self._frames is not None:
            frame_z, attention = self.frame_logits(x)
            z = pool_frame_logits(frame_z, self.frame_pooling["pooling"], attention)
            return _sigmoid(z), z
        x = self._apply_transform(x)
        if self._features is not None:
            h = keras.ops.convert_to_numpy(self._features(x, training=False)).astype(np.float32)
            z = (h @ self._dense[0] + self._dense[1]).reshape(-1)
            return _sigmoid(z), z
        p = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float32)
        if p.ndim != 2 or p.shape[1] != 1:
            raise ModelFileError(f"{self.model_path}: head output must be [batch, 1], got {p.shape}")
        p = p.reshape(-1)
        with np.errstate(divide="ignore"):
            z = (np.log(p.astype(np.float64)) - np.log1p(-p.astype(np.float64))).astype(np.float32)
        return p, z

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.scores(x)[1]

    def describe(self) -> list[str]:
        model = self.load()
        out = []
        for layer in model.layers:
            cfg = layer.get_config()
            keys = ("units", "activation", "recurrent_activation", "return_sequences", "rate", "epsilon")
            detail = {k: cfg[k] for k in keys if k in cfg}
            for key in ("activation", "recurrent_activation"):
                if isinstance(detail.get(key), dict):
                    detail[key] = detail[key].get("config")
            out.append(f"{type(layer).__name__}({', '.join(f'{k}={v}' for k, v in detail.items())})")
        return out
