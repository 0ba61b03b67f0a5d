"""Commands over the Parquet mirror and DuckDB."""

from __future__ import annotations

import click
from rich.table import Table

import catalog
from apps.cli.common import open_catalog, out, progress_bar
from catalog.settings import Settings


@click.group()
def lake() -> None:
    """The Parquet mirror of the log, and DuckDB over it."""


@lake.command("sync")
@click.option("--chunk", default=100_000, show_default=True, help="events per position range (one file per type and day)")
def lake_sync(chunk: int) -> None:
    """Mirror new events into lake/events (exactly once per position range, safe to kill and re-run)."""
    with open_catalog() as cat, progress_bar("lake sync") as update:
        report = cat.sync_lake(chunk=chunk, progress=update)
    rate = report.events / report.seconds if report.seconds else 0
    out.print(f"lake at position {report.end}: {report.events} events in {report.files} files ({rate:,.0f} events/s)")


@lake.command("sql")
@click.argument("query")
def lake_sql(query: str) -> None:
    """Run a DuckDB query over the lake (the view `events` holds every mirrored event)."""
    settings = Settings.from_env()
    con = catalog.Lake(settings.lake_root).duckdb()
    result = con.execute(query)
    table = Table(*[d[0] for d in result.description])
    for row in result.fetchall():
        table.add_row(*[str(v) for v in row])
    out.print(table)
