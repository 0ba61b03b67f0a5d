"""Faults: `visionledger` commands killed by SIGKILL mid-work and run again, and PostgreSQL restarted under a
serving API; after each, `check_catalog` finds nothing lost and nothing doubled."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

import catalog
from catalog.consistency import check_catalog
from catalog.datasets import DatasetSpec
from catalog.datasets.build import build_dataset_version
from catalog.embedded_postgres import EmbeddedPostgres
from catalog.events import PartDispositioned
from catalog.lake import Lake, parquet_bytes
from catalog.store import NewEvent, event_id_for
from ingestion.ingest import ingest
from serving.spool import Spool
from tests.builders import bearer, cli_env, free_port, inspect_form, png_bytes, run_cli, station_token
from tests.conftest import TEMPLATE
from tests.engine_fixtures import copy_database, drop_database

SPEC = Path(__file__).resolve().parents[2] / "assets" / "dataset_specs" / "inspection_all.yaml"
T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)


def _kill_midway(args: list[str], env: dict[str, str], done: Callable[[], float], total: float, seed: int,
                 poll: float = 0.02) -> float | None:
    """Run `visionledger ARGS` and SIGKILL it once ``done()`` reaches a seeded fraction of ``total``; returns
    the progress it was killed at, or None when it finished first (the re-run then has nothing left to do)."""
    target = random.Random(seed).uniform(0.2, 0.7) * total
    process = subprocess.Popen([sys.executable, "-m", "apps.cli", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while process.poll() is None:
            if (reached := done()) >= target:
                process.kill()  # SIGKILL: no handler, no cleanup, as when the machine loses power
                process.wait()
                print(f"visionledger {args[0]} killed at {reached:,.1f} of {total:,.1f}")
                return reached
            time.sleep(poll)
        return None
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()


def _count(cat: catalog.Catalog, where: str = "true") -> int:
    with cat.db.connect() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM catalog.events WHERE {where}").scalar()


def _event_ids(cat: catalog.Catalog) -> dict[str, int]:
    """How many times each event id is stored, with the type (ids of a re-run must match one run's)."""
    with cat.db.connect() as conn:
        return dict(conn.exec_driver_sql(
            "SELECT type || ':' || event_id::text, count(*) FROM catalog.events GROUP BY 1").fetchall())


def _assert_consistent(cat: catalog.Catalog) -> None:
    cat.sync_lake()
    report = check_catalog(cat)
    assert report.ok, report.problems()
    assert report.events == report.head == report.lake_position


def _dispositions(n: int, *, prefix: str) -> list[NewEvent]:
    """``n`` part decisions spread over four days (several lake partitions), with ids a re-run reproduces."""
    return [NewEvent(data=PartDispositioned(part_id=f"{prefix}-{i}", decision="reject" if i % 7 == 0 else "accept",
                                            decided_by="engine-x", decider="engine", rule="crack"),
                     occurred_at=T0 + timedelta(days=i % 4, seconds=i), event_id=event_id_for(prefix, i))
            for i in range(n)]


@pytest.fixture
def reference(pg_server):
    """A second, empty catalog for the run that is never interrupted."""
    database = copy_database(pg_server, TEMPLATE)
    with catalog.open(database.settings) as cat:
        yield cat
    drop_database(database)


def test_ingest_killed_midway_then_rerun_equals_an_uninterrupted_ingest(database, cat, reference, factory_dir):
    args = ["ingest", str(factory_dir), "--workers", "1", "--batch-size", "4", "--actor", "test"]
    total = len((factory_dir / "manifest.csv").read_text().splitlines()) - 1
    _kill_midway(args, database.env(), lambda: _count(cat), total, seed=1)
    again = run_cli(*args, env=database.env(), check=False)
    # The uninterrupted run: the function the command calls, with the same arguments, in a catalog of its own.
    uninterrupted = ingest(reference, factory_dir / "manifest.csv", root=factory_dir, workers=1, batch_size=4,
                           actor="test")
    assert again.returncode == (1 if uninterrupted.rejected else 0) and "Traceback" not in again.stderr
    ids = _event_ids(cat)
    assert ids == _event_ids(reference) and set(ids.values()) == {1}
    assert _count(cat, "type = 'ImageIngested'") > total // 2
    _assert_consistent(cat)


def test_lake_sync_killed_midway_then_rerun_mirrors_each_event_once(database, cat, tmp_path):
    events = 24_000
    cat.append(_dispositions(events, prefix="lake"), catch_up=False)
    killed_at = _kill_midway(["lake", "sync", "--chunk", "600"], database.env(), cat.lake.synced_position, events,
                             seed=2)
    assert killed_at is None or killed_at < events
    run_cli("lake", "sync", "--chunk", "600", env=database.env())
    uninterrupted = Lake(tmp_path / "reference-lake")
    uninterrupted.sync(cat.db, chunk=600)
    assert [p.relative_to(cat.lake.root) for p in cat.lake.files()] == [
        p.relative_to(uninterrupted.root) for p in uninterrupted.files()]
    assert cat.duckdb().execute("SELECT count(*), count(DISTINCT position) FROM events").fetchone() == (
        events, events)
    _assert_consistent(cat)


def test_dataset_build_killed_midway_then_rerun_publishes_once_the_same_manifest(database, factory_cat):
    cat = factory_cat
    args = ["datasets", "build", str(SPEC), "--actor", "test"]
    # Its one milestone is the manifest reaching the lake; it appends the event milliseconds later, so a
    # seeded moment within 10 ms of it kills the build in that window (a manifest no event names yet).
    written: list[float] = []

    def ms_since_manifest() -> float:
        if not written and next((cat.lake.root / "datasets").glob("*/*/manifest.parquet"), None):
            written.append(time.monotonic())
        return (time.monotonic() - written[0]) * 1000 if written else 0.0

    _kill_midway(args, database.env(), ms_since_manifest, total=10, seed=3, poll=0.001)
    run_cli(*args, env=database.env())
    with cat.db.connect() as conn:
        published = conn.exec_driver_sql(
            "SELECT payload FROM catalog.events WHERE type = 'DatasetVersionPublished'").scalars().all()
    assert len(published) == 1
    manifest = (cat.lake.root / published[0]["manifest_uri"]).read_bytes()
    expected = parquet_bytes(build_dataset_version(
        cat.db, DatasetSpec.from_yaml(SPEC), position=published[0]["as_of_position"]).manifest)
    assert manifest == expected and hashlib.sha256(manifest).hexdigest() == published[0]["manifest_hash"]
    _assert_consistent(cat)


def test_spool_sync_killed_midway_then_rerun_appends_every_event_once(database, cat):
    events = _dispositions(12_000, prefix="spool")
    spool = Spool(cat.settings.home / "spool")
    spool.put(events)
    spool.close()
    killed_at = _kill_midway(["spool", "sync"], database.env(), lambda: _count(cat), len(events), seed=4)
    assert killed_at is None or killed_at < len(events)
    run_cli("spool", "sync", env=database.env())
    ids = _event_ids(cat)
    assert ids == {f"PartDispositioned:{e.event_id}": 1 for e in events}
    spool = Spool(cat.settings.home / "spool")
    assert spool.pending() == 0
    spool.close()
    _assert_consistent(cat)


def test_postgres_restarted_while_the_served_api_answers(built_engine, pg_server, tmp_path):
    cat, engine_id = built_engine
    token = station_token(cat)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "apps.cli", "serve", "--port", str(port), "--max-wait-ms", "2",
                               "--spool", str(tmp_path / "spool")], env=cli_env(cat),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    postgres = EmbeddedPostgres(pg_server.home)
    answers: list[httpx.Response] = []
    requests = 30
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status = httpx.get(f"{url}/v1/status", headers=bearer(token), timeout=2).json()
                assert status["engine_id"] == engine_id
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)

        def send() -> None:
            with httpx.Client(base_url=url, timeout=30, headers=bearer(token)) as client:
                for i in range(requests):
                    image = png_bytes(200 + i)
                    answers.append(client.post("/v1/inspect", files={"image": (f"{i}.png", image)},
                                               data=inspect_form(f"R-{i // 2}", f"cam{i % 2 + 1}", i)))
                    time.sleep(0.05)

        sender = threading.Thread(target=send)
        sender.start()
        while len(answers) < 6 and sender.is_alive():
            time.sleep(0.02)
        postgres.stop()
        while len(answers) < 18 and sender.is_alive():
            time.sleep(0.02)
        postgres.start()
        sender.join(timeout=120)
        assert not sender.is_alive()
        assert [a.status_code for a in answers] == [200] * requests, [a.text for a in answers if a.status_code != 200]
        assert "spool" in {a.json()["recorded_in"] for a in answers}  # some were answered while it was down
        deadline = time.monotonic() + 30
        def spooled() -> int:
            return httpx.get(f"{url}/v1/status", headers=bearer(token), timeout=5).json()["spooled_events"]

        while spooled() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert spooled() == 0
    finally:
        if not postgres.running():
            postgres.start()
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()
    with cat.db.connect() as conn:
        predicted = conn.exec_driver_sql(
            "SELECT payload->>'sha256', count(*) FROM catalog.events WHERE type = 'PredictionRecorded'"
            " AND payload->>'part_id' LIKE 'R-%%' GROUP BY 1").fetchall()
    assert dict(predicted) == {a.json()["sha256"]: 1 for a in answers}
    _assert_consistent(cat)

