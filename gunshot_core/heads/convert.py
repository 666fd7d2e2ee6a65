"""Import and export of heads: an original Keras 2 `.h5` head -> a Keras 3 head artifact directory.

Stage: heads (conversion). `build_keras_model` rebuilds parsed Keras 2 layers as an equivalent Keras 3
model; `import_h5_head` writes it with its card as `MDIR/`.
"""

from __future__ import annotations

import os
import pathlib

from gunshot_core import params, startup
from gunshot_core.errors import ModelFileError
from gunshot_core.heads.card import (
    INPUT_UINT8_AS_FLOAT,
    MODEL_FILENAME,
    ORIGINAL_THRESHOLD,
    HeadCard,
    write_card,
)
from gunshot_core.heads.head import load_head
from gunshot_core.heads.keras2 import _Layer
from gunshot_core.heads.keras3 import register_keras_objects


def _keras_activation(name: str):
    return register_keras_objects() if name == "hard_sigmoid" else name


def build_keras_model(layers: list[_Layer], frames: int | None):
    """An equivalent Keras 3 model of parsed Keras 2 layers, weights set (float32 [batch, t, 128] input)."""
    register_keras_objects()
    keras = startup.import_keras()

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
    from gunshot_core.hashes import file_sha256

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
