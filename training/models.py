"""Head architectures: the original project's three heads as presets, plus configurable variants.

Every head is built twice over the same layer objects (shared weights):

* the training model takes the tf.Transform output, float32 [batch, frames, 128] z-scored frames;
* the serving model takes what `gunshot_core.heads` feeds a head, float32 [batch, frames, 128] uint8
  values (unscaled, zero-padded), and applies the analysed mean/std in a `Normalization` layer first.

So the saved `model.keras` contains the preprocessing and loads with `safe_mode=True` (no Lambda).
"""

import dataclasses

import keras
import numpy as np

from gunshot_core import params

MODELS = ("lstm", "logreg", "mlp")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Architecture options.

    Attributes:
      kind: lstm | logreg | mlp.
      units: LSTM units per layer (lstm).
      layers: stacked LSTM layers (lstm).
      hidden: hidden Dense units (mlp).
      dropout: dropout rate after the input batch-norm (and between LSTM layers).
      batch_norm: BatchNormalization on the input (and between LSTM layers), as in the original.
      activation: LSTM cell / hidden layer activation (the original LSTMs used relu).
      recurrent_activation: LSTM gate activation.
    """

    kind: str
    units: int = 128
    layers: int = 1
    hidden: int = 100
    dropout: float = 0.5
    batch_norm: bool = True
    activation: str = "relu"
    recurrent_activation: str = "sigmoid"


# The original project's heads (see ../shared/seed/models): 1-layer LSTM(128) with input batch-norm
# and dropout 0.5; logistic regression = batch-norm + flatten + sigmoid Dense; SingleLayerNN =
# batch-norm + flatten + Dense(100, relu) + sigmoid Dense.
PRESETS = {
    "lstm": HeadConfig("lstm", units=128, layers=1, dropout=0.5),
    "logreg": HeadConfig("logreg", dropout=0.0),
    "mlp": HeadConfig("mlp", hidden=100, dropout=0.0),
}


def _layers(config: HeadConfig) -> list:
    """The trainable layers of a head, applied in order to float32 [batch, frames, 128]."""
    out = []
    if config.batch_norm:
        out.append(keras.layers.BatchNormalization(epsilon=1e-3, name="input_batch_norm"))
    if config.dropout > 0:
        out.append(keras.layers.Dropout(config.dropout, name="input_dropout"))
    if config.kind == "lstm":
        for i in range(config.layers):
            last = i == config.layers - 1
            out.append(
                keras.layers.LSTM(
                    config.units,
                    activation=config.activation,
                    recurrent_activation=config.recurrent_activation,
                    return_sequences=not last,
                    name=f"lstm_{i + 1}",
                )
            )
            if not last:
                if config.batch_norm:
                    out.append(keras.layers.BatchNormalization(epsilon=1e-3, name=f"batch_norm_{i + 1}"))
                if config.dropout > 0:
                    out.append(keras.layers.Dropout(config.dropout, name=f"dropout_{i + 1}"))
    elif config.kind in ("logreg", "mlp"):
        out.append(keras.layers.Flatten(name="flatten"))
        if config.kind == "mlp":
            out.append(keras.layers.Dense(config.hidden, activation=config.activation, name="hidden"))
    else:
        raise ValueError(f"unknown model kind {config.kind!r}; expected one of {MODELS}")
    out.append(keras.layers.Dense(1, activation="sigmoid", name="score"))
    return out


def build_models(config: HeadConfig, frames: int, mean: np.ndarray, std: np.ndarray):
    """Builds the training and serving models of one head (shared layers).

    Args:
      config: architecture.
      frames: frames per clip (fixed input length of both models).
      mean, std: float [128] per-dimension statistics from the transform_fn.
    Returns:
      (training_model on z-scored frames, serving_model on raw uint8-valued float32 frames); both
      map float32 [batch, frames, 128] -> float32 [batch, 1] gunshot probability.
    """
    width = params.EMBEDDING_SIZE
    mean = np.asarray(mean, np.float32).reshape(width)
    std = np.asarray(std, np.float32).reshape(width)
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"frame std must be finite and > 0, got min {std.min()}")
    layers = _layers(config)

    scaled_in = keras.Input(shape=(frames, width), dtype="float32", name="scaled_frames")
    x = scaled_in
    for layer in layers:
        x = layer(x)
    training_model = keras.Model(scaled_in, x, name=f"{config.kind}_training")

    raw_in = keras.Input(shape=(frames, width), dtype="float32", name="frames")
    normalization = keras.layers.Normalization(
        axis=-1, mean=mean.tolist(), variance=(std.astype(np.float64) ** 2).tolist(), name="transform_zscore"
    )
    y = normalization(raw_in)
    for layer in layers:
        y = layer(y)
    serving_model = keras.Model(raw_in, y, name=f"gunshot_{config.kind}")
    return training_model, serving_model
