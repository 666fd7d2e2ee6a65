"""Synthetic field recordings per site, with known gunshots and confusers, for tests and benchmarks.

Each site has its own soundscape: coloured noise with a site-specific spectral slope and level,
tonal insect-like chirp bouts and rain bursts. Into it go gunshot snippets cut from the original
project's recordings (`../shared/seed/wavs/pistol_shot.wav`, `ultimate_gunshot.wav`: the loud onsets
are found in the audio, each snippet is 0.5-1.5 s from an onset, sometimes muffled by distance) at
known times and signal-to-noise ratios, and confusers: speech (`spanishclass.wav`), footsteps
(`footsteps_shuffle.wav`) and synthetic clicks and branch snaps. Everything is seeded: the same
arguments give byte-identical files.

Layout written under `root` (a site is a folder, so `--group_pattern` can take it from the path)::

    root/<site>/<site>_rec<NN>.wav|.flac                 mono PCM_16, 16 kHz or 44.1 kHz
    root/<site>/<site>_rec<NN>.Table.1.selections.txt    Raven selection table of the annotated
                                                         insertions (label column `Annotation`,
                                                         `Begin Path` = `<site>/<file name>`;
                                                         `gunshot_core.annotations` writer)
    root/ground_truth.csv                                every insertion (see `Insertion`)
    root/field_sites.json                                the parameters; a rerun with the same
                                                         parameters reuses the files (cache)

API:
    make_sites(root, sites=("siteA", "siteB", "siteC"), recordings_per_site=2, minutes=1.0, seed=0,
               ...) -> list[Insertion]
        Writes the layout above and returns every insertion, sorted by (file, start). Only labels in
        `annotated_labels` (default: gunshot, speech, footsteps, click, branch) go into the Raven
        tables; rain bursts are returned with `annotated=False` (unannotated background).
    synthesize(site, index, *, minutes, sample_rate, seed, ...) -> Synthesized
        One recording in memory: the mix, the background without the inserted events, and the
        insertions (times in seconds); `make_sites` writes exactly this.
    read_ground_truth(root) -> list[Insertion]
    recordings(insertions | root) -> list of audio paths; durations from `recording_seconds`.
    gunshot_snippets(sample_rate) / load_seed(name, sample_rate): the cut material.

Gunshots are drawn at 5-20 dB SNR, confusers at 0-12 dB (`GUNSHOT_SNR_DB`, `CONFUSER_SNR_DB`).
SNR definition: `snr_db = 10 * log10(mean(event**2) / mean(background**2))` over the event's span,
where the background is everything at that place before the event was added (noise, chirps, rain).
Events never overlap each other and keep `min_gap_seconds` apart and 0.5 s from the file's ends.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import soundfile as sf
import soxr

from gunshot_core import annotations

SEED_WAVS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "seed" / "wavs"
GENERATOR_VERSION = 2

GUNSHOT = "gunshot"
CONFUSER_LABELS = ("speech", "footsteps", "click", "branch")
DEFAULT_ANNOTATED = (GUNSHOT, *CONFUSER_LABELS)
GUNSHOT_SNR_DB = (5.0, 20.0)
# Confusers are quieter than the gunshots by default: people talking and walking, branches and
# drops are mostly heard from further away than a shot carries. (With confusers at 5-20 dB too,
# loud speech scores like a shot under the random-weight VGGish of the tests: a per-frame logistic
# regression on four sites reached ~0.6 event recall at 40 false alarms/hour on two held-out sites,
# against ~0.9 at 30/hour with confusers at 0-12 dB.)
CONFUSER_SNR_DB = (0.0, 12.0)
RAVEN_SUFFIX = ".Table.1.selections.txt"
GROUND_TRUTH = "ground_truth.csv"
PARAMS_FILE = "field_sites.json"
_EDGE_SECONDS = 0.5


@dataclasses.dataclass(frozen=True, order=True)
class Insertion:
    """One event placed into a recording.

    Attributes:
      file: path of the recording (str, as written under `root`).
      start: seconds from the start of the file where the event begins.
      end: seconds where it ends.
      label: gunshot | speech | footsteps | click | branch | rain.
      snr_db: event-to-background power ratio over [start, end) (see module docstring); None for
        rain bursts (background).
      site: the site (folder) name.
      source: what it was made from, e.g. `pistol_shot.wav@2.06` or `synthetic`.
      annotated: whether it is in the recording's Raven table.
    """

    file: str
    start: float
    end: float
    label: str
    snr_db: float | None
    site: str
    source: str
    annotated: bool = True


@dataclasses.dataclass(frozen=True)
class SiteProfile:
    """The soundscape of one site.

    Attributes:
      noise_slope: spectral slope of the noise power, `P(f) ~ f ** -noise_slope` (0 white, 1 pink,
        2 brown).
      noise_dbfs: RMS level of the noise in dB full scale.
      hum_hz: centre of a broad band of extra noise (wind in leaves, a river), 0 for none.
      chirp_hz: carrier frequency of the insect-like chirps (scaled down to fit below Nyquist).
      chirps_per_minute: chirp bouts per minute.
      chirp_db: chirp level relative to the noise, dB.
      rain_per_minute: rain bursts per minute.
      rain_db: rain level relative to the noise, dB.
    """

    noise_slope: float
    noise_dbfs: float
    hum_hz: float
    chirp_hz: float
    chirps_per_minute: float
    chirp_db: float
    rain_per_minute: float
    rain_db: float


@dataclasses.dataclass(frozen=True)
class Synthesized:
    """One recording in memory.

    Attributes:
      mix: float32 [n] in [-1, 1], what is written to the file.
      background: float32 [n], the mix without the inserted events (same gain).
      sample_rate: Hz.
      insertions: events, times in seconds, `file` empty.
    """

    mix: np.ndarray
    background: np.ndarray
    sample_rate: int
    insertions: list[Insertion]


def _stable_int(*parts) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def site_profile(site: str, seed: int = 0) -> SiteProfile:
    """The default soundscape of a site, derived from its name and the seed (stable across runs)."""
    rng = np.random.default_rng([_stable_int("profile", site), seed])
    return SiteProfile(
        noise_slope=float(rng.uniform(0.3, 1.8)),
        noise_dbfs=float(rng.uniform(-46.0, -36.0)),
        hum_hz=float(rng.choice([0.0, rng.uniform(150.0, 900.0)])),
        chirp_hz=float(rng.uniform(2500.0, 7000.0)),
        chirps_per_minute=float(rng.uniform(4.0, 14.0)),
        chirp_db=float(rng.uniform(0.0, 10.0)),
        rain_per_minute=float(rng.uniform(0.2, 1.5)),
        rain_db=float(rng.uniform(0.0, 8.0)),
    )


# --- source material ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def load_seed(name: str, sample_rate: int) -> np.ndarray:
    """A seed recording as float32 [n] mono at `sample_rate` (resampled with soxr)."""
    path = SEED_WAVS / name
    if not path.exists():
        raise FileNotFoundError(f"seed recording {path} not found (the tests need ../shared)")
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    mono.flags.writeable = False
    return mono


def find_onsets(
    x: np.ndarray,
    sample_rate: int,
    *,
    rise_db: float = 12.0,
    gap_seconds: float = 0.2,
    loud_db: float | None = None,
) -> list[float]:
    """Loud onsets in a recording: 10-ms peak envelope above its median + `rise_db`, after a gap.

    Args:
      x: float32 [n] mono samples.
      sample_rate: Hz.
      rise_db: how far above the median 10-ms peak level an onset must reach.
      gap_seconds: quiet time (below the level) required before a new onset.
      loud_db: if set, keep only onsets whose peak within 50 ms is at most this many dB below the
        recording's highest peak (the main shots, not their echoes or quieter sounds).
    Returns:
      onset times in seconds, ascending.
    """
    hop = max(1, int(round(0.01 * sample_rate)))
    n = len(x) // hop
    peaks = np.abs(x[: n * hop]).reshape(n, hop).max(axis=1)
    level = 20 * np.log10(peaks + 1e-9)
    loud = level > np.median(level) + rise_db
    onsets, last_loud = [], -np.inf
    for i in np.flatnonzero(loud):
        if (i - last_loud) * 0.01 > gap_seconds:
            onsets.append(round(i * hop / sample_rate, 4))
        last_loud = i
    if loud_db is not None:
        top = np.abs(x).max()
        onsets = [
            t
            for t in onsets
            if np.abs(x[int(t * sample_rate) : int((t + 0.05) * sample_rate)]).max()
            >= top * 10 ** (-loud_db / 20)
        ]
    return onsets


@functools.lru_cache(maxsize=8)
def gunshot_snippets(sample_rate: int) -> tuple[tuple[str, float, np.ndarray], ...]:
    """Gunshot material: (source file, onset seconds, float32 [n] from 20 ms before the onset to its end).

    Each main onset (`find_onsets(loud_db=3)`: within 3 dB of the file's loudest peak) of
    pistol_shot.wav (eight single shots) and ultimate_gunshot.wav (a shot and a burst) gives the
    audio from 20 ms before it up to 1.5 s later; `make_sites` cuts 0.5-1.5 s of it.
    """
    out = []
    for name in ("pistol_shot.wav", "ultimate_gunshot.wav"):
        x = load_seed(name, sample_rate)
        for onset in find_onsets(x, sample_rate, loud_db=3.0):
            a = max(0, int(round((onset - 0.02) * sample_rate)))
            b = min(len(x), a + int(1.5 * sample_rate))
            if b - a >= int(0.5 * sample_rate):
                out.append((name, onset, x[a:b]))
    if not out:
        raise ValueError("no gunshot onsets found in the seed recordings")
    return tuple(out)


def _fade(x: np.ndarray, sample_rate: int, fade_in: float = 0.002, fade_out: float = 0.05) -> np.ndarray:
    x = np.array(x, dtype=np.float64)
    a = min(len(x), max(1, int(fade_in * sample_rate)))
    b = min(len(x), max(1, int(fade_out * sample_rate)))
    x[:a] *= np.linspace(0.0, 1.0, a)
    x[len(x) - b :] *= np.linspace(1.0, 0.0, b)
    return x


def _lowpass(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Zero-phase FFT low-pass with a smooth 1-pole-like roll-off (distance muffling)."""
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    return np.fft.irfft(spectrum / np.sqrt(1.0 + (f / cutoff_hz) ** 4), n=len(x))


#: Gun sound families: the seed recording each family's shots are cut from. A split whose held-out
#: sites hear another family than the training sites (`make_sites(gun_families=...)`) measures how a
#: head transfers to guns it has not heard.
GUN_FAMILIES = {"pistol": "pistol_shot.wav", "ultimate": "ultimate_gunshot.wav"}


def _gunshot(
    rng: np.random.Generator, sample_rate: int, families: Sequence[str] | None = None
) -> tuple[np.ndarray, str]:
    snippets = gunshot_snippets(sample_rate)
    if families is not None:
        names = {GUN_FAMILIES[f] for f in families}
        snippets = tuple(s for s in snippets if s[0] in names)
    name, onset, material = snippets[rng.integers(len(snippets))]
    length = min(len(material), int(rng.uniform(0.5, 1.5) * sample_rate))
    x = material[:length].astype(np.float64)
    if rng.random() < 0.3:  # distant: high frequencies absorbed on the way
        x = _lowpass(x, sample_rate, rng.uniform(2000.0, 6000.0))
    return _fade(x, sample_rate), f"{name}@{onset:.2f}"


def _speech(rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, str]:
    x = load_seed("spanishclass.wav", sample_rate)
    length = int(rng.uniform(1.0, 3.0) * sample_rate)
    first = int(0.5 * sample_rate)  # the file starts with 0.45 s of silence
    start = int(rng.integers(first, len(x) - length))
    return _fade(
        x[start : start + length], sample_rate, 0.02, 0.05
    ), f"spanishclass.wav@{start / sample_rate:.2f}"


def _footsteps(rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, str]:
    x = load_seed("footsteps_shuffle.wav", sample_rate)
    length = int(rng.uniform(0.6, 1.0) * len(x))
    start = int(rng.integers(0, len(x) - length + 1))
    return _fade(x[start : start + length], sample_rate, 0.01, 0.05), "footsteps_shuffle.wav"


def _decaying_burst(rng: np.random.Generator, sample_rate: int, tau: float, length: float) -> np.ndarray:
    n = max(2, int(length * sample_rate))
    t = np.arange(n) / sample_rate
    return rng.standard_normal(n) * np.exp(-t / tau)


def _clicks(rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, str]:
    """A train of 1-4 sharp clicks (tau 0.5-2 ms) 50-250 ms apart: rain drops, a tapping animal."""
    count = int(rng.integers(1, 5))
    gaps = rng.uniform(0.05, 0.25, size=count - 1)
    total = float(gaps.sum()) + 0.03
    x = np.zeros(int(total * sample_rate) + 1)
    at = 0.0
    for i in range(count):
        burst = _decaying_burst(rng, sample_rate, rng.uniform(0.0005, 0.002), 0.02) * rng.uniform(0.5, 1.0)
        a = int(at * sample_rate)
        x[a : a + len(burst)] += burst[: len(x) - a]
        if i < count - 1:
            at += gaps[i]
    return x, "synthetic"


def _branch(rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, str]:
    """A branch snap: a crack (tau 3-10 ms, muffled) and 1-3 splinters within 150 ms."""
    total = 0.3
    x = np.zeros(int(total * sample_rate))
    crack = _decaying_burst(rng, sample_rate, rng.uniform(0.003, 0.01), 0.1)
    x[: len(crack)] += crack
    for _ in range(int(rng.integers(1, 4))):
        a = int(rng.uniform(0.01, 0.15) * sample_rate)
        splinter = _decaying_burst(rng, sample_rate, rng.uniform(0.001, 0.004), 0.05) * rng.uniform(0.2, 0.6)
        x[a : a + len(splinter)] += splinter[: len(x) - a]
    return _lowpass(x, sample_rate, rng.uniform(2000.0, 6000.0)), "synthetic"


_MAKERS = {GUNSHOT: _gunshot, "speech": _speech, "footsteps": _footsteps, "click": _clicks, "branch": _branch}


# --- background ----------------------------------------------------------------------------------


def _coloured_noise(rng: np.random.Generator, n: int, sample_rate: int, profile: SiteProfile) -> np.ndarray:
    """float64 [n] noise with power spectrum ~ f**-slope (+ a broad band at hum_hz), RMS noise_dbfs."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    shape = np.maximum(f, 20.0) ** (-profile.noise_slope / 2.0)
    if profile.hum_hz > 0:
        shape = shape * (1.0 + 3.0 * np.exp(-0.5 * ((f - profile.hum_hz) / (0.3 * profile.hum_hz)) ** 2))
    shape[0] = 0.0
    x = np.fft.irfft(spectrum * shape, n=n)
    return x * (10 ** (profile.noise_dbfs / 20.0) / (np.sqrt(np.mean(x**2)) + 1e-12))


def _chirps(
    rng: np.random.Generator, n: int, sample_rate: int, profile: SiteProfile, noise_rms: float
) -> np.ndarray:
    """Insect-like bouts: a tone pulsed at 15-40 Hz for 0.3-2 s, a few per minute."""
    x = np.zeros(n)
    seconds = n / sample_rate
    carrier = min(profile.chirp_hz, 0.4 * sample_rate)
    for _ in range(rng.poisson(profile.chirps_per_minute * seconds / 60.0)):
        length = rng.uniform(0.3, 2.0)
        start = rng.uniform(0.0, max(0.0, seconds - length))
        t = np.arange(int(length * sample_rate)) / sample_rate
        pulses = (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(15.0, 40.0) * t)) ** 4
        f0 = carrier * rng.uniform(0.95, 1.05)
        tone = np.sin(2 * np.pi * (f0 * t + 0.02 * f0 * t**2)) * pulses
        tone = _fade(tone, sample_rate, 0.05, 0.05)
        amp = noise_rms * 10 ** (profile.chirp_db / 20.0) * np.sqrt(2.0) * rng.uniform(0.5, 1.0)
        a = int(start * sample_rate)
        x[a : a + len(tone)] += amp * tone[: n - a]
    return x


def _rain(rng: np.random.Generator, n: int, sample_rate: int, profile: SiteProfile, noise_rms: float):
    """Rain bursts of 3-15 s: hiss plus drops hitting the microphone. Returns (float64 [n], spans)."""
    x = np.zeros(n)
    spans = []
    seconds = n / sample_rate
    for _ in range(rng.poisson(profile.rain_per_minute * seconds / 60.0)):
        length = min(rng.uniform(3.0, 15.0), seconds)
        start = rng.uniform(0.0, seconds - length)
        m = int(length * sample_rate)
        hiss = np.diff(rng.standard_normal(m + 1))  # high-passed white noise
        drops = np.zeros(m)
        positions = rng.integers(0, m, size=rng.poisson(8.0 * length))
        drops[positions] = rng.uniform(-1.0, 1.0, size=len(positions)) * 6.0
        kernel = np.exp(-np.arange(int(0.004 * sample_rate)) / (0.001 * sample_rate))
        drops = np.convolve(drops, kernel)[:m]
        burst = _fade(hiss + drops, sample_rate, min(1.0, length / 4), min(1.0, length / 4))
        burst *= noise_rms * 10 ** (profile.rain_db / 20.0) / (np.sqrt(np.mean(burst**2)) + 1e-12)
        a = int(start * sample_rate)
        x[a : a + m] += burst[: n - a]
        spans.append((a / sample_rate, (a + m) / sample_rate))
    return x, spans


# --- one recording -------------------------------------------------------------------------------


def _place(rng: np.random.Generator, lengths: Sequence[float], seconds: float, min_gap: float) -> list[float]:
    """Start times for events of the given lengths, non-overlapping with `min_gap` between them."""
    starts: list[tuple[float, float]] = []
    out = []
    for length in lengths:
        for _ in range(1000):
            s = rng.uniform(_EDGE_SECONDS, seconds - _EDGE_SECONDS - length)
            if all(s + length + min_gap <= a or s >= b + min_gap for a, b in starts):
                break
        else:
            raise ValueError(
                f"cannot place {len(lengths)} events in {seconds:.1f} s with {min_gap} s gaps; "
                "lower the rates or raise minutes"
            )
        starts.append((s, s + length))
        out.append(s)
    return out


def synthesize(
    site: str,
    index: int,
    *,
    minutes: float = 1.0,
    sample_rate: int = 16000,
    seed: int = 0,
    profile: SiteProfile | None = None,
    gunshots_per_minute: float = 2.0,
    confusers_per_minute: float = 3.0,
    confuser_labels: Sequence[str] = CONFUSER_LABELS,
    snr_db: tuple[float, float] = GUNSHOT_SNR_DB,
    confuser_snr_db: tuple[float, float] = CONFUSER_SNR_DB,
    min_gap_seconds: float = 1.5,
    annotated_labels: Iterable[str] = DEFAULT_ANNOTATED,
    gun_families: Sequence[str] | None = None,
) -> Synthesized:
    """One synthetic recording of `site` in memory (see the module docstring for the model).

    Each layer (noise, chirps, rain, events) draws from its own seeded stream, so the background
    does not change when the event rates change. Event counts are `round(rate * minutes)`;
    confuser labels are drawn uniformly from `confuser_labels`. Gunshots are cut from the recordings
    of `gun_families` (keys of GUN_FAMILIES; None: all).

    Returns:
      Synthesized: mix and background float32 [round(minutes * 60 * sample_rate)].
    """
    profile = profile or site_profile(site, seed)
    annotated = set(annotated_labels)
    n = int(round(minutes * 60.0 * sample_rate))
    seconds = n / sample_rate
    base = [seed, _stable_int("recording", site), index]
    noise = _coloured_noise(np.random.default_rng([*base, 1]), n, sample_rate, profile)
    noise_rms = 10 ** (profile.noise_dbfs / 20.0)
    chirps = _chirps(np.random.default_rng([*base, 2]), n, sample_rate, profile, noise_rms)
    rain, rain_spans = _rain(np.random.default_rng([*base, 3]), n, sample_rate, profile, noise_rms)
    background = noise + chirps + rain

    rng = np.random.default_rng([*base, 4])
    labels = [GUNSHOT] * int(round(gunshots_per_minute * minutes))
    labels += [
        str(rng.choice(list(confuser_labels))) for _ in range(int(round(confusers_per_minute * minutes)))
    ]
    labels = [labels[i] for i in rng.permutation(len(labels))]
    if gun_families is not None:
        unknown = set(gun_families) - set(GUN_FAMILIES)
        if unknown or not gun_families:
            raise ValueError(f"gun_families must be among {sorted(GUN_FAMILIES)}, got {gun_families!r}")
    signals = [
        _gunshot(rng, sample_rate, gun_families) if label == GUNSHOT else _MAKERS[label](rng, sample_rate)
        for label in labels
    ]
    starts = _place(rng, [len(x) / sample_rate for x, _ in signals], seconds, min_gap_seconds)

    mix = background.copy()
    events = []
    for label, (x, source), start in zip(labels, signals, starts, strict=True):
        a = int(round(start * sample_rate))
        span = slice(a, a + len(x))
        low, high = snr_db if label == GUNSHOT else confuser_snr_db
        snr = float(rng.uniform(low, high))
        gain = np.sqrt(np.mean(background[span] ** 2) * 10 ** (snr / 10.0) / (np.mean(x**2) + 1e-20))
        mix[span] += gain * x
        events.append((a / sample_rate, (a + len(x)) / sample_rate, label, snr, source))
    for a, b in rain_spans:
        events.append((a, b, "rain", None, "synthetic"))

    peak = float(np.max(np.abs(mix)))
    scale = min(1.0, 0.9 / peak) if peak > 0 else 1.0
    insertions = sorted(
        Insertion(
            "",
            round(a, 6),
            round(b, 6),
            label,
            None if snr is None else round(snr, 3),
            site,
            source,
            label in annotated,
        )
        for a, b, label, snr, source in events
    )
    return Synthesized(
        mix=(mix * scale).astype(np.float32),
        background=(background * scale).astype(np.float32),
        sample_rate=sample_rate,
        insertions=insertions,
    )


# --- files ---------------------------------------------------------------------------------------


def raven_table_path(audio_path: str | os.PathLike) -> pathlib.Path:
    """`<dir>/<stem>.Table.1.selections.txt`, the Raven table beside a recording."""
    path = pathlib.Path(audio_path)
    return path.with_name(path.stem + RAVEN_SUFFIX)


_FIELDS = [f.name for f in dataclasses.fields(Insertion)]


def _write_ground_truth(path: pathlib.Path, insertions: Sequence[Insertion]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(_FIELDS)
        for ins in insertions:
            writer.writerow(["" if getattr(ins, name) is None else getattr(ins, name) for name in _FIELDS])


def read_ground_truth(root: str | os.PathLike) -> list[Insertion]:
    """The insertions `make_sites` wrote under `root` (from `root/ground_truth.csv`)."""
    with open(pathlib.Path(root) / GROUND_TRUTH, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        Insertion(
            file=r["file"],
            start=float(r["start"]),
            end=float(r["end"]),
            label=r["label"],
            snr_db=float(r["snr_db"]) if r["snr_db"] else None,
            site=r["site"],
            source=r["source"],
            annotated=r["annotated"] == "True",
        )  # fmt: skip
        for r in rows
    ]


def recordings(root: str | os.PathLike) -> list[str]:
    """Audio paths written by `make_sites` under `root`, sorted (from `root/field_sites.json`)."""
    return list(json.loads((pathlib.Path(root) / PARAMS_FILE).read_text())["recordings"])


def recording_seconds(root: str | os.PathLike) -> dict[str, float]:
    """{audio path: duration in seconds} of the recordings written under `root`."""
    return dict(json.loads((pathlib.Path(root) / PARAMS_FILE).read_text())["seconds"])


def make_sites(
    root: str | os.PathLike,
    sites: Sequence[str] = ("siteA", "siteB", "siteC"),
    recordings_per_site: int = 2,
    minutes: float = 1.0,
    seed: int = 0,
    *,
    sample_rates: Sequence[int] = (16000, 44100),
    formats: Sequence[str] = ("wav", "flac"),
    profiles: dict[str, SiteProfile] | None = None,
    gunshots_per_minute: float = 2.0,
    confusers_per_minute: float = 3.0,
    confuser_labels: Sequence[str] = CONFUSER_LABELS,
    snr_db: tuple[float, float] = GUNSHOT_SNR_DB,
    confuser_snr_db: tuple[float, float] = CONFUSER_SNR_DB,
    min_gap_seconds: float = 1.5,
    annotated_labels: Sequence[str] = DEFAULT_ANNOTATED,
    tables: bool = True,
    gun_families: dict[str, Sequence[str]] | None = None,
) -> list[Insertion]:
    """Writes synthetic recordings per site under `root` with Raven tables; returns the insertions.

    Recording `i` of a site uses `sample_rates[i % len]` and `formats[i % len]`. When `root` already
    holds a complete set made with the same parameters (`root/field_sites.json`), nothing is
    rewritten and the stored ground truth is returned.

    Args:
      root: output folder (created).
      sites: site names; each becomes a folder.
      recordings_per_site: recordings per site.
      minutes: length of each recording.
      seed: seeds every random choice.
      sample_rates, formats: cycled over the recordings of a site (formats: wav | flac).
      profiles: soundscape per site; default `site_profile(site, seed)`.
      gunshots_per_minute, confusers_per_minute: event counts per recording, rate * minutes rounded.
      confuser_labels: confuser kinds drawn from (speech, footsteps, click, branch).
      snr_db, confuser_snr_db: uniform SNR ranges (dB) of gunshots and confusers.
      min_gap_seconds: least silence between two events.
      annotated_labels: labels written to the Raven tables.
      tables: write the Raven tables.
      gun_families: {site: gun families (GUN_FAMILIES keys)} its shots are cut from; sites not in it
        (or None) hear every family. Different families for training and held-out sites make the
        split where the held-out sites' guns were never heard in training.
    Returns:
      list[Insertion] sorted by (file, start), `file` the audio path under `root`.
    """
    root = pathlib.Path(root)
    profiles = dict(profiles or {})
    params = {
        "version": GENERATOR_VERSION,
        "sites": list(sites),
        "recordings_per_site": recordings_per_site,
        "minutes": minutes,
        "seed": seed,
        "sample_rates": list(sample_rates),
        "formats": list(formats),
        "profiles": {s: dataclasses.asdict(profiles.get(s) or site_profile(s, seed)) for s in sites},
        "gunshots_per_minute": gunshots_per_minute,
        "confusers_per_minute": confusers_per_minute,
        "confuser_labels": list(confuser_labels),
        "snr_db": list(snr_db),
        "confuser_snr_db": list(confuser_snr_db),
        "min_gap_seconds": min_gap_seconds,
        "annotated_labels": list(annotated_labels),
        "tables": tables,
    }
    gun_families = {s: list(f) for s, f in (gun_families or {}).items()}
    if gun_families:  # only when given: the cache keys of sets made without it stay the same
        params["gun_families"] = gun_families
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    params_path = root / PARAMS_FILE
    if params_path.exists() and (root / GROUND_TRUTH).exists():
        stored = json.loads(params_path.read_text())
        if stored.get("key") == key and all(os.path.exists(p) for p in stored["recordings"]):
            return read_ground_truth(root)

    insertions: list[Insertion] = []
    paths, seconds = [], {}
    for site in sites:
        (root / site).mkdir(parents=True, exist_ok=True)
        for i in range(recordings_per_site):
            rate = int(sample_rates[i % len(sample_rates)])
            fmt = formats[i % len(formats)].lower()
            if fmt not in ("wav", "flac"):
                raise ValueError(f"format must be wav or flac, got {fmt!r}")
            rec = synthesize(
                site, i, minutes=minutes, sample_rate=rate, seed=seed, profile=profiles.get(site),
                gunshots_per_minute=gunshots_per_minute, confusers_per_minute=confusers_per_minute,
                confuser_labels=confuser_labels, snr_db=snr_db, confuser_snr_db=confuser_snr_db,
                min_gap_seconds=min_gap_seconds, annotated_labels=annotated_labels,
                gun_families=gun_families.get(site),
            )  # fmt: skip
            path = root / site / f"{site}_rec{i:02d}.{fmt}"
            sf.write(str(path), rec.mix, rate, subtype="PCM_16", format=fmt.upper())
            found = [dataclasses.replace(ins, file=str(path)) for ins in rec.insertions]
            if tables:
                rows = [
                    {
                        "file": f"{site}/{path.name}",
                        "start_seconds": x.start,
                        "end_seconds": x.end,
                        "label": x.label,
                    }
                    for x in found
                    if x.annotated
                ]
                raven_table_path(path).write_text(annotations.format_selection_table(rows))
            insertions += found
            paths.append(str(path))
            seconds[str(path)] = len(rec.mix) / rate
    insertions.sort()
    _write_ground_truth(root / GROUND_TRUTH, insertions)
    params_path.write_text(
        json.dumps({**params, "key": key, "recordings": paths, "seconds": seconds}, indent=1, sort_keys=True)
    )
    return insertions
