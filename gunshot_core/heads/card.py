"""The head card: `MDIR/card.json`, the metadata every head artifact carries.

Stage: heads (metadata). A head artifact is a directory `MDIR/` holding `model.keras` and `card.json`;
`HeadCard` is the card (id, threshold, frames, input convention, training stats, metrics, provenance),
`write_card` / `read_card` store and validate it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import tempfile

from gunshot_core import params
from gunshot_core.errors import ModelFileError

#: Decision threshold of the original project's inference script (`score >= 0.51` means gunshot).
ORIGINAL_THRESHOLD = 0.51
CARD_FILENAME = "card.json"
MODEL_FILENAME = "model.keras"
CARD_FORMAT = "gunshot-spotter-head"
CARD_FORMAT_VERSION = 1
DEFAULT_CLASSES = ("no_gunshot", "gunshot")
#: Input conventions: how uint8 frames become the model's float32 input.
INPUT_UINT8_AS_FLOAT = "uint8_as_float"  # float32(x), values 0..255 (the original project's convention)
INPUT_UINT8_DIV_255 = "uint8_div_255"  # float32(x) / 255, values 0..1
INPUT_FLOAT32 = "float32"  # float frames as stored (e.g. BirdNET's 1024 floats), unchanged
INPUT_CONVENTIONS = (INPUT_UINT8_AS_FLOAT, INPUT_UINT8_DIV_255, INPUT_FLOAT32)
#: How a frame-pooling head turns its frame logits into the window's (card `frame_pooling.pooling`).
FRAME_POOLINGS = ("max", "attention")


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
      input_convention: "uint8_as_float" (float32(x), 0..255), "uint8_div_255", or "float32" (float
        frames as stored, e.g. BirdNET's).
      frame_pooling: null, or {"pooling": "max" | "attention", "frame_logits": <name of the layer
        whose output is the per-frame logit, float32 [batch, t, 1]>, "attention_logits": <name of the
        layer giving per-frame attention logits (attention pooling), else null>}: the head scores
        frames and pools them (see `pool_frame_logits`); written by `training.train --model framepool`.
      transform: null, or {"kind": "tf_transform", "dir": <dir relative to MDIR with the
        tf.Transform output (transform_fn/, transformed_metadata/)>, "input_key": <raw feature name>,
        "output_key": <transformed feature name>}: applied to float32 [batch, frames, 128] after the
        input convention, before the model.
      embedding_model: the embedding model whose frames the head was trained on ("vggish", "birdnet";
        gunshot_core.embedding_models); a card without it is a VGGish head. Scoring another model's
        frames with the head is an EmbeddingModelMismatchError.
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
    embedding_model: str = "vggish"
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
        if not isinstance(self.embedding_model, str) or not self.embedding_model:
            raise ModelFileError(f"card: embedding_model must be a model name, got {self.embedding_model!r}")
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
    from gunshot_core.hashes import file_sha256

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
