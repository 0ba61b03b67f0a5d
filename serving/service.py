"""The running inspection service: one verified engine, its micro-batcher, the rules, and the event recorder
with its spool, started and stopped together. The HTTP API is a thin layer over `InspectionService.inspect`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from catalog import Catalog
from catalog.lookups import part_events
from identity.stations import TokenView, load_view
from imaging.intake import Limits
from serving import DEFAULT_RATE_LIMIT
from serving.batching import MicroBatcher
from serving.decision import load_rules
from serving.engines import engine_to_serve, load_engine
from serving.inspection import Caller, Capture, ImageRefused, Inspection, Inspector, PartRecord
from serving.published_rules import rules_in_force
from serving.recorder import Destination, EventRecorder, is_unreachable
from serving.spool import Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """How the server runs (`visionledger serve` sets most fields; the rest keep their defaults there)."""

    engine_id: str | None = None  # default: the engine in service
    rules: Path | None = None  # default: the rule set published for `rules_line` (signed), else the packaged rules
    # Whose published rule set the server decides by, for every line it serves: that line's own publication,
    # else the plant-wide one (None: the plant-wide one).
    rules_line: str | None = None
    max_batch: int = 16  # tiles per engine run
    max_wait_ms: float = 5.0  # how long the first waiting tile waits for company
    threads: int | None = None  # engine threads (default: the backend's choice)
    spool: Path | None = None  # default: <home>/spool
    max_image_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 64_000_000
    # A request's whole body (a batch carries several images); refused before it is read, and quarantined.
    max_request_bytes: int = 128 * 1024 * 1024
    # How far captured_at may lie before and after the server's receive time (None: no bound, for a simulated
    # past sent as if live, as the demo does). A capture time outside is a client's clock or data gone wrong.
    max_capture_age: timedelta | None = timedelta(hours=24)
    max_capture_lead: timedelta | None = timedelta(minutes=5)  # the line's clocks drift a little ahead
    retry_seconds: float = 2.0  # between attempts to sync the spool
    catch_up_seconds: float = 1.0  # between projection catch-ups
    # Requests per client address, in the `limits` notation ("100/second", "5000/minute"); a moving window.
    rate_limit: str | None = DEFAULT_RATE_LIMIT  # None: no limit (benchmarks only: the command line sets one)
    # Between reads of the stations' tokens from the catalog: how soon a revocation takes effect.
    token_refresh_seconds: float = 5.0


class InspectionService:
    """Loads the engine (refusing one with broken lineage), then inspects images until stopped."""

    def __init__(self, cat: Catalog, config: ServeConfig | None = None):
        self.cat = cat
        self.config = config = config or ServeConfig()
        engine_id = config.engine_id or engine_to_serve(cat)
        self.engine = load_engine(cat, engine_id, threads=config.threads)
        published = None if config.rules else rules_in_force(cat, config.rules_line)
        self.rules = published.rules if published else load_rules(config.rules)
        # A rule naming a class the engine never predicts would silently never fire.
        self.rules.check_classes([c for c in self.engine.classes if c != self.engine.ok_class])
        self.inspector = Inspector(
            cat, self.engine, self.rules, limits=Limits(max_pixels=config.max_pixels, max_bytes=config.max_image_bytes)
        )
        self.batcher = MicroBatcher(self.engine, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms)
        self.spool = Spool(config.spool or cat.settings.home / "spool")
        self.recorder = EventRecorder(
            lambda events: cat.append(events, catch_up=False),
            self.spool,
            retry_seconds=config.retry_seconds,
        )
        # Checked on every request in memory, and read again every few seconds: the line goes on being
        # answered while the catalog is away, with the tokens it last read.
        self.tokens: TokenView = load_view(cat)
        self._stop = threading.Event()
        self._catch_up = threading.Thread(target=self._catch_up_loop, name="projections", daemon=True)
        self._token_refresh = threading.Thread(target=self._token_refresh_loop, name="tokens", daemon=True)

    def start(self) -> InspectionService:
        # Spooled events are decisions the log does not have yet: the next ones on their parts stand on them.
        self.inspector.parts.remember(self.spool.peek(self.spool.pending()), self.engine.engine_id)
        self.batcher.start()
        self.recorder.start()
        self._catch_up.start()
        self._token_refresh.start()
        return self

    def stop(self) -> None:
        self.batcher.stop()
        self.recorder.stop()
        self._stop.set()
        self._catch_up.join()
        self._token_refresh.join()
        self.spool.close()
        self.engine.close()

    async def inspect(self, data: bytes, capture: Capture, caller: Caller | None = None
                      ) -> tuple[Inspection, Destination]:
        """Judge one image sent by ``caller`` and record the events; raises ImageRefused (after quarantining it)
        for bad bytes."""
        try:
            prepared = await run_in_threadpool(self.inspector.prepare, data, capture)
        except ImageRefused as refused:
            await self.quarantine(refused, capture, caller=caller)
            raise
        # The part's record is read while the engine runs.
        recorded, output = await asyncio.gather(
            run_in_threadpool(self.part_record, capture.part_id),
            asyncio.wrap_future(self.batcher.submit(prepared.tiles.tiles)),
        )
        inspection = self.inspector.judge(prepared, output, recorded=recorded, caller=caller)
        destination = await asyncio.wrap_future(self.recorder.submit(inspection.events))
        return inspection, destination

    async def quarantine(self, refused: ImageRefused, capture: Capture | None, *request: object,
                         caller: Caller | None = None) -> None:
        """Record the ImageRejected of refused bytes sent by ``caller``, keyed by the capture's fields (or,
        without them, by what identifies the `request`) and what is known of the bytes, so that a retried
        request appends nothing."""
        rejected = refused.rejected
        if capture is not None:
            request = (capture.part_id, capture.camera, capture.captured_at.isoformat(), *request)
        key = "/".join(map(str, (*request, rejected.reason.value, rejected.sha256 or rejected.detail)))
        if len(key) > 200:  # the longest delivery key an ImageRejected takes
            key = f"serve/{hashlib.sha256(key.encode()).hexdigest()}"
        await asyncio.wrap_future(self.recorder.submit([self.inspector.rejection(refused, capture, key, caller)]))

    def part_record(self, part_id: str) -> PartRecord | None:
        """What the log holds about the part, or None while the catalog cannot be reached: the decision then
        stands on what this process judged and spooled."""
        if not self.recorder.catalog_reachable:
            return None
        try:
            return PartRecord.of(part_events(self.cat, part_id), self.engine.engine_id)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            return None

    def health(self) -> dict[str, object]:
        status = self.recorder.status()
        stats = self.batcher.stats
        return {
            "status": "ok" if status.catalog_reachable and not status.spooled else "degraded",
            "engine_id": self.engine.engine_id,
            "catalog": "reachable" if status.catalog_reachable else "unreachable",
            "spooled_events": status.spooled,
            "last_error": status.last_error,
            "rules_version": self.inspector.rules.rules_version,
            "threshold": self.inspector.rules.threshold, "threshold_from": self.inspector.threshold_from,
            "batches": {"runs": stats.batches, "tiles": stats.tiles, "mean_tiles": round(stats.mean_batch, 2)},
            "queued_requests": self.batcher.pending(),
        }

    def _catch_up_loop(self) -> None:
        # The server appends without waiting for the read models; they follow here, a second behind.
        while not self._stop.wait(self.config.catch_up_seconds):
            if not self.recorder.catalog_reachable:
                continue
            try:
                self.cat.catch_up()
            except Exception as exc:  # noqa: BLE001 - the catalog went away: the recorder notices and spools
                log.debug("projection catch-up failed: %s", exc)

    def _token_refresh_loop(self) -> None:
        while not self._stop.wait(self.config.token_refresh_seconds):
            try:
                self.tokens = load_view(self.cat)
            except Exception as exc:
                if not is_unreachable(exc):
                    log.exception("reading the stations' tokens failed; the last ones read stay in force")
                # the catalog is away: the tokens last read stay in force (expiry is judged on the clock)
