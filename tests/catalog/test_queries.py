"""Curator queries, as-of queries, label filters through ontology versions, curation and part traces."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

import catalog
from catalog import events as ev
from catalog.curation import set_excluded
from catalog.errors import CatalogError
from catalog.queries import ImageFilter, count_images, query_images, trace_part
from catalog.store import NewEvent

DAY = datetime(2026, 3, 2, tzinfo=UTC)


def sha(n: int) -> str:
    return f"{n:064x}"


def ingested(n: int, *, line: str, day: int, part: str | None = None) -> NewEvent:
    at = DAY + timedelta(days=day, hours=8, minutes=n)
    return NewEvent(ev.ImageIngested(
        sha256=sha(n), part_id=part or f"P-{n}", line=line, station="st-1", camera=f"cam-{n % 2}", captured_at=at,
        width=8, height=8, channels=1, bit_depth=8, byte_size=10, blob_uri=f"blob:{sha(n)}", source_path=f"{n}.png",
    ), at)


def labelled(n: int, label: str, version: int = 1) -> NewEvent:
    return NewEvent(ev.LabelRecorded(sha256=sha(n), label_id=f"L{n}-{version}", label=label, annotator="ana",
                                     ontology_version=version), DAY)


def ontology(version: int, classes: list[str], *changes: ev.OntologyChange) -> NewEvent:
    return NewEvent(ev.OntologyPublished(version=version, classes=classes, changes=list(changes)), DAY)


@pytest.fixture
def factory(cat: catalog.Catalog) -> catalog.Catalog:
    """Line A over ten days, line B over two; every third image a crack, every fifth a scratch."""
    events = [ontology(1, ["ok", "scratch", "spot", "crack"])]
    for n in range(1, 31):
        events.append(ingested(n, line="A", day=n % 10))
        events.append(labelled(n, "crack" if n % 3 == 0 else "scratch" if n % 5 == 0 else "ok"))
    events += [ingested(n, line="B", day=n % 2) for n in range(31, 35)]
    cat.append(events)
    return cat


def shas(rows) -> list[str]:
    return sorted(r["sha256"] for r in rows)


def test_line_window_and_label_filter(factory: catalog.Catalog):
    where = ImageFilter(lines=("A",), captured_from=DAY + timedelta(days=2), captured_to=DAY + timedelta(days=9),
                        labels=("crack",))
    rows = query_images(factory, where, limit=None)
    assert shas(rows) == shas([{"sha256": sha(n)} for n in range(1, 31) if n % 3 == 0 and 2 <= n % 10 < 9])
    assert {r["label"] for r in rows} == {"crack"} and count_images(factory, where) == len(rows)
    assert [r["captured_at"] for r in rows] == sorted(r["captured_at"] for r in rows)


def test_paging_unlabelled_and_camera(factory: catalog.Catalog):
    everything = query_images(factory, ImageFilter(), limit=None)
    pages = [query_images(factory, ImageFilter(), limit=10, offset=o) for o in (0, 10, 20, 30)]
    assert [r["sha256"] for page in pages for r in page] == [r["sha256"] for r in everything]
    assert shas(query_images(factory, ImageFilter(labels=("unlabelled",)), limit=None)) == [sha(n) for n in range(31, 35)]
    assert len(query_images(factory, ImageFilter(lines=("B",), cameras=("cam-1",)), limit=None)) == 2


def test_filters_are_values_not_sql(factory: catalog.Catalog):
    attack = "A' OR '1'='1"
    assert query_images(factory, ImageFilter(lines=(attack,), parts=("x'); DROP TABLE x; --",))) == []
    assert count_images(factory, ImageFilter()) == 34
    with pytest.raises(CatalogError, match=re.escape("unknown class \"Robert'); DROP\"")):
        query_images(factory, ImageFilter(labels=("Robert'); DROP",)))


def test_naive_or_empty_windows_are_refused():
    with pytest.raises(CatalogError, match="captured_from must be timezone-aware"):
        ImageFilter(captured_from=datetime(2026, 3, 2))
    with pytest.raises(CatalogError, match="empty window"):
        ImageFilter(captured_from=DAY, captured_to=DAY)


def test_control_characters_in_a_filter_or_a_traced_part_are_refused_before_any_sql(cat: catalog.Catalog):
    # psycopg refuses a NUL with an error that names the statement; no stored name can hold one anyway.
    with pytest.raises(CatalogError, match=r"^the part filter contains the control character U\+0000 at position 2$"):
        ImageFilter(parts=("P-\x00",))
    with pytest.raises(CatalogError, match=r"^the camera filter is 201 characters long"):
        ImageFilter(cameras=("c" * 201,))
    with pytest.raises(CatalogError, match=r"^the part id contains the control character U\+001B at position 0$"):
        trace_part(cat, "\x1b[2J")
    with pytest.raises(CatalogError, match=r"^the reason contains the control character U\+0000 at position 4$"):
        set_excluded(cat, ImageFilter(), exclude=True, reason="lamp\x00 failed", actor="curator:ana")


def test_label_filter_reads_through_ontology_versions(factory: catalog.Catalog):
    factory.append([
        ontology(2, ["ok", "surface", "crack"], ev.OntologyChange(op="merge", sources=["scratch", "spot"], targets=["surface"])),
        labelled(1, "surface", version=2),
    ])
    surface = query_images(factory, ImageFilter(labels=("surface",)), limit=None)
    assert shas(surface) == sorted([sha(1)] + [sha(n) for n in range(1, 31) if n % 5 == 0 and n % 3])
    assert {r["label"] for r in surface} == {"surface"}
    assert {r["label_as_recorded"] for r in surface} == {"surface", "scratch"}
    with pytest.raises(CatalogError, match="unknown class 'scratch'"):
        query_images(factory, ImageFilter(labels=("scratch",)))


def test_as_of_sees_the_catalog_as_it_was(factory: catalog.Catalog):
    before = factory.head()
    factory.append([labelled(1, "crack", version=1), ingested(99, line="A", day=3)])
    set_excluded(factory, ImageFilter(parts=("P-3",)), exclude=True, reason="camera fogged", actor="cleo")
    now = {r["sha256"]: r for r in query_images(factory, ImageFilter(lines=("A",)), limit=None)}
    then = {r["sha256"]: r for r in query_images(factory, ImageFilter(lines=("A",)), as_of=before, limit=None)}
    assert sha(99) in now and sha(99) not in then
    assert (now[sha(1)]["label"], then[sha(1)]["label"]) == ("crack", "ok")
    assert (now[sha(3)]["excluded"], then[sha(3)]["excluded"]) == (True, False)
    assert now[sha(3)]["exclusion_reason"] == "camera fogged" and then[sha(3)]["exclusion_reason"] is None


def test_exclude_then_include_a_window(factory: catalog.Catalog):
    window = ImageFilter(lines=("A",), captured_from=DAY + timedelta(days=4), captured_to=DAY + timedelta(days=6))
    first = set_excluded(factory, window, exclude=True, reason="wrongly collected: lamp off", actor="cleo")
    assert first.changed == first.matched == 6
    assert set_excluded(factory, window, exclude=True, reason="again", actor="cleo").changed == 0
    excluded = query_images(factory, ImageFilter(excluded=True), limit=None)
    assert shas(excluded) == shas(query_images(factory, window, limit=None))
    events = factory.store.read(types=["ImageExcluded"], limit=None)
    assert events[0].metadata == {"actor": "cleo", "source": "curate"}
    assert events[0].data.selection["lines"] == ["A"]
    assert set_excluded(factory, window, exclude=False, reason="lamp was fine", actor="dan").changed == 6
    assert count_images(factory, ImageFilter(excluded=True)) == 0
    with pytest.raises(CatalogError, match="needs a reason"):
        set_excluded(factory, window, exclude=True, reason=" ", actor="cleo")


def test_trace_part_follows_every_sighting(factory: catalog.Catalog):
    factory.append([ingested(40, line="B", day=1, part="P-77"), ingested(41, line="B", day=1, part="P-77"),
                    NewEvent(ev.PartDispositioned(part_id="P-77", decision="reject", decided_by="e1", decider="engine",
                                                  rule="crack_any"), DAY)])
    factory.append([labelled(40, "crack")])
    trace = trace_part(factory, "P-77")
    assert [i["sha256"] for i in trace.images] == [sha(40), sha(41)]
    assert [e.type for e in trace.images[0]["events"]] == ["ImageIngested", "LabelRecorded"]
    assert [e.data.rule for e in trace.part_events] == ["crack_any"]
    with pytest.raises(CatalogError, match="no part 'nope'"):
        trace_part(factory, "nope")
