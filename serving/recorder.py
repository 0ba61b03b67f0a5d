"""Where the server's events go: appended to the catalog, or spooled on local disk while the catalog cannot be
reached, and synced back, in order, when it returns.

A caller's `record` returns once its events are durable in one place or the other. Concurrent callers are
group-committed: one writer thread appends everything waiting in one transaction. While anything is spooled,
new events are spooled behind it, so a part's later events never reach the catalog before its earlier ones.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

from catalog.store import AppendResult, NewEvent
from serving.spool import Spool, SpoolSyncReport, describe_error, is_unreachable

log = logging.getLogger(__name__)

Destination = Literal["catalog", "spool"]
Append = Callable[[list[NewEvent]], AppendResult]


@dataclass(frozen=True)
class RecorderStatus:
    catalog_reachable: bool
    spooled: int
    last_error: str | None
    last_sync: SpoolSyncReport | None
    set_aside: int = 0  # spooled events the catalog refused as bad data (`visionledger spool status`)


class EventRecorder:
    """Group-committing writer of events to the catalog, with the spool as its fallback."""

    def __init__(
        self,
        append: Append,
        spool: Spool,
        *,
        retry_seconds: float = 2.0,
        after_sync: Callable[[], object] | None = None,
    ):
        self._append = append
        self.spool = spool
        self.retry_seconds = retry_seconds
        self._after_sync = after_sync  # e.g. bring the projections up to date
        self._queue: queue.Queue[tuple[list[NewEvent], Future[Destination]] | None] = queue.Queue()
        self._reachable = True
        self._last_error: str | None = None
        self._last_sync: SpoolSyncReport | None = None
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="event-writer", daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name="spool-sync", daemon=True)

    def start(self) -> EventRecorder:
        self._writer.start()
        self._syncer.start()
        return self

    def stop(self) -> None:
        """Finish what was handed in, then stop; spooled events stay spooled for the next start."""
        self._queue.put(None)
        self._writer.join()
        self._stop.set()
        self._syncer.join()

    def record(self, events: Sequence[NewEvent]) -> Destination:
        """Make `events` durable (in the catalog, else in the spool) and say where they went."""
        return self.submit(events).result()

    def submit(self, events: Sequence[NewEvent]) -> Future[Destination]:
        future: Future[Destination] = Future()
        if not events:
            future.set_result("catalog")
            return future
        self._queue.put((list(events), future))
        return future

    @property
    def catalog_reachable(self) -> bool:
        """Whether the last append or sync reached the catalog (no spool to count: cheap enough for each request)."""
        return self._reachable

    def status(self) -> RecorderStatus:
        return RecorderStatus(self._reachable, self.spool.pending(), self._last_error, self._last_sync,
                              self.spool.set_aside_count())

    def sync_now(self) -> SpoolSyncReport:
        """Append what is spooled now (the background sync does this every `retry_seconds`)."""
        report = self.spool.sync(self._append)
        self._reachable, self._last_sync = True, report
        if report.set_aside:
            log.warning("the catalog refused %d spooled events as bad data: set aside (visionledger spool status)",
                        report.set_aside)
        if report.synced and self._after_sync:
            self._after_sync()
        return report

    # -- threads ---------------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            group = [first]
            while True:  # everything already waiting joins this group
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [g for g in group if g is not None]
            if items:
                self._write(items)
            if None in group:
                return

    def _write(self, items: list[tuple[list[NewEvent], Future[Destination]]]) -> None:
        events = [e for batch, _ in items for e in batch]
        try:
            destination = self._store(events)
        except Exception:
            # One caller's events were refused: write each caller's on its own so only that caller fails.
            for batch, future in items:
                try:
                    future.set_result(self._store(batch))
                except Exception as exc:  # noqa: BLE001 - handed to the caller waiting on it
                    future.set_exception(exc)
            return
        for _, future in items:
            future.set_result(destination)

    def _store(self, events: list[NewEvent]) -> Destination:
        if self._reachable and not self.spool.pending():
            try:
                self._append(events)
                return "catalog"
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                self._reachable, self._last_error = False, describe_error(exc)
                log.warning("catalog unreachable, spooling events: %s", self._last_error)
        self.spool.put(events)
        return "spool"

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.retry_seconds):
            if not self.spool.pending():
                continue
            started = time.perf_counter()
            try:
                report = self.sync_now()
            except Exception as exc:  # noqa: BLE001 - still unreachable: try again later
                self._last_error = describe_error(exc)
                continue
            log.info("synced %d spooled events in %.1f s", report.synced, time.perf_counter() - started)
