"""Projections: what they hold after real events, rebuild equals live, as-of queries, concurrent catch-up."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

import catalog
from catalog import events as ev
from catalog.database import libpq_dsn, make_engine, upgrade
from catalog.projections import ProjectionRunner
from catalog.store import EventStore, NewEvent
from catalog.synthetic import FactoryShape, ontology_event, simulated_day
from tests.conftest import database_at_revision

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SHA = "c" * 64
SHAPE = FactoryShape(lines=2, stations=1, cameras=2, parts_per_line=30)


def _ingested(sha: str = SHA, part: str = "P-1", at: datetime = T0) -> ev.ImageIngested:
    return ev.ImageIngested(
        sha256=sha, part_id=part, line="line-a", station="st-1", camera="cam-1", captured_at=at, width=64,
        height=64, channels=1, bit_depth=8, byte_size=99, blob_uri=f"blobs/{sha}", source_path=f"{part}.png",
    )


def _rows(cat: catalog.Catalog, query: str, *params) -> list[tuple]:
    with cat.db.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(query, tuple(params)).fetchall()]


def test_image_part_label_and_exclusion_folds(cat: catalog.Catalog):
    cat.append([
        NewEvent(_ingested(), T0),
        NewEvent(_ingested(part="P-2", at=T0 + timedelta(minutes=5)), T0 + timedelta(minutes=5)),  # same bytes again
        NewEvent(ev.LabelRecorded(sha256=SHA, label_id="L1", label="spot", annotator="ana", ontology_version=1,
                                  regions=[ev.Region(shape="ellipse", cx=3, cy=4, rx=2, ry=1, angle=0)]), T0),
        NewEvent(ev.CorrectionRecorded(sha256=SHA, correction_id="C1", target="label", label_id="L1",
                                       old_label="spot", new_label="crack", corrected_by="dana", reason="rim",
                                       ontology_version=1), T0 + timedelta(days=1)),
        NewEvent(ev.ImageExcluded(sha256=SHA, reason="wrongly collected window"), T0 + timedelta(days=2)),
    ])
    assert _rows(cat, "SELECT sightings, excluded, exclusion_reason, part_id FROM projections.images") == [
        (2, True, "wrongly collected window", "P-1")]
    assert sorted(_rows(cat, "SELECT part_id, image_count FROM projections.parts")) == [("P-1", 1), ("P-2", 1)]
    label, annotator, source, regions = _rows(
        cat, "SELECT label, annotator, source, regions FROM projections.current_labels")[0]
    assert (label, annotator, source) == ("crack", "dana", "correction")
    assert regions[0]["shape"] == "ellipse"  # a correction changes the class, not the region
    assert _rows(cat, "SELECT old_label, new_label FROM projections.corrections") == [("spot", "crack")]
    cat.record(ev.ImageIncluded(sha256=SHA, reason="window was fine after all"), occurred_at=T0, actor="curator")
    assert _rows(cat, "SELECT excluded FROM projections.images") == [(False,)]


def test_latest_prediction_keeps_the_newest_per_engine(cat: catalog.Catalog):
    def predicted(cls: str, engine: str, at: datetime) -> NewEvent:
        return NewEvent(ev.PredictionRecorded(sha256=SHA, engine_id=engine, scores={cls: 0.9}, predicted_class=cls), at)

    cat.append([predicted("ok", "e1", T0 + timedelta(hours=1)), predicted("spot", "e2", T0)])
    cat.append([predicted("crack", "e1", T0)])  # a replay of older history arrives late: not "latest"
    assert sorted(_rows(cat, "SELECT engine_id, predicted_class FROM projections.latest_predictions")) == [
        ("e1", "ok"), ("e2", "spot")]


@pytest.fixture
def busy(cat: catalog.Catalog) -> catalog.Catalog:
    cat.append([ontology_event(), *simulated_day(date(2026, 3, 2), shape=SHAPE),
                *simulated_day(date(2026, 3, 3), shape=SHAPE)], catch_up=False)
    cat.projections.catch_up(page_size=97)  # many small pages: folds must carry state across pages
    return cat


def test_rebuild_check_equals_live(busy: catalog.Catalog):
    report = busy.rebuild_projections(check_only=True)
    assert report.equal and report.position == busy.head()
    counts = {t.table: t.live_rows for t in report.tables}
    assert counts["images"] == 2 * 2 * 30 * 2 and counts["part_dispositions"] == 2 * 30 * 2
    assert counts["corrections"] > 0 and counts["label_history"] == counts["images"] + counts["corrections"]


def test_rebuild_check_finds_a_tampered_row_and_rebuild_repairs_it(busy: catalog.Catalog):
    with busy.db.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE projections.current_labels SET label = 'ok' WHERE sha256 = "
            "(SELECT sha256 FROM projections.current_labels WHERE label <> 'ok' LIMIT 1)")
        conn.exec_driver_sql("DELETE FROM projections.parts WHERE part_id = (SELECT min(part_id) FROM projections.parts)")
    report = busy.rebuild_projections(check_only=True)
    bad = {t.table: t.differing_rows for t in report.tables if not t.equal}
    assert bad == {"current_labels": 2, "parts": 1}
    assert not busy.rebuild_projections().equal  # the swap happens after the comparison
    assert busy.rebuild_projections(check_only=True).equal


def test_a_rebuild_moves_its_tables_in_and_they_stay_live_read_models(busy: catalog.Catalog, database):
    before = {t.table: t.live_rows for t in busy.rebuild_projections().tables}
    with busy.db.connect() as conn:  # the replaced rows are gone from the scratch schema
        assert conn.exec_driver_sql("SELECT count(*) FROM projections_scratch.images").scalar() == 0
    busy.append([NewEvent(_ingested(), T0)])  # the swapped-in tables are caught up like any live ones
    report = busy.rebuild_projections(check_only=True)
    assert report.equal and {t.table: t.live_rows for t in report.tables} == before | {
        "images": before["images"] + 1, "image_sightings": before["image_sightings"] + 1, "parts": before["parts"] + 1}
    with psycopg.connect(database.dsn("visionledger_auditor")) as conn:
        assert conn.execute("SELECT count(*) FROM projections.images").fetchone()[0] == before["images"] + 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM projections.images")


def test_only_read_model_tables_can_be_swapped(cat: catalog.Catalog):
    with pytest.raises(Exception, match="no read model table checkpoints"), cat.db.begin() as conn:
        conn.exec_driver_sql("SELECT catalog.swap_read_models(ARRAY['checkpoints'])")


def test_labels_as_of_position_and_time(cat: catalog.Catalog):
    cat.append([NewEvent(_ingested(), T0)])
    cat.record(ev.LabelRecorded(sha256=SHA, label_id="L1", label="spot", annotator="ana", ontology_version=1),
               occurred_at=T0)
    labelled = cat.head()
    moment = cat.store.read()[-1].recorded_at
    cat.record(ev.CorrectionRecorded(sha256=SHA, correction_id="C1", target="label", label_id="L1", old_label="spot",
                                     new_label="crack", corrected_by="dana", ontology_version=1), occurred_at=T0)
    assert [r["label"] for r in cat.labels_as_of(position=labelled - 1)] == []
    assert [r["label"] for r in cat.labels_as_of(position=labelled)] == ["spot"]
    assert [r["label"] for r in cat.labels_as_of(at=moment)] == ["spot"]
    assert [(r["label"], r["annotator"]) for r in cat.labels_as_of(position=cat.head())] == [("crack", "dana")]
    with pytest.raises(catalog.CatalogError, match="exactly one of"):
        cat.labels_as_of()


def test_concurrent_catch_up_applies_each_event_once(cat: catalog.Catalog):
    cat.append([NewEvent(_ingested(part=f"P-{i % 3}", at=T0 + timedelta(seconds=i)),
                         T0 + timedelta(seconds=i)) for i in range(300)], catch_up=False)
    runners = [ProjectionRunner(cat.db) for _ in range(3)]
    threads = [threading.Thread(target=r.catch_up, kwargs={"page_size": 7}) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _rows(cat, "SELECT sightings FROM projections.images") == [(300,)]
    assert sum(n for (n,) in _rows(cat, "SELECT image_count FROM projections.parts")) == 300
    assert set(cat.projections.checkpoints().values()) == {300}


def test_readers_see_projections_but_cannot_change_them(busy: catalog.Catalog, database):
    with psycopg.connect(database.dsn("visionledger_auditor")) as conn:
        assert conn.execute("SELECT count(*) FROM projections.images").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM projections.images")


def test_migration_0022_folds_the_label_history_again_with_each_labels_mask(pg_server, tmp_path):
    label = ev.LabelRecorded(sha256=SHA, label_id="L1", label="spot", annotator="ana", ontology_version=1,
                             regions=[ev.Region(shape="box", x0=1, y0=2, x1=9, y1=9)], mask_uri=f"masks/{SHA}.png")
    correction = ev.CorrectionRecorded(sha256=SHA, correction_id="C1", target="label", label_id="L1",
                                       old_label="spot", new_label="crack", corrected_by="dana", ontology_version=1)
    with database_at_revision(pg_server, tmp_path, "0021") as settings:
        engine = make_engine(settings.database_url)
        EventStore(engine).append([NewEvent(_ingested(), T0), NewEvent(label, T0), NewEvent(correction, T0)])
        engine.dispose()
        owner = libpq_dsn(settings.admin_database_url)
        with psycopg.connect(owner) as conn:  # the history as 0021 folded it: no masks
            conn.execute("INSERT INTO projections.label_history (position, sha256, label, label_id, annotator,"
                         " ontology_version, source, labeled_at) VALUES (2, %s, 'spot', 'L1', 'ana', 1, 'label', %s),"
                         " (3, %s, 'crack', 'L1', 'dana', 1, 'correction', %s)", [SHA, T0, SHA, T0])
            conn.execute("INSERT INTO projections.checkpoints VALUES ('label_history', 3)")
        upgrade(settings.admin_database_url)
        with psycopg.connect(owner) as conn:
            assert conn.execute("SELECT count(*) FROM projections.label_history").fetchone() == (0,)
            assert conn.execute("SELECT position FROM projections.checkpoints WHERE name = 'label_history'"
                                ).fetchone() == (0,)  # readers wait for it to be folded again
        with catalog.open(settings) as migrated:
            migrated.catch_up()
            assert _rows(migrated, "SELECT position, source, mask_uri, regions FROM projections.label_history"
                                   " ORDER BY position") == [
                (2, "label", f"masks/{SHA}.png", [label.regions[0].model_dump()]),
                (3, "correction", None, None)]
