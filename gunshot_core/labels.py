"""AudioSet classes: the class index, the ontology, class lists by name or MID, and exclusive tagging.

The class index (`class_labels_indices.csv`: index, mid, display_name) and the ontology
(`ontology.json`: id, name, child_ids, ...) ship in `gunshot_core/data/` (AudioSet, CC BY 4.0 /
CC BY-SA 4.0, https://research.google.com/audioset/); other copies can be passed by path.

Class lists are CSV text of display names or MIDs, quoted as in class_labels_indices.csv when a name
holds a comma: `'"Gunshot, gunfire",Machine gun,/m/02z32qm'`. An unquoted name with commas is
recognised too when its pieces are not class names themselves (`Gunshot, gunfire,Cap gun`).
Unknown names fail with the closest known names as suggestions.

Tagging: an ordered list of `TagSpec(name, class indices)`. A clip whose labels meet exactly one tag's
classes gets that tag; none -> `OTHER`; several -> resolved by the co-occurrence policy:
`priority` (the first tag in order wins: the original project's rule, gunshot before no_gunshot) or
`drop` (the clip is dropped for co-occurrence and reported with the labels that caused it).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import io
import json
import os
from collections.abc import Iterable, Sequence

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CLASS_LABELS_CSV = os.path.join(DATA_DIR, "class_labels_indices.csv")
ONTOLOGY_JSON = os.path.join(DATA_DIR, "ontology.json")

OTHER = "other"
"""Tag of clips that carry no class of any tag (counted, never emitted)."""

POLICIES = ("priority", "drop")

# The original project's six gunshot classes.
DEFAULT_POSITIVE = (
    "Gunshot, gunfire",
    "Machine gun",
    "Fusillade",
    "Artillery fire",
    "Cap gun",
    "Explosion",
)

# The original project's hard and easy negatives, taken from the ontology: speech and children,
# hammer and tools, fireworks / burst / glass (hard negatives), footsteps, rooms and public spaces,
# noise, radio, television, echo and static.
DEFAULT_NEGATIVE = (
    "Speech",
    "Male speech, man speaking",
    "Female speech, woman speaking",
    "Child speech, kid speaking",
    "Children shouting",
    "Children playing",
    "Hubbub, speech noise, speech babble",
    "Tools",
    "Hammer",
    "Jackhammer",
    "Fireworks",
    "Firecracker",
    "Burst, pop",
    "Glass",
    "Shatter",
    "Walk, footsteps",
    "Inside, small room",
    "Inside, large room or hall",
    "Inside, public space",
    "Noise",
    "Environmental noise",
    "Static",
    "Echo",
    "Radio",
    "Television",
)

DEFAULT_TAG_NAMES = ("gunshot", "no_gunshot")


class UnknownClassError(ValueError):
    """A class name or MID that is not in the class index (the message lists suggestions)."""


@dataclasses.dataclass(frozen=True, order=True)
class AudioSetClass:
    """One row of class_labels_indices.csv: index (int), mid (e.g. `/m/032s66`), name."""

    index: int
    mid: str
    name: str


@dataclasses.dataclass(frozen=True)
class TagSpec:
    """A tag and the AudioSet class indices that make a clip carry it."""

    name: str
    indices: frozenset

    def __post_init__(self):
        if not self.name or self.name == OTHER:
            raise ValueError(f"tag name must be non-empty and not {OTHER!r}, got {self.name!r}")
        if not self.indices:
            raise ValueError(f"tag {self.name!r} has no class")


@dataclasses.dataclass(frozen=True)
class TagResult:
    """Outcome of tagging one clip.

    Attributes:
      tag: the tag name, or OTHER (no tag's class, or dropped for co-occurrence).
      matched: names of every tag whose classes the clip carries, in tag order.
      co_labels: the clip's labels that belong to a tag other than `tag` (for the co-occurrence report;
        empty when only one tag matched).
    """

    tag: str
    matched: tuple[str, ...]
    co_labels: tuple[int, ...]

    @property
    def dropped(self) -> bool:
        """True if the clip matched several tags and the `drop` policy removed it."""
        return self.tag == OTHER and len(self.matched) > 1


_UNTAGGED = TagResult(OTHER, (), ())


def tag_labels(labels: Iterable[int], tags: Sequence[TagSpec], policy: str = "priority") -> TagResult:
    """Tags one clip by its label indices (see the module docstring for the rule).

    Args:
      labels: class indices of the clip.
      tags: ordered tag specs.
      policy: `priority` or `drop`.
    Returns:
      TagResult.
    """
    labels = tuple(labels)
    matched = [t for t in tags if not t.indices.isdisjoint(labels)]
    if not matched:
        return _UNTAGGED
    names = tuple(t.name for t in matched)
    if len(matched) == 1:
        return TagResult(matched[0].name, names, ())
    if policy == "priority":
        winner = matched[0]
        others = frozenset().union(*(t.indices for t in matched[1:])) - winner.indices
        return TagResult(winner.name, names, tuple(sorted({x for x in labels if x in others})))
    if policy == "drop":
        every = frozenset().union(*(t.indices for t in matched))
        return TagResult(OTHER, names, tuple(sorted({x for x in labels if x in every})))
    raise ValueError(f"unknown co-occurrence policy {policy!r}; expected one of {POLICIES}")


def parse_class_list(text: str | Sequence[str], known_names: Iterable[str] = ()) -> list[str]:
    """Splits a class-list argument into names/MIDs.

    Args:
      text: CSV text (`'"Gunshot, gunfire",Machine gun'`), `@path` of a file with such lines (a header
        line `index,mid,display_name` in class_labels_indices.csv format is understood: the MID
        column is used), or an already split sequence.
      known_names: display names; adjacent unquoted pieces whose `", "`-join is a known name (and are
        not names themselves) are rejoined.
    Returns:
      list of stripped, non-empty items in order, duplicates removed.
    """
    if not isinstance(text, str):
        items = [str(t).strip() for t in text]
    else:
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        rows = [row for row in csv.reader(io.StringIO(text), skipinitialspace=True) if row]
        if rows and [c.strip().lower() for c in rows[0]][:3] == ["index", "mid", "display_name"]:
            items = [row[1].strip() for row in rows[1:] if len(row) > 1]
        else:
            items = [cell.strip() for row in rows for cell in row]
    known = {n.lower() for n in known_names}
    joined = []
    i = 0
    while i < len(items):
        item = items[i]
        if known and item.lower() not in known and not item.startswith("/"):
            # Try the longest run of following pieces that forms a known name with ", ".
            for j in range(min(len(items), i + 4), i + 1, -1):
                candidate = ", ".join(items[i:j])
                if candidate.lower() in known:
                    item, i = candidate, j - 1
                    break
        joined.append(item)
        i += 1
    seen, result = set(), []
    for item in joined:
        if item and item not in seen:
            seen.add(item)
            result.append(item)
    return result


class ClassCatalog:
    """The AudioSet class index plus the ontology's parent -> children edges."""

    def __init__(self, classes: Sequence[AudioSetClass], children: dict[str, tuple[str, ...]]):
        self.classes = tuple(sorted(classes))
        self.by_index = {c.index: c for c in self.classes}
        self.by_mid = {c.mid: c for c in self.classes}
        self.by_name = {c.name.lower(): c for c in self.classes}
        self.children = dict(children)

    @classmethod
    def from_files(cls, labels_csv: str | None = None, ontology_json: str | None = None) -> ClassCatalog:
        """Loads the class index CSV and the ontology JSON (defaults: the copies shipped in the package)."""
        return _load_catalog(labels_csv or CLASS_LABELS_CSV, ontology_json or ONTOLOGY_JSON)

    def name(self, index: int) -> str:
        """Display name of a class index (`#<index>` for an index not in the catalogue)."""
        c = self.by_index.get(int(index))
        return c.name if c else f"#{index}"

    def resolve(self, item: str) -> AudioSetClass:
        """The class of a display name (case-insensitive), MID, or `#index`.

        Raises:
          UnknownClassError: unknown item; the message names the closest known names.
        """
        key = item.strip()
        if key in self.by_mid:
            return self.by_mid[key]
        if key.lower() in self.by_name:
            return self.by_name[key.lower()]
        if key.startswith("#") and key[1:].isdigit() and int(key[1:]) in self.by_index:
            return self.by_index[int(key[1:])]
        names = [c.name for c in self.classes]
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
        close += [n for n in names if key.lower() and key.lower() in n.lower() and n not in close][:3]
        hint = f"; did you mean {', '.join(repr(n) for n in close[:5])}?" if close else ""
        raise UnknownClassError(
            f"unknown AudioSet class {item!r} (not a display name or MID of class_labels_indices.csv){hint} "
            "Quote names that contain commas, e.g. '\"Gunshot, gunfire\",Machine gun'."
        )

    def descendants(self, mid: str) -> list[str]:
        """MIDs of every ontology descendant of `mid` (depth first, without `mid`)."""
        result, stack, seen = [], list(reversed(self.children.get(mid, ()))), {mid}
        while stack:
            child = stack.pop()
            if child in seen:
                continue
            seen.add(child)
            result.append(child)
            stack.extend(reversed(self.children.get(child, ())))
        return result

    def resolve_list(
        self, items: str | Sequence[str], *, include_children: bool = False, exclude: Iterable[int] = ()
    ) -> tuple[AudioSetClass, ...]:
        """Resolves a class list (see parse_class_list) to classes, optionally with their descendants.

        Args:
          items: class-list text or sequence of names/MIDs.
          include_children: add every ontology descendant that has a class index.
          exclude: class indices that expansion must not add (e.g. classes listed for another tag).
        Returns:
          tuple of AudioSetClass sorted by index.
        Raises:
          UnknownClassError: an unknown item (all unknown items are reported at once).
        """
        parsed = parse_class_list(items, [c.name for c in self.classes])
        found, errors = {}, []
        for item in parsed:
            try:
                c = self.resolve(item)
            except UnknownClassError as e:
                errors.append(str(e))
                continue
            found[c.index] = c
        if errors:
            raise UnknownClassError("\n".join(errors))
        if include_children:
            exclude = set(exclude)
            for c in list(found.values()):
                for mid in self.descendants(c.mid):
                    child = self.by_mid.get(mid)
                    if child is not None and child.index not in exclude:
                        found.setdefault(child.index, child)
        return tuple(sorted(found.values()))


@functools.lru_cache(maxsize=4)
def _load_catalog(labels_csv: str, ontology_json: str) -> ClassCatalog:
    classes = []
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"index", "mid", "display_name"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{labels_csv}: missing columns {sorted(missing)} (header {reader.fieldnames})")
        for row in reader:
            classes.append(AudioSetClass(int(row["index"]), row["mid"].strip(), row["display_name"].strip()))
    children = {}
    if ontology_json:
        with open(ontology_json, encoding="utf-8") as handle:
            for node in json.load(handle):
                children[node["id"]] = tuple(node.get("child_ids", ()))
    return ClassCatalog(classes, children)


def build_tags(
    catalog: ClassCatalog,
    specs: Sequence[tuple[str, str | Sequence[str]]],
    *,
    include_children: bool = False,
) -> tuple[TagSpec, ...]:
    """Resolves `[(tag name, class list), ...]` into TagSpecs.

    Expansion through the ontology never adds a class that another tag lists explicitly (Explosion's
    children include Fireworks, which the default negatives list). A class listed explicitly by two
    tags is an error.

    Raises:
      UnknownClassError: unknown class names; ValueError: duplicate tag names or a class in two tags.
    """
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"tag names must be unique, got {names}")
    explicit = {name: catalog.resolve_list(items) for name, items in specs}
    owner = {}
    for name, classes in explicit.items():
        for c in classes:
            if c.index in owner:
                raise ValueError(
                    f"class {c.name!r} ({c.mid}) is listed for both {owner[c.index]!r} and {name!r}"
                )
            owner[c.index] = name
    tags = []
    for name, items in specs:
        others = {i for i, n in owner.items() if n != name}
        classes = catalog.resolve_list(items, include_children=include_children, exclude=others)
        tags.append(TagSpec(name, frozenset(c.index for c in classes)))
    return tuple(tags)


def default_tags(catalog: ClassCatalog | None = None, include_children: bool = False) -> tuple[TagSpec, ...]:
    """The original project's binary setup: gunshot (DEFAULT_POSITIVE) vs no_gunshot (DEFAULT_NEGATIVE)."""
    catalog = catalog or ClassCatalog.from_files()
    return build_tags(
        catalog,
        [(DEFAULT_TAG_NAMES[0], DEFAULT_POSITIVE), (DEFAULT_TAG_NAMES[1], DEFAULT_NEGATIVE)],
        include_children=include_children,
    )
