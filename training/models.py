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

MODELS = ("lstm", "logreg", "mlp", "framepool", "gunprior")
#: Heads whose frame logit starts from an embedding model's own class logit (need `prior` weights).
PRIOR_MODELS = ("gunprior",)
POOLINGS = ("max", "attention")

#: Layer names of a framepool head that gunshot_core.heads looks up (card `frame_pooling`).
FRAME_LOGITS_LAYER = "frame_logit"
ATTENTION_LOGITS_LAYER = "attention_logit"
#: The frozen prior and the learned correction of a gunprior head.
PRIOR_LAYER = "gun_prior"
CORRECTION_LAYER = "correction"


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Architecture options.

    Attributes:
      kind: lstm | logreg | mlp | framepool | gunprior.
      units: LSTM units per layer (lstm).
      layers: stacked LSTM layers (lstm).
      hidden: hidden Dense units (mlp; per frame in framepool, 0 = a per-frame logistic regression).
      dropout: dropout rate after the input batch-norm (and between LSTM layers).
      batch_norm: BatchNormalization on the input (and between LSTM layers), as in the original.
      activation: LSTM cell / hidden layer activation (the original LSTMs used relu).
      recurrent_activation: LSTM gate activation.
      pooling: framepool and gunprior: max | attention.
      l2: L2 penalty on the kernels of the correction (gunprior; 0 = none).
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
    l2: float = 0.0


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
    # Not an original head: BirdNET's Gun_Gun logit per frame (frozen) + a linear correction on the
    # z-scored embedding (L2 1e-3, starts at zero) -> max over the window. See the module docstring.
    "gunprior": HeadConfig("gunprior", hidden=0, dropout=0.0, batch_norm=False, pooling="max", l2=1e-3),
}


def default_model(embedding_model: str) -> str:
    """The architecture `gunshot train` uses without --model: gunprior on BirdNET frames (a head that
    keeps BirdNET's own gun class as its prior), the original project's LSTM on VGGish frames."""
    return "gunprior" if embedding_model == "birdnet" else "lstm"


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


def _framepool(config: HeadConfig, prior: tuple[np.ndarray, float] | None = None):
    """The layers of a framepool head, as a function float32 [batch, t, d] -> float32 [batch, 1].

    Per frame: [BatchNorm] -> [Dropout] -> [Dense(hidden, activation)] -> Dense(1) = frame logit z_t
    (float32 [batch, t, 1]). Pooled: max_t z_t (`max`), or sum_t softmax_t(a_t) z_t with attention
    logits a_t = Dense(1) of the same per-frame features (`attention`). Then a sigmoid.

    With `prior` (gunprior): z_t = frozen Dense(prior kernel [d], prior bias)(x_t) + the above
    (named CORRECTION_LAYER, L2 `config.l2`, zero-initialised); `x_t` is the head's input.
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
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    if prior is None:
        frame_logit = keras.layers.Dense(1, name=FRAME_LOGITS_LAYER, kernel_regularizer=regularizer)
    else:
        kernel, bias = prior
        prior_layer = keras.layers.Dense(
            1,
            name=PRIOR_LAYER,
            trainable=False,
            kernel_initializer=keras.initializers.Constant(np.asarray(kernel, np.float32).reshape(-1, 1)),
            bias_initializer=keras.initializers.Constant(float(bias)),
        )
        correction = keras.layers.Dense(
            1, name=CORRECTION_LAYER, kernel_regularizer=regularizer, kernel_initializer="zeros"
        )
        add = keras.layers.Add(name=FRAME_LOGITS_LAYER)

        def frame_logit(x, inputs):
            return add([prior_layer(inputs), correction(x)])

    score = keras.layers.Activation("sigmoid", name="score")
    if config.pooling == "max":
        pool = keras.layers.GlobalMaxPooling1D(name="pool_max")
    else:
        attention_logit = keras.layers.Dense(1, name=ATTENTION_LOGITS_LAYER)
        weights = keras.layers.Softmax(axis=1, name="attention_weights")
        weighted_sum = keras.layers.Dot(axes=1, name="pool_attention")  # [b, t, 1] . [b, t, 1] -> [b, 1, 1]
        flat = keras.layers.Reshape((1,), name="pooled_logit")

    def apply(inputs):
        x = inputs
        for layer in pre:
            x = layer(x)
        z = frame_logit(x) if prior is None else frame_logit(x, inputs)
        if config.pooling == "max":
            return score(pool(z))
        return score(flat(weighted_sum([weights(attention_logit(x)), z])))

    return apply


def frame_pooling_card(config: HeadConfig) -> dict | None:
    """The card's `frame_pooling` entry of a framepool head (None for other kinds)."""
    if config.kind not in ("framepool", "gunprior"):
        return None
    return {
        "pooling": config.pooling,
        "frame_logits": FRAME_LOGITS_LAYER,
        "attention_logits": ATTENTION_LOGITS_LAYER if config.pooling == "attention" else None,
    }


def _head_fn(config: HeadConfig, prior=None):
    if config.kind in ("framepool", "gunprior"):
        return _framepool(config, prior)
    layers = _layers(config)

    def apply(x):
        for layer in layers:
            x = layer(x)
        return x

    return apply


def fold_prior(
    prior: tuple[np.ndarray, float], mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, float]:
    """The prior's (kernel [d], bias) on z-scored frames s = (x - mean) / std that gives w . x + b:
    (w * std, w . mean + b), in float64 then float32."""
    w = np.asarray(prior[0], np.float64).reshape(-1)
    mean, std = np.asarray(mean, np.float64).reshape(-1), np.asarray(std, np.float64).reshape(-1)
    return (w * std).astype(np.float32), float(w @ mean + float(prior[1]))


def build_models(
    config: HeadConfig,
    frames: int,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    width: int = params.EMBEDDING_SIZE,
    prior: tuple[np.ndarray, float] | None = None,
):
    """Builds the training and serving models of one head (shared layers).

    Args:
      config: architecture.
      frames: frames per clip (fixed input length of both models).
      mean, std: float [d] per-dimension statistics from the transform_fn.
      width: values per frame d (the embedding model's embedding_size: 128 VGGish, 1024 BirdNET).
      prior: gunprior only: (float [d] kernel, float bias) of the embedding model's own gun logit on
        raw frames (BirdNET's Gun_Gun row, gunshot_core.birdnet.BirdNET.class_layer).
    Returns:
      (training_model on z-scored frames, serving_model on raw float32 frames as stored, uint8 values
      for VGGish); both map float32 [batch, frames, d] -> float32 [batch, 1] gunshot probability. A
      framepool or gunprior head's models take any number of frames (float32 [batch, t, d]), so its
      frame scores can be read over a whole recording at once.
    Raises:
      ValueError: bad statistics, or a prior missing (gunprior) or of the wrong size.
    """
    mean = np.asarray(mean, np.float32).reshape(width)
    std = np.asarray(std, np.float32).reshape(width)
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"frame std must be finite and > 0, got min {std.min()}")
    if config.kind in PRIOR_MODELS:
        if prior is None:
            raise ValueError(f"--model {config.kind} needs the embedding model's own gun class (a prior)")
        if np.asarray(prior[0]).size != width:
            raise ValueError(f"prior kernel has {np.asarray(prior[0]).size} values, frames have {width}")
        prior = fold_prior(prior, mean, std)
    else:
        prior = None
    head = _head_fn(config, prior)
    length = None if config.kind in ("framepool", "gunprior") else frames

    scaled_in = keras.Input(shape=(length, width), dtype="float32", name="scaled_frames")
    training_model = keras.Model(scaled_in, head(scaled_in), name=f"{config.kind}_training")

    raw_in = keras.Input(shape=(length, width), dtype="float32", name="frames")
    normalization = keras.layers.Normalization(
        axis=-1, mean=mean.tolist(), variance=(std.astype(np.float64) ** 2).tolist(), name="transform_zscore"
    )
    y = head(normalization(raw_in))
    serving_model = keras.Model(raw_in, y, name=f"gunshot_{config.kind}")
    return training_model, serving_model
