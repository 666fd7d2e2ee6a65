"""The loaded head and `load_head`: frames [n, d] -> gunshot score (uint8 VGGish [n, 128], or the
frames of the embedding model the head's card names, e.g. float32 BirdNET [n, 1024]).

Stage: heads (scoring). `load_head(path)` opens an original Keras 2 `.h5` file (`keras2`) or a head
artifact directory (`keras3` + `card`) and returns a `Head`, whose feeding convention is that of the
original project (`HEAD_FRAMES` = 10): the uint8 frames are cast to float32 without scaling, zero
frames are appended up to `pad_to_frames` (10) frames, heads with a fixed input length see the first
`frames` frames, and heads that take any length (the LSTMs) see every frame.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from gunshot_core import params
from gunshot_core.errors import ModelFileError
from gunshot_core.heads.activations import _sigmoid
from gunshot_core.heads.card import (
    CARD_FILENAME,
    INPUT_UINT8_AS_FLOAT,
    INPUT_UINT8_DIV_255,
    MODEL_FILENAME,
    ORIGINAL_THRESHOLD,
    HeadCard,
    read_card,
)
from gunshot_core.heads.keras2 import _NumpyNet, _parse_h5
from gunshot_core.heads.keras3 import _KerasNet

#: The head bundled with the package: the original project's default (1-layer LSTM, MIT licence).
DEFAULT_HEAD_PATH = str(
    pathlib.Path(__file__).resolve().parents[1]
    / "data"
    / "heads"
    / "1LayerLSTM__Loss=BinCE_20Epochs_july02.h5"
)
#: Frames per forward pass of `Head.frame_scores` (frames are scored independently: exact in chunks).
FRAME_CHUNK = 8192


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
            raise ValueError(f"head input must be {self.embedding_model} frames, got dtype {a.dtype}")
        width = self.frame_width
        if a.ndim not in (2, 3) or a.shape[-1] != width:
            raise ValueError(
                f"head input must be [frames, {width}] or [batch, frames, {width}], got shape {a.shape}"
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
            raise ValueError(f"head input must be {self.embedding_model} frames, got dtype {a.dtype}")
        if a.shape[-1] != self.frame_width:
            raise ValueError(f"head input must have {self.frame_width} values per frame, got shape {a.shape}")
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
    def embedding_model(self) -> str:
        """The embedding model the head was trained on: the card's, "vggish" for an .h5 head."""
        return self.card.embedding_model if self.card is not None else "vggish"

    @property
    def frame_width(self) -> int:
        """Values per input frame: the embedding_size of the head's embedding model (128 for VGGish)."""
        from gunshot_core import embedding_models

        model = embedding_models.MODELS.get(self.embedding_model)
        return model.embedding_size if model is not None else params.EMBEDDING_SIZE

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
            raise ValueError(f"frame_scores needs frames [n, {self.frame_width}], got shape {a.shape}")
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
    from gunshot_core.hashes import file_sha256

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
