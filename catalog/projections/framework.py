"""How read models are kept: each projection folds events into rows, a page of events at a time.

For every page, a projection loads the rows the page touches, folds the events into them in position
order (plain Python functions, easy to test), and writes the changed rows back with one COPY and one
upsert. Its checkpoint advances in the same transaction, so each event is applied exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from catalog.events import event_class, upcast
from catalog.store import COLUMNS, RecordedEvent

Row = dict[str, Any]
Key = tuple[Any, ...]
# fold(current row or None, event, payload) -> the new row, or None for "this event changes nothing here"
Fold = Callable[[Row | None, RecordedEvent, dict[str, Any]], Row | None]


@dataclass(frozen=True)
class Projection:
    """A read model: one table, keyed by ``key``, maintained by ``folds`` per event type."""

    name: str
    table: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    folds: Mapping[str, Fold]
    key_of: Mapping[str, Callable[[RecordedEvent, dict[str, Any]], Key]]
    jsonb_columns: frozenset[str] = field(default_factory=frozenset)
    # Rows are only ever added (one per event): no need to load existing rows first.
    append_only: bool = False

    def apply(self, conn: psycopg.Connection, schema: str, events: Iterable[RecordedEvent]) -> int:
        """Fold ``events`` into the table in ``schema``; returns the number of rows written."""
        relevant = [(e, payload_of(e)) for e in events if e.type in self.folds]
        if not relevant:
            return 0
        keys = [self.key_of[e.type](e, p) for e, p in relevant]
        rows: dict[Key, Row | None] = {} if self.append_only else self._load(conn, schema, set(keys))
        changed: dict[Key, Row] = {}
        for (event, payload), key in zip(relevant, keys, strict=True):
            new = self.folds[event.type](rows.get(key), event, payload)
            if new is not None:
                rows[key] = new
                changed[key] = new
        if changed:
            self._store(conn, schema, list(changed.values()))
        return len(changed)

    def _qualified(self, schema: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(self.table))

    def _load(self, conn: psycopg.Connection, schema: str, keys: set[Key]) -> dict[Key, Row | None]:
        columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        # Keys travel as text arrays (one per key column); casting the column keeps one query for any key type.
        key_cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in self.key)
        arrays = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in self.key)
        query = sql.SQL("SELECT {} FROM {} WHERE ({}) IN (SELECT * FROM unnest({}))").format(
            columns, self._qualified(schema), key_cols, arrays
        )
        key_list = sorted(keys)
        params = [[str(k[i]) for k in key_list] for i in range(len(self.key))]
        loaded: dict[Key, Row | None] = {}
        for values in conn.execute(query, params):
            row = dict(zip(self.columns, values, strict=True))
            loaded[tuple(row[k] for k in self.key)] = row
        return loaded

    def _store(self, conn: psycopg.Connection, schema: str, rows: list[Row]) -> None:
        stage = sql.Identifier(f"stage_{self.table}")
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, self._qualified(schema))
        )
        columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, columns)) as copy:
            for row in rows:
                copy.write_row([
                    Jsonb(row[c]) if c in self.jsonb_columns and row[c] is not None else row[c]
                    for c in self.columns
                ])
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


def payload_of(event: RecordedEvent) -> dict[str, Any]:
    """The event's payload at the current schema version of its type (raw dict: no validation cost)."""
    if event.schema_version == event_class(event.type).schema_version:
        return event.payload
    return upcast(event.type, event.schema_version, event.payload)


def read_page(conn: psycopg.Connection, after: int, upto: int | None, limit: int) -> list[RecordedEvent]:
    """A page of events on the caller's connection (so it is read in the caller's transaction)."""
    if upto is None:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM catalog.events WHERE position > %s ORDER BY position LIMIT %s", [after, limit]
        )
    else:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM catalog.events WHERE position > %s AND position <= %s ORDER BY position LIMIT %s",
            [after, upto, limit],
        )
    return [RecordedEvent(*row) for row in rows]
