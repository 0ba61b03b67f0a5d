"""Micro-batching: tiles of concurrent requests run through the engine together.

A network runs a batch of n tiles in much less than n times one tile's time, and a busy line sends several
images at once. One thread owns the engine: it takes the first waiting request, waits at most `max_wait_ms`
for others until `max_batch` tiles are gathered, runs them as one batch and hands each request its rows.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from serving.engines.base import Engine, EngineOutput


@dataclass
class BatchStats:
    batches: int = 0
    tiles: int = 0
    requests: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # tiles per batch -> how many batches

    @property
    def mean_batch(self) -> float:
        return self.tiles / self.batches if self.batches else 0.0


class MicroBatcher:
    """Runs `engine` on the tiles submitted from any thread, batching what arrives within `max_wait_ms`."""

    def __init__(self, engine: Engine, *, max_batch: int = 16, max_wait_ms: float = 5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, not {max_batch} and {max_wait_ms}")
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: queue.Queue[tuple[np.ndarray, Future[EngineOutput]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)

    def start(self) -> MicroBatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def submit(self, tiles: np.ndarray) -> Future[EngineOutput]:
        """Queue uint8 tiles (N x H x W, the engine's input size); the future gets their N rows."""
        if tiles.ndim != 3 or tuple(tiles.shape[1:]) != tuple(self.engine.input_size) or not len(tiles):
            raise ValueError(f"tiles must be N x {self.engine.input_size} with N >= 1, not {tiles.shape}")
        future: Future[EngineOutput] = Future()
        self._queue.put((tiles, future))
        return future

    def pending(self) -> int:
        return self._queue.qsize()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, count = [first], len(first[0])
            deadline = time.perf_counter() + self.max_wait
            stop = False
            while count < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
                count += len(item[0])
            self._run(group)
            if stop:
                return

    def _run(self, group: list[tuple[np.ndarray, Future[EngineOutput]]]) -> None:
        tiles = np.concatenate([t for t, _ in group]) if len(group) > 1 else group[0][0]
        try:
            # A single image may hold more tiles than max_batch: run it in max_batch slices.
            parts = [self.engine.infer(tiles[i : i + self.max_batch]) for i in range(0, len(tiles), self.max_batch)]
        except Exception as exc:  # noqa: BLE001 - every waiting request hears of it
            for _, future in group:
                future.set_exception(exc)
            return
        probabilities = np.concatenate([p.probabilities for p in parts])
        cells = np.concatenate([p.defect_cells for p in parts])
        self.stats.batches += len(parts)
        self.stats.tiles += len(tiles)
        self.stats.requests += len(group)
        for p in parts:
            n = len(p.probabilities)
            self.stats.sizes[n] = self.stats.sizes.get(n, 0) + 1
        start = 0
        for t, future in group:
            end = start + len(t)
            future.set_result(EngineOutput(probabilities[start:end], cells[start:end]))
            start = end
