"""Replay through the server's inspection path, and the serving commands as a user runs them: `serve` over
real HTTP, refusing a broken engine, `spool status` / `spool sync`, `replay`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import cv2
import httpx
import numpy as np
import pyarrow.parquet as pq

import catalog
from catalog.events import PartDispositioned
from catalog.store import NewEvent
from serving.replay import replay
from serving.spool import Spool
from tests.builders import FORM_CAPTURED_AT, bearer, cli_env, free_port, run_cli, station_token


def _count(cat: catalog.Catalog, kind: str) -> int:
    return sum(1 for e in cat.store.read(0, limit=None) if e.type == kind)


def test_replay_records_each_prediction_once_and_reports_against_human_verdicts(built_engine) -> None:
    cat, engine_id = built_engine
    with cat.db.connect() as conn:
        images, labelled = conn.exec_driver_sql(
            "SELECT count(*), count(label) FROM projections.images WHERE NOT excluded").one()
    dispositions = _count(cat, "PartDispositioned")
    report = replay(cat, engine_id)
    assert (report.images, report.recorded, report.verdicts) == (images, images, labelled)
    assert 0 <= report.agreement <= 1 and report.parts > 0
    assert _count(cat, "PartDispositioned") == dispositions  # the line's real decisions stand
    table = pq.read_table(cat.lake.root / report.report_uri)
    assert table.num_rows == images and table["human_class"].null_count == images - labelled
    assert replay(cat, engine_id).recorded == 0  # replaying again appends nothing

    day = table["captured_at"][0].as_py().date()
    result = run_cli("replay", "--engine", engine_id, "--from", day.isoformat(), "--to", day.isoformat(),
                     "--no-record", env=cli_env(cat))
    one_day = json.loads(result.stdout)
    assert 0 < one_day["images"] < images and one_day["predictions_recorded"] == 0


def test_serve_answers_over_http_and_refuses_a_broken_engine(built_engine) -> None:
    cat, engine_id = built_engine
    env = cli_env(cat)
    refused = run_cli("serve", "--engine", "0" * 64, env=env, check=False)
    assert refused.returncode != 0 and "0" * 64 in refused.stderr

    token = station_token(cat)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "apps.cli", "serve", "--port", str(port), "--docs"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/healthz", timeout=2).json()
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.poll() else ""
                time.sleep(0.3)
        assert health == {"status": "ok"}
        assert httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200  # asked for with --docs
        assert httpx.get(f"{url}/v1/status", timeout=2).status_code == 401
        status = httpx.get(f"{url}/v1/status", headers=bearer(token), timeout=2).json()
        assert status["engine_id"] == engine_id and status["catalog"] == "reachable"
        image = cv2.imencode(".png", np.full((128, 128), 120, np.uint8))[1].tobytes()
        response = httpx.post(f"{url}/v1/inspect", files={"image": ("x.png", image)}, timeout=30,
                              headers=bearer(token), data={
            "part_id": "HTTP-1", "station": "st1", "camera": "cam1", "captured_at": FORM_CAPTURED_AT.isoformat()})
        assert response.status_code == 200, response.text
        assert response.json()["engine_id"] == engine_id
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert any(e.type == "PredictionRecorded" and e.payload["part_id"] == "HTTP-1"
               for e in cat.store.read(0, limit=None))


def test_spool_status_and_sync_from_the_command_line(built_engine) -> None:
    cat, _ = built_engine
    spool = Spool(cat.settings.home / "spool")
    events = [NewEvent(data=PartDispositioned(part_id=f"S-{i}", decision="reject", decided_by="e", decider="engine",
                                              rule="crack"),
                       occurred_at=datetime(2026, 3, 9, 9, i, tzinfo=UTC), event_id=uuid.uuid4())
              for i in range(3)]
    spool.put(events)
    spool.close()
    env = cli_env(cat)
    status = json.loads(run_cli("spool", "status", env=env).stdout)
    assert status["spooled_events"] == 3 and status["oldest"]["type"] == "PartDispositioned"
    synced = json.loads(run_cli("spool", "sync", env=env).stdout)
    assert synced == {"appended": 3, "already_in_catalog": 0, "set_aside": 0, "left_in_spool": 0}
    assert json.loads(run_cli("spool", "sync", env=env).stdout)["appended"] == 0
    with cat.db.connect() as conn:
        decided = conn.exec_driver_sql(
            "SELECT count(*) FROM projections.part_dispositions WHERE part_id LIKE 'S-%%'").scalar()
    assert decided == 3
