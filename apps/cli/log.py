"""`visionledger log`: the event log seen from outside the database: its hash chain's head, its partitions and
the archive of its oldest ones in the lake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from rich.table import Table

from apps.cli.common import open_catalog, out
from apps.cli.users import administrator
from catalog.archive import archive_log
from catalog.database import connection_urls, libpq_dsn
from catalog.partitions import PARTITIONS_AHEAD, ensure_partitions_at, partitions
from catalog.settings import Settings


@click.group()
def log() -> None:
    """The event log's hash chain (`visionledger check` verifies it), its partitions and its archive."""


@log.command("head")
def log_head() -> None:
    """Print the head position and its event's hash as POSITION:HASH. Keep the line outside the database
    (print it, mail it, sign it): `visionledger check --against POSITION:HASH` later proves that nothing at or
    before that position changed."""
    with open_catalog(migrate=False) as cat:
        out.print(str(cat.store.chain_head()), soft_wrap=True, highlight=False)


@log.command("partitions")
@click.option("--ahead", default=PARTITIONS_AHEAD, show_default=True, help="empty partitions to keep beyond the head")
@click.option("--size", type=click.IntRange(min=1), help="positions per new partition (default: the newest's);"
              " the empty ones of another size are cut again")
def log_partitions(ahead: int, size: int | None) -> None:
    """Keep partitions of the event table ready ahead of the head (as the schema owner), and list them. An
    append beyond the last partition adds partitions of the newest one's size itself; this sets the size and
    keeps appends from having to (`db upgrade` and the embedded server's start run it too)."""
    owner = libpq_dsn(connection_urls(Settings.from_env()).owner)
    created = ensure_partitions_at(owner, ahead=ahead, size=size)
    with open_catalog(migrate=False) as cat, cat.db.connect() as conn:
        found = partitions(conn.connection.driver_connection)
        head, horizon = cat.head(), cat.store.archived_through()
    table = Table("partition", "positions", "state")
    for p in found:
        state = "full" if p.last <= head else ("head" if p.first <= head else "empty")
        table.add_row(p.name, f"{p.first:,}–{p.last:,}", state)
    out.print(table)
    archived = f"; positions 1–{horizon:,} archived in the lake" if horizon else ""
    out.print(f"head at {head:,}; {len(created)} partition(s) created{archived}")


@log.command("archive")
@click.option("--before", type=click.IntRange(min=1), help="archive the whole partitions below this position")
@click.option("--older-than", "older_than", type=click.IntRange(min=0), metavar="DAYS",
              help="archive the whole partitions recorded more than DAYS days ago")
def log_archive(before: int | None, older_than: int | None) -> None:
    """Archive the event table's oldest whole partitions to the lake (lake/archive/events, Parquet), verify each
    copy there (count, every hash, the chain across its ends, the digest), record it (LogRangeArchived), then
    drop it from PostgreSQL; as the schema owner. Reads and `check` go on seeing the whole log. Safe to re-run
    after a crash: nothing is dropped unless its copy verified."""
    if (before is None) == (older_than is None):
        raise click.UsageError("give exactly one of --before POSITION or --older-than DAYS")
    with open_catalog() as cat:
        if older_than is not None:
            before = cat.position_at(datetime.now(UTC) - timedelta(days=older_than)) + 1
        archived = archive_log(cat, before=before, actor=administrator())
    for done in archived:
        size = sum(f.bytes for f in done.files)
        out.print(f"archived {done.first:,}–{done.last:,}: {done.events:,} events, {size:,} bytes"
                  f" ({', '.join(f.path for f in done.files)})")
    if not archived:
        out.print(f"nothing to archive below position {before:,}: only whole partitions before the head's are")
