"""Keeping projections up to date, rebuilding them from the log, and proving a rebuild equals the live tables."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine

from catalog.projections import set_based
from catalog.projections.framework import Page, Projection, below_horizon, read_page, read_range, survey_page
from catalog.projections.read_models import ALL_PROJECTIONS
from catalog.store import EventStore

if TYPE_CHECKING:
    from catalog.archive import LogArchive

LIVE = "projections"
SCRATCH = "projections_scratch"
REBUILD_LOCK_KEY = 0x766C6552454255  # one rebuild at a time: they share the scratch schema
MAX_CACHED_ROWS = 500_000  # per projection, within one catch_up: bounded memory on huge rebuilds
PAGE_SIZE = 50_000  # events a transaction; measured: pages of 20,000 fold 30 % slower (bench/bench_projections.py)
REBUILD_CONNECTIONS = 2  # the scratch schema has no readers: fold it on two of the server's cores

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TableComparison:
    table: str
    live_rows: int
    rebuilt_rows: int
    differing_rows: int

    @property
    def equal(self) -> bool:
        return self.differing_rows == 0


@dataclass(frozen=True)
class RebuildReport:
    position: int
    events: int
    seconds: float
    tables: list[TableComparison]

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)


class ProjectionRunner:
    """Applies events to the projections in ``schema``, each projection from its own checkpoint.

    With ``use_sql`` (the default) a projection that has SQL folds (`set_based`) folds each page on the
    server, unless the page holds one of its event types at a schema version its SQL does not read; then it,
    like every other projection, folds the page in Python. Without, every page is folded in Python: the
    specification, kept selectable so that the two can be compared. Pages of the archived range (read from the
    lake, ``archive``) are always folded in Python: the SQL reads the table.
    """

    def __init__(self, engine: Engine, projections: Sequence[Projection] = ALL_PROJECTIONS, *, schema: str = LIVE,
                 archive: LogArchive | None = None, use_sql: bool = True):
        self.db = engine
        self.projections = tuple(projections)
        self.schema = schema
        self.archive = archive  # the log's archived range, which a catch-up from zero reads (catalog.archive)
        self.use_sql = use_sql

    def checkpoints(self) -> dict[str, int]:
        with self.db.connect() as sa_conn:
            conn = sa_conn.connection.driver_connection
            rows = conn.execute(sql.SQL("SELECT name, position FROM {}.checkpoints").format(sql.Identifier(self.schema)))
            found = dict(rows.fetchall())
            sa_conn.rollback()
        return {p.name: found.get(p.name, 0) for p in self.projections}

    def catch_up(self, *, upto: int | None = None, page_size: int = PAGE_SIZE, progress: Progress | None = None,
                 connections: int = 1) -> int:
        """Apply every event after each projection's checkpoint (up to ``upto``); returns the position reached.
        Safe to run from several processes: they take turns page by page. With ``connections`` above one, the
        projections are split into that many groups, each caught up on a connection of its own so that the
        server folds on as many cores (for long catch-ups: meanwhile the groups stand at different positions,
        where one transaction moves them all together)."""
        with _collector_paused():
            if connections == 1:
                return self._catch_up(upto, page_size, progress)
            groups = [ProjectionRunner(self.db, group, schema=self.schema, archive=self.archive, use_sql=self.use_sql)
                      for group in _balanced(self.projections, connections)]
            reached: dict[int, int] = {}
            lock = threading.Lock()

            def catch_up_group(index: int) -> int:
                def report(done: int, total: int) -> None:
                    with lock:
                        reached[index] = done
                        if progress and len(reached) == len(groups):
                            progress(min(reached.values()), total)
                return groups[index]._catch_up(upto, page_size, report)

            with ThreadPoolExecutor(len(groups)) as pool:
                return min(pool.map(catch_up_group, range(len(groups))))

    def _catch_up(self, upto: int | None, page_size: int, progress: Progress | None) -> int:
        total = upto if upto is not None else EventStore(self.db).head()
        caches: dict[str, dict] = {p.name: {} for p in self.projections}
        reached: int | None = None
        while True:
            with self.db.begin() as sa_conn:
                conn: psycopg.Connection = sa_conn.connection.driver_connection
                checkpoints = self._lock_checkpoints(conn)
                if reached is None or any(cp != reached for cp in checkpoints.values()):
                    # Another runner moved in between (or this is the first page): cached rows may be stale.
                    for cache in caches.values():
                        cache.clear()
                after = min(checkpoints.values())
                last = self._apply_page(conn, checkpoints, after, upto, page_size, caches)
                if last is None:
                    return after if reached is None else max(after, reached)
                reached = last
                conn.execute(
                    sql.SQL("UPDATE {}.checkpoints SET position = %s WHERE name = ANY(%s) AND position < %s").format(
                        sql.Identifier(self.schema)
                    ),
                    [reached, [p.name for p in self.projections], reached],
                )
            if progress:
                progress(reached, max(total, reached))

    def _apply_page(self, conn: psycopg.Connection, checkpoints: dict[str, int], after: int, upto: int | None,
                    page_size: int, caches: dict[str, dict]) -> int | None:
        """Apply the next page after ``after`` to every projection; returns the page's last position (None: no
        page left)."""
        if not self.use_sql or below_horizon(conn, after):
            page = read_page(conn, after, upto, page_size, self.archive)
            if page is None:
                return None
            self.fold_in_python(conn, page, self.projections, checkpoints, caches)
            return page.last
        survey = survey_page(conn, after, upto, page_size)
        if survey is None:
            return None
        in_sql = [p for p in self.projections if p.sql and set_based.folds_in_sql(p.folds, survey.kinds)]
        in_python = [p for p in self.projections if p not in in_sql]
        if any(t in survey.types for p in in_sql for t in p.folds):
            # The page's sorts carry payloads: at the default 4 MB they spill to disk.
            conn.execute("SET LOCAL work_mem = '64MB'")
        for projection in in_sql:
            if checkpoints[projection.name] < survey.last and survey.types.intersection(projection.folds):
                projection.apply_sql(conn, self.schema, after=checkpoints[projection.name], upto=survey.last)
            # Its rows changed on the server: rows cached from a page folded in Python are stale.
            caches[projection.name].clear()
        wanted = survey.types.intersection(t for p in in_python for t in p.folds)
        page = read_range(conn, after, survey.last, wanted) if wanted else Page.of([], last=survey.last)
        self.fold_in_python(conn, page, in_python, checkpoints, caches)
        return survey.last

    def fold_in_python(self, conn: psycopg.Connection, page: Page, projections: Sequence[Projection],
                       checkpoints: dict[str, int], caches: dict[str, dict]) -> None:
        """Fold ``page`` into ``projections`` through their Python folds, each after its own checkpoint: any
        page of the log, wherever it was read from."""
        for projection in projections:
            cache = caches[projection.name]
            if len(cache) > MAX_CACHED_ROWS:
                cache.clear()
            projection.apply(conn, self.schema, page, after=checkpoints[projection.name], cache=cache)

    def _lock_checkpoints(self, conn: psycopg.Connection) -> dict[str, int]:
        names = [p.name for p in self.projections]
        table = sql.SQL("{}.checkpoints").format(sql.Identifier(self.schema))
        conn.execute(
            sql.SQL("INSERT INTO {} (name, position) SELECT unnest(%s::text[]), 0 ON CONFLICT DO NOTHING").format(table),
            [names],
        )
        rows = conn.execute(
            sql.SQL("SELECT name, position FROM {} WHERE name = ANY(%s) ORDER BY name FOR UPDATE").format(table), [names]
        )
        return dict(rows.fetchall())

    def reset(self) -> None:
        """Empty the projection tables and their checkpoints."""
        with self.db.begin() as sa_conn:
            self._empty(sa_conn.connection.driver_connection)

    def _empty(self, conn: psycopg.Connection) -> None:
        tables = [sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(p.table)) for p in self.projections]
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(tables)))
        conn.execute(
            sql.SQL("DELETE FROM {}.checkpoints WHERE name = ANY(%s)").format(sql.Identifier(self.schema)),
            [[p.name for p in self.projections]],
        )


def _balanced(projections: Sequence[Projection], count: int) -> list[list[Projection]]:
    """``projections`` in ``count`` groups of about equal server time (`set_based.SERVER_TIME`), the most costly
    placed first; those folded in Python, cheap and reading one page together, join the lightest group."""
    groups: list[list[Projection]] = [[] for _ in range(count)]
    loads = [0.0] * count
    in_sql = sorted((p for p in projections if p.sql), key=lambda p: -set_based.SERVER_TIME[p.name])
    for projection in in_sql:
        lightest = loads.index(min(loads))
        groups[lightest].append(projection)
        loads[lightest] += set_based.SERVER_TIME[projection.name]
    groups[loads.index(min(loads))].extend(p for p in projections if not p.sql)
    return [group for group in groups if group]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Folding creates many short-lived dicts and no reference cycles, while the row caches hold many live
    ones: the cyclic collector would rescan them again and again (measured: a third of the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def rebuild(db: Engine, *, check_only: bool = False, page_size: int = PAGE_SIZE,
            progress: Progress | None = None, archive: LogArchive | None = None) -> RebuildReport:
    """Replay the whole log into the scratch schema and compare it with the live projections.

    With ``check_only`` the live tables are left alone (the report says whether they equal the rebuild);
    otherwise the rebuilt tables take the live ones' place in one transaction, so readers never see a
    half-built read model, and the replaced rows are dropped.
    """
    started = datetime.now()
    live = ProjectionRunner(db, archive=archive)
    scratch = ProjectionRunner(db, schema=SCRATCH, archive=archive)
    with db.connect() as lock_conn:
        lock_conn.exec_driver_sql("SELECT pg_advisory_lock(%(k)s)", {"k": REBUILD_LOCK_KEY})
        try:
            live.catch_up(page_size=page_size)
            scratch.reset()
            target = min(live.checkpoints().values())
            while True:
                scratch.catch_up(upto=target, page_size=page_size, progress=progress, connections=REBUILD_CONNECTIONS)
                with db.begin() as sa_conn:
                    conn = sa_conn.connection.driver_connection
                    # Hold the live checkpoints still while comparing or swapping.
                    now = live._lock_checkpoints(conn)
                    if min(now.values()) != target or max(now.values()) != target:
                        target = max(now.values())
                        continue
                    tables = [_compare(conn, p.table) for p in live.projections]
                    if not check_only:
                        conn.execute("SELECT catalog.swap_read_models(%s)", [[p.table for p in live.projections]])
                        scratch._empty(conn)  # the replaced rows, now in the scratch schema
                    break
        finally:
            lock_conn.exec_driver_sql("SELECT pg_advisory_unlock(%(k)s)", {"k": REBUILD_LOCK_KEY})
            lock_conn.commit()
    seconds = (datetime.now() - started).total_seconds()
    return RebuildReport(position=target, events=target, seconds=seconds, tables=tables)


def _compare(conn: psycopg.Connection, table: str) -> TableComparison:
    """The live and rebuilt tables' rows compared. Equal counts and equal sums of the rows' 64-bit hashes mean
    the same rows, short of a collision (odds about 2^-64, and nothing in a read model picks its rows to collide):
    one pass over each table instead of sorting both twice; only tables found to differ are compared row by row,
    to count the rows that differ."""
    live = sql.SQL("{}.{}").format(sql.Identifier(LIVE), sql.Identifier(table))
    scratch = sql.SQL("{}.{}").format(sql.Identifier(SCRATCH), sql.Identifier(table))
    summary = sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {} t")
    live_rows, live_hashes = conn.execute(summary.format(live)).fetchone()
    rebuilt_rows, rebuilt_hashes = conn.execute(summary.format(scratch)).fetchone()
    differing = 0
    if (live_rows, live_hashes) != (rebuilt_rows, rebuilt_hashes):
        differing = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM ((TABLE {live} EXCEPT ALL TABLE {scratch})"
                "                      UNION ALL (TABLE {scratch} EXCEPT ALL TABLE {live})) d"
            ).format(live=live, scratch=scratch)
        ).fetchone()[0]
    return TableComparison(table, live_rows, rebuilt_rows, differing)


def labels_as_of(db: Engine, position: int, *, sha256s: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every image's label as the catalog knew it at ``position`` (from the label history projection)."""
    query = (
        "SELECT DISTINCT ON (sha256) sha256, label, label_id, annotator, ontology_version, source, labeled_at, position"
        " FROM projections.label_history WHERE position <= %(p)s"
        + (" AND sha256 = ANY(%(s)s)" if sha256s is not None else "")
        + " ORDER BY sha256, position DESC"
    )
    with db.connect() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        rows = cur.execute(query, {"p": position, "s": list(sha256s or [])}).fetchall()
        sa_conn.rollback()
    return rows
