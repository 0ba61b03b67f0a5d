"""Stations authenticate to the inspection API with their tokens: who may do what (401 and 403 record
nothing), who the served events name, expiry and revocation taking effect, the open /healthz, /docs off unless
asked, the rate limit, and no secret or hash in any answer, event, lake file or log line."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import catalog
from catalog.embedded_postgres import EmbeddedPostgres
from identity.stations import revoke
from serving.api import create_app
from serving.service import InspectionService, ServeConfig
from tests.builders import bearer, inspect_form, png_bytes, station_token
from tests.reliability.stored import snapshot


def _served(cat: catalog.Catalog, tmp_path: Path, **config) -> InspectionService:
    return InspectionService(cat, ServeConfig(spool=tmp_path / "spool", max_wait_ms=2, retry_seconds=0.2, **config))


@pytest.fixture
def station(built_engine, tmp_path: Path):
    """A server with tokens of every kind: station st1 of line1 (any camera, and cam1 only), another line's,
    and a revoked one; the client sends no token of its own."""
    cat, _ = built_engine
    tokens = {"st1": station_token(cat), "cam1 only": station_token(cat, cameras=["cam1"]),
              "line2": station_token(cat, line="line2"), "revoked": station_token(cat)}
    revoke(cat, tokens["revoked"].split("_")[1], reason="station scrapped", revoked_by="test")
    service = _served(cat, tmp_path)
    with TestClient(create_app(service)) as client:
        client.tokens = tokens
        yield client, cat


def _inspect(client: TestClient, headers: dict[str, str], seed: int = 1, **form: str):
    return client.post("/v1/inspect", files={"image": ("a.png", png_bytes(seed))},
                       data=inspect_form("AUTH-1") | form, headers=headers)


def _batch(client: TestClient, headers: dict[str, str], *captures: dict[str, str]):
    return client.post("/v1/inspect/batch", headers=headers, data={"captures": json.dumps(captures)},
                       files=[("images", (f"{i}.png", png_bytes(10 + i))) for i in range(len(captures))])


def _well_formed_unknown() -> str:
    return "vl_" + "0" * 16 + "_" + "1" * 64


UNAUTHENTICATED = {
    "no token": lambda tokens: {},
    "another scheme": lambda tokens: {"Authorization": "Basic dXNlcjpwYXNz"},
    "empty bearer": lambda tokens: {"Authorization": "Bearer "},
    "malformed": lambda tokens: bearer("not-a-token"),
    "unknown": lambda tokens: bearer(_well_formed_unknown()),
    "wrong secret": lambda tokens: bearer(tokens["st1"][:-8] + "0" * 8),
    "revoked": lambda tokens: bearer(tokens["revoked"]),
}


@pytest.mark.parametrize("case", UNAUTHENTICATED)
def test_without_a_valid_token_every_v1_endpoint_answers_401_and_records_nothing(station, case: str) -> None:
    client, cat = station
    headers = UNAUTHENTICATED[case](client.tokens)
    before = snapshot(cat)
    answers = [_inspect(client, headers), _batch(client, headers, inspect_form("AUTH-2")),
               client.get("/v1/engines", headers=headers), client.get("/v1/status", headers=headers),
               client.get("/V1/status", headers=headers), client.get("/docs", headers=headers)]  # closed by default
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "engine" not in answer.text
    if case == "revoked":
        assert "revoked" in answers[0].text
    snapshot(cat).assert_unchanged_since(before)


@pytest.mark.parametrize(("token", "form", "says"), [
    ("st1", {"line": "line2"}, "not station st1 of line line2"),
    ("st1", {"station": "st2"}, "not station st2 of line line1"),
    ("line2", {"line": "line1"}, "for station st1 of line line2"),
    ("cam1 only", {"camera": "cam2"}, "cameras cam1 of its station, not cam2"),
])
def test_a_capture_outside_the_tokens_scope_is_403_and_records_nothing(station, token, form, says) -> None:
    client, cat = station
    before = snapshot(cat)
    single = _inspect(client, bearer(client.tokens[token]), **form)
    assert single.status_code == 403 and says in single.text, single.text
    # In a batch, one capture outside the scope refuses them all, the ones inside it too.
    inside = inspect_form("AUTH-3", line="line2" if token == "line2" else "line1")
    batch = _batch(client, bearer(client.tokens[token]), inside, inspect_form("AUTH-3") | form)
    assert batch.status_code == 403 and says in batch.text, batch.text
    snapshot(cat).assert_unchanged_since(before)


def test_a_valid_token_is_served_and_its_station_is_the_actor_of_every_event(station) -> None:
    client, cat = station
    started = datetime.now(UTC)
    ok = _inspect(client, bearer(client.tokens["st1"]))
    assert ok.status_code == 200, ok.text
    scoped = _inspect(client, bearer(client.tokens["cam1 only"]), 2, part_id="AUTH-4")  # cam1: inside its scope
    assert scoped.status_code == 200, scoped.text
    other_line = _inspect(client, bearer(client.tokens["line2"]), 3, part_id="AUTH-5")  # its own line by default
    assert other_line.status_code == 200, other_line.text
    refused = client.post("/v1/inspect", files={"image": ("x.png", b"not an image")}, headers=bearer(client.tokens["st1"]),
                          data=inspect_form("AUTH-6"))
    assert refused.status_code == 415, refused.text
    assert client.get("/v1/engines", headers=bearer(client.tokens["st1"])).status_code == 200

    served = [e for e in cat.store.read(0, limit=None) if e.metadata.get("source") == "serve"]
    assert {e.type for e in served} == {"ImageIngested", "PredictionRecorded", "PartDispositioned", "ImageRejected"}
    line2 = {e.payload["sha256"] for e in served if e.type == "ImageIngested" and e.payload["line"] == "line2"}
    assert len(line2) == 1
    for event in served:
        on_line2 = event.payload.get("sha256") in line2 or event.payload.get("part_id") == "AUTH-5"
        assert event.metadata["actor"] == ("station:line2/st1" if on_line2 else "station:line1/st1")
        assert event.metadata["client_addr"] == "testclient"
        received = datetime.fromisoformat(event.metadata["received_at"])
        assert received.utcoffset() == timedelta(0) and started <= received <= datetime.now(UTC)
        assert received != event.occurred_at  # the server's clock, not the capture time


def test_revocation_and_expiry_take_effect(built_engine, tmp_path: Path) -> None:
    cat, _ = built_engine
    revoked, expiring = station_token(cat), station_token(cat, expires_in=timedelta(seconds=2))
    expires = time.monotonic() + 2
    service = _served(cat, tmp_path, token_refresh_seconds=0.1)
    with TestClient(create_app(service)) as client:
        assert _inspect(client, bearer(revoked)).status_code == 200
        assert _inspect(client, bearer(expiring), part_id="AUTH-7").status_code == 200
        revoke(cat, revoked.split("_")[1], reason="token leaked", revoked_by="test")
        deadline, tries = time.monotonic() + 5, 0
        while (answer := _inspect(client, bearer(revoked), part_id=f"AUTH-8-{tries}")).status_code == 200:
            assert time.monotonic() < deadline, "the revocation did not take effect"
            tries += 1
            time.sleep(0.05)
        assert answer.status_code == 401 and "revoked" in answer.text
        time.sleep(max(0.0, expires - time.monotonic()))
        answer = _inspect(client, bearer(expiring), part_id="AUTH-9")  # judged on the clock, at once
        assert answer.status_code == 401 and "expired" in answer.text
    refused = (f"AUTH-8-{tries}", "AUTH-9")
    assert not [e for e in cat.store.read(0, limit=None) if e.payload.get("part_id") in refused]


def test_the_tokens_last_read_stay_in_force_while_the_catalog_is_away(built_engine, pg_server, tmp_path) -> None:
    cat, _ = built_engine
    token = station_token(cat)
    service = _served(cat, tmp_path, token_refresh_seconds=0.05)
    server = EmbeddedPostgres(pg_server.home)
    with TestClient(create_app(service)) as client:
        try:
            server.stop()
            time.sleep(0.5)  # several refreshes fail meanwhile
            answer = _inspect(client, bearer(token))
            assert answer.status_code == 200 and answer.json()["recorded_in"] == "spool", answer.text
            assert _inspect(client, {}).status_code == 401
        finally:
            server.start()


def test_healthz_is_open_and_tells_nothing_else(station) -> None:
    client, _ = station
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_docs_are_off_unless_asked_for(built_engine, tmp_path: Path) -> None:
    cat, _ = built_engine
    token = station_token(cat)
    for docs, status in ((False, 404), (True, 200)):
        with TestClient(create_app(_served(cat, tmp_path), docs=docs), headers=bearer(token)) as client:
            assert [client.get(p).status_code for p in ("/docs", "/openapi.json", "/redoc")] == [status] * 3


def test_a_client_over_the_rate_limit_gets_429_and_records_nothing(built_engine, tmp_path: Path) -> None:
    cat, _ = built_engine
    token = station_token(cat)
    with TestClient(create_app(_served(cat, tmp_path, rate_limit="3/minute"))) as client:
        assert [client.get("/healthz").status_code for _ in range(3)] == [200] * 3
        before = snapshot(cat)
        for answer in (client.get("/healthz"), _inspect(client, bearer(token))):
            assert answer.status_code == 429, answer.text
            assert 0 < int(answer.headers["Retry-After"]) <= 60
        snapshot(cat).assert_unchanged_since(before)


def test_no_secret_or_hash_in_any_answer_event_lake_file_or_log_line(station, caplog) -> None:
    client, cat = station
    caplog.set_level(logging.DEBUG)
    secrets_ = [t.split("_")[2] for t in client.tokens.values()]
    hashes = [hashlib.sha256(s.encode()).hexdigest() for s in secrets_]
    answers = [_inspect(client, bearer(t), part_id=f"AUTH-{n}") for n, t in enumerate(client.tokens.values())]
    answers += [client.get(p, headers=bearer(client.tokens["st1"])) for p in ("/v1/engines", "/v1/status", "/healthz")]
    assert {a.status_code for a in answers} == {200, 401}
    cat.sync_lake()
    with cat.db.connect() as conn:
        log = conn.exec_driver_sql("SELECT string_agg(payload::text || metadata::text, '|') FROM catalog.events").scalar()
        stored = conn.exec_driver_sql("SELECT string_agg(sha256, '|') FROM catalog.station_token_hashes").scalar()
    lake = b"".join(p.read_bytes() for p in cat.lake.root.rglob("*") if p.is_file())
    assert all(h in stored for h in hashes)  # kept where they belong, and nowhere else
    for found in (*secrets_, *hashes):
        assert not any(found in a.text or found in str(a.headers) for a in answers)
        assert found not in log and found.encode() not in lake and found not in caplog.text
