"""Every kind of writer at once (a CLI ingest, the inspection API, review corrections) with readers querying and
tailing: afterwards the global order has no holes, event ids are unique and the projections equal a rebuild."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

import catalog
from catalog.queries import ImageFilter, count_images, query_images
from ingestion.labels import record_correction
from serving.api import create_app
from serving.service import InspectionService, ServeConfig
from tests.builders import (
    bearer,
    cli_env,
    inspect_form,
    png,
    png_bytes,
    station_token,
    texture,
    write_manifest,
)
from tests.reliability.stored import with_readers

DELIVERED = 60  # images of the CLI ingest, appended 10 per transaction
API_THREADS, REQUESTS = 3, 5
CORRECTIONS = 12


def _collect(errors: list[BaseException], work: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as exc:  # surfaced by the test: a thread's exception would otherwise vanish
            errors.append(exc)
    return threading.Thread(target=run)


def test_writers_and_readers_at_once_leave_a_gap_free_log_and_sound_projections(built_engine, pg_server,
                                                                              tmp_path: Path):
    cat, _ = built_engine
    delivery = tmp_path / "delivery"
    for i in range(DELIVERED):
        png(delivery / f"c{i:03d}.png", texture(1000 + i))
    write_manifest(delivery, [{"path": f"c{i:03d}.png", "part_id": f"C-{i}"} for i in range(DELIVERED)])
    with cat.db.connect() as conn:
        labelled = conn.exec_driver_sql(
            "SELECT sha256, label FROM projections.images WHERE label IS NOT NULL ORDER BY sha256 LIMIT %(n)s",
            {"n": CORRECTIONS}).fetchall()
    env = cli_env(cat)
    start = cat.head()
    tail = subprocess.Popen([sys.executable, "-m", "apps.cli", "events", "tail", "--follow"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tailed: list[int] = []
    tail_reader = threading.Thread(target=lambda: tailed.extend(json.loads(line)["position"] for line in tail.stdout))
    tail_reader.start()
    errors: list[BaseException] = []
    writing = threading.Event()
    token = station_token(cat)
    service = InspectionService(cat, ServeConfig(spool=tmp_path / "spool", max_wait_ms=2, retry_seconds=0.2))
    with TestClient(create_app(service), headers=bearer(token)) as client:
        def inspect(thread: int) -> None:
            for n in range(REQUESTS):
                image = png_bytes(5000 + thread * 100 + n)
                response = client.post("/v1/inspect", files={"image": ("x.png", image)},
                                       data=inspect_form(f"A-{thread}-{n}", f"cam{n % 2 + 1}", n))
                assert response.status_code == 200 and response.json()["recorded_in"] == "catalog", response.text

        def correct() -> None:
            with catalog.open(cat.settings) as reviewer:  # a process of its own would hold its own connections
                for sha, held in labelled:
                    new = "scratch" if held != "scratch" else "spot"
                    record_correction(reviewer, sha256=sha, new_label=new, corrected_by="rev", reason="second look")

        def query() -> None:
            with catalog.open(with_readers(cat.settings, pg_server), role="analyst") as analyst:
                while writing.is_set():
                    assert count_images(analyst, ImageFilter(lines=("line1",))) >= 0
                    query_images(analyst, ImageFilter(labels=("scratch",)), limit=20)

        writing.set()
        ingest = subprocess.Popen([sys.executable, "-m", "apps.cli", "ingest", str(delivery), "--workers", "1",
                                   "--batch-size", "10", "--json"], env=env, stdout=subprocess.PIPE, text=True)
        threads = [_collect(errors, lambda t=t: inspect(t)) for t in range(API_THREADS)]
        threads += [_collect(errors, correct), _collect(errors, query)]
        for thread in threads:
            thread.start()
        out, _ = ingest.communicate(timeout=180)
        for thread in threads[:-1]:
            thread.join(timeout=180)
        writing.clear()
        threads[-1].join(timeout=60)
    assert not errors, errors
    assert ingest.returncode == 0 and json.loads(out)["ingested"] == DELIVERED, out

    head = cat.head()
    deadline = time.monotonic() + 30
    while (not tailed or tailed[-1] < head) and time.monotonic() < deadline:
        time.sleep(0.1)
    tail.kill()  # what it printed is all read; on a machine busy with I/O a polite SIGTERM took over 10 s
    tail.wait(timeout=60)
    tail_reader.join(timeout=60)

    with cat.db.connect() as conn:
        count, first, last, ids = conn.exec_driver_sql(
            "SELECT count(*), min(position), max(position), count(DISTINCT event_id) FROM catalog.events").one()
        kinds = dict(conn.exec_driver_sql(
            "SELECT metadata->>'source', count(*) FROM catalog.events WHERE position > %(start)s GROUP BY 1",
            {"start": start}).fetchall())
        corrected = conn.exec_driver_sql("SELECT count(*) FROM catalog.events WHERE position > %(start)s"
                                         " AND type = 'CorrectionRecorded'", {"start": start}).scalar()
    assert (first, last, count, ids) == (1, head, head, head)  # 1..head, no holes, every event id once
    assert tailed == list(range(1, head + 1))  # the tailing reader saw each event once, in order
    assert kinds["ingest:manifest.csv"] == DELIVERED and kinds["serve"] >= API_THREADS * REQUESTS, kinds
    assert corrected == CORRECTIONS
    cat.catch_up()
    report = cat.rebuild_projections(check_only=True)
    assert report.equal, [t for t in report.tables if not t.equal]
