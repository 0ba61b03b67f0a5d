"""The event store in one SQLite file: an edge station's full local log, with the same promises as the catalog's.

Ordering strategy. Every append opens its transaction with ``BEGIN IMMEDIATE``, which takes SQLite's single
write lock before the head position is read; threads and processes sharing the file therefore append one at a
time, and each numbers its events ``head + 1 ...`` in commit order (:func:`plan_append`, the rules PostgreSQL's
``catalog.append_events`` keeps in SQL; the contract suite holds both to them), and links them into the hash
chain with ``catalog.chain.chain_link``. A reader's statement sees only whole
committed appends, so it never sees a hole (a rolled-back append assigns nothing). WAL mode lets readers go on
while an append holds the lock; synchronous=FULL makes a returned append survive a power cut.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from catalog.chain import GENESIS, canonical_value, chain_link
from catalog.errors import ConcurrencyError, EventIdConflict
from catalog.event_log import (
    RECORDED_COLUMNS,
    AppendResult,
    EventLog,
    NewEvent,
    PreparedEvent,
    RecordedEvent,
    StoredLink,
    WaitForAppend,
    prepare_events,
)

BUSY_TIMEOUT_S = 60.0  # how long an append waits for another writer's lock before giving up
POLL_INTERVAL_S = 0.05  # SQLite has no NOTIFY: a tailing reader looks for new events this often

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY CHECK (position > 0),
    event_id TEXT NOT NULL UNIQUE,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version > 0),
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream_id, version)
);
CREATE INDEX IF NOT EXISTS events_recorded_at ON events (recorded_at);
CREATE TRIGGER IF NOT EXISTS events_refuse_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused; record a new event instead'); END;
CREATE TRIGGER IF NOT EXISTS events_refuse_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused; record a new event instead'); END;
"""


class SqliteEventStore(EventLog):
    """The event log in the SQLite file at ``path`` (created with its parent folders when missing). Any number
    of instances, threads and processes may share one file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept by the file: every later connection uses it
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: cheap for SQLite, and safe in any thread or forked process, where a shared one
        # is not. isolation_level=None: the transactions are the ones this module begins, nothing implicit.
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    # -- appending -------------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], *, expected_versions: Mapping[str, int] | None = None) -> AppendResult:
        if not events:
            return AppendResult(positions=[], duplicates=[])
        prepared = prepare_events(events)
        expected = expected_versions or {}
        # json_each: one parameter for any number of ids, under SQLite's limit on bound variables
        ids = json.dumps([str(p.event_id) for p in prepared])
        streams = json.dumps(streams_involved(prepared, expected))
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock first, then the head: appends number in commit order
            try:
                head, previous, last_recorded = db.execute(
                    "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1"
                ).fetchone() or (0, GENESIS, "")
                stored = {
                    uuid.UUID(event_id): StoredIdentity(position, stream_id, type_, payload)
                    for event_id, position, stream_id, type_, payload in db.execute(
                        "SELECT event_id, position, stream_id, type, payload FROM events"
                        " WHERE event_id IN (SELECT value FROM json_each(?))", (ids,))
                }
                versions = dict(db.execute(
                    "SELECT stream_id, max(version) FROM events WHERE stream_id IN (SELECT value FROM json_each(?))"
                    " GROUP BY stream_id", (streams,)))
                plan = plan_append(prepared, expected, head=head, stored=stored, versions=versions)
                # An edge station's clock may step back (NTP after boot): recorded_at must still never decrease.
                recorded_at = max(_utc_text(datetime.now(UTC)), last_recorded)
                rows = []
                for row in plan.rows:
                    previous = chain_link(previous, row.position, row.version, datetime.fromisoformat(recorded_at),
                                          row.event.digest)
                    rows.append(_row(row, recorded_at, previous))
                db.executemany(f"INSERT INTO events ({RECORDED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               rows)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (a full disk does)
                    db.execute("ROLLBACK")
                raise
        return plan.result

    # -- reading ---------------------------------------------------------------------------------------

    def head(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]

    def read(self, after: int = 0, *, upto: int | None = None, limit: int | None = 10_000,
             types: Iterable[str] | None = None) -> list[RecordedEvent]:
        clauses = ["position > ?"]
        params: list[Any] = [after]
        if upto is not None:
            clauses.append("position <= ?")
            params.append(upto)
        if types is not None:
            clauses.append("type IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(types)))
        params.append(-1 if limit is None else limit)  # SQLite reads LIMIT -1 as no limit
        sql = f"SELECT {RECORDED_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY position LIMIT ?"
        return self._query(sql, params)

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        return self._query(f"SELECT {RECORDED_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", [stream_id])

    def stream_version(self, stream_id: str) -> int:
        with self._connect() as db:
            return db.execute("SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?",
                              (stream_id,)).fetchone()[0]

    def _last_position_recorded_by(self, moment: datetime) -> int:
        with self._connect() as db:
            return db.execute("SELECT coalesce(max(position), 0) FROM events WHERE recorded_at <= ?",
                              (_utc_text(moment),)).fetchone()[0]

    @contextmanager
    def _waiting_for_appends(self) -> Iterator[WaitForAppend]:
        def wait_for_append(seconds: float | None) -> None:
            time.sleep(POLL_INTERVAL_S if seconds is None else min(seconds, POLL_INTERVAL_S))

        yield wait_for_append

    def _links(self, after: int, limit: int) -> list[StoredLink]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {RECORDED_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                              (after, limit)).fetchall()
        return [StoredLink(*row[:8], datetime.fromisoformat(row[8]), datetime.fromisoformat(row[9]), row[10])
                for row in rows]

    def _query(self, sql: str, params: Sequence[Any]) -> list[RecordedEvent]:
        with self._connect() as db:
            rows = db.execute(sql, params).fetchall()
        return [
            RecordedEvent(position, uuid.UUID(event_id), stream_id, version, type_, schema_version,
                          json.loads(payload), json.loads(metadata), datetime.fromisoformat(occurred_at),
                          datetime.fromisoformat(recorded_at), hash_)
            for position, event_id, stream_id, version, type_, schema_version, payload, metadata, occurred_at,
            recorded_at, hash_ in rows
        ]


def _row(row: NumberedEvent, recorded_at: str, hash_: bytes) -> tuple:
    p = row.event
    return (row.position, str(p.event_id), p.stream_id, row.version, p.type, p.schema_version, p.payload,
            p.metadata, _utc_text(p.occurred_at), recorded_at, hash_)


def _utc_text(moment: datetime) -> str:
    """A time as fixed-width ISO text in UTC, so that comparing the texts compares the times."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def streams_involved(prepared: Sequence[PreparedEvent], expected_versions: Mapping[str, int]) -> list[str]:
    """The streams whose current version an append must know: those it writes to and those it expects."""
    return sorted({p.stream_id for p in prepared} | set(expected_versions))


class StoredIdentity(NamedTuple):
    """What an append needs to know of an event id that is already stored: where, and what it names."""

    position: int
    stream_id: str
    type: str
    payload: str  # JSON text as stored, compared by its canonical value (catalog.chain)


class NumberedEvent(NamedTuple):
    """A new event with the position and stream version it will be stored at."""

    event: PreparedEvent
    position: int
    version: int


@dataclass(frozen=True)
class AppendPlan:
    rows: list[NumberedEvent]  # what to store, in position order
    result: AppendResult  # what to tell the caller once it is committed


def plan_append(prepared: Sequence[PreparedEvent], expected_versions: Mapping[str, int], *, head: int,
                stored: Mapping[uuid.UUID, StoredIdentity], versions: Mapping[str, int]) -> AppendPlan:
    """Decide what an append writes, given the log as read under the write lock: the ``head`` position, the
    ``stored`` events among the given ids, and the current ``versions`` of the :func:`streams_involved` (a
    stream absent from it has none). Raises :class:`EventIdConflict` when a stored id names other content,
    :class:`ConcurrencyError` when a stream is not at its expected version."""
    for p in prepared:
        if p.event_id in stored:
            known = stored[p.event_id]
            if (known.stream_id, known.type, canonical_value(known.payload)) != (p.stream_id, p.type,
                                                                                 canonical_value(p.payload)):
                raise EventIdConflict(
                    f"event {p.event_id} is already stored as a different {known.type} on {known.stream_id}; "
                    "give a new event a new id"
                )
    fresh = [p for p in prepared if p.event_id not in stored]
    if fresh:  # a retry of an append that went through is all duplicates: its expectations held back then
        for stream, expected in expected_versions.items():
            actual = versions.get(stream, 0)
            if actual != expected:
                raise ConcurrencyError(stream, expected, actual)
    next_version = dict(versions)
    rows = []
    for position, p in enumerate(fresh, start=head + 1):
        next_version[p.stream_id] = next_version.get(p.stream_id, 0) + 1
        rows.append(NumberedEvent(p, position, next_version[p.stream_id]))
    new_positions = iter(row.position for row in rows)
    return AppendPlan(rows, AppendResult(
        positions=[stored[p.event_id].position if p.event_id in stored else next(new_positions) for p in prepared],
        duplicates=[p.event_id for p in prepared if p.event_id in stored],
    ))
