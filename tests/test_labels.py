"""AudioSet class catalogue, class lists and exclusive tagging."""

import csv

import pytest

from gunshot_core import labels
from tests.conftest import AUDIOSET


@pytest.fixture(scope="module")
def catalog():
    return labels.ClassCatalog.from_files()


def test_shipped_catalogue_matches_shared_metadata(catalog):
    shared = labels.ClassCatalog.from_files(
        str(AUDIOSET / "class_labels_indices.csv"), str(AUDIOSET / "ontology.json")
    )
    assert catalog.classes == shared.classes
    assert len(catalog.classes) == 527
    assert catalog.by_mid["/m/032s66"] == labels.AudioSetClass(427, "/m/032s66", "Gunshot, gunfire")


def test_class_list_quoting_and_mids(catalog):
    names = [c.name for c in catalog.classes]
    assert labels.parse_class_list('"Gunshot, gunfire",Machine gun, /m/02z32qm') == [
        "Gunshot, gunfire",
        "Machine gun",
        "/m/02z32qm",
    ]
    # Unquoted names with commas are rejoined when the pieces are not names themselves.
    assert labels.parse_class_list("Gunshot, gunfire,Cap gun", names) == ["Gunshot, gunfire", "Cap gun"]
    resolved = catalog.resolve_list('"Gunshot, gunfire",machine gun,/m/02z32qm,#430')
    assert [c.index for c in resolved] == [427, 428, 429, 430]


def test_class_list_from_file_in_class_index_format(tmp_path, catalog):
    path = tmp_path / "gunshot.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerow([427, "/m/032s66", "Gunshot, gunfire"])
        writer.writerow([431, "/m/073cg4", "Cap gun"])
    assert [c.index for c in catalog.resolve_list(f"@{path}")] == [427, 431]


def test_unknown_names_fail_with_suggestions(catalog):
    with pytest.raises(labels.UnknownClassError) as info:
        catalog.resolve_list("Gunshots,Speach,Machine gun")
    message = str(info.value)
    assert "'Gunshots'" in message and "Gunshot, gunfire" in message
    assert "'Speach'" in message and "'Speech'" in message


def test_include_children_uses_ontology(catalog):
    plain = catalog.resolve_list("Tools")
    expanded = catalog.resolve_list("Tools", include_children=True)
    assert [c.name for c in plain] == ["Tools"]
    assert {"Hammer", "Jackhammer", "Sawing", "Power tool", "Drill"} <= {c.name for c in expanded}
    no_hammer = catalog.resolve_list("Tools", include_children=True, exclude=[419])
    assert "Hammer" not in {c.name for c in no_hammer}


def test_default_tags_are_disjoint_and_expand_without_stealing(catalog):
    gun, neg = labels.default_tags(catalog)
    assert gun.indices == {426, 427, 428, 429, 430, 431}
    assert gun.indices.isdisjoint(neg.indices)
    assert len(neg.indices) == len(labels.DEFAULT_NEGATIVE)
    gun_x, neg_x = labels.default_tags(catalog, include_children=True)
    # Explosion's children include Fireworks and "Burst, pop": they stay negatives.
    assert catalog.by_name["fireworks"].index in neg_x.indices
    assert catalog.by_name["fireworks"].index not in gun_x.indices
    assert catalog.by_name["eruption"].index in gun_x.indices


def test_class_in_two_tags_is_an_error(catalog):
    with pytest.raises(ValueError, match="both"):
        labels.build_tags(catalog, [("a", "Speech"), ("b", "Speech,Music")])


def test_tagging_policies():
    tags = (labels.TagSpec("gun", frozenset({1, 2})), labels.TagSpec("neg", frozenset({3, 4})))
    assert labels.tag_labels([1, 9], tags).tag == "gun"
    assert labels.tag_labels([3], tags).tag == "neg"
    assert labels.tag_labels([9], tags) == labels.TagResult("other", (), ())
    both = labels.tag_labels([4, 2, 9], tags, "priority")
    assert both == labels.TagResult("gun", ("gun", "neg"), (4,))
    dropped = labels.tag_labels([4, 2, 9], tags, "drop")
    assert dropped.tag == "other" and dropped.dropped and dropped.co_labels == (2, 4)
    with pytest.raises(ValueError, match="policy"):
        labels.tag_labels([1, 3], tags, "vote")
