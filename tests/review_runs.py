"""Synthetic scoring runs for the review tests: short WAVs per site and hand-written Parquet tables.

No model runs: each window gets a known truth (gunshot or not) and a score drawn from a known model
(logit normal around `mu1` for gunshots, `mu0` otherwise, per-site shift), written in the scoring
pipeline's schemas, so the review and calibration commands read them as they read `gunshot batch`
output.

    truth = make_run(tmp_path / "run", tmp_path / "audio", sites=("siteA", "siteB"), seed=0)
    truth["windows"]      # list of dicts: source, start_seconds, end_seconds, score, truth, site
"""

from __future__ import annotations

import datetime
import os
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from pipelines import schemas

SAMPLE_RATE = 16000
WINDOW = 0.96
PROVENANCE = {
    "model_id": "test",
    "head_name": "head.keras",
    "vggish_sha256": "0" * 64,
    "pca_sha256": "0" * 64,
    "head_sha256": "0" * 64,
    "code_version": "test",
    "window_seconds": WINDOW,
    "hop_seconds": WINDOW,
    "threshold": 0.5,
    "precision": "fp32",
    "embedding_runtime": "tensorflow",
}


def make_run(
    run_dir,
    audio_dir,
    *,
    sites=("siteA", "siteB"),
    recordings_per_site=2,
    windows_per_recording=40,
    prevalence=0.15,
    mu0=-3.0,
    mu1=1.0,
    sd=1.3,
    site_shift=None,
    seed=0,
    write_audio=True,
    write_events=False,
):
    """Writes the run folder (windows + recordings tables, one shard each) and the audio it names.

    With `write_events`, also the events table: runs of consecutive windows scoring >= 0.5, merged as
    the scoring pipeline merges them (`pipelines.scoring.events.merge_events`); the returned
    {"events": [...]} carry `truth` = any of their windows holds a gunshot.

    Returns:
      {"windows": [dict per window], "sources": [paths]}.
    """
    rng = np.random.default_rng(seed)
    run_dir, audio_dir = pathlib.Path(run_dir), pathlib.Path(audio_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    site_shift = site_shift or {}
    windows, recordings, events = [], [], []
    day0 = datetime.datetime(2026, 3, 1, 22, 0, tzinfo=datetime.UTC)
    for s, site in enumerate(sites):
        for r in range(recordings_per_site):
            path = audio_dir / site / f"{site}_rec{r:02d}.wav"
            n = windows_per_recording
            truth = rng.random(n) < prevalence
            z = np.where(truth, rng.normal(mu1, sd, n), rng.normal(mu0, sd, n)) + site_shift.get(site, 0.0)
            scores = (1 / (1 + np.exp(-z))).astype(np.float32)
            if write_audio:
                path.parent.mkdir(parents=True, exist_ok=True)
                noise = 0.01 * rng.standard_normal(int(n * WINDOW * SAMPLE_RATE))
                for i in np.flatnonzero(truth):  # a click-like burst in each gunshot window
                    at = int((i * WINDOW + 0.3) * SAMPLE_RATE)
                    noise[at : at + 800] += 0.5 * np.exp(-np.arange(800) / 150) * rng.standard_normal(800)
                sf.write(path, noise.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            start_utc = day0 + datetime.timedelta(hours=2 * r + 12 * s)
            for i in range(n):
                windows.append(
                    {
                        "source": str(path),
                        "window_index": i,
                        "start_seconds": i * WINDOW,
                        "end_seconds": (i + 1) * WINDOW,
                        "start_utc": start_utc + datetime.timedelta(seconds=i * WINDOW),
                        "score": float(scores[i]),
                        "detected": bool(scores[i] >= 0.5),
                        **PROVENANCE,
                        "truth": bool(truth[i]),
                        "site": site,
                    }
                )
            if write_events:
                from pipelines.scoring import events as events_lib

                starts = np.arange(n) * WINDOW
                merged = events_lib.merge_events(scores, starts, starts + WINDOW, PROVENANCE["threshold"])
                for k, e in enumerate(merged):
                    first = int(round(e.start_seconds / WINDOW))
                    events.append(
                        {
                            "source": str(path),
                            "event_index": k,
                            "start_seconds": e.start_seconds,
                            "end_seconds": e.end_seconds,
                            "peak_score": e.peak_score,
                            "peak_seconds": e.peak_seconds,
                            "num_windows": e.num_windows,
                            "start_utc": start_utc + datetime.timedelta(seconds=e.start_seconds),
                            "end_utc": start_utc + datetime.timedelta(seconds=e.end_seconds),
                            **PROVENANCE,
                            "truth": bool(truth[first : first + e.num_windows].any()),
                            "site": site,
                        }
                    )
            recordings.append(
                {
                    "source": str(path),
                    "file": str(path),
                    "input_kind": "audio",
                    "format": "WAV",
                    "sample_rate": SAMPLE_RATE,
                    "channels": 1,
                    "duration_seconds": n * WINDOW,
                    "frames": n,
                    "windows": n,
                    "max_score": float(scores.max()),
                    "start_utc": start_utc,
                    "status": "ok",
                    **PROVENANCE,
                }
            )
    names = schemas.SCORE_WINDOWS.names
    pq.write_table(
        pa.Table.from_pylist([{k: w[k] for k in names} for w in windows], schema=schemas.SCORE_WINDOWS),
        os.path.join(run_dir, "windows-00000-of-00001.parquet"),
    )
    pq.write_table(
        pa.Table.from_pylist(recordings, schema=schemas.SCORE_RECORDINGS),
        os.path.join(run_dir, "recordings-00000-of-00001.parquet"),
    )
    if write_events:
        names = schemas.SCORE_EVENTS.names
        pq.write_table(
            pa.Table.from_pylist([{k: e[k] for k in names} for e in events], schema=schemas.SCORE_EVENTS),
            os.path.join(run_dir, "events-00000-of-00001.parquet"),
        )
    return {"windows": windows, "events": events, "sources": sorted({w["source"] for w in windows})}


def answer_from_insertions(review_dir, insertions, *, reviewer="annotations", label="gunshot") -> dict:
    """Answers every item of a review sample from a field-site generator's insertions, as the review
    app writes the answers (`pipelines.review.verdicts.append_verdict`, one locked line per answer).

    An item is "yes" when its window overlaps an annotated insertion with `label`, else "no" (a
    listener hears the shot in the window).

    Args:
      review_dir: a `gunshot review sample` folder.
      insertions: tests.field_sites.Insertion list of the scored recordings.
    Returns:
      {item_id: "yes" | "no"}.
    """
    from pipelines.review import sample, verdicts

    spans = {}
    for i in insertions:
        if i.label == label and i.annotated:
            spans.setdefault(pathlib.Path(i.file).resolve(), []).append((i.start, i.end))
    answers = {}
    for row in sample.read_sample(str(review_dir)):
        start, end = float(row["start_seconds"]), float(row["end_seconds"])
        found = spans.get(pathlib.Path(row["source"]).resolve(), [])
        verdict = "yes" if any(s < end and e > start for s, e in found) else "no"
        verdicts.append_verdict(str(review_dir), {**row, "verdict": verdict, "reviewer": reviewer})
        answers[row["item_id"]] = verdict
    return answers
