"""Stations' tokens: issued, verified, scoped, listed and revoked, through the functions and `visionledger tokens`;
the secret is shown once, and neither it nor its hash is anywhere but the hash's own table."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import catalog
from catalog.database import libpq_dsn
from identity.stations import Refusal, StationPrincipal, issue, list_tokens, load_view, revoke, verify
from tests.builders import cli_env, run_cli
from tests.reliability.stored import with_readers


def _in_a_day() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


def test_a_token_speaks_for_its_station_until_it_expires_or_is_revoked(cat) -> None:
    issued = issue(cat, line="line1", station="st1", cameras=["cam1"], expires_at=_in_a_day(), issued_by="ops:eva")
    token, token_id = issued.token, issued.record.token_id
    principal = verify(cat, token)
    assert principal == StationPrincipal(token_id, "line1", "st1", frozenset({"cam1"}))
    assert principal.actor == "station:line1/st1"
    assert principal.refuses("line1", "st1", "cam1") is None
    assert "cam2" in principal.refuses("line1", "st1", "cam2")
    assert "line2" in principal.refuses("line2", "st1", "cam1")

    view = load_view(cat)
    assert view.verify(token, _in_a_day() + timedelta(seconds=1)) is Refusal.EXPIRED
    assert view.verify(None) is Refusal.MISSING and view.verify("vl_x") is Refusal.MALFORMED
    assert view.verify(token[:-1] + ("0" if token[-1] != "0" else "1")) is Refusal.UNKNOWN
    assert view.verify(token.replace(token_id, "f" * 16)) is Refusal.UNKNOWN

    assert revoke(cat, token_id, reason="station rebuilt", revoked_by="ops:eva")
    assert not revoke(cat, token_id, reason="again", revoked_by="ops:eva")  # nothing more recorded
    assert verify(cat, token) is Refusal.REVOKED
    assert load_view(cat).verify(token) is Refusal.REVOKED and view.verify(token) == principal  # a view is as read
    with pytest.raises(catalog.CatalogError, match="no station token"):
        revoke(cat, "0" * 16, reason="unknown", revoked_by="ops:eva")

    [listed] = list_tokens(cat)
    assert (listed.token_id, listed.cameras, listed.issued_by, listed.revoked_by) == (token_id, ("cam1",), "ops:eva",
                                                                                      "ops:eva")
    assert listed.state(datetime.now(UTC)) == "revoked"
    events = [(e.type, e.stream_id, e.metadata["actor"]) for e in cat.store.read(0, limit=None)]
    assert events == [("StationTokenIssued", f"station_token:{token_id}", "ops:eva"),
                      ("StationTokenRevoked", f"station_token:{token_id}", "ops:eva")]
    assert cat.rebuild_projections(check_only=True).equal


def test_a_token_must_expire_in_the_future_and_name_its_scope(cat) -> None:
    with pytest.raises(catalog.EventValidationError, match="has passed"):
        issue(cat, line="line1", station="st1", expires_at=datetime.now(UTC) - timedelta(seconds=1), issued_by="t")
    with pytest.raises(catalog.EventValidationError, match="station"):
        issue(cat, line="line1", station=" ", expires_at=_in_a_day(), issued_by="t")
    assert cat.head() == 0


def test_readers_cannot_read_the_hashes(cat, pg_server) -> None:
    issue(cat, line="line1", station="st1", expires_at=_in_a_day(), issued_by="t")
    for role in ("analyst", "auditor"):
        with catalog.open(with_readers(cat.settings, pg_server), role=role) as reader:
            assert [t.station for t in list_tokens(reader)] == ["st1"]  # the read model, without hashes
            with pytest.raises(Exception, match="permission denied"):
                load_view(reader)
    # Writers read hashes but cannot change one.
    with psycopg.connect(libpq_dsn(cat.urls.app)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE catalog.station_token_hashes SET sha256 = %s", ["0" * 64])


def test_tokens_issue_list_and_revoke_from_the_command_line(cat) -> None:
    env = cli_env(cat)
    issued = run_cli("tokens", "issue", "--line", "line1", "--station", "st2", "--camera", "cam1", "--camera", "cam2",
                     "--expires-in", "30d", "--actor", "ops:eva", env=env)
    shown = json.loads(issued.stdout)
    token, token_id = shown["token"], shown["token_id"]
    assert token.startswith(f"vl_{token_id}_") and len(token.split("_")[2]) == 64  # 256 bits
    assert shown["cameras"] == ["cam1", "cam2"] and "shown this once" in issued.stderr
    expires = datetime.fromisoformat(shown["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    assert isinstance(verify(cat, token), StationPrincipal)
    at = run_cli("tokens", "issue", "--line", "line2", "--station", "st1", "--expires-at", "2099-01-01T00:00:00+01:00",
                 env=env)
    assert json.loads(at.stdout)["expires_at"] == "2098-12-31T23:00:00+00:00"

    secret = token.split("_")[2]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    table, lines = run_cli("tokens", "list", env=env).stdout, run_cli("tokens", "list", "--json", env=env).stdout
    rows = json.loads(lines)
    assert {r["token_id"] for r in rows} == {token_id, json.loads(at.stdout)["token_id"]}
    assert token_id in table and "active" in table
    for shown_text in (table, lines):
        assert secret not in shown_text and digest not in shown_text

    revoked = run_cli("tokens", "revoke", token_id, "--reason", "camera moved", env=env)
    assert f"token {token_id} revoked" in revoked.stdout
    assert "already revoked" in run_cli("tokens", "revoke", token_id, "--reason", "again", env=env).stdout
    assert "revoked" in run_cli("tokens", "list", env=env).stdout
    assert verify(cat, token) is Refusal.REVOKED
    unknown = run_cli("tokens", "revoke", "0" * 16, "--reason", "typo", env=env, check=False)
    assert unknown.returncode == 1 and "no station token" in unknown.stderr and "Traceback" not in unknown.stderr
    for bad in (["--expires-in", "soon"], ["--expires-at", "2099-01-01"], ["--expires-in", "1d", "--expires-at",
                                                                          "2099-01-01T00:00:00+00:00"]):
        refused = run_cli("tokens", "issue", "--line", "l", "--station", "s", *bad, env=env, check=False)
        assert refused.returncode == 2, refused.stderr
