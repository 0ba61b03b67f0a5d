"""The event store on PostgreSQL (``catalog.events``): append (one server-side function call), read, tail.

Ordering strategy. Every append is one call of ``catalog.append_events`` (migration 0014), or for a single
event of ``catalog.append_event`` (0020, the same contract with scalar arguments), which takes one
transaction-scoped advisory lock before it reads the head position (and the head's hash, which its events chain
onto: catalog.chain), and holds it until commit. Positions are therefore assigned as ``head + 1 ...`` in commit
order and with no holes (a rolled-back append assigns nothing), so a reader resuming after position N can never
miss an event that commits later with a smaller position. The client does the work that grows with the events
(checks, serialisation, content digests) before the call; under the lock the server only looks up ids and
stream versions, links and inserts. Its cost is measured in ``bench/bench_append.py``.

Archived ranges. The table is partitioned by position (catalog.partitions) and its oldest partitions may be
archived to the lake and dropped (catalog.archive). Every read below the table's first position (the horizon)
is made from the archive through DuckDB, so readers see one log from position 1. An append (``catalog.append_events``
as migration 0017 left it) checks its streams' versions against the archive's index (``catalog.archived_streams``)
too, but its event ids only against the table: the idempotency window is the live partitions (see
docs/architecture.md).
"""

from __future__ import annotations

import json
import select
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Engine

from catalog.errors import (
    CatalogError,
    ConcurrencyError,
    EventIdConflict,
    EventValidationError,
    ImmutableEventError,
)
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

if TYPE_CHECKING:
    from catalog.archive import LogArchive

# The envelope and the id helper were defined here before the interface moved to catalog.event_log; callers
# across the code base import them from this module, which stays their address.
__all__ = ["AppendResult", "EventStore", "NewEvent", "PermissionDenied", "RecordedEvent", "event_id_for"]

# The advisory lock every append takes (in catalog.append_events, migration 0014): any 64-bit constant, the same
# for every writer; this one spells "vledger".
APPEND_LOCK_KEY = 0x766C6564676572
COPY_THRESHOLD = 16  # batches at least this large are staged by COPY rather than sent as array parameters

# One event per element of each array, in the given order (the function's contract is in migration 0014).
APPEND_EVENTS = """
    SELECT positions, duplicates FROM catalog.append_events(
      %b::uuid[], %b::text[], %b::text[], %b::int4[], %b::jsonb[], %b::jsonb[], %b::timestamptz[], %b::bytea[],
      %b::text[], %b::int8[])
"""
# One event with at most its own stream's expected version: catalog.append_event (migration 0020), the same
# contract as a batch of one, with scalar arguments.
APPEND_EVENT = """
    SELECT ARRAY[event_position], ARRAY[duplicate] FROM catalog.append_event(
      %b::uuid, %b::text, %b::text, %b::int4, %b::jsonb, %b::jsonb, %b::timestamptz, %b::bytea, %b::int8)
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


class NoPartition(CatalogError):
    """No partition of the event table holds the positions an append would take (catalog.partitions)."""


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


def _append_event_parameters(p: PreparedEvent, expected_version: int | None) -> list:
    """APPEND_EVENT's arguments: the event's columns, then its stream's expected version (None: any)."""
    return [p.event_id, p.stream_id, p.type, p.schema_version, _as_json(p.payload), _as_json(p.metadata),
            p.occurred_at, p.digest, expected_version]


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
    if isinstance(exc, psycopg.errors.CheckViolation) and "no partition" in (exc.diag.message_primary or ""):
        return NoPartition("the event table has no partition for the next positions: run `visionledger log"
                           " partitions` as the schema owner (catalog.partitions)")
    return None

def _call(conn: psycopg.Connection, query: str, parameters: Sequence[Any]) -> tuple[list[int], list[bool]]:
    """One call of an append function, then the commit: (positions, duplicates). Not in pipeline mode: on a
    local socket its bookkeeping costs a one-event append more (~0.1 ms) than the two round trips it saves."""
    row = conn.execute(query, parameters).fetchone()
    conn.commit()
    return row


def _call_staged(conn: psycopg.Connection) -> tuple[list[int], list[bool]]:
    """catalog.append_events over the batch staged on ``conn``, committed."""
    with _refusals(conn):
        return _call(conn, APPEND_STAGED, _expected_parameters({}))


@contextmanager
def _refusals(conn: psycopg.Connection) -> Iterator[None]:
    """Roll the append back on any error, raising the catalog's error for what the function refused."""
    try:
        yield
    except psycopg.Error as exc:
        conn.rollback()
        refusal = _refusal(exc)
        if refusal is None:
            raise
        raise refusal from exc
    except BaseException:
        conn.rollback()
        raise


def _result(ids: Sequence[uuid.UUID], positions: list[int], duplicates: list[bool]) -> AppendResult:
    return AppendResult(positions=positions,
                        duplicates=[event_id for event_id, duplicate in zip(ids, duplicates, strict=True) if duplicate])


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
        try:
            return self._append(events, expected_versions or {})
        except NoPartition:
            self._add_partitions(len(events))
            return self._append(events, expected_versions or {})

    def _add_partitions(self, events: int) -> None:
        """The owner keeps partitions ahead (catalog.partitions), but a long bulk load outruns any fixed number:
        the writers may add more, of the size the owner chose, enough for ``events`` more."""
        with self.db.connect() as conn:
            conn.exec_driver_sql("SELECT catalog.add_event_partitions(%(n)s)", {"n": events})
            conn.commit()

    def _append(self, events: Sequence[NewEvent], expected: Mapping[str, int]) -> AppendResult:
        prepared = prepare_events(events) if len(events) < COPY_THRESHOLD else None
        # A raw pooled connection: the append manages its own transaction.
        raw = self.db.raw_connection()
        conn: psycopg.Connection = raw.driver_connection
        try:
            with _refusals(conn):
                if prepared is None:
                    ids = self._stage(raw, conn, events)
                    query, parameters = APPEND_STAGED, _expected_parameters(expected)
                elif len(prepared) == 1 and set(expected) <= {prepared[0].stream_id}:
                    [p] = prepared
                    ids = [p.event_id]
                    query, parameters = APPEND_EVENT, _append_event_parameters(p, expected.get(p.stream_id))
                else:
                    ids = [p.event_id for p in prepared]
                    query, parameters = APPEND_EVENTS, _append_parameters(prepared, expected)
                return _result(ids, *_call(conn, query, parameters))
        finally:
            raw.close()  # back to the pool

    def append_batches(self, batches: Iterable[Sequence[NewEvent]]) -> Iterator[AppendResult]:
        """As `EventLog.append_batches`, the next batch prepared and staged on a second connection while the
        server stores this one: the client's work (checks, serialisation, digests) overlaps the server's
        (catalog.append_events) instead of following it. Each batch is still one call under the append lock;
        the next is called once this one has committed, so positions follow the batches' order."""
        connections = [self.db.raw_connection(), self.db.raw_connection()]
        pending: tuple[Future, list[uuid.UUID], Sequence[NewEvent]] | None = None
        try:
            with ThreadPoolExecutor(1) as server:
                for batch in batches:
                    if not batch:  # answered in its turn, as append answers it
                        if pending is not None:
                            yield self._staged_result(*pending)
                            pending = None
                        yield AppendResult(positions=[], duplicates=[])
                        continue
                    connections.reverse()  # the other one: the last batch may still be on the server
                    raw = connections[0]
                    ids = self._stage(raw, raw.driver_connection, batch)
                    if pending is not None:
                        yield self._staged_result(*pending)
                    pending = server.submit(_call_staged, raw.driver_connection), ids, batch
                if pending is not None:
                    yield self._staged_result(*pending)
        finally:
            for raw in connections:
                if not raw.driver_connection.closed:
                    raw.driver_connection.rollback()  # a batch staged after a failed one is dropped
                raw.close()

    def _staged_result(self, call: Future, ids: list[uuid.UUID], batch: Sequence[NewEvent]) -> AppendResult:
        try:
            return _result(ids, *call.result())
        except NoPartition:  # as in append
            self._add_partitions(len(batch))
            return self._append(batch, {})

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
        return self.read_streams([stream_id])[stream_id]

    def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """The table's events of each of ``stream_ids`` and what the archive holds of them, the statements sent
        together in one round trip, then one DuckDB query over the archive's files their archived events span.
        A statement per stream rather than ``stream_id = ANY(…)``: the planner, guessing how many events the
        streams have, may scan in parallel workers, whose start costs more than the handful of index reads."""
        stream_ids = list(dict.fromkeys(stream_ids))
        with self._reading() as conn:  # the table first: see HORIZON
            with conn.pipeline():
                tables = [conn.execute(f"SELECT {RECORDED_COLUMNS} FROM catalog.events WHERE stream_id = %(s)s"
                                       " ORDER BY version", {"s": stream_id}) for stream_id in stream_ids]
                archived = conn.execute("SELECT stream_id, first_position, last_position FROM catalog.archived_streams"
                                        " WHERE stream_id = ANY(%(s)s)", {"s": stream_ids})
            found = {stream_id: [RecordedEvent(*row) for row in cur.fetchall()]
                     for stream_id, cur in zip(stream_ids, tables, strict=True)}
            spans = {stream_id: (first, last) for stream_id, first, last in archived.fetchall()}
        if spans:  # archived versions come before the table's
            before: dict[str, list[RecordedEvent]] = {stream_id: [] for stream_id in spans}
            for event in self._archived().streams(spans):
                before[event.stream_id].append(event)
            found = {stream_id: before.get(stream_id, []) + events for stream_id, events in found.items()}
        return found

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
