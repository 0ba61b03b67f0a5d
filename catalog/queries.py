"""The curator's questions to the read models: images by line, station, camera, part, capture window, current
label and exclusion, now or as of a past position; and a part's full history.

Filters are values bound as parameters, never spliced into SQL. A label filter names a class of the current
ontology and matches every (name, version) that now reads as it, so ontology changes rewrite no rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Engine

from catalog.errors import CatalogError
from catalog.ontology import Ontology
from catalog.store import EventStore, RecordedEvent

RESULT_COLUMNS = ("sha256", "part_id", "line", "station", "camera", "captured_at", "label", "label_as_recorded",
                  "label_ontology_version", "excluded", "exclusion_reason", "width", "height", "source_path",
                  "blob_uri", "thumbnail_uri")
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class ImageFilter:
    """What a curator selects. Empty tuples and None mean "any"."""

    lines: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()
    captured_from: datetime | None = None  # inclusive
    captured_to: datetime | None = None  # exclusive
    labels: tuple[str, ...] = ()  # current classes, or "unlabelled"
    excluded: bool | None = None

    def __post_init__(self) -> None:
        for name in ("captured_from", "captured_to"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise CatalogError(f"{name} must be timezone-aware, got {moment.isoformat()}")
        if self.captured_from and self.captured_to and self.captured_from >= self.captured_to:
            raise CatalogError(f"empty window: {self.captured_from.isoformat()} is not before {self.captured_to.isoformat()}")

    def describe(self) -> dict[str, Any]:
        """The filter as JSON-ready values (recorded with the curation events it selected for)."""
        return {k: (v.isoformat() if isinstance(v, datetime) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if v not in ((), None)}


def query_images(engine: Engine, where: ImageFilter, *, as_of: int | None = None, limit: int | None = 100,
                 offset: int = 0) -> list[dict[str, Any]]:
    """Images matching ``where``, by capture time, as the catalog holds them now or as of position ``as_of``
    (then labels, exclusions and the ontology are those in force at that position)."""
    with engine.connect() as sa_conn:  # one connection for the ontology and the rows: the curator waits on both
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        ontology = Ontology.read(conn, as_of=as_of)
        sql, params = _select(where, ontology, as_of)
        sql += " ORDER BY captured_at, sha256"
        if limit is not None:
            sql += " LIMIT %(limit)s OFFSET %(offset)s"
            params |= {"limit": limit, "offset": offset}
        rows = [dict(zip(RESULT_COLUMNS, r, strict=True)) for r in conn.execute(sql, params)]
        sa_conn.rollback()
    for row in rows:
        row["label"] = current_class(ontology, row["label_as_recorded"], row["label_ontology_version"])
    return rows


def count_images(engine: Engine, where: ImageFilter, *, as_of: int | None = None) -> int:
    with engine.connect() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        sql, params = _select(where, Ontology.read(conn, as_of=as_of), as_of)
        count = conn.execute(f"SELECT count(*) FROM ({sql}) q", params).fetchone()[0]
        sa_conn.rollback()
    return count


def current_class(ontology: Ontology, label: str | None, version: int | None) -> str | None:
    """A label recorded under ``version`` read as the class it is now (None for no label; marked when a split
    made it ambiguous)."""
    if label is None:
        return None
    if not ontology.versions:
        return label
    return ontology.resolve(label, version) or f"{label} (split: to review)"


def _select(where: ImageFilter, ontology: Ontology, as_of: int | None) -> tuple[str, dict[str, Any]]:
    if as_of is None:
        source = "projections.images i"
        label, version, excluded, reason = "i.label", "i.label_ontology_version", "i.excluded", "i.exclusion_reason"
        conditions: list[str] = []
    else:
        # The catalog as it was: images ingested by then, with the last label and curation verdict by then.
        source = (
            "projections.images i"
            " LEFT JOIN LATERAL (SELECT h.label, h.ontology_version FROM projections.label_history h"
            "   WHERE h.sha256 = i.sha256 AND h.position <= %(as_of)s ORDER BY h.position DESC LIMIT 1) l ON true"
            " LEFT JOIN LATERAL (SELECT c.excluded, c.reason FROM projections.curation_history c"
            "   WHERE c.sha256 = i.sha256 AND c.position <= %(as_of)s ORDER BY c.position DESC LIMIT 1) c ON true"
        )
        label, version = "l.label", "l.ontology_version"
        excluded, reason = "coalesce(c.excluded, false)", "CASE WHEN c.excluded THEN c.reason END"
        conditions = ["i.ingested_position <= %(as_of)s"]
    params: dict[str, Any] = {"as_of": as_of}
    conditions += where_conditions(where, params)
    if where.labels:
        conditions.append(_label_condition(where.labels, ontology, label, version, params))
    if where.excluded is not None:
        conditions.append(f"{excluded} = %(excluded)s")
        params["excluded"] = where.excluded
    columns = (f"i.sha256, i.part_id, i.line, i.station, i.camera, i.captured_at, NULL AS label, {label},"
               f" {version}, {excluded}, {reason}, i.width, i.height, i.source_path, i.blob_uri, i.thumbnail_uri")
    sql = f"SELECT {columns} FROM {source}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql, params


def where_conditions(where: ImageFilter, params: dict[str, Any]) -> list[str]:
    """SQL conditions on ``projections.images i`` for the filter's line, station, camera, part and capture
    window, their values added to ``params``."""
    conditions = []
    for field, column in (("lines", "i.line"), ("stations", "i.station"), ("cameras", "i.camera"),
                          ("parts", "i.part_id")):
        values = getattr(where, field)
        if len(values) == 1:  # `=` rather than `= ANY`: the index then yields rows in capture order
            conditions.append(f"{column} = %({field})s")
            params[field] = values[0]
        elif values:
            conditions.append(f"{column} = ANY(%({field})s)")
            params[field] = list(values)
    if where.captured_from is not None:
        conditions.append("i.captured_at >= %(captured_from)s")
        params["captured_from"] = where.captured_from
    if where.captured_to is not None:
        conditions.append("i.captured_at < %(captured_to)s")
        params["captured_to"] = where.captured_to
    return conditions


def _label_condition(labels: Sequence[str], ontology: Ontology, label: str, version: str,
                     params: dict[str, Any]) -> str:
    """Rows whose recorded label now reads as one of ``labels``. A name that means the wanted class in every
    version it exists in needs no version test; only names whose meaning changed are checked with their
    version (which also keeps the planner's estimates, and so its use of the index, sound)."""
    alternatives = []
    plain: set[str] = set()
    versioned: set[str] = set()
    for wanted in labels:
        if wanted == UNLABELLED:
            alternatives.append(f"{label} IS NULL")
        elif not ontology.versions:
            plain.add(wanted)
        else:
            pairs = ontology.recorded_names(wanted)
            for name in {n for n, _ in pairs}:
                meanings = {ontology.resolve(name, v) for v, kind in ontology.versions.items() if name in kind.classes}
                if meanings == {wanted}:
                    plain.add(name)
                else:
                    versioned.update(f"{n}@{v}" for n, v in pairs if n == name)
    if len(plain) == 1:  # `=` rather than `= ANY`: the index then yields rows in capture order
        params["label_name"] = next(iter(plain))
        alternatives.append(f"{label} = %(label_name)s")
    elif plain:
        params["label_names"] = sorted(plain)
        alternatives.append(f"{label} = ANY(%(label_names)s)")
    if versioned:
        params["label_pairs"] = sorted(versioned)
        params["versioned_names"] = sorted({p.split("@")[0] for p in versioned})
        alternatives.append(f"({label} = ANY(%(versioned_names)s) AND {label} || '@' || {version} = ANY(%(label_pairs)s))")
    return "(" + " OR ".join(alternatives) + ")" if alternatives else "false"


@dataclass(frozen=True)
class PartTrace:
    part_id: str
    images: list[dict[str, Any]]  # each image's projection row, its sightings and its events
    part_events: list[RecordedEvent]


def trace_part(engine: Engine, part_id: str) -> PartTrace:
    """Every image of a part (any sighting) with its full event history, and the part's own events."""
    store = EventStore(engine)
    with engine.connect() as conn:
        shas = [r[0] for r in conn.exec_driver_sql(
            "SELECT sha256 FROM projections.image_sightings WHERE part_id = %(p)s GROUP BY sha256"
            " ORDER BY min(captured_at), sha256", {"p": part_id})]
        sightings = conn.exec_driver_sql(
            "SELECT sha256, source_path, camera, station, captured_at, position FROM projections.image_sightings"
            " WHERE sha256 = ANY(%(s)s) ORDER BY position", {"s": shas}).fetchall()
    if not shas and not store.stream_version(f"part:{part_id}"):
        raise CatalogError(f"no part {part_id!r} in the catalog")
    images = []
    for sha in shas:
        images.append({
            "sha256": sha,
            "sightings": [dict(zip(("sha256", "source_path", "camera", "station", "captured_at", "position"), s,
                                   strict=True)) for s in sightings if s[0] == sha],
            "events": store.read_stream(f"image:{sha}"),
        })
    return PartTrace(part_id=part_id, images=images, part_events=store.read_stream(f"part:{part_id}"))
