"""The hash chain: `visionledger check` recomputes every event's hash and names the first position that breaks
it, so an owner who lifts the append-only trigger and edits, removes or rewrites events is found; a head kept
outside the database (`visionledger log head`) proves with `check --against` that nothing before it changed.
Events stored before the chain are hashed by migration 0010, and re-hashed by 0014 when the chain's definition
changed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

import catalog
from catalog import events as ev
from catalog.chain import GENESIS, ChainHead, canonical_value, stored_event_hash
from catalog.consistency import check_catalog
from catalog.database import libpq_dsn, make_engine, upgrade
from catalog.embedded_postgres import OWNER_ROLE
from catalog.settings import Settings
from catalog.store import EventStore, NewEvent
from tests.builders import run_cli
from tests.conftest import database_at_revision

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
EVENTS = 7


def excluded(i: int) -> NewEvent:
    return NewEvent(ev.ImageExcluded(sha256="%064x" % (i + 1), reason=f"dusty lens {i}", selection={"n": i / 3}),
                    T0 + timedelta(minutes=i), metadata={"actor": "test:ana"})


@pytest.fixture
def logged(cat: catalog.Catalog) -> catalog.Catalog:
    """A catalog of EVENTS events: one append of three, then single appends (INSERT and COPY paths alike)."""
    cat.store.append([excluded(i) for i in range(3)])
    for i in range(3, EVENTS):
        cat.store.append_one(excluded(i))
    return cat


def _as_owner(database, *statements: str, params: tuple = ()) -> None:
    """Run ``statements`` as the schema owner with the append-only trigger lifted, as an insider could."""
    with psycopg.connect(database.dsn(OWNER_ROLE)) as conn:
        conn.execute("ALTER TABLE catalog.events DISABLE TRIGGER events_append_only")
        for statement in statements:
            conn.execute(statement, params)
        conn.execute("ALTER TABLE catalog.events ENABLE TRIGGER events_append_only")


def test_an_untouched_log_verifies_and_its_head_is_the_last_event(logged):
    report = logged.store.verify_chain(page_size=3)  # pages smaller than the log: the chain runs across them
    last = logged.store.read()[-1]
    assert report.ok and report.events == EVENTS
    assert report.head == logged.store.chain_head() == ChainHead(EVENTS, last.hash)
    assert check_catalog(logged, against=report.head).ok


def test_the_empty_log_has_the_genesis_head(cat):
    assert str(cat.store.chain_head()) == "0:" + "00" * 32
    assert cat.store.verify_chain(against=cat.store.chain_head()).ok


@pytest.mark.parametrize("position", [1, EVENTS // 2, EVENTS], ids=["first", "middle", "last"])
@pytest.mark.parametrize("edit", [
    "payload = jsonb_set(payload, '{reason}', '\"fine after all\"')",
    "metadata = metadata || '{\"actor\": \"mallory\"}'",
    "recorded_at = recorded_at - interval '1 second'",
    "occurred_at = occurred_at + interval '1 microsecond'",
], ids=["payload", "metadata", "recorded_at", "occurred_at"])
def test_an_edit_by_the_owner_is_named_at_its_position(logged, database, position, edit):
    _as_owner(database, f"UPDATE catalog.events SET {edit} WHERE position = %s", params=(position,))
    chain = logged.store.verify_chain()
    assert (chain.ok, chain.broken_at, chain.head.position) == (False, position, position - 1)
    assert f"position {position} does not match its hash" in chain.problem
    report = check_catalog(logged)  # before any lake sync: the chain alone finds it
    assert not report.ok and report.lake_position == 0
    assert report.problems()[0].startswith(f"the hash chain breaks at position {position}:")


def test_a_removed_event_is_named_and_a_removed_last_event_is_caught_against_the_head(logged, database):
    held = logged.store.chain_head()
    _as_owner(database, "DELETE FROM catalog.events WHERE position = %s", params=(EVENTS,))
    assert logged.store.verify_chain().ok  # what is left is a valid chain: only the head held outside shows it
    against = logged.store.verify_chain(against=held)
    assert (against.ok, against.broken_at) == (False, EVENTS)
    assert f"the log ends at position {EVENTS - 1}, before the head held outside ({held})" in against.problem
    _as_owner(database, "DELETE FROM catalog.events WHERE position = 2")
    missing = logged.store.verify_chain()
    assert (missing.broken_at, missing.problem) == (2, "position 2 is missing: the next event stored is at 3")


def test_a_rewritten_chain_passes_alone_but_not_against_a_head_held_outside(logged, database):
    held = logged.store.chain_head()
    assert logged.store.verify_chain(against=held).ok
    # The insider edits position 2 and re-hashes every event from there with the public algorithm.
    _as_owner(database, "UPDATE catalog.events SET payload = jsonb_set(payload, '{reason}', '\"nothing wrong\"')"
                        " WHERE position = 2")
    _rehash_from(database, 2)
    assert logged.store.verify_chain().ok
    report = logged.store.verify_chain(against=held)
    assert (report.ok, report.broken_at) == (False, EVENTS)
    assert f"no longer has the hash {held}" in report.problem
    # A head held from before the edit's position still holds: the log up to it is as it was.
    assert logged.store.verify_chain(against=ChainHead(1, logged.store.read(limit=1)[0].hash)).ok


def _rehash_from(database, first: int) -> None:
    with psycopg.connect(database.dsn(OWNER_ROLE)) as conn:
        rows = conn.execute("SELECT position, event_id, stream_id, version, type, schema_version, payload::text,"
                            " metadata::text, occurred_at, recorded_at, hash FROM catalog.events ORDER BY position"
                            ).fetchall()
        conn.execute("ALTER TABLE catalog.events DISABLE TRIGGER events_append_only")
        previous = GENESIS
        for position, *content, stored in rows:
            if position >= first:
                stored = stored_event_hash(previous, position, *content)
                conn.execute("UPDATE catalog.events SET hash = %s WHERE position = %s", (stored, position))
            previous = stored
        conn.execute("ALTER TABLE catalog.events ENABLE TRIGGER events_append_only")


def test_recorded_at_is_the_append_time_and_never_decreases(logged):
    events = logged.store.read()
    assert all(a.recorded_at <= b.recorded_at for a, b in zip(events, events[1:], strict=False))
    assert datetime.now(UTC) - events[-1].recorded_at < timedelta(minutes=5)


@pytest.fixture
def pre_chain_database(pg_server, tmp_path) -> Iterator[Settings]:
    """A database migrated up to 0009 (before the chain), for the backfill."""
    with database_at_revision(pg_server, tmp_path, "0009") as settings:
        yield settings


def test_migration_0010_hashes_the_events_stored_before_the_chain(pre_chain_database):
    owner_url = pre_chain_database.admin_database_url
    with psycopg.connect(libpq_dsn(owner_url)) as conn:
        for i in range(5):  # as the pre-chain store wrote them: recorded_at by the database's default
            event = excluded(i)
            conn.execute(
                "INSERT INTO catalog.events (position, event_id, stream_id, version, type, schema_version, payload,"
                " metadata, occurred_at) VALUES (%s, %s, %s, 1, 'ImageExcluded', 1, %s, %s, %s)",
                (i + 1, event.event_id, event.stream_id, event.data.model_dump_json(), '{"actor": "test:ana"}',
                 event.occurred_at))
    upgrade(owner_url)
    with catalog.open(pre_chain_database) as cat:
        assert cat.store.verify_chain().ok and cat.store.chain_head().position == 5
        cat.store.append([excluded(5), excluded(6)])  # the chain goes on from the backfilled head
        assert cat.store.verify_chain().ok and cat.store.chain_head().position == 7


def _hash_as_before_0014(previous: bytes, position, event_id, stream_id, version, event_type, schema_version,
                         payload: str, metadata: str, occurred_at: datetime, recorded_at: datetime) -> bytes:
    """How 0010 and the append hashed an event until 0014: one sha256 over the predecessor's hash and the whole
    canonical content, position and recording time included (a log written then holds these)."""
    content = orjson.dumps([position, event_id, stream_id, version, event_type, schema_version,
                            canonical_value(payload), canonical_value(metadata), occurred_at.astimezone(UTC),
                            recorded_at.astimezone(UTC)], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(previous + content).digest()


@pytest.fixture
def database_at_0013(pg_server, tmp_path) -> Iterator[Settings]:
    """A database migrated up to 0013, before the server-side append, holding events chained as then."""
    with database_at_revision(pg_server, tmp_path, "0013") as settings:
        yield settings


def test_migration_0014_rehashes_a_log_chained_by_the_previous_definition(database_at_0013):
    owner_url = database_at_0013.admin_database_url
    previous = GENESIS
    with psycopg.connect(libpq_dsn(owner_url)) as conn:
        for i in range(5):
            event = excluded(i)
            payload, metadata = event.data.model_dump_json(), '{"actor": "test:ana"}'
            recorded_at = T0 + timedelta(hours=1, seconds=i)
            previous = _hash_as_before_0014(previous, i + 1, event.event_id, event.stream_id, 1, "ImageExcluded", 1,
                                            payload, metadata, event.occurred_at, recorded_at)
            conn.execute(
                "INSERT INTO catalog.events (position, event_id, stream_id, version, type, schema_version, payload,"
                " metadata, occurred_at, recorded_at, hash) VALUES (%s, %s, %s, 1, 'ImageExcluded', 1, %s, %s, %s, %s,"
                " %s)", (i + 1, event.event_id, event.stream_id, payload, metadata, event.occurred_at, recorded_at,
                         previous))
    before = EventStore(make_engine(owner_url))
    assert before.verify_chain().broken_at == 1  # the new definition does not hold for the old hashes
    before.db.dispose()
    upgrade(owner_url)
    with catalog.open(database_at_0013) as cat:
        assert cat.store.verify_chain().ok and cat.store.chain_head().position == 5
        cat.store.append([excluded(5), excluded(6)])  # the chain goes on from the re-hashed head
        assert cat.store.verify_chain().ok and cat.store.chain_head().position == 7


def test_cli_log_head_and_check_against_it(logged, database):
    env = database.env()
    head = run_cli("log", "head", env=env).stdout.strip()
    assert head == str(logged.store.chain_head()) and head.startswith(f"{EVENTS}:")
    checked = run_cli("check", "--against", head, env=env)
    assert f"hash chain verified up to {head}; the head held outside ({head}) is in it" in checked.stdout
    _as_owner(database, "UPDATE catalog.events SET metadata = metadata || '{\"actor\": \"mallory\"}'"
                        " WHERE position = 3")
    failed = run_cli("check", "--against", head, env=env, check=False)
    assert failed.returncode == 1
    assert "the hash chain breaks at position 3: the event at position 3 does not match its hash" in failed.stdout
    bad = run_cli("check", "--against", "7:abc", env=env, check=False)
    assert bad.returncode == 2 and "is not a chain head: expected POSITION:HASH" in bad.stderr
