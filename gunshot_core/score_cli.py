"""`gunshot score FILE...`: score recordings in the terminal, as the original project did, done well.

Models are loaded once for all files. Each file prints its gunshot score (the highest window score
for recordings longer than one window, with where it happened), the decision and the time it took.
A head with frame scores (`training.train --model framepool`, or BirdNET's `birdnet-gun`) also
locates the shot to the frame with the highest frame score.

`--embedding_model birdnet` scores BirdNET V2.4 frames (3 s every `--embedding_hop_seconds`); its
default head is `birdnet-gun`, BirdNET's own Gun_Gun class (see docs/models.md).
"""

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from gunshot_core import arguments, audio, logs, options, resample, windows
from gunshot_core.errors import AudioDecodeError, GunshotError, InputError, ModelFileError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "score",
        description=(
            "Score recordings for gunshots: VGGish log-mel -> VGGish CNN -> PCA/quantise -> head "
            "(or, with --embedding_model birdnet, BirdNET V2.4 frames -> head, default birdnet-gun). "
            "Prints one line per file (or one JSON object per line with --json). Exits 1 when any "
            "file failed to decode, 2 when a file does not exist or the models cannot be loaded."
        ),
        epilog="Model files: run `gunshot models download` once, or pass --checkpoint and --pca.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="recordings (wav, flac, ogg, mp3, ...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    options.add_model_arguments(parser)
    options.add_embedding_model_arguments(parser)
    options.add_scoring_arguments(parser)
    logs.add_logging_flags(parser)
    return parser


class Scorer:
    """Embedding model + head, loaded once; scores one recording at a time.

    Args:
      checkpoint, pca: VGGish files (ignored by other embedding models).
      head: a head path, a built-in head name (`birdnet-gun`), or None for the model's default head.
      embedding_model: a gunshot_core.embedding_models.EmbeddingModel (default VGGish).
      precision: how the embedding network runs (gunshot_core.precision; VGGish: fp32|bf16|int8).
    Raises:
      EmbeddingModelMismatchError: the head was trained on another model's frames.
    """

    def __init__(
        self,
        checkpoint: str | None,
        pca: str | None,
        head: str | None,
        *,
        resampler: str = resample.DEFAULT_RESAMPLER,
        embedding_model=None,
        precision: str = "fp32",
    ):
        from gunshot_core import embedding_models

        self.resampler = resampler
        self.model = embedding_model or embedding_models.get()
        embedding_models.check_head_name(self.model, head)
        self.embedder = self.model.load(
            checkpoint=checkpoint, pca=pca, resampler=resampler, precision=precision
        )
        self.head = embedding_models.load_head(self.model, head, embedder=self.embedder)

    def frames(self, path) -> tuple[audio.AudioInfo, np.ndarray]:
        """(AudioInfo, [n, d] frames) of one recording, in bounded memory: uint8 [n, 128] VGGish
        frames, float32 [n, 1024] BirdNET frames."""
        info = audio.probe(path)
        blocks = [frames for _, frames in self.embedder.iter_frames(path)]
        frames = (
            np.concatenate(blocks)
            if blocks
            else np.zeros((0, self.model.embedding_size), np.dtype(self.model.dtype))
        )
        return info, frames

    def score(self, path, window: int, hop: int) -> dict:
        """Scores one recording; returns the result as a JSON-ready dict."""
        start = time.perf_counter()
        info, frames = self.frames(path)
        scored = windows.score_frames(self.head, frames, window, hop)
        peak, score = scored.peak()
        model = self.model
        start_seconds = float(model.frame_start_seconds(scored.starts[peak]))
        end_seconds = float(model.frame_end_seconds(scored.ends[peak] - 1)) if scored.ends[peak] else 0.0
        result = {
            "file": str(path),
            "score": round(score, 6),
            "peak_start_seconds": round(start_seconds, 3),
            "peak_end_seconds": round(max(end_seconds, start_seconds), 3),
            "windows": int(scored.scores.size),
            "frames": int(frames.shape[0]),
            "duration_seconds": round(info.duration_seconds, 3),
            "sample_rate": info.sample_rate,
            "channels": info.channels,
        }
        if self.head.has_frame_scores and frames.shape[0]:
            frame_scores = self.head.frame_scores(frames)
            best = int(np.argmax(frame_scores))
            result.update(
                peak_start_seconds=round(float(model.frame_start_seconds(best)), 3),
                peak_end_seconds=round(float(model.frame_end_seconds(best)), 3),
                peak_frame_score=round(float(frame_scores[best]), 6),
            )
        if model.name != "vggish":
            result["embedding_model"] = model.name
        result["seconds"] = round(time.perf_counter() - start, 3)
        return result


def _text_line(result: dict) -> str:
    if "error" in result:
        return f"{result['file']}: error ({result['reason']}): {result['error']}"
    verdict = "GUNSHOT" if result["detected"] else "no gunshot"
    where = ""
    if "peak_frame_score" in result:
        where = (
            f" at {result['peak_start_seconds']:.2f}-{result['peak_end_seconds']:.2f} s "
            f"(best frame, frame score {result['peak_frame_score']:.4f})"
        )
    elif result["windows"] > 1:
        where = f" at {result['peak_start_seconds']:.1f}-{result['peak_end_seconds']:.1f} s (max of {result['windows']} windows)"
    return (
        f"{result['file']}: score {result['score']:.4f}{where} -> {verdict} "
        f"(threshold {result['threshold']:.3f}; {result['duration_seconds']:.1f} s of audio, "
        f"scored in {result['seconds']:.2f} s)"
    )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_logging(args)
    try:
        from gunshot_core import embedding_models

        model = embedding_models.get(args.embedding_model, hop_seconds=args.embedding_hop_seconds)
        window = model.seconds_to_frames(args.window_seconds, name="--window_seconds")
        hop = model.seconds_to_frames(args.hop_seconds, name="--hop_seconds")
    except (ValueError, GunshotError) as e:
        return arguments.fail("score", e)
    missing = [path for path in args.files if "://" not in path and not os.path.isfile(path)]
    if missing:  # before the models load: a typo in a file name costs no model load
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return arguments.fail(
            "score", InputError(f"no such file: {shown} (check the path{'s' if len(missing) > 1 else ''})")
        )
    head = args.head
    builtin = any(head in m.builtin_heads for m in embedding_models.MODELS.values())
    if head and not builtin and "://" not in head and not os.path.exists(head):  # before the models load too
        return arguments.fail(
            "score",
            ModelFileError(
                f"--head {head}: no such file or folder; give a head folder written by `gunshot train`, an "
                "original .h5 head, or leave --head out for the default head"
            ),
        )
    try:
        from gunshot_core import precision

        chosen = precision.resolve(args.precision)
        load_start = time.perf_counter()
        scorer = Scorer(
            args.checkpoint,
            args.pca,
            args.head,
            resampler=args.resampler,
            embedding_model=model,
            precision=chosen,
        )
        log.info("models loaded in %.2f s (%s at %s)", time.perf_counter() - load_start, model.name, chosen)
    except GunshotError as e:
        return arguments.fail("score", e)
    threshold = scorer.head.threshold if args.threshold is None else args.threshold
    failed = 0
    for path in args.files:
        try:
            result = scorer.score(path, window, hop)
            result.update(
                threshold=threshold, detected=bool(result["score"] >= threshold), head=scorer.head.head_id
            )
            if chosen != precision.FP32:  # fp32 output stays as it always was
                result["precision"] = chosen
        except AudioDecodeError as e:
            failed += 1
            result = {"file": path, "error": str(e), "reason": e.reason}
        print(json.dumps(result, sort_keys=True) if args.json else _text_line(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
