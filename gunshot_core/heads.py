"""Gunshot classifier heads: uint8 VGGish frames [n, 128] -> gunshot score.

Two kinds of head files are loaded by `load_head(path)`:

* The original project's Keras 2.2.4 `.h5` heads. They are read with h5py (the `model_config` JSON
  attribute and the weight datasets); no code from the file is executed. A vectorised float32 numpy
  forward pass is built from an allow-list of layer types (`SUPPORTED_H5_LAYERS`) with Keras 2.2.4
  semantics: LSTM gates in the order i, f, c, o; `hard_sigmoid` = clip(0.2 x + 0.5, 0, 1);
  BatchNormalization with its moving statistics; Dropout inactive. Any other layer type (`Lambda`
  included) raises ModelFileError.
* This project's head artifacts: a directory `MDIR/` holding `model.keras` (Keras 3 native format,
  loaded with `keras.saving.load_model(..., safe_mode=True, compile=False)`) and `card.json`
  (a `HeadCard`: id, threshold, frames, input convention, training stats, metrics, provenance).
  `training.train` writes them with `write_card`; `import_h5_head` converts an original `.h5` head.

Feeding convention (that of the original project, `HEAD_FRAMES` = 10): the uint8 frames are cast to
float32 without scaling, zero frames are appended up to `pad_to_frames` (10) frames, heads with a
fixed input length (`frames`, e.g. 10 for the LogisticRegression and SingleLayerNN heads) see the
first `frames` frames, and heads that take any length (the LSTMs) see every frame.

Frame-pooling heads (`training.train --model framepool`; card key `frame_pooling`) score every
0.96 s frame on its own and pool the frame logits over the window (max, or attention weights).
`Head.frame_scores(frames)` gives float32 [n] per-frame scores of a whole recording, and the window
score is the pool of the window's frame logits (`pool_frame_logits`), the Keras model's output within
float32 rounding. Other heads have no frame scores (`Head.has_frame_scores` is False).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import tempfile
from typing import Any

import numpy as np

from gunshot_core import params
from gunshot_core.errors import ModelFileError

#: The head bundled with the package: the original project's default (1-layer LSTM, MIT licence).
DEFAULT_HEAD_PATH = str(
    pathlib.Path(__file__).resolve().parent / "data" / "heads" / "1LayerLSTM__Loss=BinCE_20Epochs_july02.h5"
)
#: Decision threshold of the original project's inference script (`score >= 0.51` means gunshot).
ORIGINAL_THRESHOLD = 0.51

# --- the head artifact (MDIR/model.keras + MDIR/card.json) -------------------------------------------
CARD_FILENAME = "card.json"
MODEL_FILENAME = "model.keras"
CARD_FORMAT = "gunshot-spotter-head"
CARD_FORMAT_VERSION = 1
DEFAULT_CLASSES = ("no_gunshot", "gunshot")

#: Input conventions: how uint8 frames become the model's float32 input.
INPUT_UINT8_AS_FLOAT = "uint8_as_float"  # float32(x), values 0..255 (the original project's convention)
INPUT_UINT8_DIV_255 = "uint8_div_255"  # float32(x) / 255, values 0..1
INPUT_CONVENTIONS = (INPUT_UINT8_AS_FLOAT, INPUT_UINT8_DIV_255)

#: How a frame-pooling head turns its frame logits into the window's (card `frame_pooling.pooling`).
FRAME_POOLINGS = ("max", "attention")
#: Frames per forward pass of `Head.frame_scores` (frames are scored independently: exact in chunks).
FRAME_CHUNK = 8192

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

#: Name under which the Keras 2 hard sigmoid is registered for Keras 3 models (safe_mode loading).
KERAS2_HARD_SIGMOID = "gunshot_core>keras2_hard_sigmoid"
_KERAS_PACKAGE = "gunshot_core"


@dataclasses.dataclass
class HeadCard:
    """The metadata card of a head artifact, stored as `MDIR/card.json`.

    JSON keys (all written by `write_card`; `format`/`format_version` are added on write):
      format: "gunshot-spotter-head"; format_version: 1.
      head_id: stable id of the head (used in output tables and provenance columns).
      model_file: the Keras 3 model inside MDIR, "model.keras".
      model_sha256: sha256 of model_file (filled in by `write_card`; checked by `load_head`).
      classes: [negative, positive] class names; the score is P(classes[1]).
      threshold: default decision threshold (score >= threshold means positive).
      frames: fixed number of frames the model takes, or null for any length.
      pad_to_frames: zero frames are appended to shorter inputs up to this many frames (10).
      input_convention: "uint8_as_float" (float32(x), 0..255) or "uint8_div_255".
      frame_pooling: null, or {"pooling": "max" | "attention", "frame_logits": <name of the layer
        whose output is the per-frame logit, float32 [batch, t, 1]>, "attention_logits": <name of the
        layer giving per-frame attention logits (attention pooling), else null>}: the head scores
        frames and pools them (see `pool_frame_logits`); written by `training.train --model framepool`.
      transform: null, or {"kind": "tf_transform", "dir": <dir relative to MDIR with the
        tf.Transform output (transform_fn/, transformed_metadata/)>, "input_key": <raw feature name>,
        "output_key": <transformed feature name>}: applied to float32 [batch, frames, 128] after the
        input convention, before the model.
      vggish_checkpoint_sha256, pca_params_sha256: sha256 of the VGGish checkpoint and PCA parameters
        the training embeddings were made with (null when unknown, e.g. AudioSet release embeddings).
      training: free-form dict (data set, class counts, hyperparameters, seed, ...).
      metrics: free-form dict of evaluation metrics ({"eval": {"auc": ..., "recall": ...}}).
      source: free-form dict of provenance (e.g. {"kind": "keras2_h5", "file": ..., "sha256": ...}).
      created_utc: ISO-8601 UTC time of writing; library_version: gunshot_core version that wrote it.
    Unknown keys are kept in `extra` and written back unchanged.
    """

    head_id: str
    threshold: float = 0.5
    frames: int | None = None
    pad_to_frames: int = params.HEAD_FRAMES
    classes: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_CLASSES))
    input_convention: str = INPUT_UINT8_AS_FLOAT
    transform: dict | None = None
    frame_pooling: dict | None = None
    model_file: str = MODEL_FILENAME
    model_sha256: str | None = None
    vggish_checkpoint_sha256: str | None = None
    pca_params_sha256: str | None = None
    training: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    source: dict = dataclasses.field(default_factory=dict)
    created_utc: str | None = None
    library_version: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> HeadCard:
        """Raises ModelFileError naming the bad value if a field is out of range; returns self."""
        if not isinstance(self.head_id, str) or not self.head_id:
            raise ModelFileError(f"card: head_id must be a non-empty string, got {self.head_id!r}")
        if not isinstance(self.threshold, (int, float)) or not 0.0 <= float(self.threshold) <= 1.0:
            raise ModelFileError(f"card: threshold must be a number in [0, 1], got {self.threshold!r}")
        if self.frames is not None and (not isinstance(self.frames, int) or self.frames < 1):
            raise ModelFileError(f"card: frames must be a positive int or null, got {self.frames!r}")
        if not isinstance(self.pad_to_frames, int) or self.pad_to_frames < 0:
            raise ModelFileError(f"card: pad_to_frames must be an int >= 0, got {self.pad_to_frames!r}")
        if self.input_convention not in INPUT_CONVENTIONS:
            raise ModelFileError(
                f"card: input_convention must be one of {INPUT_CONVENTIONS}, got {self.input_convention!r}"
            )
        if len(self.classes) != 2:
            raise ModelFileError(f"card: classes must be [negative, positive], got {self.classes!r}")
        if self.transform is not None:
            missing = {"kind", "dir", "input_key", "output_key"} - set(self.transform)
            if self.transform.get("kind") != "tf_transform" or missing:
                raise ModelFileError(
                    "card: transform must be null or {'kind': 'tf_transform', 'dir', 'input_key', "
                    f"'output_key'}}, got {self.transform!r}"
                )
        if self.frame_pooling is not None:
            fp = self.frame_pooling
            ok = (
                isinstance(fp, dict)
                and fp.get("pooling") in FRAME_POOLINGS
                and isinstance(fp.get("frame_logits"), str)
                and (fp["pooling"] != "attention" or isinstance(fp.get("attention_logits"), str))
            )
            if not ok:
                raise ModelFileError(
                    "card: frame_pooling must be null or {'pooling': 'max'|'attention', 'frame_logits': "
                    f"LAYER, 'attention_logits': LAYER|null}}, got {fp!r}"
                )
        if os.path.basename(self.model_file) != self.model_file:
            raise ModelFileError(f"card: model_file must be a file name inside MDIR, got {self.model_file!r}")
        return self

    def to_dict(self) -> dict:
        """The JSON object written to card.json."""
        out = {"format": CARD_FORMAT, "format_version": CARD_FORMAT_VERSION}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> HeadCard:
        """Builds a card from card.json's object (or a plain dict of fields); unknown keys go to extra."""
        if not isinstance(data, dict):
            raise ModelFileError(f"card: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        fmt = data.pop("format", CARD_FORMAT)
        version = data.pop("format_version", CARD_FORMAT_VERSION)
        if fmt != CARD_FORMAT:
            raise ModelFileError(f"card: format must be {CARD_FORMAT!r}, got {fmt!r}")
        if not isinstance(version, int) or version > CARD_FORMAT_VERSION:
            raise ModelFileError(
                f"card: format_version {version!r} is newer than this library reads ({CARD_FORMAT_VERSION})"
            )
        if "head_id" not in data:
            raise ModelFileError("card: missing required key 'head_id'")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = dict(data.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in names and k != "extra"})
        if "classes" in known:
            known["classes"] = list(known["classes"])
        return cls(**known, extra=extra).validate()


def write_card(mdir, card: HeadCard | dict) -> HeadCard:
    """Writes MDIR/card.json atomically, filling in model_sha256, created_utc and library_version.

    Args:
      mdir: the artifact directory; `MDIR/<card.model_file>` should already be written (its sha256 is
        recorded; a missing model file leaves model_sha256 as given).
      card: a HeadCard or a dict of its fields.
    Returns:
      The card as written.
    """
    from gunshot_core import __version__
    from gunshot_core.models import file_sha256

    card = card if isinstance(card, HeadCard) else HeadCard.from_dict(card)
    card = dataclasses.replace(card).validate()
    mdir = pathlib.Path(mdir)
    mdir.mkdir(parents=True, exist_ok=True)
    model_path = mdir / card.model_file
    if model_path.is_file():
        card.model_sha256 = file_sha256(model_path)
    card.created_utc = card.created_utc or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    card.library_version = card.library_version or __version__
    text = json.dumps(card.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=mdir, prefix=".card-", suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, mdir / CARD_FILENAME)
    return card


def read_card(mdir) -> HeadCard:
    """Reads and validates MDIR/card.json; ModelFileError if missing or malformed."""
    path = pathlib.Path(mdir) / CARD_FILENAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"head directory {str(mdir)!r} has no {CARD_FILENAME}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read head card {str(path)!r}: {e}") from e
    return HeadCard.from_dict(data)


# --- numpy forward pass of Keras 2 layers ----------------------------------------------------------------


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """Keras 2 hard sigmoid: clip(0.2 x + 0.5, 0, 1)."""
    return np.clip(np.float32(0.2) * x + np.float32(0.5), np.float32(0.0), np.float32(1.0))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic sigmoid in float64 (saturates to exactly 0/1 without overflow warnings), as float32."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))).astype(np.float32)


_NP_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, np.float32(0.0)),
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "tanh": np.tanh,
}


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


# --- Keras 3 (head artifacts) ------------------------------------------------------------------------------

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
    import keras

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
    import keras

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
        import keras

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
        import keras

        self.load()
        if self._frames is None:
            raise ModelFileError(f"{self.model_path}: this head has no frame scores")
        out = self._frames(self._apply_transform(x), training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        arrays = [keras.ops.convert_to_numpy(o).astype(np.float32)[..., 0] for o in out]
        return arrays[0], (arrays[1] if len(arrays) > 1 else None)

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import keras

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


# --- the Head -------------------------------------------------------------------------------------------


class Head:
    """A loaded gunshot classifier head.

    Attributes:
      head_id: stable id (file stem of an .h5 head, card head_id of an artifact).
      sha256: sha256 of the .h5 file, or of MDIR/model.keras.
      frames: fixed input length in frames, or None if the head takes any number of frames.
      threshold: default decision threshold (score >= threshold means gunshot).
      pad_to_frames: inputs shorter than this are zero-padded to it (10).
      source_path: the path the head was loaded from.
      kind: "keras2_h5" or "keras3_artifact".
      card: the HeadCard of an artifact (None for an .h5 head).
      input_convention: how uint8 frames become float32 model input.
    """

    def __init__(
        self,
        net,
        *,
        head_id: str,
        sha256: str,
        frames: int | None,
        threshold: float,
        source_path: str,
        kind: str,
        pad_to_frames: int = params.HEAD_FRAMES,
        input_convention: str = INPUT_UINT8_AS_FLOAT,
        card: HeadCard | None = None,
    ):
        self._net = net
        self.head_id = head_id
        self.sha256 = sha256
        self.frames = frames
        self.threshold = float(threshold)
        self.source_path = source_path
        self.kind = kind
        self.pad_to_frames = pad_to_frames
        self.input_convention = input_convention
        self.card = card

    def __repr__(self) -> str:
        return (
            f"Head(head_id={self.head_id!r}, kind={self.kind!r}, frames={self.frames}, "
            f"threshold={self.threshold}, sha256={self.sha256[:12]}...)"
        )

    def prepare(self, x) -> tuple[np.ndarray, bool]:
        """Applies the feeding convention.

        Args:
          x: uint8 [n, 128] (one clip) or [batch, n, 128].
        Returns:
          (float32 [batch, t, 128], single): t = frames for fixed-input heads, else max(n, pad_to_frames);
          single is True for a 2-D input.
        """
        a = np.asarray(x)
        if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"head input must be uint8 frames, got dtype {a.dtype}")
        if a.ndim not in (2, 3) or a.shape[-1] != params.EMBEDDING_SIZE:
            raise ValueError(
                f"head input must be [frames, {params.EMBEDDING_SIZE}] or [batch, frames, "
                f"{params.EMBEDDING_SIZE}], got shape {a.shape}"
            )
        single = a.ndim == 2
        if single:
            a = a[np.newaxis]
        if self.frames is not None:
            a = a[:, : self.frames]
        a = a.astype(np.float32)
        if self.input_convention == INPUT_UINT8_DIV_255:
            a = a / np.float32(255.0)
        target = self.frames if self.frames is not None else max(a.shape[1], self.pad_to_frames)
        if a.shape[1] < target:
            pad = np.zeros((a.shape[0], target - a.shape[1], a.shape[2]), np.float32)
            a = np.concatenate([a, pad], axis=1)
        return a, single

    def _convert(self, a: np.ndarray) -> np.ndarray:
        """The input convention of `prepare` without padding: uint8 [batch, t, 128] -> float32."""
        a = np.asarray(a)
        if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"head input must be uint8 frames, got dtype {a.dtype}")
        if a.shape[-1] != params.EMBEDDING_SIZE:
            raise ValueError(
                f"head input must have {params.EMBEDDING_SIZE} values per frame, got shape {a.shape}"
            )
        a = a.astype(np.float32)
        if self.input_convention == INPUT_UINT8_DIV_255:
            a = a / np.float32(255.0)
        return a

    def scores_and_logits(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(scores, logits) in one pass; float32 [batch] each, or float32 scalars for one clip."""
        a, single = self.prepare(x)
        if a.shape[0] == 0:
            empty = np.zeros(0, np.float32)
            return empty, empty
        p, z = self._net.scores(a)
        if single:
            return p[0], z[0]
        return p, z

    @property
    def has_frame_scores(self) -> bool:
        """True for a frame-pooling head (card `frame_pooling`): it scores every 0.96 s frame."""
        return self.card is not None and self.card.frame_pooling is not None

    @property
    def pooling(self) -> str | None:
        """The pooling ("max" or "attention") of a frame-pooling head, else None."""
        return self.card.frame_pooling["pooling"] if self.has_frame_scores else None

    def frame_logits(self, frames) -> np.ndarray:
        """Per-frame logits of a frame-pooling head over any number of frames.

        Every frame is scored on its own (no padding, no window), in chunks of FRAME_CHUNK frames.

        Args:
          frames: uint8 [n, 128] frames of one recording (n may be 0).
        Returns:
          float32 [n]; sigmoid gives `frame_scores`.
        Raises:
          ValueError: the head has no frame scores, or the input is not [n, 128].
        """
        if not self.has_frame_scores:
            raise ValueError(f"head {self.head_id!r} has no frame scores (not a frame-pooling head)")
        a = np.asarray(frames)
        if a.ndim != 2:
            raise ValueError(f"frame_scores needs frames [n, {params.EMBEDDING_SIZE}], got shape {a.shape}")
        if a.shape[0] == 0:
            return np.zeros(0, np.float32)
        out = []
        for i in range(0, a.shape[0], FRAME_CHUNK):
            x = self._convert(a[np.newaxis, i : i + FRAME_CHUNK])
            out.append(self._net.frame_logits(x)[0][0])
        return np.concatenate(out).astype(np.float32)

    def frame_scores(self, frames) -> np.ndarray:
        """Per-frame gunshot scores in [0, 1] of a frame-pooling head: float32 [n] for uint8 [n, 128].

        A window's score is the pool (`pooling`) of its frames' logits; with max pooling it is the
        highest frame score of the window (zero-padding frames included for windows shorter than
        `pad_to_frames`, as the head was trained).
        """
        return _sigmoid(self.frame_logits(frames))

    def predict(self, x) -> np.ndarray:
        """Gunshot scores in [0, 1].

        Args:
          x: uint8 [n, 128] frames of one clip, or uint8 [batch, n, 128].
        Returns:
          a float32 scalar for one clip, or float32 [batch].
        """
        return self.scores_and_logits(x)[0]

    def logits(self, x) -> np.ndarray:
        """Pre-sigmoid outputs of the final Dense layer; same shapes as `predict`."""
        return self.scores_and_logits(x)[1]

    def describe(self) -> dict:
        """A JSON-able summary: id, kind, sha256, frames, threshold, input convention, layers."""
        return {
            "head_id": self.head_id,
            "kind": self.kind,
            "path": self.source_path,
            "sha256": self.sha256,
            "frames": self.frames,
            "pad_to_frames": self.pad_to_frames,
            "threshold": self.threshold,
            "input_convention": self.input_convention,
            "layers": self._net.describe(),
        }


def _is_hdf5(path: pathlib.Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def load_head(path=None) -> Head:
    """Loads a head: an original Keras 2 `.h5` file or a head artifact directory (MDIR).

    Args:
      path: .h5 file, artifact directory (or its card.json / model.keras), or None for the bundled
        default head (DEFAULT_HEAD_PATH).
    Returns:
      Head.
    Raises:
      ModelFileError: missing, corrupt or disallowed file (message names the file and the problem).
    """
    from gunshot_core.models import file_sha256

    path = pathlib.Path(DEFAULT_HEAD_PATH if path is None else os.fspath(path))
    if (
        path.is_file()
        and path.name in (CARD_FILENAME, MODEL_FILENAME)
        and (path.parent / CARD_FILENAME).is_file()
    ):
        path = path.parent
    if path.is_dir():
        card = read_card(path)
        model_path = path / card.model_file
        if not model_path.is_file():
            raise ModelFileError(f"head directory {str(path)!r}: model file {card.model_file!r} is missing")
        sha = file_sha256(model_path)
        if card.model_sha256 and sha != card.model_sha256:
            raise ModelFileError(
                f"{model_path}: sha256 {sha} does not match the card's model_sha256 {card.model_sha256}"
            )
        net = _KerasNet(str(model_path), card.transform, str(path), card.frame_pooling)
        net.load()  # fail here, not at the first prediction; a pickled copy reloads lazily
        return Head(
            net,
            head_id=card.head_id,
            sha256=sha,
            frames=card.frames,
            threshold=card.threshold,
            source_path=str(path),
            kind="keras3_artifact",
            pad_to_frames=card.pad_to_frames,
            input_convention=card.input_convention,
            card=card,
        )
    if not path.exists():
        raise ModelFileError(f"head file not found: {str(path)!r}")
    if not _is_hdf5(path):
        raise ModelFileError(
            f"{path}: not a head: expected a Keras 2 .h5 file or a directory with {CARD_FILENAME} "
            f"and {MODEL_FILENAME}"
        )
    layers, frames = _parse_h5(str(path))
    return Head(
        _NumpyNet(layers),
        head_id=path.stem,
        sha256=file_sha256(path),
        frames=frames,
        threshold=ORIGINAL_THRESHOLD,
        source_path=str(path),
        kind="keras2_h5",
    )


# --- .h5 -> artifact ----------------------------------------------------------------------------------------


def _keras_activation(name: str):
    return register_keras_objects() if name == "hard_sigmoid" else name


def build_keras_model(layers: list[_Layer], frames: int | None):
    """An equivalent Keras 3 model of parsed Keras 2 layers, weights set (float32 [batch, t, 128] input)."""
    register_keras_objects()
    import keras

    inputs = keras.Input(shape=(frames, params.EMBEDDING_SIZE), dtype="float32", name="frames")
    x = inputs
    for layer in layers:
        c, w = layer.config, layer.weights
        if layer.kind in ("Dropout", "SpatialDropout1D"):
            k = keras.layers.Dropout(c.get("rate") or 0.0, name=layer.name)
            x = k(x)
            continue
        if layer.kind == "Flatten":
            x = keras.layers.Flatten(name=layer.name)(x)
            continue
        if layer.kind == "Activation":
            x = keras.layers.Activation(_keras_activation(c["activation"]), name=layer.name)(x)
            continue
        if layer.kind == "BatchNormalization":
            k = keras.layers.BatchNormalization(epsilon=c["epsilon"], name=layer.name)
            x = k(x)
            k.set_weights([w["gamma"], w["beta"], w["moving_mean"], w["moving_variance"]])
        elif layer.kind == "Dense":
            k = keras.layers.Dense(
                c["units"],
                activation=_keras_activation(c["activation"]),
                use_bias="bias" in w,
                name=layer.name,
            )
            x = k(x)
            k.set_weights([w["kernel"]] + ([w["bias"]] if "bias" in w else []))
        elif layer.kind == "LSTM":
            k = keras.layers.LSTM(
                c["units"],
                activation=_keras_activation(c["activation"]),
                recurrent_activation=_keras_activation(c["recurrent_activation"]),
                return_sequences=c["return_sequences"],
                go_backwards=c["go_backwards"],
                use_bias="bias" in w,
                name=layer.name,
            )
            x = k(x)
            k.set_weights([w["kernel"], w["recurrent_kernel"]] + ([w["bias"]] if "bias" in w else []))
        else:
            raise AssertionError(layer.kind)
    return keras.Model(inputs, x, name="gunshot_head")


def import_h5_head(
    h5_path, out_dir, *, head_id: str | None = None, threshold: float | None = None
) -> HeadCard:
    """Converts an original Keras 2 .h5 head into a head artifact directory.

    Writes OUT_DIR/model.keras (an equivalent Keras 3 model; the Keras 2 hard sigmoid is the registered
    "gunshot_core>keras2_hard_sigmoid") and OUT_DIR/card.json. `load_head(OUT_DIR)` scores like
    `load_head(h5_path)`.

    Args:
      h5_path: the .h5 head. out_dir: artifact directory (created; existing files are replaced).
      head_id: defaults to the .h5 file stem. threshold: defaults to ORIGINAL_THRESHOLD (0.51).
    Returns:
      the written HeadCard.
    """
    from gunshot_core.models import file_sha256

    h5_path = pathlib.Path(h5_path)
    head = load_head(h5_path)
    if head.kind != "keras2_h5":
        raise ModelFileError(f"{h5_path}: import_h5_head needs a Keras 2 .h5 file, got a {head.kind}")
    model = build_keras_model(head._net.layers, head.frames)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (".tmp-" + MODEL_FILENAME)
    model.save(tmp)
    os.replace(tmp, out_dir / MODEL_FILENAME)
    card = HeadCard(
        head_id=head_id or head.head_id,
        threshold=ORIGINAL_THRESHOLD if threshold is None else float(threshold),
        frames=head.frames,
        pad_to_frames=head.pad_to_frames,
        input_convention=INPUT_UINT8_AS_FLOAT,
        training={"note": "trained by the original spotting_gunshots project (Keras 2.2.4)"},
        source={"kind": "keras2_h5", "file": h5_path.name, "sha256": file_sha256(h5_path)},
    )
    return write_card(out_dir, card)
