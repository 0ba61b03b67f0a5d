"""Who may change what, swept across every role: readers cannot append, nobody can alter or remove events, and
the inspection server refuses an engine whose lineage is broken (tests/catalog/test_immutability.py and
tests/serving/test_engines.py hold the single cases; this is the systematic sweep)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

import catalog
from catalog import events as ev
from catalog.consistency import check_catalog
from catalog.database import libpq_dsn
from catalog.store import NewEvent, PermissionDenied
from serving.engines import LineageError, engine_record
from serving.service import InspectionService, ServeConfig
from tests.builders import crafted, record_engine
from tests.reliability.stored import factory_catalog, snapshot

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ROLES = ("app", "analyst", "auditor", "owner")
READERS = ("analyst", "auditor")
STATEMENTS = {
    "UPDATE": "UPDATE catalog.events SET payload = '{}'::jsonb",
    "UPDATE one": "UPDATE catalog.events SET type = 'ImageIncluded' WHERE position = 1",
    "DELETE": "DELETE FROM catalog.events",
    "DELETE one": "DELETE FROM catalog.events WHERE position = (SELECT max(position) FROM catalog.events)",
    "TRUNCATE": "TRUNCATE catalog.events",
    "TRUNCATE CASCADE": "TRUNCATE catalog.events CASCADE",
}
# Beyond the events: what a non-owner must not do to the schema that guards them, or to the read models.
NOT_FOR_NON_OWNERS = {
    "DROP": "DROP TABLE catalog.events",
    "disable the trigger": "ALTER TABLE catalog.events DISABLE TRIGGER ALL",
    "rename": "ALTER TABLE catalog.events RENAME TO events_old",
}
NOT_FOR_READERS = {
    "INSERT": "INSERT INTO catalog.events (stream_id, version, event_id, type, schema_version, payload,"
              " occurred_at) VALUES ('x', 1, gen_random_uuid(), 'ImageExcluded', 1, '{}', now())",
    "write a read model": "DELETE FROM projections.images",
}


@pytest.fixture(scope="module")
def stored(pg_server, factory_dir) -> Iterator[catalog.Catalog]:
    # Shared by the module: every test asserts it leaves the catalog as it was.
    with factory_catalog(pg_server, factory_dir) as cat:
        yield cat


def _dsn(cat: catalog.Catalog, role: str) -> str:
    return libpq_dsn(cat.urls.owner if role == "owner" else cat.urls.app if role == "app" else cat.urls.readers[role])


def _refused(cat: catalog.Catalog, role: str, sql: str) -> str:
    """The error message PostgreSQL answers ``sql`` with as ``role`` (the test fails if it is accepted)."""
    with psycopg.connect(_dsn(cat, role)) as conn, pytest.raises(psycopg.errors.Error) as refused:
        conn.execute(sql)
    return str(refused.value)


@pytest.mark.parametrize("statement", STATEMENTS)
@pytest.mark.parametrize("role", ROLES)
def test_no_role_can_change_or_remove_an_event(stored, role: str, statement: str):
    before = snapshot(stored)
    message = _refused(stored, role, STATEMENTS[statement])
    # The writer and the readers lack the privilege; the owner, who holds it, is stopped by the trigger.
    verb = statement.split()[0]
    assert (f"append-only: {verb} refused" if role == "owner" else "permission denied") in message
    snapshot(stored).assert_unchanged_since(before)


@pytest.mark.parametrize("statement", NOT_FOR_NON_OWNERS)
@pytest.mark.parametrize("role", ("app", *READERS))
def test_no_login_but_the_owner_can_alter_the_event_table(stored, role: str, statement: str):
    before = snapshot(stored)
    assert "must be owner" in _refused(stored, role, NOT_FOR_NON_OWNERS[statement])
    snapshot(stored).assert_unchanged_since(before)


def test_the_owner_can_lift_the_trigger_but_the_lake_copy_shows_the_altered_event(factory_cat, database):
    # The owner runs migrations and so owns the table: PostgreSQL lets it disable the trigger. What it cannot
    # do unseen is alter an event the lake already mirrors: `visionledger check` compares the two copies.
    cat = factory_cat
    cat.sync_lake()
    assert check_catalog(cat).ok
    with psycopg.connect(_dsn(cat, "owner")) as conn:
        conn.execute("ALTER TABLE catalog.events DISABLE TRIGGER events_append_only")
        altered = conn.execute("UPDATE catalog.events SET metadata = metadata || '{\"actor\": \"mallory\"}'"
                               " WHERE position = (SELECT min(position) FROM catalog.events WHERE type = 'LabelRecorded')"
                               " RETURNING position").fetchone()[0]
        conn.execute("ALTER TABLE catalog.events ENABLE TRIGGER events_append_only")
    report = check_catalog(cat)
    assert report.lake_mismatched == [altered]
    assert any("lake copy differs from the log: 1" in line for line in report.problems())
    checked = subprocess.run([sys.executable, "-m", "apps.cli", "check"], env=database.env(), capture_output=True,
                             text=True, timeout=300)
    assert checked.returncode == 1 and f"lake copy differs from the log: 1 (first: [{altered}])" in checked.stdout


@pytest.mark.parametrize("statement", NOT_FOR_READERS)
@pytest.mark.parametrize("role", READERS)
def test_readers_cannot_write_in_sql(stored, role: str, statement: str):
    before = snapshot(stored)
    assert "permission denied" in _refused(stored, role, NOT_FOR_READERS[statement])
    snapshot(stored).assert_unchanged_since(before)


@pytest.mark.parametrize("role", READERS)
def test_readers_cannot_append_through_the_catalog(stored, role: str):
    before = snapshot(stored)
    with catalog.open(stored.settings, role=role) as reader:
        assert reader.head() == stored.head()  # they can read
        with pytest.raises(PermissionDenied, match="this role may not append events"):
            reader.record(ev.ImageExcluded(sha256="a" * 64, reason="dusty lens"), occurred_at=T0)
        with pytest.raises(PermissionDenied):
            reader.append([NewEvent(ev.ImageIncluded(sha256="a" * 64, reason="cleaned"), T0)])
    snapshot(stored).assert_unchanged_since(before)


def _altered_artifact(cat: catalog.Catalog, engine_id: str) -> str:
    path = cat.blobs.path(engine_id)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"\0")
    return engine_id


def _lost_artifact(cat: catalog.Catalog, engine_id: str) -> str:
    cat.blobs.path(engine_id).unlink()
    return engine_id


def _record_changed(**changes: str):
    def break_lineage(cat: catalog.Catalog, engine_id: str) -> str:
        record = crafted(engine_record(cat, engine_id), **changes)
        record_engine(cat, record)
        return record.engine_id
    return break_lineage


LINEAGE_BREAKS = {
    "artifact altered": (_altered_artifact, "artifact was altered or replaced"),
    "artifact lost": (_lost_artifact, "is not in the blob store"),
    "unregistered model": (_record_changed(model_id="inspection-classifier-000000000000"),
                           "which the catalog has not registered"),
    "manifest hash": (_record_changed(manifest_hash="f" * 64), "records manifest_hash"),
    "onnx hash": (_record_changed(onnx_sha256="e" * 64), "records onnx_sha256"),
    "unpublished dataset": (_record_changed(dataset_version_id="inspection-all-000000000000"),
                            "inspection-all-000000000000"),
    "never built": (lambda cat, engine_id: "0" * 64, "no EngineBuilt records engine"),
}


@pytest.mark.parametrize("case", LINEAGE_BREAKS)
def test_the_server_refuses_an_engine_with_broken_lineage(built_engine, tmp_path: Path, case: str):
    cat, engine_id = built_engine
    break_lineage, says = LINEAGE_BREAKS[case]
    broken = break_lineage(cat, engine_id)
    before = snapshot(cat)
    config = ServeConfig(spool=tmp_path / "spool")
    with pytest.raises(LineageError, match=says):
        InspectionService(cat, dataclasses.replace(config, engine_id=broken))
    snapshot(cat).assert_unchanged_since(before)
