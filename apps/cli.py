"""The `visionledger` command line: thin wrappers over the catalog's Python API."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import catalog
from catalog.database import connection_urls, libpq_dsn, upgrade
from catalog.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError
from catalog.events import parse_event
from catalog.settings import Settings
from catalog.store import NewEvent

console = Console(stderr=True)
out = Console()


class _Cli(click.Group):
    """Turns the catalog's own errors into one clear line and exit status 2, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (catalog.CatalogError, EmbeddedPostgresError) as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@click.group(cls=_Cli)
def cli() -> None:
    """visionledger: the system of record for industrial visual inspection."""


@contextmanager
def progress_bar(description: str) -> Iterator:
    """A progress bar on stderr; yields a callback ``update(done, total)``."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _open(**kwargs) -> catalog.Catalog:
    return catalog.open(**kwargs)


# -- db ----------------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The catalog's PostgreSQL server: the embedded one unless VISIONLEDGER_DATABASE_URL is set."""


@db.command("start")
def db_start() -> None:
    """Start the embedded server (reusing a running one) and apply the migrations."""
    settings = Settings.from_env()
    urls = connection_urls(settings)
    if not settings.embedded:
        console.print("VISIONLEDGER_DATABASE_URL is set: using that server, starting nothing")
    upgrade(urls.owner)
    console.print(f"catalog ready at {libpq_dsn(urls.app).split('@')[-1]} (schema migrated)")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    settings = _embedded_only("stop")
    stopped = EmbeddedPostgres(settings.home, pg_bin=settings.pg_bin).stop()
    console.print("stopped" if stopped else "was not running")


@db.command("status")
def db_status() -> None:
    """Say whether the embedded server runs, and where."""
    settings = Settings.from_env()
    if not settings.embedded:
        console.print("external server (VISIONLEDGER_DATABASE_URL); nothing embedded")
        return
    server = EmbeddedPostgres(settings.home, pg_bin=settings.pg_bin)
    if server.running():
        info = server.info()
        out.print(f"running: 127.0.0.1:{info.port}, data in {server.data_dir}")
    else:
        out.print(f"not running (home {settings.home})")
        sys.exit(3)


@db.command("url")
@click.option("--role", default="app", show_default=True,
              type=click.Choice(["app", "owner", "analyst", "auditor", "admin"]),
              help="app appends; owner migrates; analyst and auditor only read")
def db_url(role: str) -> None:
    """Print a DSN that psql accepts, for one role."""
    settings = Settings.from_env()
    urls = connection_urls(settings)
    url = {"app": urls.app, "owner": urls.owner, "admin": urls.admin, **urls.readers}.get(role)
    if url is None:
        raise click.ClickException(f"no {role} URL: roles other than app and owner exist only on the embedded server")
    out.print(libpq_dsn(url), soft_wrap=True)


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (as the owner role)."""
    urls = connection_urls(Settings.from_env())
    upgrade(urls.owner)
    console.print("schema at head")


def _embedded_only(action: str) -> Settings:
    settings = Settings.from_env()
    if not settings.embedded:
        raise click.ClickException(f"VISIONLEDGER_DATABASE_URL is set: there is no embedded server to {action}")
    return settings


# -- events ------------------------------------------------------------------------------------------------


@cli.group()
def events() -> None:
    """Append and read events."""


@events.command("append")
@click.argument("file", type=click.File("r"))
@click.option("--actor", help="who appends (recorded in each event's metadata)")
def events_append(file, actor: str | None) -> None:
    """Append events from a JSON-lines FILE (- for stdin), atomically: all or none.

    Each line: {"type": ..., "payload": {...}, "occurred_at": ISO-8601 with offset, "event_id": optional UUID}.
    """
    batch = [_event_from_json(number, line, actor) for number, line in enumerate(file, 1) if line.strip()]
    with _open() as cat:
        result = cat.append(batch)
    out.print(f"appended {result.appended}, already stored {len(result.duplicates)}, head {max(result.positions, default=0)}")


def _event_from_json(number: int, line: str, actor: str | None) -> NewEvent:
    where = f"line {number}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from exc
    missing = {"type", "payload", "occurred_at"} - set(raw)
    if missing:
        raise click.ClickException(f"{where}: missing {', '.join(sorted(missing))}")
    try:
        occurred_at = datetime.fromisoformat(raw["occurred_at"])
    except (TypeError, ValueError) as exc:
        raise click.ClickException(f"{where}: occurred_at {raw['occurred_at']!r} is not ISO 8601") from exc
    if occurred_at.tzinfo is None:
        raise click.ClickException(f"{where}: occurred_at {raw['occurred_at']!r} has no UTC offset; add one (e.g. +01:00)")
    try:
        data = parse_event(raw["type"], raw["payload"])
        event_id = uuid.UUID(raw["event_id"]) if raw.get("event_id") else uuid.uuid4()
    except (catalog.CatalogError, ValueError) as exc:
        raise click.ClickException(f"{where}: {exc}") from exc
    return NewEvent(data=data, occurred_at=occurred_at, event_id=event_id,
                    metadata={"actor": actor, "source": "cli"} if actor else {"source": "cli"})


@events.command("tail")
@click.option("--after", default=0, show_default=True, help="start after this position")
@click.option("--follow", is_flag=True, help="keep waiting for new events (Ctrl-C to stop)")
def events_tail(after: int, follow: bool) -> None:
    """Print events after a position as JSON lines."""
    with _open(migrate=False) as cat:
        stream = cat.store.tail(after, idle_timeout=float("inf")) if follow else (
            e for page in cat.store.iter_events(after) for e in page)
        for event in stream:
            out.print_json(json.dumps(_event_json(event)), indent=None)


@events.command("stream")
@click.argument("stream_id")
def events_stream(stream_id: str) -> None:
    """Print every event of one stream (e.g. image:<sha256>, part:<id>) in order."""
    with _open(migrate=False) as cat:
        for event in cat.store.read_stream(stream_id):
            out.print_json(json.dumps(_event_json(event)), indent=None)


def _event_json(event: catalog.RecordedEvent) -> dict:
    return {
        "position": event.position, "event_id": str(event.event_id), "stream_id": event.stream_id,
        "version": event.version, "type": event.type, "schema_version": event.schema_version,
        "payload": event.payload, "metadata": event.metadata, "occurred_at": event.occurred_at.isoformat(),
        "recorded_at": event.recorded_at.isoformat(),
    }


# -- projections -------------------------------------------------------------------------------------------


@cli.group()
def projections() -> None:
    """Read models derived from the log."""


@projections.command("catch-up")
def projections_catch_up() -> None:
    """Apply every pending event to the projections."""
    with _open() as cat, progress_bar("projections") as update:
        reached = cat.projections.catch_up(progress=update)
    console.print(f"projections at position {reached}")


@projections.command("status")
def projections_status() -> None:
    """Each projection's checkpoint against the head of the log."""
    with _open() as cat:
        head = cat.head()
        table = Table("projection", "checkpoint", "behind")
        for name, position in cat.projections.checkpoints().items():
            table.add_row(name, str(position), str(head - position))
        out.print(table)


@projections.command("rebuild")
@click.option("--check", is_flag=True, help="rebuild aside and prove it equals the live tables; change nothing")
def projections_rebuild(check: bool) -> None:
    """Replay the whole log into fresh tables; replace the live ones (or, with --check, compare with them)."""
    with _open() as cat, progress_bar("replaying the log") as update:
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


# -- labels ------------------------------------------------------------------------------------------------


@cli.group()
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
    with _open() as cat:
        rows = cat.labels_as_of(position=position, at=at)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table("sha256", "label", "annotator", "source", "position")
    for row in rows[:50]:
        table.add_row(row["sha256"][:16], row["label"], row["annotator"], row["source"], str(row["position"]))
    out.print(table)
    out.print(f"{len(rows)} labelled images" + (" (first 50 shown)" if len(rows) > 50 else ""))


# -- lake --------------------------------------------------------------------------------------------------


@cli.group()
def lake() -> None:
    """The Parquet mirror of the log, and DuckDB over it."""


@lake.command("sync")
@click.option("--chunk", default=100_000, show_default=True, help="events per position range (one file per type and day)")
def lake_sync(chunk: int) -> None:
    """Mirror new events into lake/events (exactly once per position range, safe to kill and re-run)."""
    with _open() as cat, progress_bar("lake sync") as update:
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


# -- demo --------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default=None, help="the simulated day (default today, UTC)")
@click.option("--parts-per-line", default=200, show_default=True)
def demo(day: datetime | None, parts_per_line: int) -> None:
    """The main job on the embedded defaults: start the catalog, append a simulated day, sync the lake,
    print a summary. Running it twice for the same day appends nothing new (event ids are deterministic)."""
    from catalog.synthetic import FactoryShape, ontology_event, simulated_day

    the_day: date = (day or datetime.now(UTC)).date()
    with _open() as cat:
        console.rule(f"visionledger demo: a simulated production day, {the_day}")
        batch = [ontology_event(), *simulated_day(the_day, shape=FactoryShape(parts_per_line=parts_per_line))]
        appended = duplicates = 0
        with progress_bar("appending events") as update:
            for start in range(0, len(batch), 5_000):
                result = cat.append(batch[start:start + 5_000], catch_up=False)
                appended += result.appended
                duplicates += len(result.duplicates)
                update(start + len(batch[start:start + 5_000]), len(batch))
        with progress_bar("projections") as update:
            cat.projections.catch_up(progress=update)
        with progress_bar("lake sync") as update:
            report = cat.sync_lake(progress=update)
        con = cat.duckdb()
        by_type = con.execute(
            "SELECT type, count(*) FROM events WHERE day = ? GROUP BY type ORDER BY 2 DESC", [the_day]
        ).fetchall()
        with cat.engine.connect() as conn:
            decisions = dict(conn.exec_driver_sql(
                "SELECT decision, count(*) FROM projections.part_dispositions GROUP BY decision").fetchall())
            images, excluded = conn.exec_driver_sql(
                "SELECT count(*), count(*) FILTER (WHERE excluded) FROM projections.images").fetchone()
            corrected = conn.exec_driver_sql(
                "SELECT count(*) FROM projections.current_labels WHERE source = 'correction'").scalar()
        summary = Table(title="summary", show_header=False)
        summary.add_row("events appended now / already stored", f"{appended:,} / {duplicates:,}")
        summary.add_row("catalog head position", f"{cat.head():,}")
        summary.add_row("images in the catalog", f"{images:,} ({excluded} excluded)")
        summary.add_row("parts accepted / rejected", f"{decisions.get('accept', 0):,} / {decisions.get('reject', 0):,}")
        summary.add_row("labels corrected by a second review", f"{corrected:,}")
        summary.add_row("lake", f"{report.events:,} new events mirrored to {cat.lake.events_dir}")
        out.print(summary)
        by_day = Table("event type", "count", title=f"the lake, through DuckDB, for {the_day}")
        for event_type, count in by_type:
            by_day.add_row(event_type, f"{count:,}")
        out.print(by_day)
        out.print("psql: psql \"$(visionledger db url)\"    DuckDB: visionledger lake sql \"SELECT ...\"")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
