"""The inspection HTTP API against a real engine, PostgreSQL and lake: the contract, bad requests, part
decisions, and the spool while PostgreSQL is stopped mid-stream."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import catalog
from catalog.embedded_postgres import EmbeddedPostgres
from serving.api import create_app
from serving.engines import LineageError
from serving.service import InspectionService, ServeConfig
from tests.builders import FORM_CAPTURED_AT, bearer, inspect_form, png_bytes, station_token


def _events(cat: catalog.Catalog, kind: str) -> list:
    return [e for e in cat.store.read(0, limit=None) if e.type == kind]


@pytest.fixture
def client(built_engine, tmp_path: Path):
    cat, engine_id = built_engine
    token = station_token(cat)
    service = InspectionService(cat, ServeConfig(spool=tmp_path / "spool", max_image_bytes=2_000_000,
                                                 max_wait_ms=2, retry_seconds=0.2))
    with TestClient(create_app(service, docs=True), headers=bearer(token)) as c:
        c.service = service
        yield c


def test_inspect_records_the_image_the_prediction_and_the_part_decision(client, built_engine) -> None:
    cat, engine_id = built_engine
    first = client.post("/v1/inspect", files={"image": ("a.png", png_bytes(1))},
                        data=inspect_form("P-1", "cam1"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["engine_id"] == engine_id and body["recorded_in"] == "catalog"
    assert set(body["scores"]) == set(client.service.engine.classes)
    assert abs(sum(body["scores"].values()) - 1) < 1e-4
    assert body["class"] in body["scores"] and body["part"]["images"] == 1
    assert body["part"]["rules_version"].startswith("default@1+")

    second = client.post("/v1/inspect", files={"image": ("b.png", png_bytes(2))},
                         data=inspect_form("P-1", "cam2", 1))
    assert second.json()["part"]["images"] == 2  # the decision covers both cameras of the part

    ingested = [e for e in _events(cat, "ImageIngested") if e.payload["part_id"] == "P-1"]
    assert [e.payload["camera"] for e in ingested] == ["cam1", "cam2"]
    assert ingested[0].payload["line"] == "line1"
    assert ingested[0].occurred_at == FORM_CAPTURED_AT  # capture time, not now
    predictions = [e for e in _events(cat, "PredictionRecorded") if e.payload["part_id"] == "P-1"]
    assert [e.payload["engine_id"] for e in predictions] == [engine_id] * 2
    assert [e.payload["sha256"] for e in predictions] == [body["sha256"], second.json()["sha256"]]
    decisions = [e for e in _events(cat, "PartDispositioned") if e.payload["part_id"] == "P-1"]
    assert decisions and decisions[0].payload["engine_id"] == engine_id
    assert decisions[-1].payload["decision"] == second.json()["part"]["decision"]
    assert cat.blobs.read(body["sha256"]) == png_bytes(1)  # the bytes are kept, content-addressed

    # The same image sent again is one image: no new prediction, no new decision.
    again = client.post("/v1/inspect", files={"image": ("a.png", png_bytes(1))},
                        data=inspect_form("P-1", "cam1"))
    assert again.json()["part"]["images"] == 2
    assert len([e for e in _events(cat, "PredictionRecorded") if e.payload["part_id"] == "P-1"]) == 2


def test_a_high_resolution_image_is_tiled_at_native_resolution(client) -> None:
    response = client.post("/v1/inspect", files={"image": ("big.png", png_bytes(3, (300, 520)))},
                           data=inspect_form("P-2"))
    assert response.status_code == 200, response.text
    for region in response.json()["regions"]:
        x0, y0, x1, y1 = region["bbox"]
        assert 0 <= x0 < x1 <= 520 + 16 and 0 <= y0 < y1 <= 300 + 16
    status = client.get("/v1/status").json()
    assert status["batches"]["tiles"] == 3 * 5  # 300 x 520 on 128 px tiles: 3 rows of 5, edges flush


def test_batch_inspects_each_image_and_reports_a_bad_one_in_place(client, built_engine) -> None:
    cat, _ = built_engine
    captures = [inspect_form("P-3", "cam1"), inspect_form("P-3", "cam2"), inspect_form("P-4", "cam1")]
    files = [("images", ("a.png", png_bytes(4))), ("images", ("b.txt", b"not an image at all")),
             ("images", ("c.png", png_bytes(5)))]
    response = client.post("/v1/inspect/batch", files=files, data={"captures": json.dumps(captures)})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r.get("status", 200) for r in results] == [200, 415, 200]
    assert results[1]["error"]["reason"] == "not_an_image"
    assert [r["part_id"] for r in results] == ["P-3", "P-3", "P-4"]
    rejected = [e for e in _events(cat, "ImageRejected") if e.metadata.get("source") == "serve"]
    assert [e.payload["reason"] for e in rejected] == ["not_an_image"]  # quarantined with its reason


@pytest.mark.parametrize(("send", "status", "says"), [
    ({"files": {"image": ("x.png", b"GIF89a....")}, "data": inspect_form("P-5")}, 415, "not a PNG"),
    ({"files": {"image": ("x.png", png_bytes(6)[:-40])}, "data": inspect_form("P-5")}, 422, "end marker"),
    ({"files": {"image": ("x.png", b"")}, "data": inspect_form("P-5")}, 422, "empty"),
    ({"files": {"image": ("x.png", b"\x89PNG" + b"0" * 2_000_001)}, "data": inspect_form("P-5")},
     413, "limit"),
    ({"files": {"image": ("x.png", png_bytes(6))},
      "data": {k: v for k, v in inspect_form("P-5").items() if k != "camera"}}, 422, "camera"),
    ({"files": {"image": ("x.png", png_bytes(6))},
      "data": inspect_form("P-5") | {"captured_at": "2026-03-09T08:00:00"}}, 422, "timezone"),
    ({"files": {"image": ("x.png", png_bytes(6))}, "data": inspect_form("P-5") | {"captured_at": "yesterday"}},
     422, "captured_at"),
    ({"files": {"image": ("x.png", png_bytes(6))}, "data": inspect_form("P-5") | {"part_id": "   "}},
     422, "part_id"),
    ({"data": inspect_form("P-5")}, 422, "image"),
])
def test_bad_requests_get_a_specific_4xx_and_store_no_image(client, built_engine, send, status, says) -> None:
    cat, _ = built_engine
    before = len(_events(cat, "ImageIngested"))
    response = client.post("/v1/inspect", **send)
    assert response.status_code == status, response.text
    assert says.lower() in response.text.lower()
    assert len(_events(cat, "ImageIngested")) == before


def test_batch_captures_must_match_the_images(client) -> None:
    files = [("images", ("a.png", png_bytes(7)))]
    for captures, says in [("[", "not JSON"), ("[]", "one entry per image"), ('["x"]', "captures[0]"),
                           (json.dumps([inspect_form("P-6") | {"camera": ""}]), "captures[0]: camera")]:
        response = client.post("/v1/inspect/batch", files=files, data={"captures": captures})
        assert response.status_code == 422 and says in response.text, response.text


def test_engines_health_and_openapi(client, built_engine) -> None:
    _, engine_id = built_engine
    engines = client.get("/v1/engines").json()
    assert engines["serving"]["engine_id"] == engine_id
    assert [e["engine_id"] for e in engines["engines"]] == [engine_id]
    assert engines["serving"]["dataset_version_id"] and engines["serving"]["manifest_hash"]
    status = client.get("/v1/status").json()
    assert status["status"] == "ok" and status["catalog"] == "reachable" and status["spooled_events"] == 0
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/inspect", "/v1/inspect/batch", "/v1/engines", "/healthz"} <= set(paths)


def test_the_server_refuses_an_engine_whose_artifact_was_altered(built_engine, tmp_path: Path) -> None:
    cat, engine_id = built_engine
    path = cat.blobs.path(engine_id)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(LineageError, match="hash"):
        InspectionService(cat, ServeConfig(spool=tmp_path / "spool"))


def test_requests_keep_being_answered_while_postgres_is_stopped(client, built_engine, pg_server) -> None:
    cat, _ = built_engine
    server = EmbeddedPostgres(pg_server.home)
    sent = []
    try:
        for i in range(12):
            if i == 4:
                server.stop()
            if i == 8:
                server.start()
            response = client.post("/v1/inspect", files={"image": (f"{i}.png", png_bytes(100 + i))},
                                   data=inspect_form(f"Q-{i // 2}", f"cam{i % 2 + 1}", i))
            assert response.status_code == 200, response.text
            sent.append(response.json())
        assert {r["recorded_in"] for r in sent[4:8]} == {"spool"}
        deadline = time.monotonic() + 30
        while client.get("/v1/status").json()["spooled_events"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/healthz").json()["status"] == "ok"
    finally:
        if not server.running():
            server.start()
    predictions = [e for e in _events(cat, "PredictionRecorded") if e.payload["part_id"].startswith("Q-")]
    assert sorted(e.payload["sha256"] for e in predictions) == sorted(r["sha256"] for r in sent)  # once each
    assert [e.occurred_at for e in predictions] == [FORM_CAPTURED_AT + timedelta(minutes=i) for i in range(12)]
    ingested = {e.payload["sha256"] for e in _events(cat, "ImageIngested")}
    assert {r["sha256"] for r in sent} <= ingested
