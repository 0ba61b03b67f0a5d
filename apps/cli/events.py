"""Commands that append and read raw events."""

from __future__ import annotations

import json
import uuid

import click

import catalog
from apps.cli.common import open_catalog, out
from catalog.events import parse_event
from catalog.store import NewEvent
from ingestion.tables import parse_aware_timestamp


@click.group()
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
    with open_catalog() as cat:
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
        occurred_at = parse_aware_timestamp(str(raw["occurred_at"]))
    except ValueError as exc:
        raise click.ClickException(f"{where}: occurred_at {exc}") from exc
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
    with open_catalog(migrate=False) as cat:
        stream = cat.store.tail(after, idle_timeout=float("inf")) if follow else (
            e for page in cat.store.iter_events(after) for e in page)
        for event in stream:
            out.print_json(json.dumps(_event_json(event)), indent=None)


@events.command("stream")
@click.argument("stream_id")
def events_stream(stream_id: str) -> None:
    """Print every event of one stream (e.g. image:<sha256>, part:<id>) in order."""
    with open_catalog(migrate=False) as cat:
        for event in cat.store.read_stream(stream_id):
            out.print_json(json.dumps(_event_json(event)), indent=None)


def _event_json(event: catalog.RecordedEvent) -> dict:
    return {
        "position": event.position, "event_id": str(event.event_id), "stream_id": event.stream_id,
        "version": event.version, "type": event.type, "schema_version": event.schema_version,
        "payload": event.payload, "metadata": event.metadata, "occurred_at": event.occurred_at.isoformat(),
        "recorded_at": event.recorded_at.isoformat(), "hash": event.hash.hex(),
    }
