"""Contract tests of an event store: append and read, per-stream versions, optimistic concurrency,
idempotency, validation, and global order under concurrent writers (threads and processes). Written once
against the EventLog interface, run per backend by subclassing."""

from __future__ import annotations

import multiprocessing
import queue
import sqlite3
import threading
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import catalog
from catalog import events as ev
from catalog.database import make_engine
from catalog.errors import ConcurrencyError, EventIdConflict, EventValidationError
from catalog.event_log import EventLog
from catalog.sqlite_store import SqliteEventStore
from catalog.store import EventStore, NewEvent

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SHA_A = "a" * 64
SHA_B = "b" * 64


def ingested(sha: str = SHA_A, part: str = "P-1", at: datetime = T0) -> ev.ImageIngested:
    return ev.ImageIngested(
        sha256=sha, part_id=part, line="line-a", station="st-1", camera="cam-1", captured_at=at, width=512,
        height=512, channels=1, bit_depth=8, byte_size=1000, blob_uri=f"blobs/{sha}", source_path="x.png",
    )


def label(sha: str = SHA_A, cls: str = "scratch", label_id: str = "L-1") -> ev.LabelRecorded:
    return ev.LabelRecorded(sha256=sha, label_id=label_id, label=cls, annotator="ana", ontology_version=1)


WRITERS, BATCHES, BATCH = 4, 25, 40  # small batches use INSERT, big ones COPY (on PostgreSQL): mix both
RACERS, ROUNDS = 3, 8
RACED_STREAM = f"image:{SHA_A}"


def _batch(writer: int, n: int) -> list[NewEvent]:
    size = BATCH if n % 2 else 5
    return [
        NewEvent(ev.ImageExcluded(sha256="%064x" % (writer * 10**6 + n * 1000 + i + 1), reason=f"w{writer} b{n}"), T0)
        for i in range(size)
    ]


def _race(open_store: Callable[[], EventLog], racer: int, barrier, outcomes) -> None:
    """One racer, in a thread or a process: each round, read the raced stream's version, wait until every racer
    has read it, append expecting it; then append a batch of its own. Puts (rounds won, positions of its
    batches) in ``outcomes``, or the traceback of what failed."""
    try:
        store = open_store()
        won, batches = [], []
        for round_ in range(ROUNDS):
            barrier.wait(timeout=60)  # every racer is done with the previous round
            version = store.stream_version(RACED_STREAM)
            barrier.wait(timeout=60)  # every racer read the same version: nobody has appended yet
            try:
                store.append_one(NewEvent(label(label_id=f"r{racer}-{round_}"), T0), expected_version=version)
                won.append(round_)
            except ConcurrencyError as lost:
                if (lost.expected, lost.actual) != (version, version + 1):
                    raise
            batches.append(store.append(_batch(racer, round_)).positions)
        outcomes.put((won, batches))
    except BaseException:  # reported by the test: an exception in a thread or a child would otherwise vanish
        barrier.abort()
        outcomes.put(traceback.format_exc())


class EventStoreContract:
    """Every event store backend must pass these. Subclasses provide two fixtures: ``store``, an empty log,
    and ``open_store``, a function that opens another handle on that same log, as another process would."""

    def test_append_and_read_back(self, store: EventLog):
        result = store.append([NewEvent(ingested(), T0), NewEvent(label(), T0 + timedelta(hours=1),
                                                                      metadata={"actor": "ana"})])
        assert result.positions == [1, 2] and result.duplicates == []
        first, second = store.read()
        assert (first.position, first.stream_id, first.version, first.type) == (1, f"image:{SHA_A}", 1, "ImageIngested")
        assert (second.version, second.metadata) == (2, {"actor": "ana"})
        assert first.data == ingested()
        assert second.occurred_at == T0 + timedelta(hours=1) and second.recorded_at >= first.recorded_at
        assert store.head() == 2

    def test_streams_are_versioned_independently(self, store: EventLog):
        store.append([NewEvent(ingested(SHA_A), T0), NewEvent(ingested(SHA_B), T0), NewEvent(label(SHA_A), T0)])
        assert [e.version for e in store.read_stream(f"image:{SHA_A}")] == [1, 2]
        assert [e.version for e in store.read_stream(f"image:{SHA_B}")] == [1]
        assert store.stream_version(f"image:{SHA_A}") == 2
        assert store.stream_version("image:" + "c" * 64) == 0

    def test_read_pages_and_bounds(self, store: EventLog):
        store.append([NewEvent(ingested(f"{i:064x}"), T0) for i in range(1, 26)])
        assert [e.position for e in store.read(after=10, upto=14)] == [11, 12, 13, 14]
        pages = list(store.iter_events(after=0, page_size=10))
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [e.position for e in store.read(types=["LabelRecorded"])] == []

    def test_read_filters_by_type(self, store: EventLog):
        store.append([NewEvent(ingested(SHA_A), T0), NewEvent(label(SHA_A), T0), NewEvent(ingested(SHA_B), T0)])
        assert [e.position for e in store.read(types=["LabelRecorded"])] == [2]
        assert [e.position for e in store.read(types=iter(["ImageIngested", "LabelRecorded"]))] == [1, 2, 3]
        assert store.read(types=[]) == []

    def test_expected_version_is_enforced(self, store: EventLog):
        stream = f"image:{SHA_A}"
        store.append_one(NewEvent(ingested(), T0), expected_version=0)
        with pytest.raises(ConcurrencyError) as caught:
            store.append_one(NewEvent(label(), T0), expected_version=0)
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        assert "another writer appended first" in str(caught.value)
        store.append_one(NewEvent(label(), T0), expected_version=1)
        assert store.stream_version(stream) == 2

    def test_concurrency_error_appends_nothing_from_the_batch(self, store: EventLog):
        store.append([NewEvent(ingested(SHA_A), T0)])
        with pytest.raises(ConcurrencyError):
            store.append([NewEvent(ingested(SHA_B), T0), NewEvent(label(SHA_A), T0)],
                         expected_versions={f"image:{SHA_A}": 5})
        assert store.head() == 1

    def test_same_event_twice_is_stored_once_and_reported(self, store: EventLog):
        event = NewEvent(ingested(), T0)
        assert store.append([event]).duplicates == []
        again = store.append([event])
        assert again.duplicates == [event.event_id] and again.positions == [1] and again.all_duplicates
        # a batch mixing a stored event with new ones stores only the new ones
        mixed = store.append([event, NewEvent(label(), T0)])
        assert mixed.positions == [1, 2] and mixed.appended == 1
        assert store.head() == 2

    def test_retrying_a_successful_append_with_expected_version_is_idempotent(self, store: EventLog):
        event = NewEvent(ingested(), T0)
        store.append_one(event, expected_version=0)
        assert store.append_one(event, expected_version=0).all_duplicates

    def test_reusing_an_event_id_for_other_content_is_refused(self, store: EventLog):
        event_id = uuid.uuid4()
        store.append([NewEvent(ingested(), T0, event_id=event_id)])
        with pytest.raises(EventIdConflict, match="already stored as a different ImageIngested"):
            store.append([NewEvent(ingested(part="P-2"), T0, event_id=event_id)])
        assert store.head() == 1

    def test_duplicate_ids_within_one_batch_are_refused(self, store: EventLog):
        event = NewEvent(ingested(), T0)
        with pytest.raises(EventValidationError, match="appears twice"):
            store.append([event, event])

    @pytest.mark.parametrize("make, message", [
        (lambda: NewEvent(ingested(), datetime(2026, 3, 2, 8)), "occurred_at must be a timezone-aware"),
        (lambda: NewEvent(ingested(), T0, metadata={"user": "x"}), "unknown metadata keys"),
        # jsonb cannot store a NUL: such an event would jam whatever queued behind it
        (lambda: NewEvent(ingested(), T0, metadata={"actor": "user:ana\x00"}), "metadata actor: contains the control"),
        (lambda: NewEvent({"sha256": SHA_A}, T0), "must be one of the catalog's event types"),
        (lambda: NewEvent(ingested(), T0, event_id="not-a-uuid"), "event_id must be a UUID"),
    ])
    def test_invalid_envelopes_are_refused(self, store: EventLog, make, message):
        with pytest.raises(EventValidationError, match=message):
            store.append([NewEvent(label(), T0), make()])
        assert store.head() == 0

    def test_large_batches_take_contiguous_positions_in_the_given_order(self, store: EventLog):
        # (the PostgreSQL store sends these through COPY rather than INSERT)
        batch = [NewEvent(ingested(f"{i:064x}"), T0) for i in range(1, 1001)]
        result = store.append(batch)
        assert result.positions == list(range(1, 1001))
        assert [e.event_id for e in store.read(limit=None)] == [e.event_id for e in batch]

    def test_batches_appended_in_turn_keep_their_order_and_stop_at_a_refused_one(self, store: EventLog):
        def batch(first: int, n: int) -> list[NewEvent]:
            return [NewEvent(ingested(f"{i:064x}"), T0) for i in range(first, first + n)]

        batches = [batch(1, 20), batch(21, 2), [], batch(23, 30)]
        results = list(store.append_batches(iter(batches)))
        assert [r.positions for r in results] == [list(range(1, 21)), [21, 22], [], list(range(23, 53))]
        assert [e.event_id for e in store.read(limit=None)] == [e.event_id for b in batches for e in b]
        # A stored event is reported, an id reused for other content refused: nothing of that batch or after it
        reused = NewEvent(ingested(part="P-2"), T0, event_id=batches[3][0].event_id)
        going = store.append_batches([batches[0][:3] + batch(60, 17), batch(80, 20) + [reused], batch(100, 20)])
        first = next(going)
        assert first.duplicates == [e.event_id for e in batches[0][:3]] and first.positions[3:] == list(range(53, 70))
        with pytest.raises(EventIdConflict, match="already stored as a different ImageIngested"):
            next(going)
        assert store.head() == 69
        assert store.append(batch(100, 20)).positions == list(range(70, 90))  # the log goes on from there

    def test_position_at_maps_time_to_the_catalog_then(self, store: EventLog):
        store.append([NewEvent(ingested(SHA_A), T0)])
        between = store.read()[0].recorded_at
        store.append([NewEvent(ingested(SHA_B), T0)])
        assert store.position_at(between) == 1
        assert store.position_at(between - timedelta(days=1)) == 0
        assert store.position_at(datetime.now(UTC) + timedelta(days=1)) == 2
        with pytest.raises(EventValidationError, match="timezone-aware"):
            store.position_at(datetime(2026, 3, 2))


    # -- order under concurrent writers -------------------------------------------------------------------

    def test_concurrent_writers_and_a_tailing_reader(self, store: EventLog):
        """Global order under concurrent writers: a reader sees every event once, in order, with no gaps."""
        batches: dict[tuple[int, int], list[int]] = {}
        errors: list[BaseException] = []
        done = threading.Event()

        def write(writer: int) -> None:
            try:
                for n in range(BATCHES):
                    batches[(writer, n)] = store.append(_batch(writer, n)).positions
            except BaseException as exc:  # surfaced below: a thread's exception would otherwise vanish
                errors.append(exc)

        seen: list[int] = []

        def read() -> None:
            after = 0
            while True:
                finished = done.is_set()  # read once more after the writers finished
                page = store.read(after, limit=97)
                seen.extend(e.position for e in page)
                if page:
                    after = page[-1].position
                elif finished:
                    return

        reader = threading.Thread(target=read)
        writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        reader.start()
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        done.set()
        reader.join(timeout=60)
        assert not errors
        total = sum(len(p) for p in batches.values())
        assert total == store.head()
        # every event exactly once, in position order, no gaps
        assert seen == list(range(1, total + 1))
        # each batch's positions are contiguous, and batches never interleave
        for positions in batches.values():
            assert positions == list(range(positions[0], positions[0] + len(positions)))
        recorded = [e.recorded_at for e in store.read(limit=None)]
        assert recorded == sorted(recorded)

    def test_tail_follows_new_appends(self, store: EventLog):
        store.append(_batch(0, 0))

        def later() -> None:
            store.append(_batch(1, 1))

        timer = threading.Timer(0.3, later)
        timer.start()
        seen = [e.position for e in store.tail(after=2, idle_timeout=2.0)]
        timer.join()
        assert seen == list(range(3, 5 + BATCH + 1))

    @pytest.mark.parametrize("racers_are", ["threads", "processes"])
    def test_of_racers_expecting_one_version_exactly_one_wins_and_the_log_stays_gap_free(
            self, store: EventLog, open_store: Callable[[], EventLog], racers_are: str):
        if racers_are == "threads":
            start, barrier, outcomes, opener = threading.Thread, threading.Barrier(RACERS), queue.Queue(), lambda: store
        else:  # fork: the children inherit the opener and the barrier; each opens its own handle on the log
            fork = multiprocessing.get_context("fork")
            start, barrier, outcomes, opener = fork.Process, fork.Barrier(RACERS), fork.Queue(), open_store
        racers = [start(target=_race, args=(opener, r, barrier, outcomes)) for r in range(RACERS)]
        for racer in racers:
            racer.start()
        results = [outcomes.get(timeout=180) for _ in racers]
        for racer in racers:
            racer.join(timeout=60)
        failures = [r for r in results if isinstance(r, str)]
        assert not failures, "\n".join(failures)
        assert sorted(round_ for won, _ in results for round_ in won) == list(range(ROUNDS))  # one winner a round
        assert [e.version for e in store.read_stream(RACED_STREAM)] == list(range(1, ROUNDS + 1))
        batches = [positions for _, racer_batches in results for positions in racer_batches]
        for positions in batches:
            assert positions == list(range(positions[0], positions[0] + len(positions)))
        head = store.head()
        assert head == ROUNDS + sum(len(p) for p in batches)
        assert [e.position for e in store.read(limit=None)] == list(range(1, head + 1))

    def test_every_append_extends_the_hash_chain_over_what_the_store_gives_back(self, store: EventLog):
        # Numbers PostgreSQL's jsonb rewrites (1e20 comes back as 100000000000000000000, -0.0 as 0.0), keys it
        # reorders, text beyond ASCII: the hash computed from what was sent holds for what is read back.
        selection = {"big": 1e20, "u64": 1e19, "digits": 1.2345678901234567e18, "huge": 1.2345678901234567e25,
                     "negative_zero": -0.0, "small": 1e-7, "half": 1.50, "whole": 3.0, "int": 2**63, "third": 1 / 3,
                     "text": "é ✓ 😀 \\ \" \n\t", "ñandú": {"b": [1.0, 2.5, {"z": 0.0}], "a": "ü"}}
        tricky = NewEvent(ev.ImageExcluded(sha256=SHA_A, reason="numbers", selection=selection), T0,
                          metadata={"actor": "zoë", "source": "test"})
        store.append([tricky])
        store.append(_batch(1, 1))  # large: COPY on PostgreSQL
        store.append(_batch(1, 2))  # small: INSERT
        store.append_one(NewEvent(label(), T0))
        head = store.chain_head()
        store.append([tricky])  # a duplicate appends nothing and leaves the chain as it was
        assert store.chain_head() == head
        report = store.verify_chain(page_size=7)
        events = store.read()
        assert report.ok and report.events == store.head() == len(events) and report.head == head
        assert head.hash == events[-1].hash and len({e.hash for e in events}) == len(events)
        assert events[0].payload["selection"]["ñandú"] == {"b": [1.0, 2.5, {"z": 0.0}], "a": "ü"}


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    def store(self, cat: catalog.Catalog) -> EventStore:
        return cat.store

    @pytest.fixture
    def open_store(self, cat: catalog.Catalog) -> Callable[[], EventLog]:
        return lambda: EventStore(make_engine(cat.urls.app))


class TestSqliteEventStore(EventStoreContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "edge" / "events.sqlite3"

    @pytest.fixture
    def store(self, path: Path) -> SqliteEventStore:
        return SqliteEventStore(path)

    @pytest.fixture
    def open_store(self, path: Path) -> Callable[[], EventLog]:
        return lambda: SqliteEventStore(path)

    @pytest.mark.parametrize("statement", ["UPDATE events SET type = 'ImageIncluded'", "DELETE FROM events"])
    def test_the_file_itself_refuses_to_change_or_remove_events(self, store: SqliteEventStore, path, statement):
        store.append([NewEvent(ingested(), T0)])
        before = store.read()
        with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(statement)
        assert store.read() == before

    def test_a_reopened_file_holds_the_whole_log_and_goes_on_from_its_head(self, store: SqliteEventStore, path):
        store.append([NewEvent(ingested(SHA_A), T0), NewEvent(label(SHA_A), T0)])
        reopened = SqliteEventStore(path)
        assert reopened.read() == store.read() and reopened.stream_version(f"image:{SHA_A}") == 2
        assert reopened.append([NewEvent(ingested(SHA_B), T0)]).positions == [3]


# -- payload validation and upcasting (independent of the backend) ---------------------------------------


@pytest.mark.parametrize("payload, message", [
    ({**ingested().model_dump(mode="json"), "captured_at": "2026-03-02T08:00:00"}, "captured_at: Input should have timezone info"),
    ({**ingested().model_dump(mode="json"), "sha256": "xyz"}, "sha256: String should match pattern"),
    ({**ingested().model_dump(mode="json"), "colour": "red"}, "colour: Extra inputs are not permitted"),
    ({k: v for k, v in ingested().model_dump(mode="json").items() if k != "part_id"}, "part_id: Field required"),
    ({**ingested().model_dump(mode="json"), "bit_depth": 12}, "bit_depth: Input should be 8 or 16"),
])
def test_payloads_are_validated_with_a_specific_message(payload, message):
    with pytest.raises(EventValidationError, match=message):
        ev.parse_event("ImageIngested", payload)


def test_unknown_event_type_names_the_known_ones():
    with pytest.raises(EventValidationError, match="unknown event type 'ImageDeleted'; known types: .*ImageExcluded"):
        ev.parse_event("ImageDeleted", {})


def test_label_class_names_are_restricted():
    with pytest.raises(EventValidationError, match="label: String should match pattern"):
        ev.parse_event("LabelRecorded", {**label().model_dump(mode="json"), "label": "Big Crack!"})


def test_old_schema_versions_are_upcast_on_read(cat: catalog.Catalog, monkeypatch):
    cat.store.append([NewEvent(ev.ImageExcluded(sha256=SHA_A, reason="lens fogged"), T0)])
    # Pretend the type evolved: v2 prefixes reasons with their origin. Stored v1 events must read as v2.
    monkeypatch.setattr(ev.ImageExcluded, "schema_version", 2)
    monkeypatch.setitem(ev.UPCASTERS, ("ImageExcluded", 1), lambda p: {**p, "reason": "curator: " + p["reason"]})
    stored = cat.store.read()[0]
    assert stored.schema_version == 1 and stored.payload["reason"] == "lens fogged"
    assert stored.data.reason == "curator: lens fogged"


def test_missing_upcaster_and_future_versions_are_reported(monkeypatch):
    monkeypatch.setattr(ev.ImageExcluded, "schema_version", 3)
    with pytest.raises(EventValidationError, match="no upcaster for ImageExcluded v1 -> v2"):
        ev.parse_event("ImageExcluded", {"sha256": SHA_A, "reason": "dust"}, schema_version=1)
    with pytest.raises(EventValidationError, match="newer than this code knows"):
        ev.parse_event("ImageExcluded", {"sha256": SHA_A, "reason": "dust"}, schema_version=4)


def test_non_finite_numbers_are_refused_at_the_door():
    """NaN has no JSON spelling: stored, it would come back as null and the event could not be read."""
    with pytest.raises(EventValidationError, match="scores.ok: Input should be a finite number"):
        ev.parse_event("PredictionRecorded", {"sha256": "a" * 64, "engine_id": "e", "scores": {"ok": float("nan")},
                                              "predicted_class": "ok"})

