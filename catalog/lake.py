"""The Parquet mirror of the event log (``lake/events/type=…/day=…/``) and DuckDB views over it.

Exactly once per position range, even when killed: a sync writes a range's files into a staging folder,
then records its intent (the list of renames) in ``_sync/pending.json``, then renames the files into
place, then advances ``_sync/state.json``. A run that finds an intent rolls it forward; one that finds
staging files without an intent discards them. File names carry their position range, so a range is
never written under two names.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from catalog.filelock import FileLock

if TYPE_CHECKING:
    import duckdb

EVENT_SCHEMA = pa.schema([
    ("position", pa.int64()),
    ("event_id", pa.string()),
    ("stream_id", pa.string()),
    ("version", pa.int64()),
    ("schema_version", pa.int32()),
    ("payload", pa.string()),  # JSON text: DuckDB's json functions read it directly
    ("metadata", pa.string()),
    ("occurred_at", pa.timestamp("us", tz="UTC")),
    ("recorded_at", pa.timestamp("us", tz="UTC")),
])
PARTITION_TYPES = {"type": "VARCHAR", "day": "DATE"}


@dataclass(frozen=True)
class SyncReport:
    start: int  # last position mirrored before this run
    end: int  # last position mirrored after it
    files: int
    seconds: float

    @property
    def events(self) -> int:
        return self.end - self.start


class Lake:
    """The lake directory: the event mirror (``events/``) and, beside it, the tables others derive and write here
    (dataset manifests, evaluations, breakdowns, drift, replays, predictions, heatmaps)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.events_dir = self.root / "events"
        self._sync_dir = self.root / "_sync"
        self._state = self._sync_dir / "state.json"
        self._pending = self._sync_dir / "pending.json"
        self._staging = self._sync_dir / "staging"

    def quarantined(self) -> dict[str, int]:
        """The rows quarantined so far (the ImageRejected events mirrored), by reason code: a read of that
        event type's folder alone, not of the whole log."""
        rows = self.duckdb().execute(
            "SELECT payload->>'reason', count(*) FROM events WHERE type = 'ImageRejected' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return dict(rows)

    def synced_position(self) -> int:
        """The last event position mirrored in the lake."""
        return json.loads(self._state.read_text())["position"] if self._state.exists() else 0

    def sync_interrupted(self) -> bool:
        """Whether a killed sync left an intent or staged files (the next sync recovers them)."""
        return self._pending.exists() or self._staging.exists()

    def sync(self, engine: Engine, *, chunk: int = 100_000, upto: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> SyncReport:
        """Mirror every event after the last synced position (up to ``upto`` or the head) into Parquet."""
        with FileLock(self._sync_dir / "lock"):
            self._recover()
            return self._sync(engine, chunk=chunk, upto=upto, progress=progress)

    def _sync(self, engine: Engine, *, chunk: int, upto: int | None,
              progress: Callable[[int, int], None] | None) -> SyncReport:
        started = time.perf_counter()
        start = position = self.synced_position()
        files = 0
        with engine.connect() as sa_conn:
            conn: psycopg.Connection = sa_conn.connection.driver_connection
            head = conn.execute("SELECT coalesce(max(position), 0) FROM catalog.events").fetchone()[0]
            sa_conn.rollback()
            target = head if upto is None else min(upto, head)
            while position < target:
                end = min(position + chunk, target)
                files += self._sync_range(conn, position, end)
                sa_conn.rollback()
                position = end
                if progress:
                    progress(position - start, target - start)
        return SyncReport(start=start, end=position, files=files, seconds=time.perf_counter() - started)

    def _sync_range(self, conn: psycopg.Connection, after: int, end: int) -> int:
        """Write the events ``after < position <= end``: stage, record intent, place, advance the state."""
        rows = conn.execute(
            "SELECT position, event_id::text, stream_id, version, schema_version, payload::text, metadata::text,"
            " occurred_at, recorded_at, type FROM catalog.events WHERE position > %s AND position <= %s"
            " ORDER BY position",
            [after, end],
        ).fetchall()
        if len(rows) != end - after:
            raise RuntimeError(f"positions {after + 1}..{end} hold {len(rows)} events: the log has a gap")
        groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
        for row in rows:
            groups[(row[9], row[7].astimezone(UTC).date().isoformat())].append(row[:9])
        name = f"part-{after + 1:020d}-{end:020d}.parquet"
        staging = self._staging / f"{after + 1:020d}-{end:020d}"
        renames = []
        for (event_type, day), group in sorted(groups.items()):
            relative = Path(f"type={event_type}") / f"day={day}" / name
            columns = list(zip(*group, strict=True))
            table = pa.Table.from_arrays(
                [pa.array(col, type=field.type) for col, field in zip(columns, EVENT_SCHEMA, strict=True)],
                schema=EVENT_SCHEMA,
            )
            staged = staging / relative
            staged.parent.mkdir(parents=True, exist_ok=True)
            import pyarrow.parquet as pq  # noqa: PLC0415 - the writer pulls in much; only syncs need it

            pq.write_table(table, staged, compression="zstd")
            fsync_file(staged)
            renames.append((str(staged.relative_to(self.root)), str(Path("events") / relative)))
        _write_atomically(self._pending, {"after": after, "end": end, "renames": renames})
        self._roll_forward()
        return len(renames)

    def _recover(self) -> None:
        if self._pending.exists():
            self._roll_forward()
        if self._staging.exists():  # staged by a run killed before it recorded its intent: discard
            shutil.rmtree(self._staging)

    def _roll_forward(self) -> None:
        intent = json.loads(self._pending.read_text())
        for staged, final in intent["renames"]:
            source, target = self.root / staged, self.root / final
            if source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
                fsync_dir(target.parent)
            elif not target.exists():
                raise RuntimeError(f"lake sync intent names {staged}, which is neither staged nor placed")
        _write_atomically(self._state, {"position": intent["end"]})
        self._pending.unlink()
        shutil.rmtree(self._staging, ignore_errors=True)

    # -- derived tables ----------------------------------------------------------------------------------

    @staticmethod
    def heatmaps_of(model_id: str) -> str:
        """Where the `heatmaps` asset keeps a model's explanations, relative to the lake's root: one row per
        image and kind (sha256, model_id, kind, class, uri)."""
        return f"heatmaps/{model_id}/heatmaps.parquet"

    def heatmap_uris(self) -> set[str]:
        """The blob URIs every model's heatmaps name: blobs the lake keeps, which no event names."""
        paths = sorted(self.root.glob(self.heatmaps_of("*")))
        return {uri for path in paths for uri in pq.read_table(path, columns=["uri"]).column("uri").to_pylist()}

    def write_parquet(self, relative: str | Path, table: pa.Table) -> Path:
        """Write a derived table (a manifest, a breakdown, a report) at ``relative`` under the lake, atomically
        and reproducibly (see :func:`parquet_bytes`)."""
        return self.write_bytes(relative, parquet_bytes(table))

    def write_bytes(self, relative: str | Path, data: bytes) -> Path:
        """Write a file at ``relative`` under the lake root atomically (a reader sees the old file or the new)."""
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise ValueError(f"{relative}: lake files live under the lake root")
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return path

    # -- reading -----------------------------------------------------------------------------------------

    def files(self) -> list[Path]:
        return sorted(self.events_dir.glob("type=*/day=*/*.parquet"))

    def duckdb(self, connection: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with an ``events`` view over the mirror (``type`` and ``day`` from the paths)."""
        import duckdb  # noqa: PLC0415 - only readers of the lake need DuckDB

        con = connection or duckdb.connect()
        if self.files():
            pattern = str(self.events_dir / "type=*" / "day=*" / "*.parquet").replace("'", "''")
            hive_types = "{" + ", ".join(f"'{k}': '{v}'" for k, v in PARTITION_TYPES.items()) + "}"
            con.execute(
                f"CREATE OR REPLACE VIEW events AS SELECT * FROM read_parquet('{pattern}',"
                f" hive_partitioning = true, hive_types = {hive_types})"
            )
        else:
            columns = ", ".join(
                f"NULL::{_duck_type(f.type)} AS {f.name}" for f in EVENT_SCHEMA
            ) + ", NULL::VARCHAR AS type, NULL::DATE AS day"
            con.execute(f"CREATE OR REPLACE VIEW events AS SELECT {columns} WHERE false")
        return con


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as Parquet bytes that depend only on its content (and the pyarrow version): fixed writer
    settings, no schema metadata, no timestamps. Their hash can name what they hold."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd", compression_level=3,
                   row_group_size=1 << 20)
    return sink.getvalue().to_pybytes()


def _duck_type(arrow_type: pa.DataType) -> str:
    return {
        pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.string(): "VARCHAR",
    }.get(arrow_type, "TIMESTAMPTZ")


def _write_atomically(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(content, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
