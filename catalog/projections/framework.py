"""How read models are kept: each projection folds events into rows, a page of events at a time.

For every page, a projection loads the rows the page touches (unless an earlier page of the same run left
them in its cache), folds the events into them in position order (plain Python functions, easy to test),
then writes rows it knows to be new with one binary COPY straight into its table, and rows that existed
through a staging table and one upsert. Its checkpoint advances in the same transaction, so each event
is applied exactly once. The high-volume projections also carry the same folds as SQL over a range of the
log (`set_based`), which the runner uses instead where it can.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from catalog.errors import CatalogError
from catalog.events import event_class, upcast
from catalog.projections import set_based
from catalog.store import HORIZON

if TYPE_CHECKING:
    from catalog.archive import LogArchive

Row = dict[str, Any]
Key = tuple[Any, ...]


class PageEvent(NamedTuple):
    """What a fold sees of an event (read lean: folds need no ids, stream or metadata)."""

    position: int
    type: str
    schema_version: int
    payload: dict[str, Any]
    occurred_at: datetime


# fold(current row or None, event, payload) -> the new row, or None for "this event changes nothing here"
Fold = Callable[[Row | None, PageEvent, dict[str, Any]], Row | None]
# an event with the key of the row it touches, and its payload at the current schema version
KeyedEvent = tuple[Key, PageEvent, dict[str, Any]]


@dataclass(frozen=True)
class Page:
    """A page of the log, grouped by event type once for all projections."""

    by_type: dict[str, list[PageEvent]]
    last: int  # position of the page's last event
    size: int
    current_versions: dict[str, int]  # schema version of each type present, as this code knows it

    def payload(self, event: PageEvent) -> dict[str, Any]:
        """The event's payload at the current schema version of its type (raw dict: no validation cost)."""
        if event.schema_version == self.current_versions[event.type]:
            return event.payload
        return upcast(event.type, event.schema_version, event.payload)

    @classmethod
    def of(cls, events: Sequence[PageEvent], *, last: int | None = None) -> Page:
        """The page holding ``events`` (in position order), ending at position ``last`` (by default the last
        event's: a page read with some events left out may end after its last one, or hold none)."""
        by_type: dict[str, list[PageEvent]] = {}
        for event in events:
            by_type.setdefault(event.type, []).append(event)
        # Looked up once per page: a class attribute read through pydantic's metaclass costs microseconds.
        versions = {kind: event_class(kind).schema_version for kind in by_type}
        last = events[-1].position if last is None else last
        return cls(by_type=by_type, last=last, size=len(events), current_versions=versions)


    def of_types(self, types: Iterable[str], after: int) -> Iterable[PageEvent]:
        """The page's events of ``types`` after position ``after``, in position order."""
        streams = [self.by_type[t] for t in types if t in self.by_type]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda e: e.position)
        return (e for e in merged if e.position > after)


_PAGE_EVENT = "SELECT position, type, schema_version, payload, occurred_at FROM catalog.events"


def below_horizon(conn: psycopg.Connection, after: int) -> bool:
    """Whether the page after ``after`` starts in the log's archived range (catalog.store.HORIZON)."""
    return after < conn.execute(HORIZON).fetchone()[0]


def read_page(conn: psycopg.Connection, after: int, upto: int | None, limit: int,
              archive: LogArchive | None = None) -> Page | None:
    """The next page of events on the caller's connection (so it is read in the caller's transaction); below
    the log's horizon (catalog.store.HORIZON), from its ``archive`` in the lake."""
    horizon = conn.execute(HORIZON).fetchone()[0]
    if after < horizon:
        if archive is None:
            raise CatalogError("the log's oldest positions are archived in the lake: give the projections its archive")
        archived = archive.events(after, horizon if upto is None else min(upto, horizon), limit=limit)
        pages = [PageEvent(e.position, e.type, e.schema_version, e.payload, e.occurred_at) for e in archived]
        return Page.of(pages) if pages else None
    bound = "" if upto is None else " AND position <= %(upto)s"
    rows = conn.execute(
        f"{_PAGE_EVENT} WHERE position > %(after)s{bound} ORDER BY position LIMIT %(limit)s",
        {"after": after, "upto": upto, "limit": limit},
    ).fetchall()
    return Page.of([PageEvent(*row) for row in rows]) if rows else None


class PageSurvey(NamedTuple):
    """What the next page of the log holds, read without its payloads."""

    last: int  # position of its last event
    kinds: frozenset[tuple[str, int]]  # the type and schema version of each kind of event in it

    @property
    def types(self) -> set[str]:
        return {kind for kind, _ in self.kinds}


def survey_page(conn: psycopg.Connection, after: int, upto: int | None, limit: int) -> PageSurvey | None:
    """The next page of ``limit`` events after ``after`` (up to ``upto``) surveyed (None: there is none)."""
    bound = "" if upto is None else " AND position <= %(upto)s"
    rows = conn.execute(
        "SELECT type, schema_version, max(position) FROM (SELECT position, type, schema_version FROM catalog.events"
        f" WHERE position > %(after)s{bound} ORDER BY position LIMIT %(limit)s) page GROUP BY type, schema_version",
        {"after": after, "upto": upto, "limit": limit},
    ).fetchall()
    if not rows:
        return None
    return PageSurvey(max(last for _, _, last in rows), frozenset((kind, version) for kind, version, _ in rows))


def read_range(conn: psycopg.Connection, after: int, last: int, types: Iterable[str]) -> Page:
    """The page of positions ``(after, last]``: its events of ``types``."""
    rows = conn.execute(
        f"{_PAGE_EVENT} WHERE position > %(after)s AND position <= %(last)s AND type = ANY(%(types)s) ORDER BY position",
        {"after": after, "last": last, "types": list(types)},
    ).fetchall()
    return Page.of([PageEvent(*row) for row in rows], last=last)


@dataclass(frozen=True)
class Projection:
    """A read model: one table, keyed by ``key``, maintained by ``folds`` per event type."""

    name: str
    table: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    folds: Mapping[str, Fold]
    key_of: Mapping[str, Callable[[PageEvent, dict[str, Any]], Key]]
    jsonb_columns: frozenset[str] = field(default_factory=frozenset)
    # Rows are only ever added (one per event): no need to look for existing rows first.
    append_only: bool = False
    # The same folds as SQL statements over a range of the log (`set_based`); empty: folded in Python only.
    sql: tuple[str, ...] = ()

    def apply_sql(self, conn: psycopg.Connection, schema: str, *, after: int, upto: int) -> None:
        """Fold the log's events in positions ``(after, upto]`` into the table in ``schema`` on the server."""
        set_based.apply(conn, self.sql, self._qualified(schema), after=after, upto=upto)

    def apply(self, conn: psycopg.Connection, schema: str, page: Page, *, after: int, cache: dict[Key, Row]) -> int:
        """Fold the page's events after position ``after`` into the table in ``schema``; returns the number
        of rows written. ``cache`` holds rows this runner wrote on earlier pages (valid while it alone
        advanced the checkpoint); it is updated in place."""
        relevant = self.relevant(page, after)
        if not relevant:
            return 0
        existing: set[Key] = set()
        if not self.append_only:
            missing = {key for key, _, _ in relevant if key not in cache}
            loaded = self._load(conn, schema, missing) if missing else {}
            cache.update(loaded)
            existing = {key for key, _, _ in relevant if key in cache}
        changed = self.fold(relevant, cache)
        self._insert(conn, schema, [row for key, row in changed.items() if key not in existing])
        self._upsert(conn, schema, [row for key, row in changed.items() if key in existing])
        return len(changed)

    def relevant(self, page: Page, after: int) -> list[KeyedEvent]:
        """The page's events this projection folds, after position ``after`` and in position order, each with
        the key of the row it touches and its payload at the current schema version."""
        keyed = []
        for event in page.of_types(self.folds, after):
            payload = page.payload(event)
            keyed.append((self.key_of[event.type](event, payload), event, payload))
        return keyed

    def fold(self, relevant: Iterable[KeyedEvent], rows: dict[Key, Row]) -> dict[Key, Row]:
        """Fold ``relevant`` events, in order, into ``rows`` (the rows as they stand, by key; updated in place
        unless the projection is append-only); returns the rows the events changed, by key. No database here
        (``apply`` loads the rows first), so read models can be tested on rows held in memory."""
        changed: dict[Key, Row] = {}
        for key, event, payload in relevant:
            new = self.folds[event.type](rows.get(key), event, payload)
            if new is not None:
                changed[key] = new
                if not self.append_only:
                    rows[key] = new
        return changed

    def _qualified(self, schema: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(self.table))

    def _load(self, conn: psycopg.Connection, schema: str, keys: set[Key]) -> dict[Key, Row]:
        columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        # Keys travel as text arrays (one per key column); casting the column keeps one query for any key type.
        key_cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in self.key)
        arrays = sql.SQL(", ").join(sql.SQL("%b::text[]") for _ in self.key)  # %b: sent binary, no quoting
        query = sql.SQL("SELECT {} FROM {} WHERE ({}) IN (SELECT * FROM unnest({}))").format(
            columns, self._qualified(schema), key_cols, arrays
        )
        key_list = sorted(keys)
        params = [[str(k[i]) for k in key_list] for i in range(len(self.key))]
        loaded: dict[Key, Row] = {}
        for values in conn.execute(query, params):
            row = dict(zip(self.columns, values, strict=True))
            loaded[tuple(row[k] for k in self.key)] = row
        return loaded

    def _copy(self, conn: psycopg.Connection, target: sql.Composable, schema: str, rows: list[Row]) -> None:
        columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        types = _column_types(conn, schema, self.table)
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, columns)) as copy:
            copy.set_types([types[c] for c in self.columns])
            values_of = itemgetter(*self.columns)
            jsonb_at = [i for i, c in enumerate(self.columns) if c in self.jsonb_columns]
            for row in rows:
                values = values_of(row)
                if jsonb_at:
                    values = list(values)
                    for i in jsonb_at:
                        if values[i] is not None:
                            values[i] = Jsonb(values[i], dumps=_dumps)
                copy.write_row(values)

    def _insert(self, conn: psycopg.Connection, schema: str, rows: list[Row]) -> None:
        """Rows whose keys are not in the table: straight in (only this runner may add them meanwhile,
        since it holds the projection's checkpoint lock)."""
        if rows:
            self._copy(conn, self._qualified(schema), schema, rows)

    def _upsert(self, conn: psycopg.Connection, schema: str, rows: list[Row]) -> None:
        if not rows:
            return
        stage = sql.Identifier(f"stage_{self.table}")
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, self._qualified(schema)))
        self._copy(conn, stage, schema, rows)
        columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        updates = [c for c in self.columns if c not in self.key]
        conn.execute(
            sql.SQL("INSERT INTO {} ({cols}) SELECT {cols} FROM {} ON CONFLICT ({}) DO UPDATE SET {}").format(
                self._qualified(schema),
                stage,
                sql.SQL(", ").join(map(sql.Identifier, self.key)),
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in updates
                ),
                cols=columns,
            )
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(stage))


_TYPES: dict[tuple[str, str], dict[str, str]] = {}


def _column_types(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """Each column's type name, for binary COPY (read from the catalog once per table and process)."""
    if (schema, table) not in _TYPES:
        rows = conn.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            [f"{schema}.{table}"],
        )
        _TYPES[(schema, table)] = dict(rows.fetchall())
    return _TYPES[(schema, table)]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
