"""The factory's day. Times are stored in UTC; each line stands in a time zone (`LineTimeZoneSet`, UTC until
one is set), and a capture, a part decision or a correction belongs to the calendar day of its line's local
time, so that a night shift in CET is one day, not two. This module is the one place that rule is written:
in Python, and as the SQL every per-day question uses (PostgreSQL's ``AT TIME ZONE`` reads the same IANA
zones, which a test holds it to across a DST switch)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from catalog.errors import EventValidationError
from catalog.events import ImageIngested, LineTimeZoneSet, describe_validation_error

if TYPE_CHECKING:
    from catalog import Catalog

DEFAULT_TIME_ZONE = "UTC"
# No zone is further than 14 hours from UTC, so the instants of a factory day lie within its UTC day widened
# by as much on each side: a query walks the captured_at index over that window, then checks the local day.
WIDEST_OFFSET = timedelta(hours=14)


def factory_day(moment: datetime, time_zone: str = DEFAULT_TIME_ZONE) -> date:
    """The day ``moment`` belongs to on a line in ``time_zone``."""
    return local_time(moment, time_zone).date()


def local_time(moment: datetime, time_zone: str = DEFAULT_TIME_ZONE) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no UTC offset: stored times are UTC instants")
    return moment.astimezone(ZoneInfo(time_zone))


def shown(moment: datetime, time_zone: str = DEFAULT_TIME_ZONE) -> str:
    """``moment`` as people on the line read it: local time with its offset, 2026-03-29 03:10:00+02:00."""
    return local_time(moment, time_zone).isoformat(sep=" ", timespec="seconds")


def _first_instant(day: date) -> datetime:
    """The earliest instant of ``day`` in any zone."""
    return datetime.combine(day, time(), UTC) - WIDEST_OFFSET


def _after_last_instant(day: date) -> datetime:
    """An instant after every instant of ``day`` in any zone."""
    return datetime.combine(day + timedelta(days=1), time(), UTC) + WIDEST_OFFSET


# -- the same rule in SQL ---------------------------------------------------------------------------------------


def zone_sql(line: str) -> str:
    """SQL: the time zone of the line named by the SQL expression ``line``, a qualified column (``i.line``)
    or a parameter: a bare ``line`` would name the zone table's own column inside the subquery."""
    if "." not in line and not line.startswith("%("):
        raise ValueError(f"name the line's column with its table ({line!r} is ambiguous in the subquery)")
    return zone_or_default(f"(SELECT z.time_zone FROM projections.line_time_zones z WHERE z.line = {line})")


def zone_or_default(zone: str) -> str:
    """SQL: the zone ``zone`` names, or `DEFAULT_TIME_ZONE` where it is null (a line whose zone is not set)."""
    return f"coalesce({zone}, '{DEFAULT_TIME_ZONE}')"


def day_sql(moment: str, line: str) -> str:
    """SQL: the factory day of the timestamptz expression ``moment`` on the line ``line``."""
    return local_day_sql(moment, zone_sql(line))


def local_day_sql(moment: str, zone: str) -> str:
    """SQL: the calendar day of ``moment`` in the time zone the SQL expression ``zone`` names."""
    return f"({moment} AT TIME ZONE {zone})::date"


def zones_as_of(position: str) -> str:
    """SQL: a relation (line, time_zone) of each line's zone as the log said at ``position`` (an SQL
    expression): what a dataset version reads, since it must rebuild to the same bytes whatever is set later,
    and whatever of the log is archived (the zones' history is a read model). Joined rather than looked up row
    by row: a version reads a million images."""
    return ("(SELECT z.line, (SELECT h.time_zone FROM projections.line_time_zone_history h"
            f" WHERE h.line = z.line AND h.position <= {position} ORDER BY h.position DESC LIMIT 1) AS time_zone"
            " FROM projections.line_time_zones z)")


def hour_sql(moment: str, line: str) -> str:
    """SQL: the start of the line's local hour holding ``moment``, as an instant."""
    return f"date_trunc('hour', {moment}, {zone_sql(line)})"


def on_days(first: date | None, last: date | None, moment: str, line: str, *,
            name: str = "days") -> tuple[str, dict[str, Any]]:
    """A SQL condition and its parameters: ``moment`` falls on a factory day of the line ``line`` from
    ``first`` to ``last`` (None: open on that side). The condition bounds ``moment`` itself too, so that an
    index on it serves; ``name`` keeps the parameters of two such conditions in one query apart."""
    if first is not None and last is not None and last < first:
        raise ValueError(f"empty window: {last.isoformat()} is before {first.isoformat()}")
    conditions, params = [], {}
    if first is not None:
        conditions += [f"{moment} >= %({name}_start)s", f"{day_sql(moment, line)} >= %({name}_first)s"]
        params |= {f"{name}_start": _first_instant(first), f"{name}_first": first}
    if last is not None:
        conditions += [f"{moment} < %({name}_end)s", f"{day_sql(moment, line)} <= %({name}_last)s"]
        params |= {f"{name}_end": _after_last_instant(last), f"{name}_last": last}
    return " AND ".join(conditions) or "true", params


# -- the lines' zones and days ---------------------------------------------------------------------------------


def time_zones(cat: Catalog) -> dict[str, str]:
    """Every line whose time zone was set, and the zone; other lines are in `DEFAULT_TIME_ZONE`."""
    with cat.read() as conn:
        return dict(conn.exec_driver_sql("SELECT line, time_zone FROM projections.line_time_zones").fetchall())


def capture_spans(cat: Catalog) -> dict[str, tuple[datetime, datetime]]:
    """Each line with images, and its first and last capture: a few index probes per line (a skip scan over
    the (line, captured_at) index), not a pass over every image."""
    sql = """
        WITH RECURSIVE lines AS (
            SELECT min(line) AS line FROM projections.images
            UNION ALL
            SELECT (SELECT min(i.line) FROM projections.images i WHERE i.line > l.line) FROM lines l
            WHERE l.line IS NOT NULL)
        SELECT line, (SELECT min(captured_at) FROM projections.images i WHERE i.line = lines.line),
               (SELECT max(captured_at) FROM projections.images i WHERE i.line = lines.line)
        FROM lines WHERE line IS NOT NULL"""
    with cat.read() as conn:
        return {line: (first, last) for line, first, last in conn.exec_driver_sql(sql)}


def capture_days(cat: Catalog) -> tuple[date, date] | None:
    """The first and last factory day with images captured on any line, or None for an empty catalog."""
    spans, zones = capture_spans(cat), time_zones(cat)
    if not spans:
        return None
    days = [factory_day(moment, zones.get(line, DEFAULT_TIME_ZONE)) for line, span in spans.items() for moment in span]
    return min(days), max(days)


def ingested_days(cat: Catalog, after: int, upto: int) -> dict[date, int]:
    """The factory days of the images ingested at log positions after ``after`` up to ``upto``, each with the
    position of its last ImageIngested there: the days whose per-day reports (drift, breakdowns) those
    arrivals changed."""
    zones = time_zones(cat)
    days: dict[date, int] = {}
    for event in cat.store.read(after, upto=upto, limit=None, types=[ImageIngested.__name__]):
        image = event.data
        days[factory_day(image.captured_at, zones.get(image.line, DEFAULT_TIME_ZONE))] = event.position
    return days


def set_time_zone(cat: Catalog, line: str, time_zone: str, *, actor: str, reason: str = "") -> bool:
    """Record that ``line`` stands in ``time_zone``; False (nothing recorded) when it already does. Raises
    `EventValidationError` for a name that is no IANA zone."""
    try:
        data = LineTimeZoneSet(line=line, time_zone=time_zone, reason=reason)
    except ValidationError as exc:
        raise EventValidationError(f"LineTimeZoneSet: {describe_validation_error(exc)}") from None
    if time_zones(cat).get(data.line, DEFAULT_TIME_ZONE) == data.time_zone:
        return False
    cat.record(data, occurred_at=datetime.now(UTC), actor=actor, source="settings")
    return True
