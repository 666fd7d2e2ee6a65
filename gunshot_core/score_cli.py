"""`gunshot score FILE...`: score recordings in the terminal, as the original project did, done well.

Models are loaded once for all files. Each file prints its gunshot score (the highest window score
for recordings longer than one window, with where it happened), the decision and the time it took.
A head with frame scores (`training.train --model framepool`) also locates the shot to the 0.96 s
frame with the highest frame score.
"""

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from gunshot_core import arguments, audio, logs, options, params, resample, windows
from gunshot_core.errors import AudioDecodeError, GunshotError, InputError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "score",
        description=(
            "Score recordings for gunshots: VGGish log-mel -> VGGish CNN -> PCA/quantise -> head. "
            "Prints one line per file (or one JSON object per line with --json). Exits 1 when any "
            "file failed to decode, 2 when a file does not exist or the models cannot be loaded."
        ),
        epilog="Model files: run `gunshot models download` once, or pass --checkpoint and --pca.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="recordings (wav, flac, ogg, mp3, ...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    options.add_model_arguments(parser)
    options.add_scoring_arguments(parser)
    logs.add_logging_flags(parser)
    return parser


class Scorer:
    """VGGish + postprocessor + head, loaded once; scores one recording at a time."""

    def __init__(
        self,
        checkpoint: str,
        pca: str,
        head: str,
        *,
        resampler: str = resample.DEFAULT_RESAMPLER,
        precision: str = "fp32",
    ):
        from gunshot_core.heads import load_head
        from gunshot_core.postprocess import Postprocessor
        from gunshot_core.vggish import VGGish

        self.resampler = resampler
        self.postprocessor = Postprocessor.from_npz(pca)
        self.head = load_head(head)
        self.vggish = VGGish.from_checkpoint(checkpoint, precision=precision)

    def frames(self, path) -> tuple[audio.AudioInfo, np.ndarray]:
        """(AudioInfo, uint8 [n, 128] postprocessed frames) of one recording, in bounded memory."""
        info = audio.probe(path)
        blocks = [
            self.postprocessor.postprocess(self.vggish.embed(examples))
            for _, examples in audio.iter_examples(path, resampler=self.resampler)
        ]
        frames = np.concatenate(blocks) if blocks else np.zeros((0, 128), np.uint8)
        return info, frames

    def score(self, path, window: int, hop: int) -> dict:
        """Scores one recording; returns the result as a JSON-ready dict."""
        start = time.perf_counter()
        info, frames = self.frames(path)
        scored = windows.score_frames(self.head, frames, window, hop)
        peak, score = scored.peak()
        result = {
            "file": str(path),
            "score": round(score, 6),
            "peak_start_seconds": round(float(scored.start_seconds[peak]), 3),
            "peak_end_seconds": round(float(max(scored.end_seconds[peak], scored.start_seconds[peak])), 3),
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
                peak_start_seconds=round(best * params.FRAME_SECONDS, 3),
                peak_end_seconds=round((best + 1) * params.FRAME_SECONDS, 3),
                peak_frame_score=round(float(frame_scores[best]), 6),
            )
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
        window = windows.seconds_to_frames(args.window_seconds, name="--window_seconds")
        hop = windows.seconds_to_frames(args.hop_seconds, name="--hop_seconds")
    except ValueError as e:
        return arguments.fail("score", e)
    missing = [path for path in args.files if "://" not in path and not os.path.isfile(path)]
    if missing:  # before the models load: a typo in a file name costs no model load
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return arguments.fail(
            "score", InputError(f"no such file: {shown} (check the path{'s' if len(missing) > 1 else ''})")
        )
    try:
        from gunshot_core import precision
        from gunshot_core.models import resolve_model_paths

        chosen = precision.resolve(args.precision)
        paths = resolve_model_paths(checkpoint=args.checkpoint, pca=args.pca, head=args.head)
        load_start = time.perf_counter()
        scorer = Scorer(paths.checkpoint, paths.pca, paths.head, resampler=args.resampler, precision=chosen)
        log.info("models loaded in %.2f s (VGGish at %s)", time.perf_counter() - load_start, chosen)
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
