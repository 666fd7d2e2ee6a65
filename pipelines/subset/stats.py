"""Statistics of a subset build: OUTPUT/stats.json (counts per split, tag and class; leaked videos).

Stage: subset 3 (stats). `RowStats` counts tagged rows before and after balancing; `WriteStats` sums
them and writes `build_stats(...)` with sorted keys, so equal inputs give equal bytes.
"""

from __future__ import annotations

import collections
import logging

import apache_beam as beam

from pipelines.io import files
from pipelines.subset.config import Config

_LOG = logging.getLogger(__name__)
STATS_FILE = "stats.json"
LEAK_EXAMPLES = 50


class RowStats(beam.DoFn):
    """Counts tagged rows per (split, tag), per class before/after balancing and leaked rows.

    Input: lists of SUBSET_TAGGED row dicts. Output: ((kind, split, ...), count) pairs summed per bundle,
    so the stats cost one element per key and bundle instead of several per row.
    """

    def __init__(self, config: Config):
        self._tag_classes = {t: frozenset(v) for t, v in config.tag_classes.items()}
        self._names = config.label_names

    def start_bundle(self):
        self._counts = collections.Counter()

    def process(self, rows):
        counts, names = self._counts, self._names
        for row in rows:
            split, tag, selected = row["split"], row["tag"], row["selected"]
            counts[("tag_before", split, tag)] += 1
            if selected:
                counts[("tag_after", split, tag)] += 1
            if row["leaked"]:
                counts[("leaked_clips", split)] += 1
            in_tag = self._tag_classes[tag]
            for label in set(row["labels"]):
                if label in in_tag:
                    name = names.get(label, f"#{label}")
                    counts[("class_before", split, tag, name)] += 1
                    if selected:
                        counts[("class_after", split, tag, name)] += 1

    def finish_bundle(self):
        for key, value in sorted(self._counts.items()):
            yield beam.utils.windowed_value.WindowedValue(
                (key, value), 0, [beam.transforms.window.GlobalWindow()]
            )


class WriteStats(beam.DoFn):
    """Collects the summed stat counts and writes OUTPUT/stats.json (sorted keys: stable bytes)."""

    def __init__(self, config: Config, path: str):
        self._summary = config.summary()
        self._splits = config.split_names
        self._tags = config.tag_names
        self._path = path

    def process(self, counts, thresholds, leaks):
        stats = build_stats(counts, thresholds, leaks, self._splits, self._tags, self._summary)
        files.write_json(self._path, stats)
        _LOG.info("wrote %s", self._path)
        yield stats


def build_stats(counts, thresholds, leaks, splits, tags, summary) -> dict:
    """Assembles stats.json from summed counts [(key tuple, n)], thresholds and leaked ids."""
    c = collections.defaultdict(int)
    for key, value in counts:
        c[tuple(key)] += value
    by_split = {}
    for split in splits:
        errors = {k[2]: v for k, v in c.items() if k[0] == "error" and k[1] == split}
        tagged = {t: c[("tag_before", split, t)] for t in tags}
        entry = {
            "records_read": c[("read", split)],
            "errors": dict(sorted(errors.items())),
            "errors_total": sum(errors.values()),
            "other": c[("other", split)],
            "tagged": tagged,
            "tagged_total": sum(tagged.values()),
            "selected_total": sum(c[("tag_after", split, t)] for t in tags),
            "leaked_clips": c[("leaked_clips", split)],
            "tags": {},
            "co_occurrence": {},
        }
        # Nothing disappears: every record slot read is tagged, other or an error, and every clip the
        # reader tagged reached the tagged table.
        slots = entry["tagged_total"] + entry["other"] + entry["errors_total"]
        reached_table = all(c[("tagged", split, t)] == tagged[t] for t in tags)
        entry["accounted"] = entry["records_read"] == slots and reached_table
        for tag in tags:
            info = thresholds.get((split, tag), {})
            entry["tags"][tag] = {
                "before": c[("tag_before", split, tag)],
                "eligible": info.get("eligible", 0),
                "quota": info.get("quota", 0),
                "after": c[("tag_after", split, tag)],
                "weight": info.get("weight", 1.0),
                "classes_before": {
                    k[3]: v for k, v in sorted(c.items()) if k[:3] == ("class_before", split, tag)
                },
                "classes_after": {
                    k[3]: v for k, v in sorted(c.items()) if k[:3] == ("class_after", split, tag)
                },
            }
        for k, v in sorted(c.items()):
            if k[0] == "co_occurrence" and k[1] == split:
                entry["co_occurrence"].setdefault(k[2], {"clips": 0, "outcome": {}, "labels": {}})
                group = entry["co_occurrence"][k[2]]
                group["clips"] += v
                group["outcome"][k[3]] = v
        for k, v in sorted(c.items()):
            if k[0] == "co_label" and k[1] == split:
                entry["co_occurrence"][k[2]]["labels"][k[3]] = v
        entry["co_occurrence_dropped"] = sum(
            g["outcome"].get("dropped", 0) for g in entry["co_occurrence"].values()
        )
        checks = {k[2]: v for k, v in c.items() if k[0] == "label_check" and k[1] == split}
        if checks:
            entry["label_check"] = dict(sorted(checks.items()))
        by_split[split] = entry
    pairs = collections.Counter("+".join(s) for _, s in leaks)
    leakage = {
        "video_ids": len(leaks),
        "by_splits": dict(sorted(pairs.items())),
        "examples": sorted(v for v, _ in leaks)[:LEAK_EXAMPLES],
        "dropped": summary["drop_leakage"],
    }
    return {"options": summary, "splits": by_split, "leakage": leakage}
