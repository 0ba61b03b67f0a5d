"""The append-only event store: append (one event or a batch through COPY), read, tail.

Ordering strategy. Every append takes one transaction-scoped advisory lock before it reads the head
position, and holds it until commit. Positions are therefore assigned as ``head + 1 ...`` in commit order
and with no holes (a rolled-back append assigns nothing), so a reader resuming after position N can never
miss an event that commits later with a smaller position. Writers serialise only for the few statements
of an append; the cost is measured in ``bench/bench_append.py``.
"""

from __future__ import annotations

import json
import math
import select
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Engine

from catalog.errors import ConcurrencyError, EventIdConflict, EventValidationError, ImmutableEventError
from catalog.events import EventData, event_class, parse_event

# Key of the advisory lock that serialises appends (any 64-bit constant; this one spells "vledger").
APPEND_LOCK_KEY = 0x766C6564676572
COPY_THRESHOLD = 16  # batches at least this large go through COPY instead of INSERT
COLUMNS = "position, event_id, stream_id, version, type, schema_version, payload, metadata, occurred_at, recorded_at"
METADATA_KEYS = {"actor", "source", "causation_id", "correlation_id"}


class PermissionDenied(ImmutableEventError):
    """The connected role may not do this (read-only roles cannot append; no role may change events)."""


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended: typed data, when it happened on the line, and who or what caused it."""

    data: EventData
    occurred_at: datetime
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stream_id(self) -> str:
        return self.data.stream_id

    @property
    def type(self) -> str:
        return self.data.type_name()


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored, with its global position and per-stream version."""

    position: int
    event_id: uuid.UUID
    stream_id: str
    version: int
    type: str
    schema_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime

    @cached_property
    def data(self) -> EventData:
        """The typed event, upcast to the current schema version of its type."""
        return parse_event(self.type, self.payload, self.schema_version)


@dataclass(frozen=True)
class AppendResult:
    """What an append did: the position of every given event, in the given order (the stored position for
    an event id that was already there), and which event ids were already stored."""

    positions: list[int]
    duplicates: list[uuid.UUID]

    @property
    def appended(self) -> int:
        return len(self.positions) - len(self.duplicates)

    @property
    def all_duplicates(self) -> bool:
        return bool(self.positions) and self.appended == 0


class _Prepared(NamedTuple):
    """One event checked and ready for the database, its facts computed once. The payload is serialised
    later, while the rows stream to the server, so that the client's work overlaps the server's."""

    data: EventData
    event_id: uuid.UUID
    stream_id: str
    type: str
    schema_version: int
    metadata: str  # JSON text
    occurred_at: datetime


def _prepare(events: Sequence[NewEvent]) -> list[_Prepared]:
    """Check every event (its payload was validated when its model was built) or raise an
    EventValidationError saying what is wrong."""
    prepared = []
    metadata_json: dict[tuple, str] = {}  # a batch usually shares one metadata: check and serialise it once
    for event in events:
        data = event.data
        if not isinstance(data, EventData):
            raise EventValidationError(f"event data must be one of the catalog's event types, not {type(data).__name__}")
        kind = event_class(data.type_name())  # refuses unregistered subclasses
        if not isinstance(event.occurred_at, datetime) or event.occurred_at.tzinfo is None:
            raise EventValidationError(
                f"{kind.__name__}.occurred_at must be a timezone-aware datetime, got {event.occurred_at!r}"
            )
        if not isinstance(event.event_id, uuid.UUID):
            raise EventValidationError(f"event_id must be a UUID, got {event.event_id!r}")
        key = tuple(event.metadata.items())
        if key not in metadata_json:
            unknown = set(event.metadata) - METADATA_KEYS
            if unknown:
                raise EventValidationError(f"unknown metadata keys {sorted(unknown)}; allowed: {sorted(METADATA_KEYS)}")
            metadata_json[key] = json.dumps({k: str(v) for k, v in key if v is not None})
        prepared.append(_Prepared(data, event.event_id, data.stream_id, kind.__name__, kind.schema_version,
                                  metadata_json[key], event.occurred_at))
    if len({p.event_id for p in prepared}) != len(prepared):
        raise EventValidationError("the same event_id appears twice in one append")
    return prepared


def _row(p: _Prepared, position: int, version: int) -> tuple:
    # model_dump_json: pydantic's own encoder, several times cheaper than a dict and json.dumps
    return (position, p.event_id, p.stream_id, version, p.type, p.schema_version,
            _as_json(p.data.model_dump_json()), _as_json(p.metadata), p.occurred_at)


def _as_json(text: str) -> Jsonb:
    """Already-serialised JSON, passed through psycopg's jsonb dumper untouched."""
    return Jsonb(text, dumps=_unchanged)


def _unchanged(text: str) -> str:
    return text


PRE_CHECK = """
    SELECT
      (SELECT coalesce(max(position), 0) FROM catalog.events),
      (SELECT coalesce(json_agg(json_build_array(event_id, position, stream_id, type, payload)), '[]')
         FROM catalog.events WHERE event_id = ANY(%(ids)b)),
      (SELECT coalesce(json_object_agg(stream_id, v), '{}')
         FROM (SELECT stream_id, max(version) AS v FROM catalog.events
                WHERE stream_id = ANY(%(streams)b) GROUP BY stream_id) s)
"""


class EventStore:
    """Append-only storage of events in ``catalog.events``."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- appending -------------------------------------------------------------------------------------

    def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected_versions: Mapping[str, int] | None = None,
    ) -> AppendResult:
        """Append ``events`` atomically, in order.

        ``expected_versions`` maps stream ids to the version the caller last saw (0: the stream must not
        exist yet); a mismatch raises :class:`ConcurrencyError` and appends nothing. An event whose id is
        already stored is not stored again (it is reported in ``duplicates``); the same id with other content
        raises :class:`EventIdConflict`.
        """
        if not events:
            return AppendResult(positions=[], duplicates=[])
        prepared = _prepare(events)
        # A raw pooled connection: the append manages its own transaction and pipelines its statements.
        raw = self.engine.raw_connection()
        conn: psycopg.Connection = raw.driver_connection
        try:
            result = self._append_locked(conn, prepared, expected_versions or {})
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.rollback()
            raise PermissionDenied(f"this role may not append events: {exc.diag.message_primary}") from exc
        except BaseException:
            conn.rollback()
            raise
        finally:
            raw.close()  # back to the pool
        return result

    def _append_locked(self, conn: psycopg.Connection, prepared: list[_Prepared],
                       expected_versions: Mapping[str, int]) -> AppendResult:
        streams = sorted({p.stream_id for p in prepared} | set(expected_versions))
        cur = conn.cursor()
        with conn.pipeline():  # the lock and the pre-check travel in one round trip
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [APPEND_LOCK_KEY])
            # A new statement, hence a new snapshot that sees every append committed before we got the lock.
            # %b placeholders: thousands of ids and stream names travel binary, with no quoting. Small appends
            # reuse one prepared plan (planning would cost them more than running); large ones are planned for
            # their own arrays, as the generic plan made for one id is ruinous for 5,000.
            cur.execute(PRE_CHECK, {"ids": [p.event_id for p in prepared], "streams": streams},
                        prepare=len(prepared) < COPY_THRESHOLD)
        head, existing, versions = cur.fetchone()
        stored = {uuid.UUID(eid): (pos, stream, typ, payload) for eid, pos, stream, typ, payload in existing}
        for p in prepared:
            if p.event_id in stored:
                _, stream, typ, stored_payload = stored[p.event_id]
                if (stream, typ, stored_payload) != (p.stream_id, p.type, json.loads(p.data.model_dump_json())):
                    raise EventIdConflict(
                        f"event {p.event_id} is already stored as a different {typ} on {stream}; "
                        "give a new event a new id"
                    )
        fresh = [p for p in prepared if p.event_id not in stored]
        if fresh:
            for stream, expected in expected_versions.items():
                actual = versions.get(stream, 0)
                if actual != expected:
                    raise ConcurrencyError(stream, expected, actual)
        position = head
        numbered = []
        for p in fresh:
            position += 1
            version = versions[p.stream_id] = versions.get(p.stream_id, 0) + 1
            numbered.append((p, position, version))
        if len(numbered) >= COPY_THRESHOLD:
            with cur.copy(
                "COPY catalog.events (position, event_id, stream_id, version, type, schema_version, payload,"
                " metadata, occurred_at) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "uuid", "text", "int8", "text", "int4", "jsonb", "jsonb", "timestamptz"])
                for p, pos, version in numbered:  # serialised as they stream: the server is busy meanwhile
                    copy.write_row(_row(p, pos, version))
            conn.commit()
        else:
            with conn.pipeline():  # the rows and the commit in one round trip
                if numbered:
                    cur.executemany(
                        "INSERT INTO catalog.events (position, event_id, stream_id, version, type, schema_version,"
                        " payload, metadata, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [_row(*n) for n in numbered],
                    )
                conn.commit()
        positions = iter(range(head + 1, position + 1))
        return AppendResult(
            positions=[stored[p.event_id][0] if p.event_id in stored else next(positions) for p in prepared],
            duplicates=[p.event_id for p in prepared if p.event_id in stored],
        )

    def append_one(self, event: NewEvent, *, expected_version: int | None = None) -> AppendResult:
        """Append a single event; ``expected_version`` as in :meth:`append` for its stream."""
        expected = {event.stream_id: expected_version} if expected_version is not None else None
        return self.append([event], expected_versions=expected)

    # -- reading ---------------------------------------------------------------------------------------

    def head(self) -> int:
        """The position of the last committed event (0 for an empty store)."""
        with self.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT coalesce(max(position), 0) FROM catalog.events").scalar()

    def read(self, after: int = 0, *, upto: int | None = None, limit: int | None = 10_000,
             types: Iterable[str] | None = None) -> list[RecordedEvent]:
        """Events with ``after < position <= upto``, in position order, at most ``limit`` of them."""
        clauses = ["position > %(after)s"]
        params: dict[str, Any] = {"after": after}
        if upto is not None:
            clauses.append("position <= %(upto)s")
            params["upto"] = upto
        if types is not None:
            clauses.append("type = ANY(%(types)s)")
            params["types"] = list(types)
        sql = f"SELECT {COLUMNS} FROM catalog.events WHERE {' AND '.join(clauses)} ORDER BY position"
        if limit is not None:
            sql += " LIMIT %(limit)s"
            params["limit"] = limit
        return self._query(sql, params)

    def iter_events(self, after: int = 0, *, upto: int | None = None, page_size: int = 10_000) -> Iterator[list[RecordedEvent]]:
        """Pages of events after ``after`` (up to ``upto``, or the head at the time each page is read)."""
        while True:
            page = self.read(after, upto=upto, limit=page_size)
            if not page:
                return
            yield page
            after = page[-1].position

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        """Every event of one stream, in version order."""
        return self._query(
            f"SELECT {COLUMNS} FROM catalog.events WHERE stream_id = %(s)s ORDER BY version", {"s": stream_id}
        )

    def stream_version(self, stream_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT coalesce(max(version), 0) FROM catalog.events WHERE stream_id = %(s)s", {"s": stream_id}
            ).scalar()

    def position_at(self, moment: datetime) -> int:
        """The last position recorded at or before ``moment`` (timezone-aware): the catalog as it was then."""
        if moment.tzinfo is None:
            raise EventValidationError(f"as-of time must be timezone-aware, got {moment!r}")
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT coalesce(max(position), 0) FROM catalog.events WHERE recorded_at <= %(t)s",
                {"t": moment.astimezone(UTC)},
            ).scalar()

    def tail(self, after: int = 0, *, idle_timeout: float = 1.0, page_size: int = 1_000) -> Iterator[RecordedEvent]:
        """Follow the log from ``after``: yield every event once, in order, waiting for new ones (woken by
        the table's NOTIFY); stop after ``idle_timeout`` seconds without a new event (never, if infinite)."""
        listen_url = self.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
        with psycopg.connect(listen_url, autocommit=True) as listener:
            listener.execute("LISTEN catalog_events")
            idle_since = time.monotonic()
            while True:
                page = self.read(after, limit=page_size)
                yield from page
                if page:
                    after = page[-1].position
                    idle_since = time.monotonic()
                    continue
                remaining = idle_timeout - (time.monotonic() - idle_since)
                if remaining <= 0:
                    return
                select.select([listener.fileno()], [], [], None if math.isinf(remaining) else remaining)
                for _ in listener.notifies(timeout=0):
                    pass

    def _query(self, sql: str, params: Mapping[str, Any]) -> list[RecordedEvent]:
        with self.engine.connect() as sa_conn:
            conn: psycopg.Connection = sa_conn.connection.driver_connection
            rows = conn.execute(sql, params).fetchall()
            sa_conn.rollback()
        return [RecordedEvent(*row) for row in rows]


def event_id_for(*parts: object) -> uuid.UUID:
    """A deterministic event id from a natural key, so that re-delivering the same fact appends nothing."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "visionledger:" + json.dumps([str(p) for p in parts]))
