"""The event table's partitions: ``catalog.events`` is partitioned by RANGE (position), one table per range of
positions, and the schema owner keeps empty ones ready ahead of the head (the writers hold no DDL rights).

There is no DEFAULT partition (a default one would have to be split, rows moved, before a partition for its
range could be created). An append past the last partition (a bulk load outruns any number kept ahead) calls
``catalog.add_event_partitions`` (migration 0017), which adds partitions of the newest one's size with the
owner's rights, and runs again (catalog.store). Migrations (``db upgrade``, the embedded server's start),
``visionledger log partitions`` and ``visionledger log archive`` keep ``PARTITIONS_AHEAD`` empty ones.

Unique constraints of a partitioned table must include the partition key, so ``event_id`` and ``(stream_id,
version)`` are unique per partition only. They stay unique across the log because every append takes the
append lock and checks the ids and stream versions it writes against the whole table (catalog.store) before
numbering its batch; the per-partition constraints remain a second line inside each range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from catalog.store import APPEND_LOCK_KEY  # partitions are replaced only while no append runs

DEFAULT_PARTITION_SIZE = 1_000_000  # positions per partition until `log partitions --size` says otherwise
PARTITIONS_AHEAD = 2  # empty partitions kept ready beyond the head
_BOUND = re.compile(r"FROM \('?(\d+)'?\) TO \('?(\d+)'?\)")


@dataclass(frozen=True)
class Partition:
    """One partition of the event table: the positions ``first <= position < end``."""

    name: str
    first: int
    end: int

    @property
    def last(self) -> int:
        return self.end - 1

    @property
    def size(self) -> int:
        return self.end - self.first


def partition_name(first: int) -> str:
    return f"events_from_{first}"


def partitions(conn: psycopg.Connection) -> list[Partition]:
    """The event table's partitions, in position order."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'catalog.events'::regclass").fetchall()
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound)
        if match is None:
            raise RuntimeError(f"partition catalog.{name} is not a range of positions: {bound}")
        found.append(Partition(name, int(match[1]), int(match[2])))
    return sorted(found, key=lambda p: p.first)


def create_partition(conn: psycopg.Connection, first: int, end: int) -> Partition:
    """A new partition for ``first <= position < end`` (``catalog.create_event_partition``, migration 0017: the
    one definition of a partition, which the writers' ``catalog.add_event_partitions`` uses too)."""
    name = conn.execute("SELECT catalog.create_event_partition(%s, %s)", [first, end]).fetchone()[0]
    return Partition(name, first, end)


def ensure_partitions(conn: psycopg.Connection, *, ahead: int = PARTITIONS_AHEAD,
                      size: int | None = None) -> list[Partition]:
    """Keep ``ahead`` empty partitions beyond the head, as the owner; returns those it created. New ones take
    ``size`` positions, else the newest partition's size. Given a ``size``, the empty partitions of another
    size are cut again to it first. Holds the append lock meanwhile, so that no event lands in a partition
    being replaced; the caller commits."""
    if ahead < 1 or (size is not None and size < 1):
        raise ValueError("keep at least one partition ahead, of at least one position")
    if size is None and _empty_ahead(conn) >= ahead:
        return []  # the common case, decided without waiting for the appends' lock
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [APPEND_LOCK_KEY])
    head = _head(conn)
    existing = partitions(conn)
    if size is not None:
        for p in [p for p in existing if p.first > head and p.size != size]:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("catalog", p.name)))
            existing.remove(p)
    size = size or (existing[-1].size if existing else DEFAULT_PARTITION_SIZE)
    created = []
    end = existing[-1].end if existing else 1
    while sum(p.first > head for p in existing + created) < ahead:
        created.append(create_partition(conn, end, end + size))
        end += size
    return created


def _head(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(max(position), 0) FROM catalog.events").fetchone()[0]


def _empty_ahead(conn: psycopg.Connection) -> int:
    head = _head(conn)
    return sum(p.first > head for p in partitions(conn))


def ensure_partitions_at(owner_dsn: str, *, ahead: int = PARTITIONS_AHEAD, size: int | None = None) -> list[Partition]:
    """:func:`ensure_partitions` on its own connection as the owner (``owner_dsn``), committed."""
    with psycopg.connect(owner_dsn) as conn:
        return ensure_partitions(conn, ahead=ahead, size=size)
