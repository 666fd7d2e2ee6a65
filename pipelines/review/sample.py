"""Review stage: draws the review sample from the frame and writes it with clips and spectrograms.

Output folder (docs/review.md):

    REVIEW_DIR/sample.csv        one row per item (SAMPLE_COLUMNS), in frame order
    REVIEW_DIR/strata.csv        stratum, score range, population (windows in the frame), sample size
    REVIEW_DIR/review.json       the arguments: runs, strategy, bins, seed, group pattern, min score
    REVIEW_DIR/clips/<item_id>.wav          the window plus `margin` seconds each side, mono PCM_16
    REVIEW_DIR/spectrograms/<item_id>.png   its spectrogram with the window marked

Strategies (gunshot_core.review_stats): `stratified` over equal-width score bins (per group and bin
with --per_group), equal allocation; `random`; `top` (highest scores); `margin` (nearest the
threshold on the logit scale). Only `stratified` and `random` are probability samples: their
inclusion probabilities make unbiased counts possible; `top` and `margin` leave the column empty.

An item's id is a hash of (source, start_seconds): stable across samples of the same runs, so
verdicts of one sample can be matched to another. A clip that cannot be cut (recording gone,
unreadable) keeps its row: `media_error` says why and the review screen shows it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np

from gunshot_core import review_stats
from pipelines.review.frame import Frame, ReviewInputError

SAMPLE_CSV = "sample.csv"
STRATA_CSV = "strata.csv"
REVIEW_MANIFEST = "review.json"
CLIPS_DIR = "clips"
SPECTROGRAMS_DIR = "spectrograms"
SAMPLE_COLUMNS = (
    "item_id",
    "source",
    "start_seconds",
    "end_seconds",
    "score",
    "stratum",
    "inclusion_probability",
    "group",
    "day",
    "clip",
    "spectrogram",
    "media_error",
)
STRATA_COLUMNS = ("stratum", "group", "score_low", "score_high", "population", "sample_size")
STRATEGIES = ("stratified", "top", "margin", "random")
PROBABILITY_STRATEGIES = ("stratified", "random")


def item_id(source: str, start_seconds: float) -> str:
    """Stable 12-hex-digit id of a window: sha1 of 'source<TAB>start with 3 decimals'."""
    return hashlib.sha1(f"{source}\t{start_seconds:.3f}".encode()).hexdigest()[:12]


def strata_of(frame: Frame, strategy: str, bins: int, per_group: bool) -> np.ndarray:
    """object [n] the stratum label of every frame window: 'bin03', 'siteA|bin03', 'all' or the strategy."""
    if strategy == "stratified":
        labels = np.array([f"bin{b:02d}" for b in range(bins)], dtype=object)[
            review_stats.score_bins(frame.scores, bins)
        ]
        return frame.groups + "|" + labels if per_group else labels
    if strategy == "random":
        return frame.groups + "|all" if per_group else np.full(len(frame), "all", dtype=object)
    return np.full(len(frame), strategy, dtype=object)


def draw(
    frame: Frame,
    *,
    size: int,
    strategy: str = "stratified",
    bins: int = 10,
    per_group: bool = False,
    seed: int = 0,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws the sample.

    Args:
      frame: the windows.
      size: items wanted (all windows when the frame is smaller).
      strategy: one of STRATEGIES.
      bins: score bins of `stratified`.
      per_group: stratify by group too (each group gets its share; `top`/`margin` pick per group).
      seed: seeds numpy's generator: same frame and arguments, same sample.
      threshold: centre of `margin` (default: the runs' threshold).
    Returns:
      (indices int64 [m] into the frame, sorted; inclusion probability float64 [m], NaN for
      top/margin; stratum label object [n] of every frame window).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    strata = strata_of(frame, strategy, bins, per_group)
    rng = np.random.default_rng(seed)
    if strategy in PROBABILITY_STRATEGIES:
        codes = np.unique(strata, return_inverse=True)[1]
        picked, pi = review_stats.stratified_sample(codes, size, rng)
        return picked, pi, strata
    centre = float(np.median(frame.thresholds)) if threshold is None else threshold
    groups = np.unique(frame.groups) if per_group else [None]
    shares = review_stats.allocate(
        np.array([len(frame) if g is None else int((frame.groups == g).sum()) for g in groups]), size
    )
    chosen = []
    for g, share in zip(groups, shares, strict=True):
        members = np.arange(len(frame)) if g is None else np.flatnonzero(frame.groups == g)
        if strategy == "top":
            local, _ = review_stats.top_sample(frame.scores[members], int(share))
        else:
            local, _ = review_stats.margin_sample(frame.scores[members], int(share), centre)
        chosen.append(members[local])
    picked = np.sort(np.concatenate(chosen))
    return picked, np.full(picked.size, np.nan), strata


def strata_rows(frame: Frame, strata: np.ndarray, picked: np.ndarray) -> list[dict]:
    """One row per stratum (STRATA_COLUMNS), sorted by label."""
    rows = []
    chosen = np.zeros(len(frame), bool)
    chosen[picked] = True
    for label in sorted(set(strata.tolist())):
        inside = strata == label
        rows.append(
            {
                "stratum": label,
                "group": label.rsplit("|", 1)[0] if "|" in label else "",
                "score_low": float(frame.scores[inside].min()),
                "score_high": float(frame.scores[inside].max()),
                "population": int(inside.sum()),
                "sample_size": int((inside & chosen).sum()),
            }
        )
    return rows


def _media(frame: Frame, index: int, output: str, margin: float) -> tuple[str, str, str]:
    """Cuts one item's clip and draws its spectrogram: (clip path, png path, error text or '')."""
    from pipelines.report import media, plots

    source, start, end = frame.sources[index], float(frame.starts[index]), float(frame.ends[index])
    name = item_id(source, start)
    clip_rel = f"{CLIPS_DIR}/{name}.wav"
    png_rel = f"{SPECTROGRAMS_DIR}/{name}.png"
    try:
        clip = media.cut_clip(media.AudioRef.from_source(source), max(0.0, start - margin), end + margin)
    except media.MediaError as e:
        return "", "", f"{e.reason}: {e}"
    media.write_wav(os.path.join(output, clip_rel), clip)
    plots.spectrogram_png(
        os.path.join(output, png_rel),
        clip.samples,
        clip.sample_rate,
        start_seconds=clip.start_seconds,
        marks=[(start, end, "window")],
    )
    return clip_rel, png_rel, ""


def _fmt(value: float) -> str:
    return "" if np.isnan(value) else repr(float(value))


def write_sample(
    frame: Frame,
    picked: np.ndarray,
    pi: np.ndarray,
    strata: np.ndarray,
    output: str,
    *,
    parameters: dict,
    margin: float = 0.5,
    workers: int | None = None,
) -> list[dict]:
    """Writes sample.csv, strata.csv, review.json, clips and spectrograms into `output`.

    Raises:
      ReviewInputError: `output` already holds verdicts (a new sample there would orphan them).
    Returns:
      the sample rows written.
    """
    from pipelines.report import media

    if os.path.exists(os.path.join(output, "verdicts.csv")):
        raise ReviewInputError(
            f"{output} already holds verdicts.csv; write the new sample to another --output folder"
        )
    for sub in (CLIPS_DIR, SPECTROGRAMS_DIR):
        os.makedirs(os.path.join(output, sub), exist_ok=True)
    made = media.map_with_progress(
        lambda i: _media(frame, int(i), output, margin), picked.tolist(), label="clips", workers=workers
    )
    rows = []
    for k, index in enumerate(picked.tolist()):
        result = made[k]
        if isinstance(result, Exception):  # a bug or an unexpected library error: say it, keep the row
            result = ("", "", f"error: {type(result).__name__}: {result}")
        clip, png, error = result
        rows.append(
            {
                "item_id": item_id(frame.sources[index], float(frame.starts[index])),
                "source": frame.sources[index],
                "start_seconds": repr(float(frame.starts[index])),
                "end_seconds": repr(float(frame.ends[index])),
                "score": repr(float(frame.scores[index])),
                "stratum": strata[index],
                "inclusion_probability": _fmt(pi[k]),
                "group": frame.groups[index],
                "day": frame.days[index],
                "clip": clip,
                "spectrogram": png,
                "media_error": error,
            }
        )
    _write_csv(os.path.join(output, SAMPLE_CSV), SAMPLE_COLUMNS, rows)
    if parameters.get("strategy") in PROBABILITY_STRATEGIES:
        _write_csv(os.path.join(output, STRATA_CSV), STRATA_COLUMNS, strata_rows(frame, strata, picked))
    manifest = dict(parameters, items=len(rows), frame_windows=len(frame))
    with open(os.path.join(output, REVIEW_MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return rows


def _write_csv(path: str, columns, rows) -> None:
    partial = path + ".part"
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in columns})
    os.replace(partial, path)


def read_sample(review_dir: str) -> list[dict]:
    """The rows of REVIEW_DIR/sample.csv (strings, as written).

    Raises:
      ReviewInputError: the folder holds no sample.csv.
    """
    path = os.path.join(review_dir, SAMPLE_CSV)
    if not os.path.exists(path):
        raise ReviewInputError(
            f"{path} is missing; draw a sample first: gunshot review sample --scores RUN --output {review_dir}"
        )
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_manifest(review_dir: str) -> dict:
    """REVIEW_DIR/review.json, or {} when absent."""
    path = os.path.join(review_dir, REVIEW_MANIFEST)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
