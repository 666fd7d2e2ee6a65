"""Settings of one scoring run and the names its stages share: counter namespace, defaults, output tags.

Stage: scoring (configuration). `ScoringConfig` is everything the scoring DoFns need (small and
picklable); it is built once at launch by `pipelines.scoring.pipeline.make_config`.
"""

import argparse
import dataclasses

from gunshot_core import params

NAMESPACE = "score"
# Examples per RunInference batch (every batch but a bundle's last is filled to it; VGGish.embed runs
# it in fixed-shape blocks). Few large batches: between two forward passes the decoding of the next
# batch evicts the network's weights from the CPU caches, which costs the next pass ~0.05 s, so
# batches of one 60-s chunk ran ~20% below the network's own speed; batches of 512 run within ~4%.
# Each batch also ends in a padded block (its chunks' total is rarely a multiple of 64): 2048 pads a
# quarter as often as 512. 20 minutes in 150-s files, new processes, AVX2 kernels, alternating runs:
# 512 -> 12.65-12.94 s, 1024 -> 12.57-12.59 s, 2048 -> 12.28-12.61 s. A batch holds <= 50 MB.
DEFAULT_BATCH_SIZE = 2048
DEFAULT_CHUNK_SECONDS = 60.0
DEFAULT_SPLIT_SECONDS = 1800.0  # longer recordings are decoded as segments on several workers
DEFAULT_ARCHIVE_PART_BYTES = 64 << 20  # zip and plain tar archives are decoded in parts of this size
SPLIT_MIN_BYTES = 8 << 20  # smaller files are never probed for splitting
PROGRESS_SECONDS = 60.0
# Tags of the multi-output steps.
INFO_TAG = "info"
FRAMES_TAG = "frames"
ERRORS_TAG = "errors"
WINDOWS_TAG = "windows"
RECORDINGS_TAG = "recordings"
EVENTS_TAG = "events"
EMBEDDINGS_TAG = "embeddings"
CLIPS_TAG = "clips"
FRAME_SCORES_TAG = "frame_scores"


def add_decoding_arguments(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--batch_size, --chunk_seconds, --split_seconds, --archive_part_mb: how recordings are decoded
    and embedded, shared by every job that embeds through these stages (batch, dataset)."""
    group.add_argument(
        "--batch_size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="network inputs per inference batch (%(default)s VGGish examples; with --embedding_model "
        "birdnet the default is 64 BirdNET frames)",
    )
    group.add_argument(
        "--chunk_seconds",
        type=float,
        default=DEFAULT_CHUNK_SECONDS,
        help="seconds of audio decoded at a time; bounds worker memory (%(default)s)",
    )
    group.add_argument(
        "--split_seconds",
        type=float,
        default=DEFAULT_SPLIT_SECONDS,
        help="recordings longer than this are decoded in segments of about this length, spread over "
        "workers (0: never split; default %(default)s)",
    )
    group.add_argument(
        "--archive_part_mb",
        type=float,
        default=DEFAULT_ARCHIVE_PART_BYTES / (1 << 20),
        help="zip and uncompressed tar archives are decoded in parts of about this many MB of audio "
        "members, spread over workers (0: one member per part; compressed tars are read in one pass; "
        "default %(default)s)",
    )


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """Everything the scoring DoFns need (small and picklable).

    Attributes:
      checkpoint, pca, head: model files (local or gs://).
      window_frames, hop_frames: head window and hop in 0.96 s frames.
      threshold: a window with score >= threshold is a detection.
      batch_size: network inputs per RunInference batch (VGGish examples, BirdNET frames; chunks are
        batched up to this many inputs).
      chunk_seconds: seconds of audio decoded per chunk.
      split_seconds: recordings longer than this are decoded in segments of about this length,
        which the runner can spread over workers (0: never split).
      archive_part_bytes: zip and uncompressed tar archives are decoded in parts of about this many
        stored bytes of audio members, which the runner can spread over workers (0: one member each).
      resampler: gunshot_core.audio resampler name.
      timestamp_pattern: strptime pattern finding the start time in file names, or None.
      write_embeddings: also emit one row per frame for the embeddings table.
      export_clips: top-K events per recording to cut as audio clips (0: none).
      clip_dir: where clips go.
      clip_padding_seconds: audio kept before and after each event in a clip.
      frame_events: the head has frame scores: events from frames, and rows of the frames table.
      precision: how VGGish runs: fp32 | bf16 | int8 (resolved; gunshot_core.precision).
      embedding_model, embedding_hop_seconds: the embedding model (gunshot_core.embedding_models) and
        its hop (None: the model's default); `model` is its description.
    """

    checkpoint: str
    pca: str
    head: str
    window_frames: int = params.HEAD_FRAMES
    hop_frames: int = 5
    threshold: float = 0.5
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS
    split_seconds: float = DEFAULT_SPLIT_SECONDS
    archive_part_bytes: int = DEFAULT_ARCHIVE_PART_BYTES
    resampler: str | None = None
    timestamp_pattern: str | None = None
    write_embeddings: bool = False
    export_clips: int = 0
    clip_dir: str = ""
    clip_padding_seconds: float = 1.0
    frame_events: bool = False
    precision: str = "fp32"
    embedding_model: str = "vggish"
    embedding_hop_seconds: float | None = None

    @property
    def model(self):
        """The gunshot_core.embedding_models.EmbeddingModel frames come from."""
        from gunshot_core import embedding_models

        return embedding_models.get(self.embedding_model, hop_seconds=self.embedding_hop_seconds)
