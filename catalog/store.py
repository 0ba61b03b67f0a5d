"""The event store on PostgreSQL (``catalog.events``): append (one server-side function call), read, tail.

Ordering strategy. Every append is one call of ``catalog.append_events`` (migration 0014), which takes one
transaction-scoped advisory lock before it reads the head position (and the head's hash, which its events chain
onto: catalog.chain), and holds it until commit. Positions are therefore assigned as ``head + 1 ...`` in commit
order and with no holes (a rolled-back append assigns nothing), so a reader resuming after position N can never
miss an event that commits later with a smaller position. The client does the work that grows with the events
(checks, serialisation, content digests) before the call; under the lock the server only looks up ids and
stream versions, links and inserts. Its cost is measured in ``bench/bench_append.py``.
"""

from __future__ import annotations

import json
import select
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Engine

from catalog.errors import ConcurrencyError, EventIdConflict, EventValidationError, ImmutableEventError
from catalog.event_log import (
    RECORDED_COLUMNS,
    AppendResult,
    EventLog,
    NewEvent,
    PreparedEvent,
    RecordedEvent,
    StoredLink,
    WaitForAppend,
    event_id_for,
    prepare_event,
    prepare_events,
)

# The envelope and the id helper were defined here before the interface moved to catalog.event_log; callers
# across the code base import them from this module, which stays their address.
__all__ = ["AppendResult", "EventStore", "NewEvent", "PermissionDenied", "RecordedEvent", "event_id_for"]

COPY_THRESHOLD = 16  # batches at least this large are staged by COPY rather than sent as array parameters

# One event per element of each array, in the given order (the function's contract is in migration 0014).
APPEND_EVENTS = """
    SELECT positions, duplicates FROM catalog.append_events(
      %b::uuid[], %b::text[], %b::text[], %b::int4[], %b::jsonb[], %b::jsonb[], %b::timestamptz[], %b::bytea[],
      %b::text[], %b::int8[])
"""
# A large batch is copied into a temporary table first, each event serialised as it streams (the client's work
# overlaps the server's parsing), then handed to the same function as arrays built in the server. Array
# parameters would cost Python per element to send; COPY's rows are formatted in C.
STAGING_TABLE = """
    CREATE TEMPORARY TABLE IF NOT EXISTS append_batch (
      n int4, event_id uuid, stream_id text, type text, schema_version int4, payload jsonb, metadata jsonb,
      occurred_at timestamptz, digest bytea) ON COMMIT DELETE ROWS
"""
STAGING_TYPES = ["int4", "uuid", "text", "text", "int4", "jsonb", "jsonb", "timestamptz", "bytea"]
APPEND_STAGED = """
    SELECT r.positions, r.duplicates
      FROM (SELECT array_agg(event_id ORDER BY n) AS event_ids, array_agg(stream_id ORDER BY n) AS stream_ids,
                   array_agg(type ORDER BY n) AS types, array_agg(schema_version ORDER BY n) AS schema_versions,
                   array_agg(payload ORDER BY n) AS payloads, array_agg(metadata ORDER BY n) AS metadatas,
                   array_agg(occurred_at ORDER BY n) AS occurred_times, array_agg(digest ORDER BY n) AS digests
              FROM pg_temp.append_batch) b,
           catalog.append_events(b.event_ids, b.stream_ids, b.types, b.schema_versions, b.payloads, b.metadatas,
                                 b.occurred_times, b.digests, %b::text[], %b::int8[]) r
"""


class PermissionDenied(ImmutableEventError):
    """The connected role may not do this (read-only roles cannot append; no role may change events)."""


def _as_json(text: str) -> Jsonb:
    """Already-serialised JSON, passed through psycopg's jsonb dumper untouched."""
    return Jsonb(text, dumps=_unchanged)


def _unchanged(text: str) -> str:
    return text


def _append_parameters(prepared: Sequence[PreparedEvent], expected_versions: Mapping[str, int]) -> list[list]:
    """APPEND_EVENTS's arrays: the events column by column, then the expected versions."""
    columns: list[list] = [[], [], [], [], [], [], [], []]
    ids, streams, types, schema_versions, payloads, metadata, occurred, digests = columns
    for p in prepared:
        ids.append(p.event_id)
        streams.append(p.stream_id)
        types.append(p.type)
        schema_versions.append(p.schema_version)
        payloads.append(_as_json(p.payload))
        metadata.append(_as_json(p.metadata))
        occurred.append(p.occurred_at)
        digests.append(p.digest)
    return [*columns, *_expected_parameters(expected_versions)]


def _expected_parameters(expected_versions: Mapping[str, int]) -> list[list]:
    return [list(expected_versions), list(expected_versions.values())]


def _refusal(exc: psycopg.Error) -> Exception | None:
    """The catalog's error for what catalog.append_events refused (its SQLSTATEs), or None for another error."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return PermissionDenied(f"this role may not append events: {exc.diag.message_primary}")
    if exc.sqlstate == "VL001":
        return EventIdConflict(exc.diag.message_primary)
    if exc.sqlstate == "VL002":
        return ConcurrencyError(**json.loads(exc.diag.message_detail))
    if exc.sqlstate == "VL003":
        return EventValidationError(exc.diag.message_primary)
    return None


class EventStore(EventLog):
    """The event log in PostgreSQL's ``catalog.events``: the catalog's system of record."""

    def __init__(self, engine: Engine):
        self.db = engine

    # -- appending -------------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], *, expected_versions: Mapping[str, int] | None = None) -> AppendResult:
        if not events:
            return AppendResult(positions=[], duplicates=[])
        expected = expected_versions or {}
        prepared = prepare_events(events) if len(events) < COPY_THRESHOLD else None
        # A raw pooled connection: the append manages its own transaction and pipelines its statements.
        raw = self.db.raw_connection()
        conn: psycopg.Connection = raw.driver_connection
        try:
            cur = conn.cursor()
            if prepared is None:
                ids = self._stage(raw, conn, events)
                query, parameters = APPEND_STAGED, _expected_parameters(expected)
            else:
                ids = [p.event_id for p in prepared]
                query, parameters = APPEND_EVENTS, _append_parameters(prepared, expected)
            with conn.pipeline():  # the call and the commit in one round trip
                cur.execute(query, parameters)
                conn.commit()
            positions, duplicates = cur.fetchone()
        except psycopg.Error as exc:
            conn.rollback()
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc
        except BaseException:
            conn.rollback()
            raise
        finally:
            raw.close()  # back to the pool
        return AppendResult(positions=positions,
                            duplicates=[event_id for event_id, duplicate in zip(ids, duplicates, strict=True) if duplicate])

    @staticmethod
    def _stage(raw: Any, conn: psycopg.Connection, events: Sequence[NewEvent]) -> list[uuid.UUID]:
        """COPY ``events`` into the connection's staging table, each checked and serialised as it streams (an
        invalid one aborts the COPY: nothing is stored); returns their ids. The function refuses an id given
        twice."""
        if "append_batch" not in raw.info:  # a temporary table lives as long as its connection
            conn.execute(STAGING_TABLE)
            conn.commit()  # on its own: a rolled-back append must not take the table with it
            raw.info["append_batch"] = True
        ids = []
        metadata_json: dict[tuple, str] = {}
        with conn.cursor().copy("COPY pg_temp.append_batch FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(STAGING_TYPES)
            for n, event in enumerate(events):
                p = prepare_event(event, metadata_json)
                ids.append(p.event_id)
                copy.write_row((n, p.event_id, p.stream_id, p.type, p.schema_version, _as_json(p.payload),
                                _as_json(p.metadata), p.occurred_at, p.digest))
        return ids

    # -- reading ---------------------------------------------------------------------------------------

    def head(self) -> int:
        with self.db.connect() as conn:
            return conn.exec_driver_sql("SELECT coalesce(max(position), 0) FROM catalog.events").scalar()

    def read(self, after: int = 0, *, upto: int | None = None, limit: int | None = 10_000,
             types: Iterable[str] | None = None) -> list[RecordedEvent]:
        clauses = ["position > %(after)s"]
        params: dict[str, Any] = {"after": after}
        if upto is not None:
            clauses.append("position <= %(upto)s")
            params["upto"] = upto
        if types is not None:
            clauses.append("type = ANY(%(types)s)")
            params["types"] = list(types)
        sql = f"SELECT {RECORDED_COLUMNS} FROM catalog.events WHERE {' AND '.join(clauses)} ORDER BY position"
        if limit is not None:
            sql += " LIMIT %(limit)s"
            params["limit"] = limit
        return self._query(sql, params)

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        return self._query(
            f"SELECT {RECORDED_COLUMNS} FROM catalog.events WHERE stream_id = %(s)s ORDER BY version", {"s": stream_id}
        )

    def stream_version(self, stream_id: str) -> int:
        with self.db.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT coalesce(max(version), 0) FROM catalog.events WHERE stream_id = %(s)s", {"s": stream_id}
            ).scalar()

    def _last_position_recorded_by(self, moment: datetime) -> int:
        with self.db.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT coalesce(max(position), 0) FROM catalog.events WHERE recorded_at <= %(t)s", {"t": moment}
            ).scalar()

    def _links(self, after: int, limit: int) -> list[StoredLink]:
        with self.db.connect() as sa_conn:
            conn: psycopg.Connection = sa_conn.connection.driver_connection
            rows = conn.execute(  # JSON as the server prints it, not parsed: see StoredLink
                "SELECT position, event_id, stream_id, version, type, schema_version, payload::text, metadata::text,"
                " occurred_at, recorded_at, hash FROM catalog.events WHERE position > %s ORDER BY position LIMIT %s",
                [after, limit]).fetchall()
            sa_conn.rollback()
        return [StoredLink(*row) for row in rows]

    @contextmanager
    def _waiting_for_appends(self) -> Iterator[WaitForAppend]:
        # Woken by the NOTIFY that the table's insert trigger sends, instead of polling.
        listen_url = self.db.url.render_as_string(hide_password=False).replace("+psycopg", "")
        with psycopg.connect(listen_url, autocommit=True) as listener:
            listener.execute("LISTEN catalog_events")

            def wait_for_append(seconds: float | None) -> None:
                select.select([listener.fileno()], [], [], seconds)
                for _ in listener.notifies(timeout=0):
                    pass

            yield wait_for_append

    def _query(self, sql: str, params: Mapping[str, Any]) -> list[RecordedEvent]:
        with self.db.connect() as sa_conn:
            conn: psycopg.Connection = sa_conn.connection.driver_connection
            rows = conn.execute(sql, params).fetchall()
            sa_conn.rollback()
        return [RecordedEvent(*row) for row in rows]

