"""catalog.append_events, the server-side append (migration 0014), called in SQL as any writer could: it dedups
within the batch and against the stored ids, refuses an id reused for other content and a stream not at its
expected version (appending nothing), keeps to its own checks where the unique indexes are gone (as they will be
across partitions), links the chain as catalog.chain does in Python, and only the writers may call it. And
catalog.append_event (0020), one event with scalar arguments, does as a batch of one does."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from catalog import events as ev
from catalog.chain import chain_link, content_digest, recorded_micros
from catalog.embedded_postgres import OWNER_ROLE
from catalog.event_log import NewEvent, prepare_events
from catalog.store import APPEND_EVENT, APPEND_EVENTS, _append_event_parameters, _append_parameters

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def excluded(i: int, reason: str = "dust") -> NewEvent:
    return NewEvent(ev.ImageExcluded(sha256="%064x" % (i % 3 + 1), reason=f"{reason} {i}"), T0 + timedelta(seconds=i),
                    event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"test:{i}"), metadata={"actor": "test:ana"})


def call(conn: psycopg.Connection, events: list[NewEvent], expected: dict[str, int] | None = None):
    """One call of the function, committed: (positions, duplicates)."""
    row = conn.execute(APPEND_EVENTS, _append_parameters(prepare_events(events), expected or {})).fetchone()
    conn.commit()
    return row


def call_one(conn: psycopg.Connection, event: NewEvent, expected_version: int | None = None):
    """One call of catalog.append_event, committed: (positions, duplicates), as a batch of one answers."""
    [p] = prepare_events([event])
    row = conn.execute(APPEND_EVENT, _append_event_parameters(p, expected_version)).fetchone()
    conn.commit()
    return row


def one_by_batch(conn: psycopg.Connection, event: NewEvent, expected_version: int | None = None):
    return call(conn, [event], None if expected_version is None else {event.stream_id: expected_version})


def log(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT position, event_id, stream_id, version FROM catalog.events ORDER BY position").fetchall()


@pytest.fixture
def writer(database):
    with psycopg.connect(database.dsn("visionledger_app")) as conn:
        yield conn


def test_a_batch_is_numbered_in_order_with_each_streams_next_version(writer):
    positions, duplicates = call(writer, [excluded(i) for i in range(5)])
    assert positions == [1, 2, 3, 4, 5] and duplicates == [False] * 5
    assert [(p, s[-1], v) for p, _, s, v in log(writer)] == [(1, "1", 1), (2, "2", 1), (3, "3", 1), (4, "1", 2),
                                                             (5, "2", 2)]


def test_stored_ids_are_reported_at_their_positions_and_only_new_ones_appended(writer):
    call(writer, [excluded(0), excluded(1)])
    positions, duplicates = call(writer, [excluded(2), excluded(1), excluded(3), excluded(0)])
    assert positions == [3, 2, 4, 1] and duplicates == [False, True, False, True]
    assert [p for p, *_ in log(writer)] == [1, 2, 3, 4]
    assert call(writer, [excluded(0), excluded(3)]) == ([1, 4], [True, True])  # all stored: nothing appended
    assert len(log(writer)) == 4


def test_an_id_given_twice_in_one_batch_is_refused(writer):
    event = excluded(0)
    params = _append_parameters(prepare_events([event]), {})
    twice = [column * 2 for column in params[:8]] + params[8:]
    with pytest.raises(psycopg.Error) as refused:
        writer.execute(APPEND_EVENTS, twice)
    assert refused.value.sqlstate == "VL003" and "appears twice" in refused.value.diag.message_primary


def test_an_id_stored_with_other_content_is_refused_and_nothing_appended(writer):
    call(writer, [excluded(0)])
    reused = NewEvent(ev.ImageExcluded(sha256=excluded(0).data.sha256, reason="another reason"), T0, event_id=excluded(0).event_id)
    with pytest.raises(psycopg.Error) as refused:
        call(writer, [excluded(1), reused])
    writer.rollback()
    assert refused.value.sqlstate == "VL001"
    assert f"event {reused.event_id} is already stored as a different ImageExcluded" in str(refused.value)
    assert len(log(writer)) == 1


def test_a_stream_behind_or_ahead_of_its_expected_version_appends_nothing(writer):
    call(writer, [excluded(0)])
    stream = excluded(0).stream_id
    with pytest.raises(psycopg.Error) as refused:
        call(writer, [excluded(1), excluded(3)], expected={stream: 0})
    writer.rollback()
    assert refused.value.sqlstate == "VL002"
    assert json.loads(refused.value.diag.message_detail) == {"stream_id": stream, "expected": 0, "actual": 1}
    assert len(log(writer)) == 1
    assert call(writer, [excluded(3)], expected={stream: 1, "image:" + "f" * 64: 0}) == ([2], [False])


def test_without_the_unique_indexes_the_function_still_dedups_and_numbers(database, writer):
    # Partitioned by position range (0017), the indexes hold per partition only. The function must not need them.
    with psycopg.connect(database.dsn(OWNER_ROLE)) as owner:
        for table, constraint in owner.execute(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'u' AND conrelid IN"
                " (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'catalog.events'::regclass)").fetchall():
            owner.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
    call(writer, [excluded(i) for i in range(4)])
    assert call(writer, [excluded(3), excluded(4)]) == ([4, 5], [True, False])
    with pytest.raises(psycopg.Error, match="not the expected"):
        call(writer, [excluded(5)], expected={excluded(0).stream_id: 1})
    writer.rollback()
    stored = log(writer)
    assert len({event_id for _, event_id, _, _ in stored}) == len(stored) == 5
    assert sorted(v for _, _, s, v in stored if s == excluded(0).stream_id) == [1, 2]


def test_the_link_in_sql_is_the_link_in_python(writer):
    recorded = datetime(2026, 3, 2, 8, 0, 0, 123456, tzinfo=UTC)
    digest = content_digest(uuid.uuid4(), "image:" + "a" * 64, "ImageExcluded", 1, '{"a":1}', "{}", T0)
    for previous, position, version in [(bytes(32), 1, 1), (bytes(range(32)), 2**40, 7)]:
        in_sql = writer.execute("SELECT catalog.chain_link(%s, %s, %s, %s, %s)",
                                [previous, position, version, recorded_micros(recorded), digest]).fetchone()[0]
        assert in_sql == chain_link(previous, position, version, recorded, digest)


def test_an_append_links_each_event_as_python_does(writer):
    events = [excluded(i) for i in range(3)]
    call(writer, events)
    previous = bytes(32)
    for p, (position, version, recorded_at, stored) in zip(prepare_events(events), writer.execute(
            "SELECT position, version, recorded_at, hash FROM catalog.events ORDER BY position").fetchall(), strict=True):
        previous = chain_link(previous, position, version, recorded_at, p.digest)
        assert stored == previous


BOTH = pytest.mark.parametrize("function, append_one", [("append_events", one_by_batch), ("append_event", call_one)],
                               ids=["append_events", "append_event"])


@BOTH
@pytest.mark.parametrize("role", ["visionledger_analyst", "visionledger_auditor"])
def test_readers_may_not_call_them(database, role, function, append_one):
    with psycopg.connect(database.dsn(role)) as reader, pytest.raises(psycopg.errors.InsufficientPrivilege,
                                                                       match="permission denied for function"):
        append_one(reader, excluded(0))


@BOTH
def test_they_run_with_the_callers_privileges_and_at_read_committed_only(database, writer, function, append_one):
    with psycopg.connect(database.dsn(OWNER_ROLE)) as owner:
        assert owner.execute(f"SELECT prosecdef FROM pg_proc WHERE oid = 'catalog.{function}'::regproc"
                             ).fetchone() == (False,)
    writer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    with pytest.raises(psycopg.errors.InvalidTransactionState, match="must run at READ COMMITTED"):
        append_one(writer, excluded(0))


@pytest.mark.parametrize("append_one", [call_one, one_by_batch], ids=["append_event", "append_events"])
def test_one_event_is_numbered_deduped_and_checked_as_a_batch_of_one(writer, append_one):
    call(writer, [excluded(0), excluded(1)])
    assert append_one(writer, excluded(3)) == ([3], [False])  # excluded(0)'s stream: its version 2
    assert append_one(writer, excluded(1)) == ([2], [True])  # stored: reported where it is, nothing appended
    reused = NewEvent(ev.ImageExcluded(sha256=excluded(0).data.sha256, reason="another reason"), T0,
                      event_id=excluded(0).event_id)
    with pytest.raises(psycopg.Error) as refused:
        append_one(writer, reused)
    writer.rollback()
    assert refused.value.sqlstate == "VL001"
    assert f"event {reused.event_id} is already stored as a different ImageExcluded" in str(refused.value)
    with pytest.raises(psycopg.Error) as behind:
        append_one(writer, excluded(6), expected_version=1)
    writer.rollback()
    assert behind.value.sqlstate == "VL002"
    assert json.loads(behind.value.diag.message_detail) == {"stream_id": excluded(6).stream_id, "expected": 1,
                                                            "actual": 2}
    assert append_one(writer, excluded(6), expected_version=2) == ([4], [False])
    assert append_one(writer, excluded(8), expected_version=0) == ([5], [False])  # a new stream
    assert [(p, v) for p, _, _, v in log(writer)] == [(1, 1), (2, 1), (3, 2), (4, 3), (5, 1)]


def test_single_and_batched_appends_link_one_chain(writer):
    events = [excluded(i) for i in range(6)]
    call(writer, events[:2])
    call_one(writer, events[2])
    call(writer, events[3:5])
    call_one(writer, events[5])
    previous = bytes(32)
    recorded = writer.execute("SELECT position, version, recorded_at, hash FROM catalog.events ORDER BY position"
                              ).fetchall()
    for p, (position, version, recorded_at, stored) in zip(prepare_events(events), recorded, strict=True):
        previous = chain_link(previous, position, version, recorded_at, p.digest)
        assert stored == previous
    assert [r[2] for r in recorded] == sorted(r[2] for r in recorded)  # recorded_at never decreases
