"""The log's archive: whole partitions of the event table, once old enough, written to the lake as Parquet
(``lake/archive/events/``), verified there, recorded (``LogRangeArchived``), then detached and dropped from
PostgreSQL; and the reads of the archived range through DuckDB, which the event store makes for every position
below the table's first (its *horizon*).

Crash-safe by order: write (atomically: a temporary file, renamed), verify, record (a deterministic event id, so
a re-run appends nothing), then, in one owner transaction that verifies the table's range again, index what it
holds (``archived_streams``, ``archived_parts``), detach and drop. A run killed at any step and run again
converges: a file that does not verify against the still-live partition is written again, and nothing is
dropped unless its copy verified.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
import pyarrow as pa
from psycopg import sql

from catalog.chain import GENESIS, ChainHead
from catalog.database import libpq_dsn
from catalog.errors import CatalogError
from catalog.event_log import NewEvent, RecordedEvent, StoredLink, event_id_for, follow_chain
from catalog.events import ArchiveFile, LogRangeArchived
from catalog.filelock import FileLock
from catalog.lake import fsync_dir, fsync_file
from catalog.lookups import PART_EVENT_TYPES_SQL
from catalog.partitions import Partition, ensure_partitions, partitions

if TYPE_CHECKING:
    import duckdb

    from catalog import Catalog

ARCHIVE_DIR = "archive/events"  # under the lake's root
ROW_GROUP = 16_384  # rows per Parquet row group: DuckDB skips the groups whose positions (or parts) a read excludes
_FILE_NAME = re.compile(r"^events-(\d{20})-(\d{20})\.parquet$")

# Every column of the table, ids and JSON as the server prints them (the text the chain's verifier parses), and
# the part the event names, for pruning the reads of catalog.lookups.part_events.
ARCHIVE_SCHEMA = pa.schema([
    ("position", pa.int64()),
    ("event_id", pa.string()),
    ("stream_id", pa.string()),
    ("version", pa.int64()),
    ("type", pa.string()),
    ("schema_version", pa.int32()),
    ("payload", pa.string()),
    ("metadata", pa.string()),
    ("occurred_at", pa.timestamp("us", tz="UTC")),
    ("recorded_at", pa.timestamp("us", tz="UTC")),
    ("hash", pa.binary()),
    ("part_id", pa.string()),
])
LINK_COLUMNS = ", ".join(StoredLink._fields)  # what the chain's verifier reads; RecordedEvent's order too
TABLE_COLUMNS = ("position, event_id::text, stream_id, version, type, schema_version, payload::text,"
                 " metadata::text, occurred_at, recorded_at, hash, payload->>'part_id'")
# The count and digest (catalog.events.LogRangeArchived) of a range of the table, computed by the server itself.
RANGE_FACTS = ("SELECT count(*), encode(sha256(coalesce(string_agg(hash, ''::bytea ORDER BY position), '')), 'hex')"
               " FROM catalog.events WHERE position BETWEEN %s AND %s")


def range_digest(hashes: Iterable[bytes]) -> str:
    """The sha256 of event hashes in position order: RANGE_FACTS's digest, computed from an archive file."""
    digest = hashlib.sha256()
    for h in hashes:
        digest.update(h)
    return digest.hexdigest()


@dataclass(frozen=True)
class ArchivedRange:
    """What one run archived: a partition's positions, and where they now are."""

    first: int
    last: int
    events: int
    files: list[ArchiveFile]


class LogArchive:
    """The archive's files under a lake root, one per archived partition (``events-<first>-<last>.parquet``,
    positions zero-padded), and DuckDB reads of them."""

    def __init__(self, lake_root: Path):
        self.lake_root = Path(lake_root)
        self.root = self.lake_root / ARCHIVE_DIR
        self._duckdb: duckdb.DuckDBPyConnection | None = None
        self._opening = threading.Lock()

    def path_of(self, first: int, last: int) -> Path:
        return self.root / f"events-{first:020d}-{last:020d}.parquet"

    def files(self) -> list[tuple[int, int, Path]]:
        """(first, last, path) of every archive file, in position order."""
        found = []
        for path in self.root.glob("events-*.parquet"):
            if match := _FILE_NAME.match(path.name):
                found.append((int(match[1]), int(match[2]), path))
        return sorted(found)

    def describe(self, path: Path) -> ArchiveFile:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return ArchiveFile(path=str(path.relative_to(self.lake_root)), bytes=path.stat().st_size,
                           sha256=digest.hexdigest())

    # -- reading (the event store's reads below its horizon) -------------------------------------------------

    def events(self, after: int, upto: int, *, limit: int | None = None,
               types: Iterable[str] | None = None) -> list[RecordedEvent]:
        """As :meth:`catalog.event_log.EventLog.read`, over the archive's positions ``after < p <= upto``."""
        where, params = ("", []) if types is None else (" AND list_contains(?, type)", [list(types)])
        return [_recorded(row) for row in self._select(after, upto, where, params, limit=limit)]

    def links(self, after: int, upto: int, limit: int | None) -> list[StoredLink]:
        return [StoredLink(*row) for row in self._select(after, upto, "", [], limit=limit)]

    def streams(self, spans: Mapping[str, tuple[int, int]]) -> list[RecordedEvent]:
        """The archived events of the streams ``spans`` names, given the first and last position each spans
        (``catalog.archived_streams``), by stream and version: one query over the files those spans meet."""
        first = min(f for f, _ in spans.values())
        last = max(last for _, last in spans.values())
        rows = self._select(first - 1, last, f" AND stream_id IN ({', '.join('?' * len(spans))})", list(spans),
                            order="stream_id, version")
        return [_recorded(row) for row in rows]

    def part_events(self, part_id: str, first_position: int, last_position: int) -> list[tuple[Any, ...]]:
        """(event id, type, payload, metadata) of the part's archived events, as catalog.lookups.part_events."""
        rows = self._select(first_position - 1, last_position,
                            f" AND part_id = ? AND type IN {PART_EVENT_TYPES_SQL}", [part_id])
        return [(event.event_id, event.type, event.payload, event.metadata) for event in map(_recorded, rows)]

    def last_position_recorded_by(self, moment: datetime, upto: int) -> int:
        files = [str(path) for first, last, path in self.files() if first <= upto]
        if not files:
            return 0
        found = self._cursor().execute(
            "SELECT max(position) FROM read_parquet(?) WHERE recorded_at <= ? AND position <= ?",
            [files, moment, upto]).fetchone()[0]
        return found or 0

    # -- whole-archive questions (for `check`) -------------------------------------------------------------------

    def duplicate_event_ids(self, upto: int) -> list[str]:
        return [row[0] for row in self._over(upto, "SELECT event_id FROM archived GROUP BY 1 HAVING count(*) > 1"
                                                   " ORDER BY 1")]

    def stream_index(self, upto: int) -> dict[str, tuple[int, int, int, int]]:
        """Per stream: (last version, events, first position, last position), as ``catalog.archived_streams``
        should hold them."""
        return {row[0]: tuple(row[1:]) for row in self._over(
            upto, "SELECT stream_id, max(version), count(*), min(position), max(position) FROM archived GROUP BY 1")}

    def blob_names(self, upto: int, uri_prefix: str) -> tuple[set[str], set[str]]:
        """The image streams of the archived ImageIngested events, and the URIs of other archived payloads'
        top-level fields that start with ``uri_prefix`` (as catalog.consistency asks of the table)."""
        images = {row[0] for row in self._over(upto, "SELECT DISTINCT stream_id FROM archived"
                                                     " WHERE type = 'ImageIngested'")}
        uris = {row[0] for row in self._over(
            upto, "SELECT DISTINCT f.value->>'$' FROM archived a, json_each(a.payload) f"
                  " WHERE a.type <> 'ImageIngested'"
                  " AND f.type = 'VARCHAR' AND starts_with(f.value->>'$', ?)", [uri_prefix])}
        return images, uris

    def _over(self, upto: int, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """``query`` over the relation ``archived``: the archive's events up to position ``upto``."""
        files = [str(path) for first, _, path in self.files() if first <= upto]
        if not files:
            return []
        return self._cursor().execute(
            f"WITH archived AS (SELECT * FROM read_parquet(?) WHERE position <= ?) {query}", [files, upto, *params]
        ).fetchall()

    def _select(self, after: int, upto: int, where: str, params: list[Any], *, order: str = "position",
                limit: int | None = None) -> list[tuple[Any, ...]]:
        """Rows (LINK_COLUMNS) with ``after < position <= upto`` and ``where``, read only from the files whose
        range meets those positions."""
        files = [str(path) for first, last, path in self.files() if last > after and first <= upto]
        if not files and after < upto:
            raise CatalogError(f"positions {after + 1}..{upto} are archived, but {self.root} holds no file of"
                               " them: restore the lake's archive from its backup")
        query = (f"SELECT {LINK_COLUMNS} FROM read_parquet(?) WHERE position > ? AND position <= ?{where}"
                 f" ORDER BY {order}" + ("" if limit is None else f" LIMIT {int(limit)}"))
        return self._cursor().execute(query, [files, after, upto, *params]).fetchall()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the archive's DuckDB connection (one per thread that reads: cursors are not shared)."""
        import duckdb  # noqa: PLC0415 - only readers of the archived range need DuckDB

        with self._opening:
            if self._duckdb is None:
                self._duckdb = duckdb.connect()
                self._duckdb.execute("SET TimeZone = 'UTC'")
            return self._duckdb.cursor()

    # -- writing and verifying --------------------------------------------------------------------------------

    def write(self, conn: psycopg.Connection, partition: Partition) -> Path:
        """Write the partition's events from the table into its file: a temporary file, then renamed, so that a
        reader sees the whole file or none. The same events make the same bytes."""
        import pyarrow.parquet as pq  # noqa: PLC0415 - the writer pulls in much; only archiving needs it

        path = self.path_of(partition.first, partition.last)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.tmp")
        with (conn.cursor(name=f"archive_{partition.name}") as rows,
              pq.ParquetWriter(staged, ARCHIVE_SCHEMA, compression="zstd", compression_level=3) as writer):
            rows.execute(f"SELECT {TABLE_COLUMNS} FROM catalog.events WHERE position BETWEEN %s AND %s"
                         " ORDER BY position", [partition.first, partition.last])
            while batch := rows.fetchmany(ROW_GROUP):
                columns = zip(*batch, strict=True)
                writer.write_table(pa.Table.from_arrays(
                    [pa.array(col, type=f.type) for col, f in zip(columns, ARCHIVE_SCHEMA, strict=True)],
                    schema=ARCHIVE_SCHEMA), row_group_size=ROW_GROUP)
        fsync_file(staged)
        os.replace(staged, path)
        fsync_dir(path.parent)
        return path

    def copy_problem(self, first: int, last: int, *, previous: ChainHead, following: StoredLink | None,
                     events: int, digest: str) -> str | None:
        """Why the archive is not a true copy of positions ``first..last``, or None: each event's hash must
        recompute from its archived row onto ``previous`` (the head before ``first``), ``following`` (the event
        after ``last``, if any) must chain onto the last, and the count and digest must be ``events``/``digest``."""
        import duckdb  # noqa: PLC0415

        report = follow_chain([], previous)
        count, digest_of = 0, hashlib.sha256()
        try:
            for page in self._link_pages(first - 1, last):
                report = follow_chain(page, report.head)
                if not report.ok:
                    return f"the archive breaks the chain: {report.problem}"
                count += len(page)
                for link in page:
                    digest_of.update(link.hash)
        except duckdb.Error as exc:  # a file torn by a crash, or not Parquet at all
            return f"the archive of {first}..{last} cannot be read: {exc}"
        if report.head.position != last:
            return f"the archive of {first}..{last} ends at position {report.head.position}"
        if following is not None and not (across := follow_chain([following], report.head)).ok:
            return f"the chain does not continue from the archive into the table: {across.problem}"
        if (count, digest_of.hexdigest()) != (events, digest):
            return (f"the archive of {first}..{last} holds {count} events of digest {digest_of.hexdigest()}, not "
                    f"{events} of digest {digest}")
        return None

    def record_problems(self, record: LogRangeArchived) -> list[str]:
        """What differs between a range's archive files and its ``LogRangeArchived`` record (for `check`)."""
        problems = []
        for recorded in record.files:
            path = self.lake_root / recorded.path
            if not path.exists():
                problems.append(f"{recorded.path} is missing")
            elif (found := self.describe(path)) != recorded:
                problems.append(f"{recorded.path} is {found.bytes} bytes of sha256 {found.sha256[:12]}…, recorded as"
                                f" {recorded.bytes} bytes of {recorded.sha256[:12]}…: it was changed")
        if not problems:
            hashes = [link.hash for page in self._link_pages(record.first_position - 1, record.last_position)
                      for link in page]
            if (len(hashes), range_digest(hashes)) != (record.events, record.digest):
                problems.append(f"the archive of {record.first_position}..{record.last_position} does not hold the"
                                " events recorded")
        return problems

    def _link_pages(self, after: int, upto: int, page_size: int = 100_000) -> Iterator[list[StoredLink]]:
        while after < upto and (page := self.links(after, upto, page_size)):
            yield page
            after = page[-1].position


def _recorded(row: Sequence[Any]) -> RecordedEvent:
    (position, event_id, stream_id, version, event_type, schema_version, payload, metadata, occurred_at,
     recorded_at, hash_) = row
    return RecordedEvent(position, uuid.UUID(event_id), stream_id, version, event_type, schema_version,
                         orjson.loads(payload), orjson.loads(metadata), occurred_at, recorded_at, hash_)


# -- archiving (the schema owner) ------------------------------------------------------------------------------

# What the dropped partition held, per stream and per part: the event store's reads and the appends' stream
# versions look the archive up through them (catalog.store). Run in the dropping transaction.
INDEX_ARCHIVED = (
    """
    INSERT INTO catalog.archived_streams (stream_id, last_version, events, first_position, last_position)
    SELECT stream_id, max(version), count(*), min(position), max(position) FROM {partition} GROUP BY stream_id
    ON CONFLICT (stream_id) DO UPDATE SET last_version = excluded.last_version,
      events = archived_streams.events + excluded.events, last_position = excluded.last_position
    """,
    f"""
    INSERT INTO catalog.archived_parts (part_id, first_position, last_position)
    SELECT payload->>'part_id', min(position), max(position) FROM {{partition}}
     WHERE type IN {PART_EVENT_TYPES_SQL} AND payload ? 'part_id' GROUP BY 1
    ON CONFLICT (part_id) DO UPDATE SET last_position = excluded.last_position
    """,
)


def archive_log(cat: Catalog, *, before: int, actor: str) -> list[ArchivedRange]:
    """Archive every whole partition whose positions are all below ``before`` and below the head (the head's
    partition stays: appends chain onto it), oldest first, as the schema owner; first mirror the log to the
    lake (`Lake.sync`), which an archived range must already be in. Safe to re-run after a crash at any step."""
    cat.sync_lake()
    archived = []
    # One run at a time: two would write the same files.
    with FileLock(cat.archive.root / ".lock"), psycopg.connect(libpq_dsn(cat.urls.owner)) as conn:
        ensure_partitions(conn)
        conn.commit()
        head = cat.head()
        for partition in partitions(conn):
            if partition.last >= min(before, head):
                break
            archived.append(_archive_partition(cat, conn, partition, actor))
    return archived


def _archive_partition(cat: Catalog, conn: psycopg.Connection, partition: Partition, actor: str) -> ArchivedRange:
    first, last = partition.first, partition.last
    events, digest = conn.execute(RANGE_FACTS, [first, last]).fetchone()
    if events != partition.size:
        raise CatalogError(f"partition {partition.name} holds {events} events for {partition.size} positions:"
                           " run `visionledger check` before archiving")
    before = cat.store.read(first - 2, limit=1) if first > 1 else []
    previous = ChainHead(first - 1, before[0].hash if before else GENESIS)
    following = conn.execute(f"SELECT {TABLE_COLUMNS} FROM catalog.events WHERE position = %s", [last + 1]).fetchone()
    path = cat.archive.path_of(first, last)

    def problem() -> str | None:
        return cat.archive.copy_problem(first, last, previous=previous, following=StoredLink(*following[:-1]) if following else None,
                                        events=events, digest=digest)

    if not path.exists() or problem() is not None:
        cat.archive.write(conn, partition)
        conn.rollback()
        if (found := problem()) is not None:
            raise CatalogError(f"the archive of {first}..{last} does not verify, nothing dropped: {found}")
    files = [cat.archive.describe(path)]
    cat.store.append([NewEvent(
        LogRangeArchived(first_position=first, last_position=last, events=events, digest=digest, files=files),
        occurred_at=datetime.now(UTC), event_id=event_id_for("log-range-archived", first, last),
        metadata={"actor": actor, "source": "catalog.archive"})])
    conn.commit()
    # One transaction: the range verified again, indexed, detached and dropped, or nothing.
    table = sql.Identifier("catalog", partition.name)
    if conn.execute(RANGE_FACTS, [first, last]).fetchone() != (events, digest):
        raise CatalogError(f"partition {partition.name} changed while it was archived: nothing dropped")
    for statement in INDEX_ARCHIVED:
        conn.execute(sql.SQL(statement).format(partition=table))
    conn.execute(sql.SQL("ALTER TABLE catalog.events DETACH PARTITION {}").format(table))
    conn.execute(sql.SQL("DROP TABLE {}").format(table))
    conn.commit()
    return ArchivedRange(first, last, events, files)
