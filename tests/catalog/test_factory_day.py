"""The factory's day: each line's time zone decides which day a capture belongs to, across DST switches and
night shifts, in Python and in every per-day SQL question alike."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import catalog
from catalog import activity
from catalog.breakdowns import label_breakdown
from catalog.datasets import DatasetSpec
from catalog.datasets.build import build_dataset_version
from catalog.drift import images_of_day
from catalog.factory_day import factory_day, set_time_zone, shown, time_zones, zone_sql
from catalog.queries import ImageFilter, count_images
from ingestion.factory_delivery import deliver_factory
from ingestion.simulated_factory import simulate_factory
from ingestion.simulator.plan import FactoryClock
from tests.builders import cli_env, run_cli

SPEC = Path(__file__).resolve().parents[2] / "assets" / "dataset_specs" / "inspection_all.yaml"
BERLIN = "Europe/Berlin"  # CET, CEST from 2026-03-29 02:00 local (01:00 UTC)


def test_the_day_and_the_time_shown_follow_the_zone_across_the_dst_switch() -> None:
    before, after = datetime(2026, 3, 28, 23, 30, tzinfo=UTC), datetime(2026, 3, 29, 22, 30, tzinfo=UTC)
    assert factory_day(before) == date(2026, 3, 28)  # a line without a zone: UTC
    assert factory_day(before, BERLIN) == date(2026, 3, 29)  # 00:30 CET
    assert factory_day(after, BERLIN) == date(2026, 3, 30)  # 00:30 CEST
    assert shown(before, BERLIN) == "2026-03-29 00:30:00+01:00"
    assert shown(after, BERLIN) == "2026-03-30 00:30:00+02:00"
    with pytest.raises(ValueError, match="no UTC offset"):
        factory_day(datetime(2026, 3, 29, 12, 0))
    with pytest.raises(ValueError, match="ambiguous"):
        zone_sql("line")  # would compare the zone table's column with itself


def test_a_zone_must_be_a_real_iana_name(cat: catalog.Catalog) -> None:
    for bad in ("Mars/Olympus", "localtime", "../../etc/passwd", "Europe/Berlin\x00", ""):
        with pytest.raises(catalog.EventValidationError, match="time_zone"):
            set_time_zone(cat, "line1", bad, actor="test")
    assert time_zones(cat) == {} and cat.head() == 0  # nothing recorded
    assert set_time_zone(cat, "line1", BERLIN, actor="ana", reason="the plant is in Leipzig")
    assert not set_time_zone(cat, "line1", BERLIN, actor="ana")  # already so: no second event
    (event,) = cat.store.read(0, limit=None)
    assert (event.type, event.stream_id, event.metadata["actor"]) == ("LineTimeZoneSet", "line:line1", "ana")
    assert time_zones(cat) == {"line1": BERLIN}


@pytest.fixture(scope="module")
def night_shift_factory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four days of a plant in Berlin whose late shift runs to 06:00 the next morning, across the switch to
    summer time on 2026-03-29."""
    folder = tmp_path_factory.mktemp("night-shift") / "factory"
    simulate_factory(folder, days=4, seed=11, size="tiny", image_size=64, workers=1, start=date(2026, 3, 27),
                     clock=FactoryClock(time_zone=ZoneInfo(BERLIN), shift_start=time(14, 0)))
    return folder


def test_per_day_counts_are_those_of_the_local_timestamps_across_dst(cat: catalog.Catalog,
                                                                    night_shift_factory: Path) -> None:
    deliver_factory(cat, night_shift_factory, actor="test", workers=1)
    # Rows the simulator broke on purpose are quarantined, and a duplicate is the same image seen twice.
    with (night_shift_factory / "bad_files.csv").open() as f:
        broken = {r["path"] for r in csv.DictReader(f)}
    with (night_shift_factory / "manifest.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["path"] not in broken]
    # The delivery's own clock: each timestamp is written in local time, with its offset.
    local = Counter(datetime.fromisoformat(r["captured_at"]).date() for r in rows)
    utc = Counter(datetime.fromisoformat(r["captured_at"]).astimezone(UTC).date() for r in rows)
    assert {datetime.fromisoformat(r["captured_at"]).utcoffset() for r in rows} == {timedelta(hours=1),
                                                                                     timedelta(hours=2)}
    assert local != utc  # the night shift straddles two UTC days: the test can tell them apart
    assert sum(local.values()) == count_images(cat, ImageFilter())
    first, last = min(local | utc), max(local | utc)

    def per_day() -> Counter:
        return Counter({f.day: f.images for f in activity.daily_figures(cat, first, last) if f.images})

    assert per_day() == utc  # no zone set yet: UTC days
    for line in sorted({r["line"] for r in rows}):
        set_time_zone(cat, line, BERLIN, actor="test")
    assert per_day() == local
    assert activity.image_days(cat) == (min(local), max(local))
    for day, images in local.items():
        assert count_images(cat, ImageFilter(first_day=day, last_day=day)) == images  # curators' filter
        assert len(images_of_day(cat, day)) == images  # the drift report's day
        assert sum(label_breakdown(cat, day)["images"].to_pylist()) == images  # the breakdowns' day
    # Hours are the line's local hours: the late shift's first images are taken at 14:00 local time.
    hours = activity.day_timeline(cat, date(2026, 3, 29))
    assert min(h.hour.astimezone(ZoneInfo(BERLIN)).hour for h in hours if h.images) == 0  # after midnight
    assert {h.hour.astimezone(ZoneInfo(BERLIN)).hour for h in hours if h.images} >= {14}


def test_the_cli_sets_a_lines_zone_and_refuses_a_bad_one(cat: catalog.Catalog) -> None:
    env = cli_env(cat)
    bad = run_cli("lines", "time-zone", "line1", "Europe/Berlln", env=env, check=False)
    assert bad.returncode == 1 and "'Europe/Berlln' is not an IANA time zone" in bad.stderr
    assert "Traceback" not in bad.stderr and cat.head() == 0
    assert "now stands in Europe/Berlin" in run_cli("lines", "time-zone", "line1", "Europe/Berlin", env=env).stdout
    assert "already stands" in run_cli("lines", "time-zone", "line1", "Europe/Berlin", env=env).stdout
    listed = run_cli("lines", "list", env=env).stdout
    assert "line1" in listed and "Europe/Berlin" in listed


def test_a_dataset_version_counts_factory_days_as_the_log_said_at_its_position(cat: catalog.Catalog,
                                                                              night_shift_factory: Path) -> None:
    deliver_factory(cat, night_shift_factory, actor="test", workers=1)
    for line in ("line1", "line2"):
        set_time_zone(cat, line, BERLIN, actor="test")
    spec = DatasetSpec.from_yaml(SPEC)
    position = cat.head()
    first = build_dataset_version(cat.db, spec, position=position).manifest
    local = [factory_day(t, BERLIN) for t in first["captured_at"].to_pylist()]
    assert first["day"].to_pylist() == local
    assert local != [t.astimezone(UTC).date() for t in first["captured_at"].to_pylist()]  # the night shift
    # A zone set later changes today's days, not a version's: rebuilt at its position it is the same bytes.
    set_time_zone(cat, "line1", "America/Chicago", actor="test")
    assert build_dataset_version(cat.db, spec, position=position).manifest.equals(first)
