"""The event store on PostgreSQL (``catalog.events``): append (one event or a batch through COPY), read, tail.

Ordering strategy. Every append takes one transaction-scoped advisory lock before it reads the head
position (and the head's hash, which its events chain onto: catalog.chain), and holds it until commit. Positions are therefore assigned as ``head + 1 ...`` in commit order
and with no holes (a rolled-back append assigns nothing), so a reader resuming after position N can never
miss an event that commits later with a smaller position. Writers serialise only for the few statements
of an append; the cost is measured in ``bench/bench_append.py``.

Archived ranges. The table is partitioned by position (catalog.partitions) and its oldest partitions may be
archived to the lake and dropped (catalog.archive). Every read below the table's first position (the horizon)
is made from the archive through DuckDB, so readers see one log from position 1. An append checks its streams'
versions against the archive's index (``catalog.archived_streams``) too, but its event ids only against the
table: the idempotency window is the live partitions (see docs/architecture.md).
"""

from __future__ import annotations

import select
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Engine

from catalog.chain import GENESIS
from catalog.errors import CatalogError, ImmutableEventError
from catalog.event_log import (
    RECORDED_COLUMNS,
    AppendResult,
    ChainedRow,
    EventLog,
    NewEvent,
    PreparedEvent,
    RecordedEvent,
    StoredIdentity,
    StoredLink,
    WaitForAppend,
    chain_rows,
    event_id_for,
    plan_append,
    prepare_events,
    streams_involved,
)

if TYPE_CHECKING:
    from catalog.archive import LogArchive

# The envelope and the id helper were defined here before the interface moved to catalog.event_log; callers
# across the code base import them from this module, which stays their address.
__all__ = ["AppendResult", "EventStore", "NewEvent", "PermissionDenied", "RecordedEvent", "event_id_for"]

# Key of the advisory lock that serialises appends (any 64-bit constant; this one spells "vledger").
APPEND_LOCK_KEY = 0x766C6564676572
COPY_THRESHOLD = 16  # batches at least this large go through COPY instead of INSERT
_prepare = prepare_events  # bench/bench_append.py times the checks alone under this name


class PermissionDenied(ImmutableEventError):
    """The connected role may not do this (read-only roles cannot append; no role may change events)."""


# The types of RECORDED_COLUMNS, which an append writes, for binary COPY: recorded_at too, not the column's
# default, as the chain hashes it.
RECORDED_TYPES = ["int8", "uuid", "text", "int8", "text", "int4", "jsonb", "jsonb", "timestamptz", "timestamptz",
                  "bytea"]


def _row(chained: ChainedRow, recorded_at: datetime) -> tuple:
    row, p = chained.row, chained.row.event
    return (row.position, p.event_id, p.stream_id, row.version, p.type, p.schema_version,
            _as_json(chained.payload), _as_json(p.metadata), p.occurred_at, recorded_at, chained.hash)


def _as_json(text: str) -> Jsonb:
    """Already-serialised JSON, passed through psycopg's jsonb dumper untouched."""
    return Jsonb(text, dumps=_unchanged)


def _unchanged(text: str) -> str:
    return text


# Run once the append lock is held. The head's row gives the position to number from and the hash to chain
# onto; recorded_at is this statement's clock, never before the head's (a clock stepped back by NTP), so it
# never decreases along positions.
PRE_CHECK = """
    WITH head AS (SELECT position, hash, recorded_at FROM catalog.events ORDER BY position DESC LIMIT 1)
    SELECT
      coalesce((SELECT position FROM head), 0),
      (SELECT hash FROM head),
      greatest(clock_timestamp(), (SELECT recorded_at FROM head)),
      (SELECT coalesce(json_agg(json_build_array(event_id, position, stream_id, type, payload::text)), '[]')
         FROM catalog.events WHERE event_id = ANY(%(ids)b)),
      (SELECT coalesce(json_object_agg(stream_id, v), '{}')
         FROM (SELECT stream_id, max(v) AS v
                 FROM (SELECT stream_id, version AS v FROM catalog.events WHERE stream_id = ANY(%(streams)b)
                       UNION ALL  -- a stream's events may be archived: its version goes on from there
                       SELECT stream_id, last_version FROM catalog.archived_streams
                        WHERE stream_id = ANY(%(streams)b)) versions
                GROUP BY stream_id) s)
"""

# The last archived position: every position below the table's first is in the lake's archive. Read in a
# transaction before its other reads, it holds for all of them: the lock the statement takes on catalog.events
# lasts until the transaction ends, and dropping an archived partition must wait for it.
HORIZON = "SELECT coalesce(min(position), 1) - 1 FROM catalog.events"


class EventStore(EventLog):
    """The event log in PostgreSQL's ``catalog.events``: the catalog's system of record."""

    def __init__(self, engine: Engine, archive: LogArchive | None = None):
        self.db = engine
        self.archive = archive  # where positions below the horizon are read (catalog.archive)

    # -- appending -------------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], *, expected_versions: Mapping[str, int] | None = None) -> AppendResult:
        if not events:
            return AppendResult(positions=[], duplicates=[])
        prepared = prepare_events(events)
        # A raw pooled connection: the append manages its own transaction and pipelines its statements.
        raw = self.db.raw_connection()
        conn: psycopg.Connection = raw.driver_connection
        try:
            result = self._append_locked(conn, prepared, expected_versions or {})
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.rollback()
            raise PermissionDenied(f"this role may not append events: {exc.diag.message_primary}") from exc
        except psycopg.errors.CheckViolation as exc:
            conn.rollback()
            if "no partition" not in (exc.diag.message_primary or ""):
                raise
            raise CatalogError("the event table has no partition for the next positions: run `visionledger log"
                               " partitions` as the schema owner (catalog.partitions), and schedule it") from exc
        except BaseException:
            conn.rollback()
            raise
        finally:
            raw.close()  # back to the pool
        return result

    def _append_locked(self, conn: psycopg.Connection, prepared: list[PreparedEvent],
                       expected_versions: Mapping[str, int]) -> AppendResult:
        cur = conn.cursor()
        with conn.pipeline():  # the lock and the pre-check travel in one round trip
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [APPEND_LOCK_KEY])
            # A new statement, hence a new snapshot that sees every append committed before we got the lock.
            # %b placeholders: thousands of ids and stream names travel binary, with no quoting. Small appends
            # reuse one prepared plan (planning would cost them more than running); large ones are planned for
            # their own arrays, as the generic plan made for one id is ruinous for 5,000.
            cur.execute(PRE_CHECK, {"ids": [p.event_id for p in prepared],
                                    "streams": streams_involved(prepared, expected_versions)},
                        prepare=len(prepared) < COPY_THRESHOLD)
        head, head_hash, recorded_at, existing, versions = cur.fetchone()
        plan = plan_append(prepared, expected_versions, head=head, versions=versions, stored={
            uuid.UUID(eid): StoredIdentity(pos, stream, typ, payload) for eid, pos, stream, typ, payload in existing
        })
        chained = chain_rows(plan.rows, head_hash or GENESIS, recorded_at)
        if len(plan.rows) >= COPY_THRESHOLD:
            with cur.copy(f"COPY catalog.events ({RECORDED_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(RECORDED_TYPES)
                for row in chained:  # serialised and hashed as they stream: the server is busy meanwhile
                    copy.write_row(_row(row, recorded_at))
            conn.commit()
        else:
            with conn.pipeline():  # the rows and the commit in one round trip
                if plan.rows:
                    cur.executemany(
                        f"INSERT INTO catalog.events ({RECORDED_COLUMNS})"
                        f" VALUES ({', '.join(['%s'] * len(RECORDED_TYPES))})",
                        [_row(row, recorded_at) for row in chained],
                    )
                conn.commit()
        return plan.result

    # -- reading ---------------------------------------------------------------------------------------

    def head(self) -> int:
        with self.db.connect() as conn:
            return conn.exec_driver_sql("SELECT coalesce(max(position), 0) FROM catalog.events").scalar()

    def read(self, after: int = 0, *, upto: int | None = None, limit: int | None = 10_000,
             types: Iterable[str] | None = None) -> list[RecordedEvent]:
        clauses = ["position > %(after)s"]
        params: dict[str, Any] = {}
        if upto is not None:
            clauses.append("position <= %(upto)s")
            params["upto"] = upto
        if types is not None:
            clauses.append("type = ANY(%(types)s)")
            params["types"] = list(types)
        sql = f"SELECT {RECORDED_COLUMNS} FROM catalog.events WHERE {' AND '.join(clauses)} ORDER BY position"
        if limit is not None:
            sql += " LIMIT %(limit)s"
        with self._reading() as conn:
            horizon = conn.execute(HORIZON).fetchone()[0]
            archived = self._archived().events(
                after, horizon if upto is None else min(upto, horizon), limit=limit, types=types
            ) if after < horizon else []
            if limit is not None:
                params["limit"] = limit - len(archived)
            rows = conn.execute(sql, {**params, "after": max(after, horizon)}).fetchall()
        return archived + [RecordedEvent(*row) for row in rows]

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        with self._reading() as conn:  # the table first: see HORIZON
            rows = conn.execute(f"SELECT {RECORDED_COLUMNS} FROM catalog.events WHERE stream_id = %(s)s"
                                " ORDER BY version", {"s": stream_id}).fetchall()
            span = conn.execute("SELECT first_position, last_position FROM catalog.archived_streams"
                                " WHERE stream_id = %(s)s", {"s": stream_id}).fetchone()
        archived = self._archived().stream(stream_id, *span) if span else []
        return archived + [RecordedEvent(*row) for row in rows]

    def stream_version(self, stream_id: str) -> int:
        with self.db.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT greatest((SELECT max(version) FROM catalog.events WHERE stream_id = %(s)s),"
                " (SELECT last_version FROM catalog.archived_streams WHERE stream_id = %(s)s), 0)", {"s": stream_id}
            ).scalar()

    def archived_through(self) -> int:
        """The last position archived to the lake and dropped from the table (0 when none is)."""
        with self._reading() as conn:
            return conn.execute(HORIZON).fetchone()[0]

    def _last_position_recorded_by(self, moment: datetime) -> int:
        with self._reading() as conn:
            horizon = conn.execute(HORIZON).fetchone()[0]
            live = conn.execute("SELECT max(position) FROM catalog.events WHERE recorded_at <= %(t)s",
                                {"t": moment}).fetchone()[0]
        # recorded_at never decreases along positions: an answer in the table is the answer
        if live is not None or not horizon:
            return live or 0
        return self._archived().last_position_recorded_by(moment, horizon)

    def _links(self, after: int, limit: int) -> list[StoredLink]:
        with self._reading() as conn:
            horizon = conn.execute(HORIZON).fetchone()[0]
            archived = self._archived().links(after, horizon, limit) if after < horizon else []
            rows = conn.execute(  # JSON as the server prints it, not parsed: see StoredLink
                "SELECT position, event_id, stream_id, version, type, schema_version, payload::text, metadata::text,"
                " occurred_at, recorded_at, hash FROM catalog.events WHERE position > %s ORDER BY position LIMIT %s",
                [max(after, horizon), limit - len(archived)]).fetchall()
        return archived + [StoredLink(*row) for row in rows]

    def _archived(self) -> LogArchive:
        """The archive, which the positions below the horizon are read from."""
        if self.archive is None:
            raise CatalogError("the log's oldest positions are archived in the lake: open the catalog with"
                               " catalog.open(), whose event store reads them there")
        return self.archive

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection]:
        """A connection for the statements of one read, in one transaction (rolled back: reads write nothing)."""
        with self.db.connect() as sa_conn:
            try:
                yield sa_conn.connection.driver_connection
            finally:
                sa_conn.rollback()

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
