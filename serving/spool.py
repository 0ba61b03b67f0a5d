"""The edge spool: events the server could not append while the catalog was unreachable, kept durably on local
disk until `sync` appends them in their original order, with their original ids and `occurred_at`.

SQLite in WAL mode with synchronous=FULL: a `put` that returned survives a crash of the process or the machine.
Sync appends a page, then deletes it; a crash in between re-appends the page next time, and the event store
stores an event id once, so nothing is lost and nothing is doubled.
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
)
"""


@dataclass(frozen=True)
class SpoolSyncReport:
    appended: int  # newly stored in the catalog
    duplicates: int  # already there (a sync interrupted after its append, or the event arrived another way)

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
        self._db.execute(_SCHEMA)

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

    def peek(self, limit: int = 1000) -> list[NewEvent]:
        """The oldest `limit` spooled events, as they will be appended."""
        with self._lock:
            return [_event(row) for row in self._page(limit)]

    def sync(self, append: Callable[[list[NewEvent]], AppendResult], *, page_size: int = 500) -> SpoolSyncReport:
        """Append everything spooled, oldest first, a page at a time through `append` (the catalog's), removing
        each page once it is stored. An error from `append` stops the sync and keeps the rest for next time."""
        appended = duplicates = 0
        while True:
            with self._lock:
                rows = self._page(page_size)
            if not rows:
                return SpoolSyncReport(appended, duplicates)
            result = append([_event(row) for row in rows])
            appended += result.appended
            duplicates += len(result.duplicates)
            with self._lock:
                self._db.execute("DELETE FROM events WHERE seq <= ?", (rows[-1][0],))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _page(self, limit: int) -> list[tuple]:
        return self._db.execute(
            "SELECT seq, event_id, type, schema_version, payload, metadata, occurred_at FROM events"
            " ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()


def _event(row: tuple) -> NewEvent:
    _, event_id, type_name, schema_version, payload, metadata, occurred_at = row
    return NewEvent(
        data=parse_event(type_name, json.loads(payload), schema_version),
        occurred_at=datetime.fromisoformat(occurred_at),
        event_id=uuid.UUID(event_id),
        metadata=json.loads(metadata),
    )
