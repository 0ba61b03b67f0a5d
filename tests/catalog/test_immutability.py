"""The database itself refuses to change or remove events, whatever the role; read-only roles cannot append."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

import catalog
from catalog import events as ev
from catalog.store import NewEvent, PermissionDenied

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
STATEMENTS = {
    "UPDATE": "UPDATE catalog.events SET type = 'ImageIncluded'",
    "DELETE": "DELETE FROM catalog.events",
    "TRUNCATE": "TRUNCATE catalog.events",
}


@pytest.fixture
def stored(cat: catalog.Catalog) -> catalog.Catalog:
    cat.store.append([NewEvent(ev.ImageExcluded(sha256="a" * 64, reason="dusty lens"), T0)])
    return cat


def _snapshot(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT * FROM catalog.events ORDER BY position").fetchall()


@pytest.mark.parametrize("op", STATEMENTS)
def test_application_role_lacks_the_privilege(stored, database, op):
    before = _snapshot(database.dsn("visionledger_owner"))
    with psycopg.connect(database.dsn("visionledger_app")) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(STATEMENTS[op])
    assert _snapshot(database.dsn("visionledger_owner")) == before


@pytest.mark.parametrize("op", STATEMENTS)
def test_even_the_owner_is_refused_by_the_trigger(stored, database, op):
    before = _snapshot(database.dsn("visionledger_owner"))
    refused = pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"append-only: {op} refused")
    with psycopg.connect(database.dsn("visionledger_owner")) as conn, refused:
        conn.execute(STATEMENTS[op])
    assert _snapshot(database.dsn("visionledger_owner")) == before


def test_application_role_holds_only_insert_and_select(database):
    privileges = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with psycopg.connect(database.dsn("visionledger_owner")) as conn:
        held = {
            p for p in privileges
            if conn.execute("SELECT has_table_privilege('visionledger_app', 'catalog.events', %s)", [p]).fetchone()[0]
        }
    assert held == {"SELECT", "INSERT"}


@pytest.mark.parametrize("role", ["visionledger_analyst", "visionledger_auditor"])
def test_read_only_roles_cannot_append_but_can_read(stored, database, role):
    reader = catalog.EventStore(catalog.database.make_engine(database.url(role)))
    assert [e.type for e in reader.read()] == ["ImageExcluded"]
    with pytest.raises(PermissionDenied, match="this role may not append events"):
        reader.append([NewEvent(ev.ImageIncluded(sha256="a" * 64, reason="cleaned"), T0)])
    assert reader.head() == 1
    reader.db.dispose()
