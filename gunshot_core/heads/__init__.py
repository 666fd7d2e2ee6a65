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

The package, one module per file format and concern (each imports only those above it):

    card.py         the head card (MDIR/card.json): HeadCard, write_card, read_card
    activations.py  NumPy activations shared by both formats
    keras2.py       Keras 2 .h5 reader + NumPy forward pass (layer allow-list)
    keras3.py       Keras 3 .keras loader behind a config allow-list
    head.py         Head and load_head (either format)
    convert.py      import_h5_head: .h5 -> head artifact directory
"""

from gunshot_core.heads.card import (
    CARD_FILENAME,
    CARD_FORMAT,
    CARD_FORMAT_VERSION,
    DEFAULT_CLASSES,
    FRAME_POOLINGS,
    INPUT_CONVENTIONS,
    INPUT_FLOAT32,
    INPUT_UINT8_AS_FLOAT,
    INPUT_UINT8_DIV_255,
    MODEL_FILENAME,
    ORIGINAL_THRESHOLD,
    HeadCard,
    read_card,
    write_card,
)
from gunshot_core.heads.convert import build_keras_model, import_h5_head
from gunshot_core.heads.head import DEFAULT_HEAD_PATH, FRAME_CHUNK, Head, load_head
from gunshot_core.heads.keras2 import SUPPORTED_H5_LAYERS
from gunshot_core.heads.keras3 import KERAS2_HARD_SIGMOID, pool_frame_logits, register_keras_objects

__all__ = [
    "CARD_FILENAME",
    "CARD_FORMAT",
    "CARD_FORMAT_VERSION",
    "DEFAULT_CLASSES",
    "DEFAULT_HEAD_PATH",
    "FRAME_CHUNK",
    "FRAME_POOLINGS",
    "Head",
    "HeadCard",
    "INPUT_CONVENTIONS",
    "INPUT_FLOAT32",
    "INPUT_UINT8_AS_FLOAT",
    "INPUT_UINT8_DIV_255",
    "KERAS2_HARD_SIGMOID",
    "MODEL_FILENAME",
    "ORIGINAL_THRESHOLD",
    "SUPPORTED_H5_LAYERS",
    "build_keras_model",
    "import_h5_head",
    "load_head",
    "pool_frame_logits",
    "read_card",
    "register_keras_objects",
    "write_card",
]
