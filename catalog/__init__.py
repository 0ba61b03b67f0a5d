"""The catalog: visionledger's system of record, an append-only event log on PostgreSQL with the read models,
the Parquet mirror and the DuckDB views derived from it.

    import catalog
    from datetime import datetime, UTC
    from catalog.events import OntologyPublished

    with catalog.open() as cat:  # starts the embedded PostgreSQL unless VISIONLEDGER_DATABASE_URL is set
        cat.record(OntologyPublished(version=1, classes=["ok", "scratch"]), occurred_at=datetime.now(UTC))
        print(cat.head())
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from catalog.archive import LogArchive
from catalog.blobs import BlobStore, LocalBlobStore
from catalog.database import (
    ConnectionUrls,
    connection_urls,
    current_revision,
    libpq_dsn,
    make_engine,
    upgrade,
)
from catalog.errors import (
    CatalogError,
    ConcurrencyError,
    EventIdConflict,
    EventValidationError,
    ImmutableEventError,
)
from catalog.events import EventData
from catalog.lake import Lake, SyncReport
from catalog.partitions import ensure_partitions_at
from catalog.projections import ProjectionRunner, RebuildReport, labels_as_of, rebuild
from catalog.replica import ReplicaReads
from catalog.settings import Settings
from catalog.store import AppendResult, EventStore, NewEvent, PermissionDenied, RecordedEvent, event_id_for

__all__ = [
    "AppendResult", "Catalog", "CatalogError", "ConcurrencyError", "EventIdConflict", "EventStore",
    "EventValidationError", "ImmutableEventError", "NewEvent", "PermissionDenied", "RecordedEvent", "Settings",
    "event_id_for", "open",
]

HEAD_REVISION = "0022"
Progress = Callable[[int, int], None]  # called with (done, total) as long work advances


class Catalog:
    """One open catalog: its event store, projections and lake, as one role (``app`` writes; readers read)."""

    def __init__(self, settings: Settings, urls: ConnectionUrls, *, role: str = "app"):
        self.settings = settings
        self.urls = urls
        self.role = role
        url = urls.app if role == "app" else urls.readers.get(role)
        if url is None:
            raise CatalogError(f"unknown role {role!r}: use 'app' or one of {sorted(urls.readers)}")
        self.db: Engine = make_engine(url)  # SQLAlchemy's pool; `serving.engines` are inference engines
        replica_url = urls.on_replica(url)
        self.replica = None if replica_url is None else ReplicaReads(
            make_engine(replica_url), wait=settings.replica_wait, max_lag=settings.replica_max_lag)
        self._appended: int | None = None  # the last position this catalog appended: its reads must see it
        self.lake = Lake(settings.lake_root)
        self.archive = LogArchive(settings.lake_root)  # the log's archived partitions, read below its horizon
        self.store = EventStore(self.db, self.archive)
        self.projections = ProjectionRunner(self.db, archive=self.archive)
        self.blobs: BlobStore = LocalBlobStore(settings.blob_root)

    # -- writing -----------------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], *, expected_versions: Mapping[str, int] | None = None,
               catch_up: bool = True) -> AppendResult:
        """Append events atomically (see :meth:`EventStore.append`), then bring the projections up to date
        unless ``catch_up`` is False (bulk loaders catch up once at the end)."""
        result = self._remember(self.store.append(events, expected_versions=expected_versions))
        if catch_up and result.appended:
            self.projections.catch_up()
        return result

    def append_batches(self, batches: Iterable[Sequence[NewEvent]]) -> Iterator[AppendResult]:
        """Append each of ``batches`` (see :meth:`EventStore.append_batches`: each atomic, the next prepared
        while this one is stored), yielding each one's result. The projections are not caught up: a bulk
        loader catches up once at the end."""
        for result in self.store.append_batches(batches):
            yield self._remember(result)

    def _remember(self, result: AppendResult) -> AppendResult:
        """``result``, its last position kept as the least a read after it must see (read-your-writes)."""
        if result.positions:
            self._appended = max(self._appended or 0, *result.positions)
        return result

    def record(self, data: EventData, *, occurred_at: datetime, actor: str | None = None, source: str | None = None,
               event_id: uuid.UUID | None = None, causation_id: str | None = None,
               correlation_id: str | None = None, expected_version: int | None = None,
               signed: Mapping[str, str] | None = None) -> AppendResult:
        """Append one event, with who (``actor``) and what (``source``) caused it in its metadata, and the
        signature of a signed act (``signed``: `identity.signatures.Signature.metadata()`, its signer the actor)."""
        metadata = {"actor": actor, "source": source, "causation_id": causation_id, "correlation_id": correlation_id,
                    **(signed or {})}
        event = NewEvent(data=data, occurred_at=occurred_at, event_id=event_id or uuid.uuid4(),
                         metadata={k: v for k, v in metadata.items() if v is not None})
        expected = {event.stream_id: expected_version} if expected_version is not None else None
        return self.append([event], expected_versions=expected)

    # -- reading -----------------------------------------------------------------------------------------

    def head(self) -> int:
        """The position of the last event."""
        return self.store.head()

    def catch_up(self) -> int:
        """Apply pending events to every projection; returns the position they reached. Writers call it once
        a bulk append is done; readers go through `read`."""
        return self.projections.catch_up()

    def refresh(self, *, at_least: int | None = None, wait: float = 10.0) -> None:
        """Make the primary's read models as fresh as this role can: a writer folds every event appended so
        far; a read-only role, which cannot fold, waits up to ``wait`` seconds for the writers to reach
        ``at_least`` (a position it knows was appended) and raises `CatalogError` if they do not. The one
        freshness rule every reader follows, through `reader`."""
        if self.role == "app":
            self.projections.catch_up()
            return
        if at_least is None:
            return  # what the writers have folded: a reader cannot ask for more
        deadline = time.monotonic() + wait
        while (reached := min(self.projections.checkpoints().values())) < at_least:
            if time.monotonic() > deadline:
                raise CatalogError(f"the read models are at position {reached}, behind {at_least}, after {wait:.0f} s:"
                                   " is a writer (the server, an ingest, `visionledger projections catch-up`) running?")
            time.sleep(0.05)

    def reader(self, *, at_least: int | None = None, latest: bool = False, wait: float = 10.0) -> Engine:
        """The server a read goes to, the one place that decides it. A writer first folds on the primary (the
        replica receives the folds). Then the replica, when there is one that keeps up (`ReplicaReads`) and has
        folded what this reader must see: ``at_least`` and everything this catalog appended. Else the primary,
        made fresh there (`refresh`). ``latest``: the primary always, for a decision that must not rest on a
        replica's lag (what to append next, who may act)."""
        if self.role == "app":
            self.projections.catch_up()
        needed = max((p for p in (at_least, self._appended) if p is not None), default=None)
        if not latest and self.replica is not None and self.replica.serves(needed):
            return self.replica.engine
        if self.role != "app":
            self.refresh(at_least=at_least, wait=wait)
        return self.db

    @contextmanager
    def read(self, *, at_least: int | None = None, latest: bool = False, settings: Mapping[str, str] | None = None,
             wait: float = 10.0) -> Iterator[Connection]:
        """A connection to read the read models through, on the server `reader` chooses, with PostgreSQL
        ``settings`` for this read alone (e.g. ``{"work_mem": "64MB"}``); rolled back when the block ends:
        reads write nothing."""
        with self.reader(at_least=at_least, latest=latest, wait=wait).connect() as conn:
            for name, value in (settings or {}).items():
                conn.exec_driver_sql("SELECT set_config(%(n)s, %(v)s, true)", {"n": name, "v": value})
            try:
                yield conn
            finally:
                conn.rollback()

    def position_at(self, moment: datetime) -> int:
        """The last position recorded at or before ``moment``: the catalog as it was then."""
        return self.store.position_at(moment)

    def labels_as_of(self, *, position: int | None = None, at: datetime | None = None,
                     sha256s: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Current labels as the catalog knew them at a position or a (timezone-aware) time."""
        if (position is None) == (at is None):
            raise CatalogError("give exactly one of position= or at=")
        if at is not None:
            position = self.position_at(at)
        return labels_as_of(self.reader(at_least=position), position, sha256s=sha256s)

    def rebuild_projections(self, *, check_only: bool = False, progress: Progress | None = None) -> RebuildReport:
        """Replay the log into fresh tables; compare with the live ones, and replace them unless ``check_only``."""
        return rebuild(self.db, check_only=check_only, progress=progress, archive=self.archive)

    def sync_lake(self, *, chunk: int = 100_000, progress: Progress | None = None) -> SyncReport:
        """Mirror new events into the lake's Parquet files (see :class:`catalog.lake.Lake`)."""
        return self.lake.sync(self.db, chunk=chunk, progress=progress)

    def duckdb(self):
        """A DuckDB connection with an ``events`` view over the lake."""
        return self.lake.duckdb()

    def close(self) -> None:
        self.db.dispose()
        if self.replica is not None:
            self.replica.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(settings: Settings | None = None, *, role: str = "app", database: str | None = None,
         migrate: bool | None = None) -> Catalog:  # noqa: A001 - `catalog.open()` reads best
    """Open the catalog described by ``settings`` (default: the environment).

    Without ``VISIONLEDGER_DATABASE_URL`` the embedded PostgreSQL is started and migrated. With it, nothing
    is started, and migrations run only when ``migrate=True``; an outdated schema is reported.
    """
    settings = settings or Settings.from_env()
    urls = connection_urls(settings, database=database)
    migrate = settings.embedded if migrate is None else migrate
    if migrate:
        if current_revision(urls.owner) != HEAD_REVISION:
            upgrade(urls.owner)
        else:  # the embedded server's start keeps partitions ahead, as `db upgrade` does
            ensure_partitions_at(libpq_dsn(urls.owner))
    elif current_revision(urls.app) != HEAD_REVISION:
        raise CatalogError(
            f"the catalog schema at {settings.database_url or 'the embedded server'} is not at revision "
            f"{HEAD_REVISION}: run `visionledger db upgrade` (as the schema owner)"
        )
    return Catalog(settings, urls, role=role)
