"""Balancing: per split and tag, keep the lowest-ranked clips up to the quota; drop leaked videos.

Stage: subset 2 (balance). `ComputeThresholds` turns the eligible ranks of each (split, tag) into a
rank threshold and class weight (`quotas`, `class_weights`); `Select` marks each tagged clip leaked or
selected and sets its weight.
"""

from __future__ import annotations

import collections
import fractions
import logging
import math

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.subset.config import NAMESPACE, Config
from pipelines.subset.tag import ClipBatch

_LOG = logging.getLogger(__name__)


def quotas(
    counts: dict[str, int], config_ratio: dict[str, int], balance: str, max_per_class: int | None
) -> dict:
    """How many clips of each tag a split keeps.

    Args:
      counts: eligible clips per tag (missing tags count 0).
      config_ratio: tag -> integer proportion (downsample only).
      balance: downsample | none | weights.
      max_per_class: optional cap per tag.
    Returns:
      {tag: quota}. downsample keeps floor(s * ratio[tag]) with the largest s that every tag can fill
      (and that keeps every tag <= max_per_class); none/weights keep min(count, max_per_class).
    """
    if balance == "downsample":
        scale = min(fractions.Fraction(counts.get(t, 0), r) for t, r in config_ratio.items())
        if max_per_class is not None:
            scale = min(scale, fractions.Fraction(max_per_class, max(config_ratio.values())))
        return {t: math.floor(scale * r) for t, r in config_ratio.items()}
    if balance in ("none", "weights"):
        cap = max_per_class if max_per_class is not None else float("inf")
        return {t: int(min(counts.get(t, 0), cap)) for t in config_ratio}
    raise ValueError(f"unknown balance mode {balance!r}")


def class_weights(kept: dict[str, int]) -> dict[str, float]:
    """Balanced class weights n_total / (n_tags * n_tag) (sklearn's 'balanced'); 0 for empty tags."""
    total = sum(kept.values())
    return {t: (total / (len(kept) * n) if n else 0.0) for t, n in kept.items()}


class ComputeThresholds(beam.DoFn):
    """Per split: eligible ranks per tag -> (split, tag) -> (rank threshold, quota, eligible, weight).

    Input: (split, [(tag, sorted ranks), ...]). A clip is selected iff its rank <= threshold; the
    threshold is the quota-th smallest rank (None when the quota is 0).
    """

    def __init__(self, config: Config):
        self._tag_names = config.tag_names
        self._ratio = config.ratio
        self._balance = config.balance
        self._max = config.max_per_class

    def process(self, element):
        split, per_tag = element
        ranks = {t: [] for t in self._tag_names}
        for tag, values in per_tag:
            ranks[tag].extend(values)
        for values in ranks.values():
            values.sort()
        counts = {t: len(v) for t, v in ranks.items()}
        quota = quotas(counts, self._ratio, self._balance, self._max)
        kept = {t: min(quota[t], counts[t]) for t in self._tag_names}
        weights = class_weights(kept) if self._balance == "weights" else {t: 1.0 for t in kept}
        for tag in self._tag_names:
            threshold = ranks[tag][kept[tag] - 1] if kept[tag] > 0 else None
            if kept[tag] < quota[tag] and self._balance == "downsample":
                _LOG.warning(
                    "split %s: tag %s has only %d clips for a quota of %d",
                    split,
                    tag,
                    counts[tag],
                    quota[tag],
                )
            yield (
                (split, tag),
                {
                    "threshold": threshold,
                    "quota": quota[tag],
                    "eligible": counts[tag],
                    "kept": kept[tag],
                    "weight": weights[tag],
                },
            )


class Select(beam.DoFn):
    """Marks each tagged clip leaked / selected and sets its weight.

    Input: ClipBatch of (row, record offset) (one input shard); side inputs: thresholds {(split, tag): info},
    leaked {video_id: splits}. Output: the list with rows completed by `leaked`, `selected`, `weight`.
    """

    def __init__(self, config: Config):
        self._drop_leakage = config.drop_leakage
        self._selected = Metrics.counter(NAMESPACE, "clips_selected")
        self._leak_dropped = Metrics.counter(NAMESPACE, "clips_dropped_leakage")

    def process(self, batch, thresholds, leaked):
        out = []
        n_dropped = n_selected = 0
        for row, offset in batch:
            row = dict(row)
            splits = leaked.get(row["video_id"])
            row["leaked"] = splits is not None
            dropped = bool(self._drop_leakage and splits is not None and splits[0] != row["split"])
            info = thresholds.get((row["split"], row["tag"]))
            threshold = info["threshold"] if info else None
            row["selected"] = bool(not dropped and threshold is not None and row["rank"] <= threshold)
            row["weight"] = float(info["weight"]) if info else 1.0
            n_dropped += dropped
            n_selected += row["selected"]
            out.append((row, offset))
        self._leak_dropped.inc(n_dropped)
        self._selected.inc(n_selected)
        yield ClipBatch(out)


def _eligible_ranks(batch, drop_leakage, leaked):
    """((split, tag), [ranks]) of one shard's clips that may be selected (not dropped for leakage)."""
    ranks = collections.defaultdict(list)
    for row, _ in batch:
        splits = leaked.get(row["video_id"])
        if drop_leakage and splits is not None and splits[0] != row["split"]:
            continue
        ranks[(row["split"], row["tag"])].append(row["rank"])
    return sorted(ranks.items())


def _video_splits(batch):
    return sorted({(row["video_id"], row["split"]) for row, _ in batch})


def _rows_of(batch):
    return [row for row, _ in batch]


def _selected_in(batch, split):
    chosen = [pair for pair in batch if pair[0]["selected"] and pair[0]["split"] == split]
    return [chosen] if chosen else []


def _leak_entry(element, split_order):
    video_id, splits = element
    unique = sorted(set(splits), key=split_order.index)
    if len(unique) > 1:
        yield video_id, tuple(unique)
