"""The curator's questions to the read models: images by line, station, camera, part, capture window, current
label, the model's latest prediction and exclusion, now or as of a past position; and a part's full history.

Filters are values bound as parameters, never spliced into SQL. A label filter names a class of the current
ontology and matches every (name, version) that now reads as it, so ontology changes rewrite no rows.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa

from catalog.errors import CatalogError
from catalog.events import IMAGE_STREAM_PREFIX, image_stream, name_problem, part_stream
from catalog.factory_day import capture_days, day_sql, on_days, time_zones
from catalog.ontology import Ontology
from catalog.store import RecordedEvent

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from catalog import Catalog

RESULT_COLUMNS = ("sha256", "part_id", "line", "station", "camera", "captured_at", "label", "label_as_recorded",
                  "label_ontology_version", "excluded", "exclusion_reason", "width", "height", "source_path",
                  "blob_uri", "thumbnail_uri")
UNLABELLED = "unlabelled"
NOT_PREDICTED = "not predicted"


def _check_name(what: str, value: str) -> None:
    """Refuse what no stored name can be (a control character, an over-long value) before it reaches SQL, whose
    driver refuses a NUL with an error naming the statement."""
    if (problem := name_problem(value)) is not None:
        raise CatalogError(f"the {what} {problem}")


@dataclass(frozen=True)
class ImageFilter:
    """What a curator selects. Empty tuples and None mean "any"."""

    lines: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()
    captured_from: datetime | None = None  # inclusive
    captured_to: datetime | None = None  # exclusive
    # Factory days, both included: each line's own local days (`catalog.factory_day`).
    first_day: date | None = None
    last_day: date | None = None
    labels: tuple[str, ...] = ()  # current classes, or "unlabelled"
    excluded: bool | None = None
    predictions: tuple[str, ...] = ()  # the class of the image's latest prediction (any engine), or "not predicted"

    def __post_init__(self) -> None:
        for name in ("lines", "stations", "cameras", "parts", "labels", "predictions"):
            for value in getattr(self, name):
                _check_name(f"{name.removesuffix('s')} filter", value)
        for name in ("captured_from", "captured_to"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise CatalogError(f"{name} must be timezone-aware, got {moment.isoformat()}")
        if self.captured_from and self.captured_to and self.captured_from >= self.captured_to:
            raise CatalogError(f"empty window: {self.captured_from.isoformat()} is not before {self.captured_to.isoformat()}")
        if self.first_day and self.last_day and self.first_day > self.last_day:
            raise CatalogError(f"empty window: day {self.last_day.isoformat()} is before {self.first_day.isoformat()}")

    def describe(self) -> dict[str, Any]:
        """The filter as JSON-ready values (recorded with the curation events it selected for)."""
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, date) else value  # datetimes are dates too

        return {k: ([plain(x) for x in v] if isinstance(v, tuple) else plain(v))
                for k, v in asdict(self).items() if v not in ((), None)}


def query_images(cat: Catalog, where: ImageFilter, *, as_of: int | None = None, limit: int | None = 100,
                 offset: int = 0) -> list[dict[str, Any]]:
    """Images matching ``where``, by capture time, as the catalog holds them now or as of position ``as_of``
    (then labels, exclusions and the ontology are those in force at that position)."""
    with cat.read() as sa_conn:  # one connection for the ontology and the rows: the curator waits on both
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        ontology = Ontology.read(conn, as_of=as_of)
        sql, params = selection_sql(where, ontology, as_of=as_of)
        sql += " ORDER BY captured_at, sha256"
        if limit is not None:
            sql += " LIMIT %(limit)s OFFSET %(offset)s"
            params |= {"limit": limit, "offset": offset}
        rows = [dict(zip(RESULT_COLUMNS, r, strict=True)) for r in conn.execute(sql, params)]
    for row in rows:
        row["label"] = current_class(ontology, row["label_as_recorded"], row["label_ontology_version"])
    return rows


def count_images(cat: Catalog, where: ImageFilter, *, as_of: int | None = None) -> int:
    with cat.read() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        sql, params = selection_sql(where, Ontology.read(conn, as_of=as_of), as_of=as_of)
        count = conn.execute(f"SELECT count(*) FROM ({sql}) q", params).fetchone()[0]
    return count


def current_class(ontology: Ontology, label: str | None, version: int | None) -> str | None:
    """A label recorded under ``version`` read as the class it is now (None for no label; marked when a split
    made it ambiguous)."""
    if label is None:
        return None
    if not ontology.versions:
        return label
    return ontology.resolve(label, version) or f"{label} (split: to review)"


def curated_images(cat: Catalog) -> pa.Table:
    """Every image not excluded, by sha256, with its slices (part, line, station, camera, factory day), its
    current human class (null when unlabelled) and whether a correction names it: what the learn loop scores,
    queues for review and replays on."""
    ontology = Ontology.load(cat)
    with cat.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT i.sha256, i.part_id, i.line, i.station, i.camera, {day_sql('i.captured_at', 'i.line')},"
            " i.label, i.label_ontology_version, c.sha256 IS NOT NULL"
            " FROM projections.images i LEFT JOIN (SELECT DISTINCT sha256 FROM projections.corrections) c"
            " USING (sha256) WHERE NOT i.excluded ORDER BY i.sha256").fetchall()
    labels = [current_class(ontology, r[6], r[7]) for r in rows]
    return pa.table({
        "sha256": [r[0] for r in rows], "part_id": [r[1] for r in rows], "line": [r[2] for r in rows],
        "station": [r[3] for r in rows], "camera": [r[4] for r in rows],
        "day": pa.array([r[5] for r in rows], pa.date32()), "label": pa.array(labels, pa.string()),
        "corrected": pa.array([r[8] for r in rows], pa.bool_()),
    })


def labels_as_recorded(cat: Catalog) -> dict[str, str]:
    """Every labelled image (excluded ones too) and its label by the name it was recorded under."""
    with cat.read() as conn:
        return dict(conn.exec_driver_sql(
            "SELECT sha256, label FROM projections.images WHERE label IS NOT NULL").fetchall())


def images_corrected_by(cat: Catalog, corrected_by: str) -> set[str]:
    """The images ``corrected_by`` has recorded a correction of, read from the log itself (its archive too)."""
    return {e.payload["sha256"] for e in cat.store.read(types=["CorrectionRecorded"], limit=None)
            if e.payload["corrected_by"] == corrected_by}


def selection_sql(where: ImageFilter, ontology: Ontology, *, as_of: int | None = None) -> tuple[str, dict[str, Any]]:
    """The SELECT of the images ``where`` selects (RESULT_COLUMNS, ``label`` left NULL for the caller to read
    through the ontology) and its parameters; readers join it with other read models (the review queue)."""
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
    if where.predictions:
        conditions.append(_prediction_condition(where.predictions, as_of, params))
    columns = (f"i.sha256, i.part_id, i.line, i.station, i.camera, i.captured_at, NULL AS label,"
               f" {label} AS label_as_recorded, {version} AS label_ontology_version, {excluded} AS excluded,"
               f" {reason} AS exclusion_reason, i.width, i.height, i.source_path, i.blob_uri, i.thumbnail_uri")
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
    if where.first_day is not None or where.last_day is not None:
        on, day_params = on_days(where.first_day, where.last_day, "i.captured_at", "i.line")
        conditions.append(on)
        params |= day_params
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


def _prediction_condition(classes: Sequence[str], as_of: int | None, params: dict[str, Any]) -> str:
    """Rows whose latest prediction, whichever engine made it (ties on time go to the one recorded last), is of
    one of ``classes``; "not predicted" matches images no engine had judged (by ``as_of``). Written as
    (anti-)semi-joins, which PostgreSQL runs as hash joins over the whole catalog when it counts."""
    if as_of is None:
        source, klass = "projections.latest_predictions", "p.predicted_class"

        def of_the_image(a: str) -> str:
            return f"{a}.sha256 = i.sha256"

        def when(a: str) -> str:
            return f"({a}.predicted_at, {a}.position)"
    else:  # the projection keeps only the newest: the log says what was latest then
        source, klass = "catalog.events", "p.payload->>'predicted_class'"

        def of_the_image(a: str) -> str:
            return (f"{a}.stream_id = '{IMAGE_STREAM_PREFIX}' || i.sha256 AND {a}.type = 'PredictionRecorded'"
                    f" AND {a}.position <= %(as_of)s")

        def when(a: str) -> str:
            return f"({a}.occurred_at, {a}.position)"

    def latest_is(condition: str) -> str:
        return (f"EXISTS (SELECT 1 FROM {source} p WHERE {of_the_image('p')} AND {condition} AND NOT EXISTS"
                f" (SELECT 1 FROM {source} n WHERE {of_the_image('n')} AND {when('n')} > {when('p')}))")

    named = sorted(set(classes) - {NOT_PREDICTED})
    params["predicted_classes"] = named
    if NOT_PREDICTED not in classes:
        return latest_is(f"{klass} = ANY(%(predicted_classes)s)")
    if not named:
        return f"NOT EXISTS (SELECT 1 FROM {source} p WHERE {of_the_image('p')})"
    # Of these classes or never judged: no latest prediction of another class.
    return "NOT " + latest_is(f"{klass} <> ALL(%(predicted_classes)s)")


def latest_predictions(cat: Catalog, shas: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The latest prediction of each of ``shas`` that has one (whichever engine made it): engine_id,
    predicted_class, scores, heatmap_uri, predicted_at, position."""
    if not shas:
        return {}
    with cat.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT DISTINCT ON (sha256) sha256, engine_id, predicted_class, scores, heatmap_uri, predicted_at,"
            " position FROM projections.latest_predictions WHERE sha256 = ANY(%(s)s)"
            " ORDER BY sha256, predicted_at DESC, position DESC", {"s": list(shas)}).fetchall()
    columns = ("engine_id", "predicted_class", "scores", "heatmap_uri", "predicted_at", "position")
    return {r[0]: dict(zip(columns, r[1:], strict=True)) for r in rows}


def latest_prediction_id(cat: Catalog, sha256: str) -> uuid.UUID:
    """The event id of the image's latest ``PredictionRecorded`` (whichever engine made it), by log position
    (its archived events included); raises when it has none."""
    predictions = [e.event_id for e in cat.store.read_stream(image_stream(sha256)) if e.type == "PredictionRecorded"]
    if not predictions:
        raise CatalogError(f"image {sha256} has no prediction")
    return predictions[-1]


def selection_csv(cat: Catalog, where: ImageFilter) -> str:
    """Every image ``where`` selects as CSV: RESULT_COLUMNS and the latest prediction's class and engine."""
    rows = query_images(cat, where, limit=None)
    predictions = latest_predictions(cat, [r["sha256"] for r in rows])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*RESULT_COLUMNS, "predicted_class", "prediction_engine"])
    writer.writeheader()
    for row in rows:
        prediction = predictions.get(row["sha256"], {})
        writer.writerow(row | {"captured_at": row["captured_at"].isoformat(),
                               "predicted_class": prediction.get("predicted_class"),
                               "prediction_engine": prediction.get("engine_id")})
    return out.getvalue()


def images_to_replay(cat: Catalog, *, first_day: date | None = None, last_day: date | None = None,
                     shas: Sequence[str] | None = None) -> list[tuple]:
    """(sha256, part_id, line, station, camera, captured_at, label as recorded) of the images not excluded that
    were captured on the factory days ``first_day`` to ``last_day`` (open when None), or, given ``shas``, of
    those images; in capture order: what a replay runs an engine over."""
    if shas is not None:
        where, params = "i.sha256 = ANY(%(shas)s)", {"shas": list(shas)}
    else:
        where, params = on_days(first_day, last_day, "i.captured_at", "i.line")
    with cat.read() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT i.sha256, i.part_id, i.line, i.station, i.camera, i.captured_at, i.label FROM projections.images i"
            f" WHERE NOT i.excluded AND {where} ORDER BY i.captured_at, i.camera, i.sha256", params).fetchall()]


@dataclass(frozen=True)
class FilterChoices:
    """What a filter form offers: the values present in the catalog and the current ontology's classes."""

    lines: list[str]
    stations: list[str]
    cameras: list[str]
    classes: list[str]
    first_captured: datetime | None
    last_captured: datetime | None
    days: tuple[date, date] | None  # the first and last factory day with images
    time_zones: dict[str, str]  # the lines whose time zone was set (`catalog.factory_day`)


def filter_choices(cat: Catalog) -> FilterChoices:
    """The lines, stations and cameras images came from, the current classes and the capture window."""
    with cat.read() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        ontology = Ontology.read(conn)
        combos = conn.execute("SELECT DISTINCT line, station, camera FROM projections.images").fetchall()
        first, last = conn.execute("SELECT min(captured_at), max(captured_at) FROM projections.images").fetchone()
    classes = list(ontology.current.classes) if ontology.versions else []
    return FilterChoices(lines=sorted({c[0] for c in combos}), stations=sorted({c[1] for c in combos}),
                         cameras=sorted({c[2] for c in combos}), classes=classes, first_captured=first,
                         last_captured=last, days=capture_days(cat), time_zones=time_zones(cat))


@dataclass(frozen=True)
class PartTrace:
    part_id: str
    images: list[dict[str, Any]]  # each image's projection row, its sightings and its events
    part_events: list[RecordedEvent]


def part_images(cat: Catalog, part_id: str) -> list[str]:
    """The images (sha256) any sighting names as the part's, in capture order."""
    with cat.read() as conn:
        return _part_images(conn, part_id)


def _part_images(conn: Connection, part_id: str) -> list[str]:
    return [r[0] for r in conn.exec_driver_sql(
        "SELECT sha256 FROM projections.image_sightings WHERE part_id = %(p)s GROUP BY sha256"
        " ORDER BY min(captured_at), sha256", {"p": part_id})]


def trace_part(cat: Catalog, part_id: str) -> PartTrace:
    """Every image of a part (any sighting) with its full event history, and the part's own events."""
    _check_name("part id", part_id)
    store = cat.store
    with cat.read() as conn:
        shas = _part_images(conn, part_id)
        sightings = conn.exec_driver_sql(
            "SELECT sha256, source_path, camera, station, captured_at, position FROM projections.image_sightings"
            " WHERE sha256 = ANY(%(s)s) ORDER BY position", {"s": shas}).fetchall()
    if not shas and not store.stream_version(part_stream(part_id)):
        raise CatalogError(f"no part {part_id!r} in the catalog")
    streams = store.read_streams([image_stream(sha) for sha in shas] + [part_stream(part_id)])
    images = []
    for sha in shas:
        images.append({
            "sha256": sha,
            "sightings": [dict(zip(("sha256", "source_path", "camera", "station", "captured_at", "position"), s,
                                   strict=True)) for s in sightings if s[0] == sha],
            "events": streams[image_stream(sha)],
        })
    return PartTrace(part_id=part_id, images=images, part_events=streams[part_stream(part_id)])
