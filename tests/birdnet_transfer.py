"""Transfer to new sites and new guns: heads trained on some synthetic field sites, measured on others.

The split (`make_split`): training sites whose gunshots are cut from one gun family
(tests.field_sites.GUN_FAMILIES, default `ultimate`) and held-out sites, with their own soundscapes,
whose gunshots come from another family (default `pistol`): the held-out sites' guns were never
heard in training. Frames are computed with the embedding model directly (gunshot_core.birdnet /
gunshot_core.vggish_model, not through Beam). Heads are built by training.models exactly as
`gunshot train` builds them, trained on clips of consecutive frames, written as head artifacts
(model.keras + card.json) and scored by loading them with gunshot_core.heads, as `gunshot score`
does. Used by benchmarks/bench_birdnet_transfer.py and tests/test_birdnet_transfer.py.

Metric (`event_recall`): at a threshold, a shot is found when a frame overlapping it scores at or
above the threshold; a false alarm is a run of consecutive frames at or above it that overlap no
shot (so a head that fires everywhere pays one false alarm per stretch between shots, and a long
run over a confuser counts once). Recall at <= B false alarms per hour is the best recall over
thresholds whose false alarms per hour stay within B.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from tests import field_sites

TRAIN_FAMILIES = ("ultimate",)
HELD_OUT_FAMILIES = ("pistol",)
BUDGETS = (10, 20, 40)


@dataclasses.dataclass
class Recording:
    """One recording of the split with its frames.

    Attributes:
      path: audio file.
      site: site name.
      seconds: duration.
      shots: [(start, end)] of its gunshots, seconds.
      onsets: [seconds] of the shots' onsets (20 ms after the snippet start).
      frames: [n, d] embedding frames (model dtype), filled by `embed`.
      gun_logits: float32 [n] BirdNET's Gun_Gun logits (BirdNET frames only), else None.
    """

    path: str
    site: str
    seconds: float
    shots: list
    onsets: list
    frames: np.ndarray | None = None
    gun_logits: np.ndarray | None = None


def make_split(
    root,
    *,
    train_sites=("siteA", "siteB", "siteC", "siteD"),
    held_out_sites=("siteE", "siteF"),
    recordings_per_site: int = 1,
    minutes: float = 2.0,
    seed: int = 7,
    train_families=TRAIN_FAMILIES,
    held_out_families=HELD_OUT_FAMILIES,
    gunshots_per_minute: float = 3.0,
    confusers_per_minute: float = 6.0,
    snr_db=(0.0, 15.0),
) -> tuple[list[Recording], list[Recording]]:
    """Writes the sites (44.1 kHz WAV, cached by field_sites) and returns (training, held-out) recordings."""
    families = {s: list(train_families) for s in train_sites}
    families.update({s: list(held_out_families) for s in held_out_sites})
    insertions = field_sites.make_sites(
        root,
        sites=(*train_sites, *held_out_sites),
        recordings_per_site=recordings_per_site,
        minutes=minutes,
        seed=seed,
        sample_rates=(44100,),
        formats=("wav",),
        gunshots_per_minute=gunshots_per_minute,
        confusers_per_minute=confusers_per_minute,
        snr_db=snr_db,
        gun_families=families,
        tables=False,
    )
    seconds = field_sites.recording_seconds(root)
    out = {}
    for path in sorted(seconds):
        site = pathlib.Path(path).parent.name
        guns = [i for i in insertions if i.file == path and i.label == field_sites.GUNSHOT]
        out[path] = Recording(
            path, site, seconds[path], [(g.start, g.end) for g in guns], [g.start + 0.02 for g in guns]
        )
    recs = list(out.values())
    return [r for r in recs if r.site in train_sites], [r for r in recs if r.site in held_out_sites]


def embed(recordings, embedder) -> None:
    """Fills `frames` (and, for BirdNET, `gun_logits`) of every recording."""
    for rec in recordings:
        if hasattr(embedder, "iter_outputs"):  # BirdNET: embeddings and the gun logits in one pass
            outputs = list(embedder.iter_outputs(rec.path))
            rec.frames = np.concatenate([o.embeddings for o in outputs])
            rec.gun_logits = np.concatenate([o.gun_logits for o in outputs])
        else:
            rec.frames = embedder.frames(rec.path)


def frame_labels(rec: Recording, model, frames: np.ndarray | None = None) -> np.ndarray:
    """int8 [n]: 1 for a frame holding a shot's onset (at least 0.1 s before its end), 0 for a frame
    overlapping no shot, -1 for the rest (a shot's tail only: left out of training)."""
    n = (rec.frames if frames is None else frames).shape[0]
    index = np.arange(n)
    starts, ends = model.frame_start_seconds(index), model.frame_end_seconds(index)
    out = np.zeros(n, np.int8)
    for a, b in rec.shots:
        out[(starts < b) & (ends > a)] = -1
    for onset in rec.onsets:
        out[(starts <= onset) & (ends - 0.1 > onset)] = 1
    return out


def clips(recordings, model, window: int, stride: int, frames_of=None) -> tuple[np.ndarray, np.ndarray]:
    """Training clips: windows of `window` consecutive frames every `stride` frames.

    A clip is positive when one of its frames holds a shot's onset, negative when none of its frames
    overlaps a shot; others are left out.

    Returns:
      (float32 [m, window, d] raw frames, float32 [m] labels).
    """
    xs, ys = [], []
    for rec in recordings:
        frames = rec.frames if frames_of is None else frames_of(rec)
        labels = frame_labels(rec, model, frames)
        for i in range(0, max(1, frames.shape[0] - window + 1), stride):
            part = labels[i : i + window]
            if part.size < window:
                continue
            if (part == 1).any():
                ys.append(1.0)
            elif (part == 0).all():
                ys.append(0.0)
            else:
                continue
            xs.append(frames[i : i + window].astype(np.float32))
    return np.stack(xs), np.asarray(ys, np.float32)


def frame_statistics(recordings, frames_of=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over every training frame (std 0 -> 1), as `gunshot transform`."""
    x = np.concatenate(
        [(r.frames if frames_of is None else frames_of(r)).astype(np.float64) for r in recordings]
    )
    mean, std = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def train_head(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    output,
    *,
    embedding_model: str,
    prior=None,
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    **overrides,
):
    """Trains head `kind` (a training.models preset, `overrides` applied) on raw clips and writes its
    artifact to `output` as `gunshot train` does (serving model + card).

    Returns:
      (the loaded gunshot_core.heads.Head, the Keras training model on z-scored frames).
    """
    import keras

    from gunshot_core import heads
    from training import models

    keras.utils.set_random_seed(seed)
    config = dataclasses.replace(models.PRESETS[kind], **overrides)
    window, width = x.shape[1], x.shape[2]
    training_model, serving_model = models.build_models(config, window, mean, std, width=width, prior=prior)
    scaled = ((x - mean.astype(np.float32)) / std.astype(np.float32)).astype(np.float32)
    totals = {c: float((y == c).sum()) for c in (0, 1)}
    class_weight = {c: len(y) / (2.0 * t) for c, t in totals.items()}
    training_model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    training_model.fit(
        scaled, y, epochs=epochs, batch_size=batch_size, class_weight=class_weight, shuffle=True, verbose=0
    )
    os.makedirs(output, exist_ok=True)
    serving_model.save(os.path.join(output, heads.MODEL_FILENAME))
    heads.write_card(
        output,
        heads.HeadCard(
            head_id=f"transfer-{kind}-{embedding_model}",
            threshold=0.5,
            frames=None if embedding_model != "vggish" else window,  # as training.train writes it
            pad_to_frames=0 if embedding_model != "vggish" else window,
            input_convention=heads.INPUT_FLOAT32
            if embedding_model != "vggish"
            else heads.INPUT_UINT8_AS_FLOAT,
            frame_pooling=models.frame_pooling_card(config),
            embedding_model=embedding_model,
            training={"architecture": dataclasses.asdict(config), "clips": len(y), "epochs": epochs},
        ),
    )
    return heads.load_head(output), training_model


def event_recall(
    recordings, frame_scores, model, budgets=BUDGETS, max_thresholds: int = 400
) -> dict[int, tuple[float, float]]:
    """{budget: (recall, threshold)}: best event recall at <= budget false-alarm events per hour.

    Args:
      recordings: held-out Recordings (their shots and durations).
      frame_scores: one float [n_i] array per recording (logits or scores: any monotone score).
      model: the EmbeddingModel of the frames (frame times).
    """
    hours = sum(r.seconds for r in recordings) / 3600.0
    total = sum(len(r.shots) for r in recordings)
    every = np.concatenate([np.asarray(s, np.float64) for s in frame_scores])
    thresholds = np.unique(np.quantile(every, np.linspace(0.0, 1.0, max_thresholds)))
    prepared = []
    for rec, scores in zip(recordings, frame_scores, strict=True):
        index = np.arange(len(scores))
        starts, ends = model.frame_start_seconds(index), model.frame_end_seconds(index)
        hits = np.array([(starts < e) & (ends > s) for s, e in rec.shots]).reshape(len(rec.shots), -1)
        prepared.append((np.asarray(scores, np.float64), hits, hits.any(axis=0)))
    curve = []
    for t in thresholds:
        found = false_alarms = 0
        for scores, hits, shot_frame in prepared:
            above = scores >= t
            found += int((hits & above).any(axis=1).sum())
            alarm = above & ~shot_frame  # runs of these are false-alarm events
            false_alarms += int(alarm[0]) + int((alarm[1:] & ~alarm[:-1]).sum()) if alarm.size else 0
        curve.append((found / max(total, 1), false_alarms / hours, float(t)))
    return {
        budget: max(((r, t) for r, fa, t in curve if fa <= budget), default=(0.0, float("inf")))
        for budget in budgets
    }
