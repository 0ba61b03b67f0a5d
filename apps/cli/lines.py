"""Commands over the site's lines: the time zone each stands in, which sets its factory day."""

from __future__ import annotations

import click
from rich.table import Table

from apps.cli.common import open_catalog, out
from catalog.factory_day import DEFAULT_TIME_ZONE, capture_spans, set_time_zone, time_zones


@click.group()
def lines() -> None:
    """The lines of the site and their time zones."""


@lines.command("time-zone")
@click.argument("line")
@click.argument("zone")
@click.option("--reason", default="", help="why (recorded with the event)")
@click.option("--actor", help="who sets it (recorded in the event's metadata)")
def lines_time_zone(line: str, zone: str, reason: str, actor: str | None) -> None:
    """Set the IANA time ZONE (e.g. Europe/Berlin) that LINE stands in: its captures, decisions and
    corrections then belong to the days of its local time, and times are shown in it, earlier ones too."""
    with open_catalog() as cat:
        changed = set_time_zone(cat, line, zone, actor=actor or "cli", reason=reason)
    out.print(f"line {line} {'now stands' if changed else 'already stands'} in {zone}")


@lines.command("list")
def lines_list() -> None:
    """Every line with images or a time zone, and its zone."""
    with open_catalog() as cat:
        zones, seen = time_zones(cat), capture_spans(cat)
    table = Table("line", "time zone")
    for line in sorted(set(seen) | set(zones)):
        table.add_row(line, zones.get(line, f"{DEFAULT_TIME_ZONE} (not set)"))
    out.print(table)
