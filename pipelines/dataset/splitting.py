"""Dataset stage 4, splitting: the group of each recording, the split of each group, leakage.

Splits are made of whole groups, never of windows: a group is what `--group_pattern` finds in the
recording's path (its first capture group, else the whole match), by default the recording's
folder (e.g. the site). Groups are ordered by a seeded hash and dealt out by the split fractions
(the i-th of G groups goes to the split whose cumulative share holds (i + 0.5) / G), so the same
groups, fractions and seed always give the same assignment, and with enough groups every split
gets about its share. The leakage report is the subset builder's (`build_subset._leak_entry`),
applied to groups and to recording names: a name in two splits is the same recording copied into
two groups, or a group pattern that splits one site.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence

from gunshot_core import annotations
from pipelines.io.sharded import stable_hash
from pipelines.subset.balance import _leak_entry

LEAK_EXAMPLES = 20


def group_of(source: str, pattern: str | None) -> str | None:
    """The recording's group, or None when `pattern` does not match its path.

    Args:
      source: the recording (path, or archive!member).
      pattern: regex, or None for the folder of the recording (archive members: the folder inside
        the archive, prefixed by the archive).
    """
    if pattern is None:
        return posixpath.dirname(source) or "."
    m = re.search(pattern, source)
    if m is None:
        return None
    return m.group(1) if m.re.groups and m.group(1) is not None else m.group(0)


def assign_splits(groups: Iterable[str], splits: Sequence[tuple[str, float]], seed: int) -> dict[str, str]:
    """{group: split name}, dealing the seeded-hash-ordered groups out by the split fractions."""
    ordered = sorted(set(groups), key=lambda g: (stable_hash((seed, "split", g)), g))
    out = {}
    n = len(ordered)
    for i, group in enumerate(ordered):
        position = (i + 0.5) / n
        cumulative = 0.0
        chosen = splits[-1][0]
        for name, fraction in splits:
            cumulative += fraction
            if position < cumulative:
                chosen = name
                break
        out[group] = chosen
    return out


def leakage(rows: Iterable[dict], split_order: Sequence[str]) -> dict:
    """The leakage report over example rows (`split`, `group`, `source`).

    Returns:
      {"groups": n groups in several splits, "recording_names": n recording names (base names) in
      several splits, "by_splits": {"train+eval": n}, "examples": up to LEAK_EXAMPLES of them}.
    """
    by_group: dict[str, list[str]] = {}
    by_name: dict[str, list[str]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row["split"])
        by_name.setdefault(annotations.base_name(row["source"]), []).append(row["split"])
    order = list(split_order)
    leaked_groups = [x for item in sorted(by_group.items()) for x in _leak_entry(item, order)]
    leaked_names = [x for item in sorted(by_name.items()) for x in _leak_entry(item, order)]
    pairs: dict[str, int] = {}
    for _, splits in leaked_groups + leaked_names:
        key = "+".join(splits)
        pairs[key] = pairs.get(key, 0) + 1
    examples = [f"group {g}" for g, _ in leaked_groups] + [f"recording {n}" for n, _ in leaked_names]
    return {
        "groups": len(leaked_groups),
        "recording_names": len(leaked_names),
        "by_splits": dict(sorted(pairs.items())),
        "examples": examples[:LEAK_EXAMPLES],
    }
