"""Micro-batching on a real engine: concurrent requests share engine runs and each gets exactly its own rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.batching import MicroBatcher
from serving.engines import load_engine


@pytest.fixture
def engine(built_engine):
    cat, engine_id = built_engine
    loaded = load_engine(cat, engine_id)
    yield loaded
    loaded.close()


def _tiles(engine, seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *engine.input_size), dtype=np.uint8)


def test_concurrent_requests_share_runs_and_get_their_own_rows(engine) -> None:
    requests = [_tiles(engine, seed, n) for seed, n in enumerate([1, 3, 2, 1, 4, 1, 2, 2])]
    batcher = MicroBatcher(engine, max_batch=8, max_wait_ms=200).start()
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            outputs = list(pool.map(lambda tiles: batcher.submit(tiles).result(), requests))
    finally:
        batcher.stop()
    for tiles, got in zip(requests, outputs, strict=True):
        alone = engine.infer(tiles)
        np.testing.assert_allclose(got.probabilities, alone.probabilities, atol=1e-5)
        np.testing.assert_allclose(got.defect_cells, alone.defect_cells, atol=1e-5)
    stats = batcher.stats
    assert stats.requests == 8 and stats.tiles == 16
    assert stats.batches < 8  # some requests rode together
    assert max(stats.sizes) <= 8  # and no run exceeded max_batch


def test_an_image_larger_than_max_batch_runs_in_slices(engine) -> None:
    batcher = MicroBatcher(engine, max_batch=2, max_wait_ms=0).start()
    try:
        tiles = _tiles(engine, 9, 5)
        got = batcher.submit(tiles).result()
    finally:
        batcher.stop()
    assert got.probabilities.shape[0] == 5 and batcher.stats.sizes == {2: 2, 1: 1}
    np.testing.assert_allclose(got.probabilities, engine.infer(tiles).probabilities, atol=1e-5)


def test_tiles_of_the_wrong_size_are_refused_before_queueing(engine) -> None:
    batcher = MicroBatcher(engine)
    with pytest.raises(ValueError, match="tiles must be"):
        batcher.submit(np.zeros((1, 7, 7), np.uint8))
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(engine, max_batch=0)
