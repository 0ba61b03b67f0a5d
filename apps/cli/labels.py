"""Commands over labels: as of a past position or time."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Table

from apps.cli.common import open_catalog, out


@click.group()
def labels() -> None:
    """Labels as the catalog knows them, now or as of the past."""


@labels.command("as-of")
@click.option("--position", type=int, help="the catalog as of this event position")
@click.option("--at", "moment", help="the catalog as of this time (ISO 8601 with offset)")
@click.option("--json", "as_json", is_flag=True)
def labels_as_of(position: int | None, moment: str | None, as_json: bool) -> None:
    """Every image's current label as of a position or a time."""
    at = None
    if moment is not None:
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None:
            raise click.ClickException(f"--at {moment!r} has no UTC offset; add one (e.g. 2026-03-02T08:00+01:00)")
    with open_catalog() as cat:
        rows = cat.labels_as_of(position=position, at=at)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table("sha256", "label", "annotator", "source", "position")
    for row in rows[:50]:
        table.add_row(row["sha256"][:16], row["label"], row["annotator"], row["source"], str(row["position"]))
    out.print(table)
    out.print(f"{len(rows)} labelled images" + (" (first 50 shown)" if len(rows) > 50 else ""))
