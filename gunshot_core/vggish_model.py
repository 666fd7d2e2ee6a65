"""The VGGish embedding model behind `gunshot_core.embedding_models` ("vggish"): VGGish CNN + PCA and
8-bit quantisation, exactly the project's original path (`audio.iter_examples` -> `VGGish.embed` ->
`Postprocessor.postprocess`), so frames stay byte for byte what they were.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gunshot_core import audio, params, resample


def file_paths(*, checkpoint=None, pca=None, **_) -> dict[str, str]:
    """{"checkpoint": path, "pca": path}: explicit paths, else $GUNSHOT_VGGISH_CHECKPOINT /
    $GUNSHOT_PCA_PARAMS, else the downloaded files (gunshot_core.models.resolve_model_paths)."""
    from gunshot_core.models import resolve_model_paths

    paths = resolve_model_paths(checkpoint=checkpoint, pca=pca)
    return {"checkpoint": paths.checkpoint, "pca": paths.pca}


class VGGishEmbedder:
    """VGGish + postprocessor: recordings -> uint8 [n, 128] frames of 0.96 s."""

    def __init__(
        self,
        model,
        *,
        checkpoint=None,
        pca=None,
        resampler: str = resample.DEFAULT_RESAMPLER,
        batch_size=None,
        precision: str = "fp32",
    ):
        from gunshot_core.postprocess import Postprocessor
        from gunshot_core.vggish import DEFAULT_BATCH_SIZE, VGGish

        self.model = model
        self.paths = file_paths(checkpoint=checkpoint, pca=pca)
        self.resampler = resampler
        self.postprocessor = Postprocessor.from_npz(self.paths["pca"])
        self.vggish = VGGish.from_checkpoint(
            self.paths["checkpoint"], batch_size=batch_size or DEFAULT_BATCH_SIZE, precision=precision
        )

    def file_hashes(self) -> dict[str, str]:
        from gunshot_core.hashes import file_sha256

        return {role: file_sha256(path) for role, path in self.paths.items()}

    def embed_examples(self, examples: np.ndarray) -> np.ndarray:
        """float32 [k, 96, 64] log-mel examples -> uint8 [k, 128] postprocessed frames."""
        return self.postprocessor.postprocess(self.vggish.embed(examples))

    #: The embedding-model interface's name for it (network inputs -> stored frames).
    embed_inputs = embed_examples

    def prepare(self) -> None:
        """Traces (compiles) the network, so the first batch does not pay for it."""
        self.vggish.trace()

    def iter_frames(
        self, source, *, chunk_seconds: float = audio.DEFAULT_BLOCK_SECONDS
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame index, uint8 [k, 128]) chunks of one recording, in bounded memory.

        Raises:
          AudioDecodeError: the recording cannot be decoded.
        """
        for first, examples in audio.iter_examples(
            source, resampler=self.resampler, chunk_seconds=chunk_seconds
        ):
            yield first, self.embed_examples(examples)

    def frames(self, source) -> np.ndarray:
        """uint8 [n, 128] frames of a whole recording (n may be 0)."""
        blocks = [frames for _, frames in self.iter_frames(source)]
        return np.concatenate(blocks) if blocks else np.zeros((0, params.EMBEDDING_SIZE), np.uint8)


def iter_inputs(
    model,
    source,
    *,
    resampler: str = resample.DEFAULT_RESAMPLER,
    chunk_seconds: float = audio.DEFAULT_BLOCK_SECONDS,
    start_frame: int = 0,
    stop_frame: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(first example index, float32 [k, 96, 64] log-mel examples) of examples [start, stop) of a
    recording (`audio.iter_examples`; chunks fill VGGish's fixed blocks, so none is padded)."""
    from gunshot_core import vggish

    return audio.iter_examples(
        source,
        resampler=resampler,
        chunk_seconds=chunk_seconds,
        chunk_multiple=vggish.DEFAULT_BATCH_SIZE,
        start_example=start_frame,
        stop_example=stop_frame,
    )


def runtime(precision: str = "fp32") -> str:
    """What runs VGGish at `precision` (gunshot_core.precision.embedding_runtime)."""
    from gunshot_core import precision as precision_lib

    return precision_lib.embedding_runtime(precision)


def frame_count_of(model, info) -> int:
    """0.96 s examples of a recording with header `info` (gunshot_core.audio.AudioInfo)."""
    samples = int(info.frames * params.SAMPLE_RATE / info.sample_rate) if info.sample_rate else 0
    if samples < params.MIN_SAMPLES_FOR_ONE_EXAMPLE:
        return 0
    return 1 + (samples - params.MIN_SAMPLES_FOR_ONE_EXAMPLE) // params.EXAMPLE_HOP_SAMPLES


def too_short_message(duration_seconds: float) -> str:
    return (
        f"{duration_seconds:.3f} s of audio holds no complete 0.96 s frame"
        f" ({params.MIN_SAMPLES_FOR_ONE_EXAMPLE} samples at 16 kHz)"
    )


def load(model, **options) -> VGGishEmbedder:
    return VGGishEmbedder(model, **options)


def make_head(name, model, **options):
    raise ValueError(f"the VGGish model has no built-in head {name!r}")
