"""Point lookups by key, for the writers that must know what is stored before they append: which images a
delivered path or a sha256 names, the labels images hold now, events by id. Each takes the keys it asks
about and reads nothing when there are none."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from catalog.events import image_stream

if TYPE_CHECKING:
    from catalog import Catalog


def _rows(cat: Catalog, sql: str, values: Collection[Any], **more: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` whose ``%(v)s`` is the array of ``values`` (nothing asked, nothing read)."""
    if not values:
        return []
    with cat.read(latest=True) as conn:  # what to append rests on what the primary holds now
        return [tuple(r) for r in conn.exec_driver_sql(sql, {"v": list(values), **more}).fetchall()]


def images_at_paths(cat: Catalog, paths: Collection[str]) -> dict[str, set[str]]:
    """The images (sha256) each delivered path was a sighting of."""
    found: dict[str, set[str]] = {}
    for path, sha in _rows(cat, "SELECT DISTINCT source_path, sha256 FROM projections.image_sightings"
                                " WHERE source_path = ANY(%(v)s)", paths):
        found.setdefault(path, set()).add(sha)
    return found


def existing_images(cat: Catalog, shas: Collection[str]) -> set[str]:
    """Those of ``shas`` that are images of the catalog."""
    return {sha for (sha,) in _rows(cat, "SELECT sha256 FROM projections.images WHERE sha256 = ANY(%(v)s)", shas)}


def current_labels(cat: Catalog, shas: Collection[str]) -> dict[str, tuple[str, int]]:
    """Each labelled image's current label as recorded and the ontology version it was recorded under."""
    rows = _rows(cat, "SELECT sha256, label, ontology_version FROM projections.current_labels"
                      " WHERE sha256 = ANY(%(v)s)", set(shas))
    return {sha: (label, version) for sha, label, version in rows}


def labels_named(cat: Catalog, names: Iterable[str]) -> list[tuple[str, str, int]]:
    """(sha256, label, ontology version) of every image whose current label is recorded under one of
    ``names``, by sha256."""
    return _rows(cat, "SELECT sha256, label, ontology_version FROM projections.current_labels"
                      " WHERE label = ANY(%(v)s) ORDER BY sha256", sorted(set(names)))


def payloads_by_id(cat: Catalog, event_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The payloads of the stored events among ``event_ids``."""
    return dict(_rows(cat, "SELECT event_id, payload FROM catalog.events WHERE event_id = ANY(%(v)s)", event_ids))


def predicted_class(cat: Catalog, sha256: str, prediction_event_id: uuid.UUID) -> str | None:
    """The class a PredictionRecorded of image ``sha256`` gave, or None when no such prediction of that image
    is stored; read from the image's stream, its archived events included."""
    for event in cat.store.read_stream(image_stream(sha256)):
        if event.event_id == prediction_event_id and event.type == "PredictionRecorded":
            return event.payload["predicted_class"]
    return None


def ingested_in_log(cat: Catalog, sha256: str) -> bool:
    """Whether the log holds an ImageIngested of the image, archived or not; read from the log itself, because
    a bulk load brings the read models up only at its end."""
    return any(event.type == "ImageIngested" for event in cat.store.read_stream(image_stream(sha256)))


# The events a part's decision stands on. A literal list, as the partial index `events_part` is defined with it:
# PostgreSQL uses a partial index only for a query whose condition implies the index's.
PART_EVENT_TYPES_SQL = "('ImageIngested', 'PredictionRecorded', 'PartDispositioned')"
PART_EVENTS_QUERY = (
    "SELECT event_id, type, payload, metadata FROM catalog.events WHERE payload->>'part_id' = %(p)s"
    f" AND type IN {PART_EVENT_TYPES_SQL} ORDER BY position")


def part_events(cat: Catalog, part_id: str) -> list[tuple[uuid.UUID, str, dict[str, Any], dict[str, Any]]]:
    """(event id, type, payload, metadata) of every ImageIngested, PredictionRecorded and PartDispositioned
    naming the part, in log order: what the server's next decision on the part stands on. Read from the log
    itself (the read models trail the server's appends), through the index `events_part` (migration 0013), and
    from the lake's archive only for a part `catalog.archived_parts` names (a one-row lookup otherwise)."""
    with cat.db.connect() as conn:
        # The log first: its lock, held to the end of this transaction, keeps an archive from dropping a range
        # between the two reads (catalog.store: the horizon).
        rows = conn.exec_driver_sql(PART_EVENTS_QUERY, {"p": part_id}).fetchall()
        archived = conn.exec_driver_sql(
            "SELECT first_position, last_position FROM catalog.archived_parts WHERE part_id = %(p)s",
            {"p": part_id}).fetchone()
        conn.rollback()
    return (cat.archive.part_events(part_id, *archived) if archived else []) + [tuple(r) for r in rows]
