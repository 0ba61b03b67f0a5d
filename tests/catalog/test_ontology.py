"""The ontology chain: versions must follow from their changes; old labels read as today's classes."""

from __future__ import annotations

import pytest

from catalog.events import OntologyChange
from catalog.ontology import Ontology, OntologyError, OntologyVersion


def change(op: str, sources: list[str], targets: list[str]) -> OntologyChange:
    return OntologyChange(op=op, sources=sources, targets=targets)


V1 = OntologyVersion(1, ("ok", "scratch", "spot", "crack"))
V2 = OntologyVersion(2, ("ok", "surface", "crack", "dent"),
                     (change("merge", ["scratch", "spot"], ["surface"]), change("create", [], ["dent"])))
V3 = OntologyVersion(3, ("ok", "surface", "hairline", "fracture", "dent"),
                     (change("split", ["crack"], ["hairline", "fracture"]),))
V4 = OntologyVersion(4, ("ok", "blemish", "hairline", "fracture", "dent"), (change("rename", ["surface"], ["blemish"]),))


def test_labels_read_through_the_chain():
    onto = Ontology([V1, V2, V3, V4])
    assert onto.resolve("scratch", 1) == "blemish"  # merged, then renamed
    assert onto.resolve("surface", 2) == "blemish"
    assert onto.resolve("crack", 1) is None  # split: a human must choose
    assert onto.resolve("hairline", 3) == "hairline"
    assert onto.resolve("ok", 1) == "ok"
    assert sorted(onto.recorded_names("blemish")) == [
        ("blemish", 4), ("scratch", 1), ("spot", 1), ("surface", 2), ("surface", 3)]
    with pytest.raises(OntologyError, match="'scratch' is not a class of ontology version 4"):
        onto.resolve("scratch", 4)
    with pytest.raises(OntologyError, match="unknown class 'crack'; known classes: ok, blemish"):
        onto.recorded_names("crack")


def test_next_version_must_follow_from_its_changes():
    onto = Ontology([V1])
    assert onto.next_version(V2.classes, V2.changes).version == 2
    with pytest.raises(OntologyError, match="needs a create, rename, merge or split"):
        onto.next_version(("ok", "scratch", "spot"), ())  # crack vanished without a change
    with pytest.raises(OntologyError, match="merge: nope not in the classes"):
        onto.next_version(("ok", "x", "crack"), (change("merge", ["scratch", "nope"], ["x"]),))
    with pytest.raises(OntologyError, match="split takes one source class and two or more targets"):
        onto.next_version(("ok", "scratch", "spot", "c2"), (change("split", ["crack"], ["c2"]),))
    with pytest.raises(OntologyError, match="create: spot already exist"):
        onto.next_version(V1.classes, (change("create", [], ["spot"]),))


def test_first_version_has_no_changes_and_no_repeats():
    assert Ontology([]).next_version(("ok", "crack"), ()).version == 1
    with pytest.raises(OntologyError, match="classes listed twice"):
        Ontology([]).next_version(("ok", "ok"), ())
    with pytest.raises(OntologyError, match="no ontology has been published yet"):
        Ontology([]).current  # noqa: B018
