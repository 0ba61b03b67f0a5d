"""The edge spool and the event recorder: durable on disk, synced in order and exactly once, and taking over
while the real PostgreSQL is stopped."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import catalog
from catalog.embedded_postgres import EmbeddedPostgres
from catalog.events import PartDispositioned
from catalog.store import NewEvent
from serving.recorder import EventRecorder
from serving.spool import Spool

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _decision(part: str, minute: int, decision: str = "accept") -> NewEvent:
    return NewEvent(
        data=PartDispositioned(part_id=part, decision=decision, decided_by="engine-x", decider="engine",
                               rule="default", rules_version="default@1"),
        occurred_at=T0 + timedelta(minutes=minute),
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{part}/{minute}/{decision}"),
        metadata={"actor": "visionledger-serve", "source": "serve"},
    )


def _stored(cat: catalog.Catalog) -> list[tuple]:
    return [(e.event_id, e.stream_id, e.occurred_at, e.metadata.get("source"))
            for e in cat.store.read(0, limit=None) if e.type == "PartDispositioned"]


def test_spooled_events_survive_a_reopen_and_sync_once_in_order(cat: catalog.Catalog, tmp_path: Path) -> None:
    events = [_decision(f"p{i % 3}", i, "reject" if i % 2 else "accept") for i in range(7)]
    spool = Spool(tmp_path / "spool")
    spool.put(events[:4])
    spool.put(events[3:])  # an event handed in twice is kept once
    spool.close()

    spool = Spool(tmp_path / "spool")  # a restarted server finds them all
    assert spool.pending() == 7
    assert [e.event_id for e in spool.peek()] == [e.event_id for e in events]
    # A sync that appended its first page and died before removing it: the next sync appends it again,
    # and the store keeps each event id once.
    cat.append(spool.peek(3))
    report = spool.sync(cat.append, page_size=3)
    assert (report.appended, report.duplicates, spool.pending()) == (4, 3, 0)
    stored = _stored(cat)
    assert [s[0] for s in stored] == [e.event_id for e in events]
    assert [s[2] for s in stored] == [e.occurred_at for e in events]  # original times, not the sync's
    assert spool.sync(cat.append).synced == 0
    cat.catch_up()
    with cat.db.connect() as conn:
        decided = dict(conn.exec_driver_sql("SELECT part_id, decision FROM projections.part_dispositions").fetchall())
    assert decided == {"p0": "accept", "p1": "accept", "p2": "reject"}  # each part's last decision


def test_recorder_spools_while_postgres_is_stopped_and_syncs_when_it_returns(
    cat: catalog.Catalog, pg_server, tmp_path: Path
) -> None:
    server = EmbeddedPostgres(pg_server.home)
    recorder = EventRecorder(cat.append, Spool(tmp_path / "spool"), retry_seconds=0.2).start()
    try:
        assert recorder.record([_decision("a", 0)]) == "catalog"
        server.stop()
        during = [_decision("a", 1, "reject"), _decision("b", 2), _decision("c", 3)]
        assert [recorder.record([e]) for e in during] == ["spool"] * 3
        status = recorder.status()
        assert not status.catalog_reachable and status.spooled == 3 and status.last_error
        server.start()
        deadline = time.monotonic() + 30
        while recorder.status().spooled and time.monotonic() < deadline:
            time.sleep(0.1)
        assert recorder.status().spooled == 0 and recorder.status().catalog_reachable
        assert recorder.record([_decision("d", 4)]) == "catalog"
    finally:
        if not server.running():
            server.start()
        recorder.stop()
    stored = _stored(cat)
    assert [s[1] for s in stored] == ["part:a", "part:a", "part:b", "part:c", "part:d"]
    assert len({s[0] for s in stored}) == 5  # nothing doubled
    assert [s[2] for s in stored] == [T0 + timedelta(minutes=m) for m in range(5)]


def test_a_refused_event_fails_only_its_caller(cat: catalog.Catalog, tmp_path: Path) -> None:
    recorder = EventRecorder(cat.append, Spool(tmp_path / "spool")).start()
    try:
        good = _decision("ok-part", 0)
        clash = NewEvent(data=_decision("other", 9).data, occurred_at=T0, event_id=good.event_id)
        futures = [recorder.submit([good]), recorder.submit([clash])]
        assert futures[0].result() == "catalog"
        try:
            futures[1].result()
            raise AssertionError("an event id reused for other content must be refused")
        except catalog.EventIdConflict:
            pass
        assert recorder.status().spooled == 0  # refused, not mistaken for an outage
    finally:
        recorder.stop()
