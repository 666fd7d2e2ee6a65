"""Report stage: small PNG figures for the static site (matplotlib, Agg backend, no pyplot).

Shared by `gunshot report` and `gunshot search`. Every function draws on its own `Figure` with a
`FigureCanvasAgg` (no pyplot state), so figures can be drawn from several threads at once; PNGs carry
no software/date metadata, so the same data gives the same bytes on every run. Figures are small
(about 700 x 220 px, 20-80 kB) so pages full of them stay light.

    spectrogram_png(path, clip.samples, clip.sample_rate, start_seconds=clip.start_seconds,
                    marks=[(12.0, 21.6, "peak window")])
    timeline_png(path, {"old": (starts, scores), "new": (starts, scores)}, threshold=0.51,
                 marks=[(12.0, 21.6)])
"""

from __future__ import annotations

import os

import numpy as np

WIDTH_INCHES = 7.0
HEIGHT_INCHES = 2.2
DPI = 100
_PNG_METADATA = {"Software": None}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _figure(width: float = WIDTH_INCHES, height: float = HEIGHT_INCHES):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> int:
    """Writes the figure as PNG atomically; returns the size in bytes."""
    path = os.fspath(path)
    partial = path + ".part"
    figure.savefig(partial, format="png", dpi=DPI, metadata=_PNG_METADATA)
    os.replace(partial, path)
    return os.path.getsize(path)


def spectrogram_png(
    path: str | os.PathLike,
    samples: np.ndarray,
    sample_rate: int,
    *,
    start_seconds: float = 0.0,
    marks: list[tuple[float, float, str]] = (),
    max_hz: float = 8000.0,
    title: str | None = None,
) -> int:
    """Draws a spectrogram (dB, Hann window of ~32 ms, 75% overlap) with a time axis in recording seconds.

    Args:
      path: the PNG to write.
      samples: float32 [num_samples] mono audio.
      sample_rate: Hz.
      start_seconds: recording time of samples[0] (the time axis shows recording time).
      marks: (start, end, label) spans to outline, in recording seconds; the first is also shaded.
      max_hz: highest frequency shown (capped at Nyquist).
      title: optional title above the plot.
    Returns:
      bytes written.
    """
    from scipy import signal

    samples = np.asarray(samples, np.float32)
    nperseg = int(2 ** round(np.log2(max(64, 0.032 * sample_rate))))
    figure = _figure()
    axes = figure.add_axes((0.08, 0.2, 0.9, 0.6 if title else 0.66))
    if samples.size >= nperseg:
        freqs, times, power = signal.spectrogram(
            samples, fs=sample_rate, window="hann", nperseg=nperseg, noverlap=nperseg * 3 // 4, mode="psd"
        )
        top = min(max_hz, sample_rate / 2)
        keep = freqs <= top
        db = 10 * np.log10(power[keep] + 1e-12)
        vmax = float(db.max()) if db.size else 0.0
        axes.imshow(
            db,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=vmax - 80,
            vmax=vmax,
            extent=(start_seconds, start_seconds + samples.size / sample_rate, 0, top / 1000),
            interpolation="nearest",
        )
    else:
        axes.text(0.5, 0.5, "too short for a spectrogram", ha="center", va="center", transform=axes.transAxes)
    for i, (begin, end, label) in enumerate(marks):
        color = ("#00e5ff", "#ffffff", "#7CFC00")[i % 3]
        if i == 0:  # the first mark (an event) is also shaded, so a short one stands out
            axes.axvspan(begin, end, color=color, alpha=0.18, linewidth=0)
        axes.axvline(begin, color=color, linewidth=1)
        axes.axvline(end, color=color, linewidth=1, linestyle="--")
        if label:
            axes.text(
                begin, 1.01 + 0.07 * i, label, color="#333", fontsize=7, transform=axes.get_xaxis_transform()
            )
    axes.set_xlabel("seconds from the start of the recording", fontsize=8)
    axes.set_ylabel("kHz", fontsize=8)
    axes.tick_params(labelsize=7)
    if title:
        figure.suptitle(title, fontsize=8, y=0.99)
    return _save(figure, path)


def timeline_png(
    path: str | os.PathLike,
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    threshold: float | dict[str, float] | None = None,
    marks: list[tuple[float, float]] = (),
    span: tuple[float, float] | None = None,
    frame_series: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> int:
    """Draws window scores against recording time, one step line per run.

    Args:
      series: {run name: (float64 [n] window start seconds, float32 [n] scores)}.
      frame_series: {run name: (float64 [m] frame start seconds, float32 [m] scores)}: the frame
        scores of a frame-level head, a thin line in the run's colour.
      threshold: a dashed horizontal line (the decision threshold), or {run name: threshold} for one
        line per run in the run's colour.
      marks: (start, end) spans to shade (the event).
      span: (start, end) x range; default the data's.
    """
    figure = _figure()
    axes = figure.add_axes((0.08, 0.2, 0.9, 0.72))
    for begin, end in marks:
        axes.axvspan(begin, end, color="#ffd54f", alpha=0.35, linewidth=0)
    for i, (name, (starts, scores)) in enumerate(series.items()):
        if len(starts):
            axes.step(starts, scores, where="post", color=COLORS[i % len(COLORS)], linewidth=1.2, label=name)
    names = list(series)
    for name, (starts, scores) in (frame_series or {}).items():
        if len(starts):
            color = COLORS[names.index(name) % len(COLORS)] if name in names else "#555"
            axes.step(
                starts, scores, where="post", color=color, linewidth=0.7, alpha=0.6, label=f"{name} frames"
            )
    if isinstance(threshold, dict):
        names = list(series)
        for name, value in threshold.items():
            color = COLORS[names.index(name) % len(COLORS)] if name in names else "#555"
            axes.axhline(
                value, color=color, linestyle="--", linewidth=0.8, label=f"threshold {name} {value:g}"
            )
    elif threshold is not None:
        axes.axhline(threshold, color="#555", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
    if span is not None:
        axes.set_xlim(*span)
    # Scores near 0 (a quiet stretch, an untrained head) would be a flat line on a 0-1 axis.
    levels = list(threshold.values()) if isinstance(threshold, dict) else [threshold or 0.0]
    drawn = list(series.values()) + list((frame_series or {}).values())
    top = max([float(np.max(v[1])) for v in drawn if len(v[1])] + levels + [1e-3])
    axes.set_ylim(0.0, min(1.02, top * 1.15))
    axes.set_xlabel("window start, seconds from the start of the recording", fontsize=8)
    axes.set_ylabel("score", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, loc="upper right", frameon=False)
    return _save(figure, path)


def _readable_log_axis(axis, low: float, high: float) -> None:
    """Log-axis ticks as plain numbers (1, 10, 100, 1,000; with 2 and 5 between when the axis spans at
    most two decades) instead of matplotlib's "4 x 10^0" minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = np.log10(max(high, 1.0)) - np.log10(max(low, 1e-3))
    subs = (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def histogram_figure(
    edges: np.ndarray,
    counts: dict[str, np.ndarray],
    *,
    threshold: float | dict[str, float] | None = None,
):
    """The Figure `histogram_png` writes (for tests and callers that want to draw more on it)."""
    figure = _figure()
    axes = figure.add_axes((0.08, 0.2, 0.9, 0.72))
    if not any(np.sum(values) for values in counts.values()):
        axes.text(0.5, 0.5, "no windows were scored", ha="center", va="center", transform=axes.transAxes)
        axes.set_xlabel("window score", fontsize=8)
        return figure
    names = list(counts)
    for i, (name, values) in enumerate(counts.items()):
        # Empty bins drawn just below 1 so the log axis can show them.
        axes.stairs(np.maximum(values, 0.8), edges, color=COLORS[i % len(COLORS)], linewidth=1.2, label=name)
    if isinstance(threshold, dict):
        if len(set(threshold.values())) == 1:  # one line when every run has the same threshold
            threshold = next(iter(threshold.values()))
        else:
            for name, value in threshold.items():
                color = COLORS[names.index(name) % len(COLORS)] if name in names else "#555"
                axes.axvline(
                    value, color=color, linestyle="--", linewidth=0.9, label=f"threshold {name} {value:g}"
                )
    if isinstance(threshold, int | float):
        axes.axvline(threshold, color="#555", linestyle="--", linewidth=0.9, label=f"threshold {threshold:g}")
    axes.set_yscale("log")
    top = max(float(np.max(v)) for v in counts.values())
    axes.set_ylim(0.7, max(2.0, top * 1.5))
    _readable_log_axis(axes.yaxis, 0.7, top)
    axes.set_xlabel("window score", fontsize=8)
    axes.set_ylabel("windows", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, loc="upper center", frameon=False)
    return figure


def histogram_png(
    path: str | os.PathLike,
    edges: np.ndarray,
    counts: dict[str, np.ndarray],
    *,
    threshold: float | dict[str, float] | None = None,
) -> int:
    """Draws score histograms (log count axis with plain-number ticks), one outline per run.

    Args:
      edges: float64 [bins + 1] bin edges.
      counts: {run name: int64 [bins]} windows per bin.
      threshold: a dashed vertical line, or {run name: threshold} for one line per run in the run's
        colour (one grey line when they are all equal).
    """
    return _save(histogram_figure(edges, counts, threshold=threshold), path)


def _time_unit(seconds: float) -> tuple[float, str]:
    """(divisor, name) of the unit a time axis of `seconds` reads best in."""
    if seconds > 3 * 3600:
        return 3600.0, "hours"
    if seconds > 600:
        return 60.0, "minutes"
    return 1.0, "seconds"


def recording_timelines_png(
    path: str | os.PathLike,
    rows: list[dict],
    *,
    threshold: float | None = None,
    title: str | None = None,
) -> int:
    """Draws one strip of window scores over time per recording (recordings without timestamps).

    Args:
      rows: [{"label", "starts": float64 [n], "ends": float64 [n], "scores": float32 [n]}], drawn top
        to bottom; times in seconds from the start of each recording.
      threshold: a dashed horizontal line in every strip.
    """
    n = max(1, len(rows))
    strip = 0.75
    height = 0.75 + strip * n
    figure = _figure(WIDTH_INCHES, height)
    longest = max((float(np.max(r["ends"])) for r in rows if len(r["ends"])), default=1.0)
    divisor, unit = _time_unit(longest)
    # One score axis for all strips; scores near 0 (a quiet site, an untrained head) would be a flat
    # line on a 0-1 axis, so it ends a little above the highest score or threshold.
    highest = max([float(np.max(r["scores"])) for r in rows if len(r["scores"])] + [threshold or 0.0, 1e-3])
    ceiling = min(1.02, highest * 1.15)
    bottom, top_margin = 0.45 / height, (0.3 if title else 0.1) / height
    each = (1 - bottom - top_margin) / n
    for k, row in enumerate(rows):
        axes = figure.add_axes((0.08, 1 - top_margin - (k + 1) * each + 0.06 * each, 0.9, each * 0.72))
        if len(row["starts"]):
            x = np.append(row["starts"], row["ends"][-1]) / divisor
            y = np.append(row["scores"], row["scores"][-1])
            axes.step(x, y, where="post", color=COLORS[0], linewidth=0.9)
        if threshold is not None:
            axes.axhline(threshold, color="#555", linestyle="--", linewidth=0.7)
        axes.set_xlim(0, longest / divisor)
        axes.set_ylim(0, ceiling)
        axes.set_yticks([0, min(1.0, ceiling)], ["0", f"{min(1.0, ceiling):.2g}"])
        axes.set_title(row["label"], fontsize=7, loc="left", pad=2, color="#333")
        axes.tick_params(labelsize=6, length=2)
        if k < n - 1:
            axes.set_xticklabels([])
        else:
            axes.set_xlabel(f"{unit} from the start of the recording", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=8, y=1 - 0.05 / height)
    return _save(figure, path)


def heatmap_png(
    path: str | os.PathLike,
    counts: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    *,
    xlabel: str,
    title: str | None = None,
) -> int:
    """Draws a count matrix (e.g. detections per day x hour of day) as a heatmap with a colour bar.

    Args:
      counts: int64 [rows, cols].
      row_labels: [rows] (at most ~25 are printed; the axis is thinned beyond that).
      col_labels: [cols].
    """
    counts = np.asarray(counts)
    rows = max(1, counts.shape[0])
    height = min(8.0, 1.0 + 0.16 * rows)
    figure = _figure(WIDTH_INCHES, height)
    axes = figure.add_axes((0.18, 0.6 / height, 0.72, 1 - 1.0 / height))
    image = axes.imshow(counts, aspect="auto", cmap="Reds", interpolation="nearest", vmin=0)
    step = max(1, rows // 25)
    axes.set_yticks(range(0, counts.shape[0], step), [row_labels[i] for i in range(0, counts.shape[0], step)])
    col_step = max(1, len(col_labels) // 24)
    axes.set_xticks(
        range(0, counts.shape[1], col_step), [col_labels[i] for i in range(0, counts.shape[1], col_step)]
    )
    axes.tick_params(labelsize=7)
    axes.set_xlabel(xlabel, fontsize=8)
    if title:
        axes.set_title(title, fontsize=8)
    bar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    bar.ax.tick_params(labelsize=7)
    return _save(figure, path)
