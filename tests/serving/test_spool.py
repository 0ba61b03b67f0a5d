"""The edge spool and the event recorder: durable on disk, synced in order and exactly once, and taking over
while the real PostgreSQL is stopped."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import catalog
from catalog.embedded_postgres import EmbeddedPostgres
from catalog.events import PartDispositioned
from catalog.store import NewEvent
from serving.recorder import EventRecorder
from serving.spool import SPOOL_FILE, Spool
from tests.builders import cli_env, run_cli

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


def _spool_raw(folder: Path, event: NewEvent, *, payload: dict | None = None, metadata: dict | None = None) -> None:
    """Write `event` into the spool's file as the server before the catalog's character checks spooled it: the
    payload and metadata as given, unchecked."""
    with sqlite3.connect(folder / SPOOL_FILE) as db:
        db.execute("INSERT INTO events (event_id, type, schema_version, payload, metadata, occurred_at)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   (str(event.event_id), event.type, 1, json.dumps(payload or event.data.model_dump(mode="json")),
                    json.dumps(metadata or event.metadata), event.occurred_at.isoformat()))


def _spool_with_bad_events_between_good_ones(cat: catalog.Catalog, folder: Path) -> tuple[list[NewEvent], NewEvent]:
    """Good events with three the catalog refuses between them: a part id with NUL (refused by the payload's
    checks), an actor with NUL in the metadata (refused by the append's metadata checks: PostgreSQL could not store
it), and an event id
    the catalog holds with other content (EventIdConflict). Returns the good ones in order, and the
    NUL-part event."""
    stored = _decision("stored", 0)
    cat.append([stored])
    good = [_decision(f"good{i}", i + 1) for i in range(5)]
    nul_part = _decision("tmp", 10)
    spool = Spool(folder)
    spool.put(good[:2])
    spool.close()
    _spool_raw(folder, nul_part, payload={**nul_part.data.model_dump(mode="json"), "part_id": "line1-\x00-7"})
    spool = Spool(folder)
    spool.put([good[2]])
    spool.close()
    nul_actor = _decision("nul-actor", 11)
    _spool_raw(folder, nul_actor, metadata={"actor": "visionledger\x00serve", "source": "serve"})
    spool = Spool(folder)
    spool.put([good[3], NewEvent(data=_decision("other", 12).data, occurred_at=T0, event_id=stored.event_id),
               good[4]])
    spool.close()
    return good, nul_part


def test_events_the_catalog_refuses_are_set_aside_and_the_rest_drains_in_order(cat: catalog.Catalog,
                                                                             tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    good, nul_part = _spool_with_bad_events_between_good_ones(cat, folder)
    spool = Spool(folder)
    assert spool.pending() == 8
    report = spool.sync(cat.append, page_size=3)
    assert (report.appended, report.duplicates, report.set_aside, spool.pending()) == (5, 0, 3, 0)
    assert [s[0] for s in _stored(cat)][1:] == [e.event_id for e in good]  # in order, nothing waiting

    set_aside = spool.set_aside()
    assert [e.event_id for e in set_aside][0] == str(nul_part.event_id)
    reasons = [e.error for e in set_aside]
    assert reasons[0].startswith("EventValidationError") and "part_id" in reasons[0] and "U+0000" in reasons[0]
    assert reasons[1].startswith("EventValidationError") and "metadata actor" in reasons[1]
    assert reasons[2].startswith("EventIdConflict")
    assert all("SELECT" not in r and "INSERT" not in r for r in reasons)  # the error, not the statement
    assert all(e.set_aside_at for e in set_aside)

    again = spool.sync(cat.append)
    assert (again.appended, again.set_aside, len(spool.set_aside())) == (0, 0, 3)
    spool.close()
    assert [s[0] for s in _stored(cat)][1:] == [e.event_id for e in good]

    status = json.loads(run_cli("spool", "status", "--spool", str(folder), env=cli_env(cat)).stdout)
    assert status["spooled_events"] == 0 and status["set_aside_events"] == 3
    shown = status["set_aside"][0]
    assert shown["event_id"] == str(nul_part.event_id) and shown["type"] == "PartDispositioned"
    assert shown["payload"]["part_id"] == "line1-\x00-7" and "U+0000" in shown["reason"]

    jammed = tmp_path / "jammed"
    Spool(jammed).close()
    _spool_raw(jammed, nul_part, payload={**nul_part.data.model_dump(mode="json"), "part_id": "\x00"})
    status = json.loads(run_cli("spool", "status", "--spool", str(jammed), env=cli_env(cat)).stdout)
    assert status["spooled_events"] == 1 and status["oldest"]["type"] == "PartDispositioned"  # read, not parsed


def test_the_recorder_sets_refused_spooled_events_aside_and_goes_back_to_the_catalog(cat: catalog.Catalog,
                                                                                    tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    good, _ = _spool_with_bad_events_between_good_ones(cat, folder)
    recorder = EventRecorder(cat.append, Spool(folder), retry_seconds=0.1).start()
    try:
        later = _decision("later", 20)
        assert recorder.record([later]) == "spool"  # behind what is spooled, to keep the order
        deadline = time.monotonic() + 30
        while recorder.status().spooled and time.monotonic() < deadline:
            time.sleep(0.05)
        status = recorder.status()
        assert (status.spooled, status.set_aside, status.catalog_reachable) == (0, 3, True)
        assert recorder.record([_decision("last", 21)]) == "catalog"
    finally:
        recorder.stop()
    assert [s[1] for s in _stored(cat)][1:] == [f"part:{e.data.part_id}" for e in [*good, later]] + ["part:last"]
