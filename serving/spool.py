"""The edge spool: events the server could not append while the catalog was unreachable, kept durably on local
disk until `sync` appends them in their original order, with their original ids and `occurred_at`.

SQLite in WAL mode with synchronous=FULL: a `put` that returned survives a crash of the process or the machine.
Sync appends a page, then deletes it; a crash in between re-appends the page next time, and the event store
stores an event id once, so nothing is lost and nothing is doubled.

An event the catalog refuses as bad data (an invalid payload, an id already stored with other content, a value
PostgreSQL cannot store) would be refused forever, and everything spooled behind it would wait forever: a page
refused so is appended again event by event, and each event refused is set aside (table `set_aside`, with the
time and the error), for a person to look at (`visionledger spool status`); the rest drains in order.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import sqlalchemy.exc

from catalog.events import parse_event
from catalog.store import AppendResult, NewEvent

SPOOL_FILE = "events.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    spooled_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS set_aside (
    seq INTEGER PRIMARY KEY,  -- its place in the spool
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    spooled_at TEXT NOT NULL,
    set_aside_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    error TEXT NOT NULL
);
"""
_COLUMNS = "seq, event_id, type, schema_version, payload, metadata, occurred_at"

# What an unreachable or restarting server raises; anything else (a malformed event) is the caller's error.
_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    ConnectionError,
)


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` means the catalog could not be reached (as opposed to refusing what was sent)."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _UNREACHABLE)


def describe_error(exc: BaseException) -> str:
    """One line naming an error: the driver's own error rather than SQLAlchemy's wrapping, which carries the
    statement and its parameters (whole payloads)."""
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None else exc
    return f"{type(cause).__name__}: {cause}".splitlines()[0]


@dataclass(frozen=True)
class SetAside:
    """A spooled event the catalog refused as bad data, kept out of the way with the reason."""

    seq: int
    event_id: str
    type: str
    payload: str  # as spooled (JSON)
    occurred_at: str
    spooled_at: str
    set_aside_at: str
    error: str


@dataclass(frozen=True)
class SpoolSyncReport:
    appended: int  # newly stored in the catalog
    duplicates: int  # already there (a sync interrupted after its append, or the event arrived another way)
    set_aside: int = 0  # refused by the catalog as bad data, now in the set_aside table

    @property
    def synced(self) -> int:
        return self.appended + self.duplicates


class Spool:
    """A durable first-in first-out queue of events on local disk, safe to share between threads."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.folder / SPOOL_FILE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def put(self, events: Sequence[NewEvent]) -> None:
        """Keep `events`, in order, durably; an event id already spooled is kept once."""
        rows = [
            (
                str(e.event_id),
                e.data.type_name(),
                e.data.schema_version,
                e.data.model_dump_json(),
                json.dumps({k: str(v) for k, v in e.metadata.items() if v is not None}),
                e.occurred_at.isoformat(),
            )
            for e in events
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO events (event_id, type, schema_version, payload, metadata, occurred_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM events").fetchone()[0]

    def oldest(self) -> tuple[str, str] | None:
        """The type and time of the oldest spooled event, read as spooled (its payload unchecked: it may be one
        the catalog will refuse)."""
        with self._lock:
            return self._db.execute("SELECT type, occurred_at FROM events ORDER BY seq LIMIT 1").fetchone()

    def peek(self, limit: int = 1000) -> list[NewEvent]:
        """The oldest `limit` spooled events, as they will be appended."""
        with self._lock:
            return [_event(row) for row in self._page(limit)]

    def set_aside_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM set_aside").fetchone()[0]

    def set_aside(self) -> list[SetAside]:
        """The events set aside, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, type, payload, occurred_at, spooled_at, set_aside_at, error FROM set_aside"
                " ORDER BY seq").fetchall()
        return [SetAside(*row) for row in rows]

    def sync(self, append: Callable[[list[NewEvent]], AppendResult], *, page_size: int = 500) -> SpoolSyncReport:
        """Append everything spooled, oldest first, a page at a time through `append` (the catalog's), removing
        each page once it is stored. A page the catalog refuses as bad data is appended event by event, and
        the events it refuses are set aside. An unreachable catalog stops the sync and keeps the rest for next
        time."""
        appended = duplicates = set_aside = 0
        while True:
            with self._lock:
                rows = self._page(page_size)
            if not rows:
                return SpoolSyncReport(appended, duplicates, set_aside)
            try:
                result = append([_event(row) for row in rows])
            except Exception as exc:
                if is_unreachable(exc):
                    raise
                for row in rows:  # only the events it refuses are set aside, each at its place in the order
                    try:
                        result = append([_event(row)])
                    except Exception as refused:
                        if is_unreachable(refused):
                            raise
                        self._set_aside(row[0], describe_error(refused))
                        set_aside += 1
                        continue
                    appended += result.appended
                    duplicates += len(result.duplicates)
                    self._remove(row[0])
                continue
            appended += result.appended
            duplicates += len(result.duplicates)
            self._remove(rows[-1][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _page(self, limit: int) -> list[tuple]:
        return self._db.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def _remove(self, up_to_seq: int) -> None:
        """Forget the events up to `up_to_seq`, once they are in the catalog."""
        with self._lock:
            self._db.execute("DELETE FROM events WHERE seq <= ?", (up_to_seq,))

    def _set_aside(self, seq: int, error: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    f"INSERT INTO set_aside ({_COLUMNS}, spooled_at, error)"
                    f" SELECT {_COLUMNS}, spooled_at, ? FROM events WHERE seq = ?", (error, seq))
                self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


def _event(row: tuple) -> NewEvent:
    _, event_id, type_name, schema_version, payload, metadata, occurred_at = row
    return NewEvent(
        data=parse_event(type_name, json.loads(payload), schema_version),
        occurred_at=datetime.fromisoformat(occurred_at),
        event_id=uuid.UUID(event_id),
        metadata=json.loads(metadata),
    )
