"""Contract tests of an event store: append and read, per-stream versions, optimistic concurrency,
idempotency, validation. Written once against the EventStore interface, run per backend by subclassing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import catalog
from catalog import events as ev
from catalog.errors import ConcurrencyError, EventIdConflict, EventValidationError
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


class EventStoreContract:
    """Every event store backend must pass these. Subclasses provide the ``store`` fixture."""

    def test_append_and_read_back(self, store: EventStore):
        result = store.append([NewEvent(ingested(), T0), NewEvent(label(), T0 + timedelta(hours=1),
                                                                      metadata={"actor": "ana"})])
        assert result.positions == [1, 2] and result.duplicates == []
        first, second = store.read()
        assert (first.position, first.stream_id, first.version, first.type) == (1, f"image:{SHA_A}", 1, "ImageIngested")
        assert (second.version, second.metadata) == (2, {"actor": "ana"})
        assert first.data == ingested()
        assert second.occurred_at == T0 + timedelta(hours=1) and second.recorded_at >= first.recorded_at
        assert store.head() == 2

    def test_streams_are_versioned_independently(self, store: EventStore):
        store.append([NewEvent(ingested(SHA_A), T0), NewEvent(ingested(SHA_B), T0), NewEvent(label(SHA_A), T0)])
        assert [e.version for e in store.read_stream(f"image:{SHA_A}")] == [1, 2]
        assert [e.version for e in store.read_stream(f"image:{SHA_B}")] == [1]
        assert store.stream_version(f"image:{SHA_A}") == 2
        assert store.stream_version("image:" + "c" * 64) == 0

    def test_read_pages_and_bounds(self, store: EventStore):
        store.append([NewEvent(ingested(f"{i:064x}"), T0) for i in range(1, 26)])
        assert [e.position for e in store.read(after=10, upto=14)] == [11, 12, 13, 14]
        pages = list(store.iter_events(after=0, page_size=10))
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [e.position for e in store.read(types=["LabelRecorded"])] == []

    def test_expected_version_is_enforced(self, store: EventStore):
        stream = f"image:{SHA_A}"
        store.append_one(NewEvent(ingested(), T0), expected_version=0)
        with pytest.raises(ConcurrencyError) as caught:
            store.append_one(NewEvent(label(), T0), expected_version=0)
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        assert "another writer appended first" in str(caught.value)
        store.append_one(NewEvent(label(), T0), expected_version=1)
        assert store.stream_version(stream) == 2

    def test_concurrency_error_appends_nothing_from_the_batch(self, store: EventStore):
        store.append([NewEvent(ingested(SHA_A), T0)])
        with pytest.raises(ConcurrencyError):
            store.append([NewEvent(ingested(SHA_B), T0), NewEvent(label(SHA_A), T0)],
                         expected_versions={f"image:{SHA_A}": 5})
        assert store.head() == 1

    def test_same_event_twice_is_stored_once_and_reported(self, store: EventStore):
        event = NewEvent(ingested(), T0)
        assert store.append([event]).duplicates == []
        again = store.append([event])
        assert again.duplicates == [event.event_id] and again.positions == [1] and again.all_duplicates
        # a batch mixing a stored event with new ones stores only the new ones
        mixed = store.append([event, NewEvent(label(), T0)])
        assert mixed.positions == [1, 2] and mixed.appended == 1
        assert store.head() == 2

    def test_retrying_a_successful_append_with_expected_version_is_idempotent(self, store: EventStore):
        event = NewEvent(ingested(), T0)
        store.append_one(event, expected_version=0)
        assert store.append_one(event, expected_version=0).all_duplicates

    def test_reusing_an_event_id_for_other_content_is_refused(self, store: EventStore):
        event_id = uuid.uuid4()
        store.append([NewEvent(ingested(), T0, event_id=event_id)])
        with pytest.raises(EventIdConflict, match="already stored as a different ImageIngested"):
            store.append([NewEvent(ingested(part="P-2"), T0, event_id=event_id)])
        assert store.head() == 1

    def test_duplicate_ids_within_one_batch_are_refused(self, store: EventStore):
        event = NewEvent(ingested(), T0)
        with pytest.raises(EventValidationError, match="appears twice"):
            store.append([event, event])

    @pytest.mark.parametrize("make, message", [
        (lambda: NewEvent(ingested(), datetime(2026, 3, 2, 8)), "occurred_at must be a timezone-aware"),
        (lambda: NewEvent(ingested(), T0, metadata={"user": "x"}), "unknown metadata keys"),
        (lambda: NewEvent({"sha256": SHA_A}, T0), "must be one of the catalog's event types"),
        (lambda: NewEvent(ingested(), T0, event_id="not-a-uuid"), "event_id must be a UUID"),
    ])
    def test_invalid_envelopes_are_refused(self, store: EventStore, make, message):
        with pytest.raises(EventValidationError, match=message):
            store.append([NewEvent(label(), T0), make()])
        assert store.head() == 0

    def test_large_batches_go_through_copy_with_contiguous_positions(self, store: EventStore):
        batch = [NewEvent(ingested(f"{i:064x}"), T0) for i in range(1, 1001)]
        result = store.append(batch)
        assert result.positions == list(range(1, 1001))
        assert [e.event_id for e in store.read(limit=None)] == [e.event_id for e in batch]

    def test_position_at_maps_time_to_the_catalog_then(self, store: EventStore):
        store.append([NewEvent(ingested(SHA_A), T0)])
        between = store.read()[0].recorded_at
        store.append([NewEvent(ingested(SHA_B), T0)])
        assert store.position_at(between) == 1
        assert store.position_at(between - timedelta(days=1)) == 0
        assert store.position_at(datetime.now(UTC) + timedelta(days=1)) == 2
        with pytest.raises(EventValidationError, match="timezone-aware"):
            store.position_at(datetime(2026, 3, 2))


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    def store(self, cat: catalog.Catalog) -> EventStore:
        return cat.store


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
