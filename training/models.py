"""Head architectures: the original project's three heads as presets, configurable variants, and
`framepool`, a per-frame scorer pooled over the window.

Every head is built twice over the same layer objects (shared weights):

* the training model takes the tf.Transform output, float32 [batch, frames, 128] z-scored frames;
* the serving model takes what `gunshot_core.heads` feeds a head, float32 [batch, frames, 128] uint8
  values (unscaled, zero-padded), and applies the analysed mean/std in a `Normalization` layer first.

So the saved `model.keras` contains the preprocessing and loads with `safe_mode=True` (no Lambda).

`framepool` scores every 0.96 s frame on its own (the same Dense layers applied to each frame) and
pools the frame logits over the window: `max` (the window is as likely a gunshot as its most likely
frame) or `attention` (a softmax over learned per-frame attention logits weighs the frame logits).
A gunshot fills one or two of the ten frames; a head that flattens the window has to learn every
position separately, a frame scorer sees the same shot wherever it falls. The pooling is composed
from standard Keras layers (GlobalMaxPooling1D, Softmax, Dot), so the artifact needs no custom code,
and `gunshot_core.heads` reads the frame scores back through the layer names in FRAME_LAYERS.
"""

import dataclasses

import keras
import numpy as np

from gunshot_core import params

MODELS = ("lstm", "logreg", "mlp", "framepool")
POOLINGS = ("max", "attention")

#: Layer names of a framepool head that gunshot_core.heads looks up (card `frame_pooling`).
FRAME_LOGITS_LAYER = "frame_logit"
ATTENTION_LOGITS_LAYER = "attention_logit"


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Architecture options.

    Attributes:
      kind: lstm | logreg | mlp | framepool.
      units: LSTM units per layer (lstm).
      layers: stacked LSTM layers (lstm).
      hidden: hidden Dense units (mlp; per frame in framepool, 0 = a per-frame logistic regression).
      dropout: dropout rate after the input batch-norm (and between LSTM layers).
      batch_norm: BatchNormalization on the input (and between LSTM layers), as in the original.
      activation: LSTM cell / hidden layer activation (the original LSTMs used relu).
      recurrent_activation: LSTM gate activation.
      pooling: framepool only: max | attention.
    """

    kind: str
    units: int = 128
    layers: int = 1
    hidden: int = 100
    dropout: float = 0.5
    batch_norm: bool = True
    activation: str = "relu"
    recurrent_activation: str = "sigmoid"
    pooling: str = "max"


# The original project's heads (see ../shared/seed/models): 1-layer LSTM(128) with input batch-norm
# and dropout 0.5; logistic regression = batch-norm + flatten + sigmoid Dense; SingleLayerNN =
# batch-norm + flatten + Dense(100, relu) + sigmoid Dense.
PRESETS = {
    "lstm": HeadConfig("lstm", units=128, layers=1, dropout=0.5),
    "logreg": HeadConfig("logreg", dropout=0.0),
    "mlp": HeadConfig("mlp", hidden=100, dropout=0.0),
    # Not an original head: Dropout 0.25 -> Dense(32, relu) per frame -> frame logit -> max over the
    # window. Without the dropout a hidden layer under max pooling can memorise one stray frame per
    # training window (held-out ROC-AUC 0.5-0.6 on tests/test_framepool.py's data; 1.0 with it).
    "framepool": HeadConfig("framepool", hidden=32, dropout=0.25, pooling="max"),
}


def _layers(config: HeadConfig) -> list:
    """The trainable layers of a sequential head, applied in order to float32 [batch, frames, 128]."""
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


def _framepool(config: HeadConfig):
    """The layers of a framepool head, as a function float32 [batch, t, 128] -> float32 [batch, 1].

    Per frame: [BatchNorm] -> [Dropout] -> [Dense(hidden, activation)] -> Dense(1) = frame logit z_t
    (float32 [batch, t, 1]). Pooled: max_t z_t (`max`), or sum_t softmax_t(a_t) z_t with attention
    logits a_t = Dense(1) of the same per-frame features (`attention`). Then a sigmoid.
    """
    if config.pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {config.pooling!r}; expected one of {POOLINGS}")
    if config.hidden < 0:
        raise ValueError(f"hidden units must be >= 0, got {config.hidden}")
    pre = []
    if config.batch_norm:
        pre.append(keras.layers.BatchNormalization(epsilon=1e-3, name="input_batch_norm"))
    if config.dropout > 0:
        pre.append(keras.layers.Dropout(config.dropout, name="input_dropout"))
    if config.hidden > 0:
        pre.append(keras.layers.Dense(config.hidden, activation=config.activation, name="frame_hidden"))
    frame_logit = keras.layers.Dense(1, name=FRAME_LOGITS_LAYER)
    score = keras.layers.Activation("sigmoid", name="score")
    if config.pooling == "max":
        pool = keras.layers.GlobalMaxPooling1D(name="pool_max")
    else:
        attention_logit = keras.layers.Dense(1, name=ATTENTION_LOGITS_LAYER)
        weights = keras.layers.Softmax(axis=1, name="attention_weights")
        weighted_sum = keras.layers.Dot(axes=1, name="pool_attention")  # [b, t, 1] . [b, t, 1] -> [b, 1, 1]
        flat = keras.layers.Reshape((1,), name="pooled_logit")

    def apply(x):
        for layer in pre:
            x = layer(x)
        z = frame_logit(x)
        if config.pooling == "max":
            return score(pool(z))
        return score(flat(weighted_sum([weights(attention_logit(x)), z])))

    return apply


def frame_pooling_card(config: HeadConfig) -> dict | None:
    """The card's `frame_pooling` entry of a framepool head (None for other kinds)."""
    if config.kind != "framepool":
        return None
    return {
        "pooling": config.pooling,
        "frame_logits": FRAME_LOGITS_LAYER,
        "attention_logits": ATTENTION_LOGITS_LAYER if config.pooling == "attention" else None,
    }


def _head_fn(config: HeadConfig):
    if config.kind == "framepool":
        return _framepool(config)
    layers = _layers(config)

    def apply(x):
        for layer in layers:
            x = layer(x)
        return x

    return apply


def build_models(config: HeadConfig, frames: int, mean: np.ndarray, std: np.ndarray):
    """Builds the training and serving models of one head (shared layers).

    Args:
      config: architecture.
      frames: frames per clip (fixed input length of both models).
      mean, std: float [128] per-dimension statistics from the transform_fn.
    Returns:
      (training_model on z-scored frames, serving_model on raw uint8-valued float32 frames); both
      map float32 [batch, frames, 128] -> float32 [batch, 1] gunshot probability. A framepool head's
      models take any number of frames (float32 [batch, t, 128]), so its frame scores can be read
      over a whole recording at once.
    """
    width = params.EMBEDDING_SIZE
    mean = np.asarray(mean, np.float32).reshape(width)
    std = np.asarray(std, np.float32).reshape(width)
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"frame std must be finite and > 0, got min {std.min()}")
    head = _head_fn(config)
    length = None if config.kind == "framepool" else frames

    scaled_in = keras.Input(shape=(length, width), dtype="float32", name="scaled_frames")
    training_model = keras.Model(scaled_in, head(scaled_in), name=f"{config.kind}_training")

    raw_in = keras.Input(shape=(length, width), dtype="float32", name="frames")
    normalization = keras.layers.Normalization(
        axis=-1, mean=mean.tolist(), variance=(std.astype(np.float64) ** 2).tolist(), name="transform_zscore"
    )
    y = head(normalization(raw_in))
    serving_model = keras.Model(raw_in, y, name=f"gunshot_{config.kind}")
    return training_model, serving_model
