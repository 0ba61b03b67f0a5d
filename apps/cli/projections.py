"""Commands over the read models: status, catch-up, rebuild."""

from __future__ import annotations

import click
from rich.table import Table

from apps.cli.common import console, open_catalog, out, progress_bar


@click.group()
def projections() -> None:
    """Read models derived from the log."""


@projections.command("catch-up")
@click.option("--connections", default=2, show_default=True,
              help="fold the read models in this many groups at once, each on its own connection (and server core)")
def projections_catch_up(connections: int) -> None:
    """Apply every pending event to the projections."""
    with open_catalog() as cat, progress_bar("projections") as update:
        reached = cat.projections.catch_up(progress=update, connections=connections)
    console.print(f"projections at position {reached}")


@projections.command("status")
def projections_status() -> None:
    """Each projection's checkpoint against the head of the log."""
    with open_catalog() as cat:
        head = cat.head()
        table = Table("projection", "checkpoint", "behind")
        for name, position in cat.projections.checkpoints().items():
            table.add_row(name, str(position), str(head - position))
        out.print(table)


@projections.command("rebuild")
@click.option("--check", is_flag=True, help="rebuild aside and prove it equals the live tables; change nothing")
def projections_rebuild(check: bool) -> None:
    """Replay the whole log into fresh tables; replace the live ones (or, with --check, compare with them)."""
    with open_catalog() as cat, progress_bar("replaying the log") as update:
        report = cat.rebuild_projections(check_only=check, progress=update)
    table = Table("table", "live rows", "rebuilt rows", "differing rows")
    for t in report.tables:
        table.add_row(t.table, str(t.live_rows), str(t.rebuilt_rows), str(t.differing_rows),
                      style=None if t.equal else "red")
    out.print(table)
    rate = report.events / report.seconds if report.seconds else 0
    out.print(f"replayed {report.events} events in {report.seconds:.2f} s ({rate:,.0f} events/s)")
    if check and not report.equal:
        raise click.ClickException("the rebuilt projections differ from the live ones (rows above)")
    out.print("rebuilt tables equal the live ones" if report.equal else "live tables replaced by the rebuild")
