"""The sensor `images_arrived` evaluated as Dagster's daemon would, against the real PostgreSQL of the tiny
factory: one request per factory day whose images arrived, a cursor that advances a bounded page at a time,
and nothing requested twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pytest

import assets.sensors
import catalog
from assets.resources import CatalogResource
from assets.sensors import DAY_REPORTS, images_arrived
from catalog.events import ImageIngested
from catalog.factory_day import set_time_zone
from catalog.store import NewEvent

DAYS = ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]  # the tiny factory's, all lines in UTC


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as persistent:  # a sensor context wants a persistent instance
        yield persistent


def tick(cat: catalog.Catalog, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    resources = {"catalog": CatalogResource(home=str(cat.settings.home), database_url=cat.settings.database_url)}
    return images_arrived(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))


def test_each_day_whose_images_arrived_gets_its_reports_once(factory_cat: catalog.Catalog, instance):
    cat = factory_cat
    first = tick(cat, instance, None)
    assert [r.partition_key for r in first.run_requests] == DAYS
    assert all(r.asset_selection == DAY_REPORTS for r in first.run_requests)
    assert len({r.run_key for r in first.run_requests}) == len(DAYS)
    assert first.cursor == str(cat.head())

    again = tick(cat, instance, first.cursor)  # no new events: nothing to do, the cursor stays
    assert again.run_requests == [] and again.cursor == first.cursor and again.skip_reason

    # New images: line1 now stands in Tokyo, where 20:00 UTC on the 5th is already the 6th; line2 is in UTC.
    set_time_zone(cat, "line1", "Asia/Tokyo", actor="test")
    moment = datetime(2026, 3, 5, 20, tzinfo=UTC)
    appended = cat.append([NewEvent(ImageIngested(
        sha256=f"{n:064x}", part_id=f"late-{n}", line=line, station="st1", camera="cam1", captured_at=moment,
        width=64, height=64, channels=1, bit_depth=8, byte_size=100, blob_uri=f"blob:{n:064x}",
        source_path=f"late/{n}.png"), occurred_at=moment) for n, line in enumerate(("line1", "line2", "line1"))])
    later = tick(cat, instance, again.cursor)
    positions = appended.positions
    assert {r.partition_key: r.run_key for r in later.run_requests} == {
        "2026-03-05": f"2026-03-05@{positions[1]}", "2026-03-06": f"2026-03-06@{positions[2]}"}
    assert later.cursor == str(cat.head())


def test_a_tick_reads_a_bounded_page_of_the_log(factory_cat: catalog.Catalog, instance,
                                                monkeypatch: pytest.MonkeyPatch):
    cat = factory_cat
    monkeypatch.setattr(assets.sensors, "PAGE", 40)
    cursor, requested, ticks = None, set(), 0
    while True:
        result = tick(cat, instance, cursor)
        assert int(result.cursor) - int(cursor or 0) <= 40
        requested |= {r.partition_key for r in result.run_requests}
        if result.cursor == cursor:
            break
        cursor, ticks = result.cursor, ticks + 1
    assert requested == set(DAYS) and cursor == str(cat.head()) and ticks >= cat.head() // 40


def test_the_code_location_holds_the_sensor_and_its_job():
    from assets.definitions import defs

    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def("images_arrived")
    assert sensor.job_name == "day_reports"
    assert set(repository.get_job("day_reports").asset_layer.executable_asset_keys) == set(DAY_REPORTS)
