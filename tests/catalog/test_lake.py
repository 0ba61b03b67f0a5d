"""The Parquet mirror: exactly once per position range, even when the sync is killed, and readable by DuckDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import psycopg
import pytest

import catalog
from catalog.embedded_postgres import OWNER_ROLE
from catalog.synthetic import FactoryShape, ontology_event, simulated_day

SHAPE = FactoryShape(lines=2, stations=2, cameras=2, parts_per_line=150)


@pytest.fixture
def loaded(cat: catalog.Catalog) -> catalog.Catalog:
    for day in (date(2026, 3, 2), date(2026, 3, 3)):
        cat.append([ontology_event(), *simulated_day(day, shape=SHAPE)], catch_up=False)
    return cat


def _assert_lake_equals_table(cat: catalog.Catalog) -> None:
    con = cat.duckdb()
    lake = con.execute(
        "SELECT position, event_id, stream_id, version, type, payload::JSON, occurred_at FROM events ORDER BY position"
    ).fetchall()
    table = [(e.position, str(e.event_id), e.stream_id, e.version, e.type, e.payload, e.occurred_at)
             for e in cat.store.read(limit=None)]
    assert len(lake) == len(table) == cat.head()
    assert [row[:5] for row in lake] == [row[:5] for row in table]
    assert [json.loads(row[5]) for row in lake] == [row[5] for row in table]
    assert [row[6] for row in lake] == [row[6] for row in table]


def test_sync_partitions_by_type_and_day_and_is_incremental(loaded: catalog.Catalog):
    first = loaded.sync_lake(chunk=4_000)
    assert first.start == 0 and first.end == loaded.head()
    partitions = {(p.parent.parent.name, p.parent.name) for p in loaded.lake.files()}
    assert ("type=ImageIngested", "day=2026-03-02") in partitions
    assert ("type=OntologyPublished", "day=2026-01-01") in partitions
    assert loaded.sync_lake().events == 0  # nothing new: nothing written
    loaded.append(list(simulated_day(date(2026, 3, 4), shape=FactoryShape(lines=1, parts_per_line=3))))
    assert loaded.sync_lake().start == first.end
    _assert_lake_equals_table(loaded)
    by_day = loaded.duckdb().execute(
        "SELECT day, count(*) FROM events WHERE type = 'ImageIngested' GROUP BY day ORDER BY day").fetchall()
    assert [(d.isoformat(), n) for d, n in by_day] == [("2026-03-02", 1200), ("2026-03-03", 1200), ("2026-03-04", 12)]


def test_empty_lake_still_has_an_events_view(cat: catalog.Catalog):
    assert cat.duckdb().execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_sync_killed_with_sigkill_then_rerun_leaves_no_duplicate_and_no_gap(loaded: catalog.Catalog, database):
    command = [sys.executable, "-m", "apps.cli", "lake", "sync", "--chunk", "300"]
    state = loaded.lake.root / "_sync" / "state.json"
    kills = 0
    # Each run is killed once it has mirrored a range, a little later each time (mid-range or between ranges).
    # As soon as the test sees that progress it asks for the log exclusively: the run may finish the range it is
    # in, but its next read of the log waits, so a busy machine cannot let it finish the whole sync before the
    # kill.
    with psycopg.connect(database.dsn(OWNER_ROLE)) as lock_conn, ThreadPoolExecutor(1) as locker:
        for delay in (0.0, 0.02, 0.05):
            before = loaded.lake.synced_position()
            proc = subprocess.Popen(command, env=database.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if state.exists() and json.loads(state.read_text())["position"] > before:
                    break
                time.sleep(0.01)
            locked = locker.submit(lock_conn.execute, "LOCK TABLE catalog.events IN ACCESS EXCLUSIVE MODE")
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait()
            locked.result(timeout=30)  # granted once the killed run's session has ended or waits behind it
            lock_conn.rollback()
    assert kills == 3, "a sync finished before it could be killed"
    assert 0 < loaded.lake.synced_position() < loaded.head()
    subprocess.run(command, env=database.env(), check=True, capture_output=True)
    _assert_lake_equals_table(loaded)


def test_crash_while_placing_files_is_rolled_forward(loaded: catalog.Catalog, monkeypatch):
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:  # after the intent is recorded, in the middle of placing a range's files
            raise OSError("disk vanished")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk vanished"):
        loaded.sync_lake(chunk=5_000)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (loaded.lake.root / "_sync" / "pending.json").exists()
    loaded.sync_lake(chunk=5_000)
    assert not (loaded.lake.root / "_sync" / "pending.json").exists()
    _assert_lake_equals_table(loaded)
