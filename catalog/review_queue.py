"""The review queue as people work through it: what waits in which queue (best score first, narrowed by any
image filter), a curator's request to look at a selection again, and one image as a reviewer sees it (its
current label and regions, the model's latest prediction, scores and heatmap).

An image waits in a queue from its review request until a human labels or corrects it; a later request
opens it again. Nothing is removed: the queue is a read of the log like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow.parquet as pq

import catalog
from catalog.errors import CatalogError
from catalog.events import ReviewRequested, text_problem
from catalog.ontology import OK_CLASS, Ontology
from catalog.queries import ImageFilter, current_class, latest_predictions, query_images, selection_sql
from catalog.store import NewEvent

if TYPE_CHECKING:
    from catalog import Catalog

CURATOR_QUEUE = "curator"
MAX_REVIEW_REQUEST = 1_000  # people review a few hundred images a day: more is a filter left too wide
# A request `q` still waits: no label or correction of its image was recorded after it.
_WAITING = ("NOT EXISTS (SELECT 1 FROM projections.label_history h WHERE h.sha256 = q.sha256"
            " AND h.position > q.position)")
EVERY_IMAGE = ImageFilter()
QUEUE_COLUMNS = ("queue", "sha256", "strategy", "score", "reason", "requested_at", "part_id", "line", "station",
                 "camera", "captured_at", "label")


def waiting_reviews(cat: Catalog, where: ImageFilter = EVERY_IMAGE, *, queue: str | None = None,
                    limit: int | None = 50, offset: int = 0) -> list[dict[str, Any]]:
    """The requests still waiting (in ``queue``, or any), on images ``where`` selects, best score first; each
    with its image's part, line, station, camera, capture time and current label."""
    with cat.read() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        ontology = Ontology.read(conn)
        sql, params = _waiting_sql(where, ontology, queue)
        sql = (f"SELECT q.queue, q.sha256, q.strategy, q.score, q.reason, q.requested_at, i.part_id, i.line,"
               f" i.station, i.camera, i.captured_at, i.label_as_recorded, i.label_ontology_version {sql}"
               " ORDER BY q.score DESC, q.requested_at, q.queue, q.sha256")
        if limit is not None:
            sql += " LIMIT %(limit)s OFFSET %(offset)s"
            params |= {"limit": limit, "offset": offset}
        rows = conn.execute(sql, params).fetchall()
    return [dict(zip(QUEUE_COLUMNS, (*r[:11], current_class(ontology, r[11], r[12])), strict=True)) for r in rows]


def count_waiting_reviews(cat: Catalog, where: ImageFilter = EVERY_IMAGE, *, queue: str | None = None) -> int:
    with cat.read() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        sql, params = _waiting_sql(where, Ontology.read(conn), queue)
        count = conn.execute(f"SELECT count(*) {sql}", params).fetchone()[0]
    return count


def review_queues(cat: Catalog) -> dict[str, int]:
    """Every queue that was ever asked for, with the number of images waiting in it."""
    with cat.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT q.queue, count(*) FILTER (WHERE {_WAITING}) FROM projections.review_queue q"
            " GROUP BY q.queue ORDER BY q.queue").fetchall()
    return {queue: waiting for queue, waiting in rows}


def requested_reviews(cat: Catalog, queue: str) -> list[str]:
    """Every image ever requested in ``queue``, answered or not, best score first."""
    with cat.read() as conn:
        return [r[0] for r in conn.exec_driver_sql(
            "SELECT sha256 FROM projections.review_queue WHERE queue = %(q)s ORDER BY score DESC, sha256",
            {"q": queue})]


@dataclass(frozen=True)
class LabelSides:
    """The labelled images (not excluded) by the side, ok or a defect, of their first label, and how many of
    each a correction has moved to the other side since: how often labellers err each way."""

    ok_labels: int
    ok_moved: int
    defect_labels: int
    defect_moved: int


def label_sides(cat: Catalog) -> LabelSides:
    """Counted from each image's first label: the old label of its first label correction, else its label."""
    with cat.read() as conn:
        rows = conn.exec_driver_sql(f"""
            WITH first_fix AS (
                SELECT DISTINCT ON (sha256) sha256, old_label FROM projections.corrections
                WHERE target = 'label' ORDER BY sha256, position)
            SELECT coalesce(f.old_label, i.label) = '{OK_CLASS}', i.label = '{OK_CLASS}', count(*)
            FROM projections.images i LEFT JOIN first_fix f USING (sha256)
            WHERE i.label IS NOT NULL AND NOT i.excluded GROUP BY 1, 2""").fetchall()
    count = {(first_ok, now_ok): n for first_ok, now_ok, n in rows}
    ok_kept, ok_moved = count.get((True, True), 0), count.get((True, False), 0)
    defect_kept, defect_moved = count.get((False, False), 0), count.get((False, True), 0)
    return LabelSides(ok_labels=ok_kept + ok_moved, ok_moved=ok_moved, defect_labels=defect_kept + defect_moved,
                      defect_moved=defect_moved)


def _waiting_sql(where: ImageFilter, ontology: Ontology, queue: str | None) -> tuple[str, dict[str, Any]]:
    images, params = selection_sql(where, ontology)
    sql = f"FROM projections.review_queue q JOIN ({images}) i ON i.sha256 = q.sha256 WHERE {_WAITING}"
    if queue is not None:
        sql += " AND q.queue = %(queue)s"
        params["queue"] = queue
    return sql, params


def request_review(cat: catalog.Catalog, where: ImageFilter, *, actor: str, reason: str = "",
                   queue: str = CURATOR_QUEUE, strategy: str = "curator-selection",
                   limit: int = MAX_REVIEW_REQUEST) -> tuple[int, int]:
    """Queue every image ``where`` selects for review in ``queue``, earliest captured first, with ``actor`` in
    each event's metadata; images already waiting there are left as they are. Refuses a selection of more
    than ``limit`` images. Returns (images selected, images queued now)."""
    if (problem := text_problem(reason)) is not None:
        raise CatalogError(f"the reason {problem}")
    selected = query_images(cat, where, limit=limit + 1)
    if len(selected) > limit:
        raise CatalogError(f"the selection holds more than {limit} images: narrow the filters before asking "
                           "people to review it")
    with cat.read() as conn:
        waiting = {r[0] for r in conn.exec_driver_sql(
            f"SELECT q.sha256 FROM projections.review_queue q WHERE q.queue = %(q)s AND q.sha256 = ANY(%(s)s)"
            f" AND {_WAITING}", {"q": queue, "s": [r["sha256"] for r in selected]})}
    now = datetime.now(UTC)
    events = [NewEvent(ReviewRequested(sha256=row["sha256"], queue=queue, strategy=strategy,
                                       score=1 - n / len(selected), reason=reason.strip() or strategy),
                       occurred_at=now, metadata={"actor": actor, "source": "curate"})
              for n, row in enumerate(selected) if row["sha256"] not in waiting]
    if events:
        cat.append(events)
    return len(selected), len(events)


# -- one image, as a reviewer sees it -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageView:
    image: dict[str, Any]  # sha256, part_id, line, station, camera, captured_at, width, height, excluded, ...
    label: dict[str, Any] | None  # the current human label: class (read as today), held, annotator, regions, ...
    prediction: dict[str, Any] | None  # the latest prediction: engine, class, scores, regions, event_id
    heatmap_uri: str | None  # the engine's heatmap of the image, when one was made


def image_view(cat: catalog.Catalog, sha256: str) -> ImageView:
    """Everything the Curate and Review pages show of one image."""
    with cat.read() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        ontology = Ontology.read(conn)
        image = conn.execute(
            "SELECT sha256, part_id, line, station, camera, captured_at, width, height, excluded, exclusion_reason,"
            " blob_uri, thumbnail_uri, source_path FROM projections.images WHERE sha256 = %(s)s",
            {"s": sha256}).fetchone()
        if image is None:
            raise CatalogError(f"no image with sha256 {sha256} in the catalog")
        label = conn.execute(
            "SELECT label, ontology_version, label_id, annotator, source, regions, mask_uri, labeled_at"
            " FROM projections.current_labels WHERE sha256 = %(s)s", {"s": sha256}).fetchone()
    image_columns = ("sha256", "part_id", "line", "station", "camera", "captured_at", "width", "height",
                     "excluded", "exclusion_reason", "blob_uri", "thumbnail_uri", "source_path")
    label_row = None
    if label is not None:
        # "class" to show (marked when a split left it ambiguous); "held", what a correction starts from
        label_row = {"class": current_class(ontology, label[0], label[1]), "label_as_recorded": label[0],
                     "held": (ontology.resolve(label[0], label[1]) if ontology.versions else None) or label[0],
                     **dict(zip(("ontology_version", "label_id", "annotator", "source", "regions", "mask_uri",
                                 "labeled_at"), label[1:], strict=True))}
    prediction = latest_predictions(cat, [sha256]).get(sha256)
    if prediction is not None:
        [event] = cat.store.read(after=prediction["position"] - 1, limit=1)
        prediction |= {"event_id": event.event_id, "regions": event.payload.get("regions", []),
                       "defect_score": event.payload.get("defect_score")}
    return ImageView(image=dict(zip(image_columns, image, strict=True)), label=label_row, prediction=prediction,
                     heatmap_uri=heatmap_uri(cat, sha256, prediction))


def heatmap_uri(cat: catalog.Catalog, sha256: str, prediction: dict[str, Any] | None) -> str | None:
    """The heatmap of an image for its latest prediction: the one the engine recorded with it, else the
    Grad-CAM the `heatmaps` asset made for the engine's model (`Lake.heatmaps_of`)."""
    if prediction is None:
        return None
    if prediction.get("heatmap_uri"):
        return prediction["heatmap_uri"]
    with cat.read() as conn:
        model_id = conn.exec_driver_sql("SELECT model_id FROM projections.engines WHERE engine_id = %(e)s",
                                        {"e": prediction["engine_id"]}).scalar()
    if model_id is None:
        return None
    path = cat.lake.root / cat.lake.heatmaps_of(model_id)
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["sha256", "kind", "uri"],
                          filters=[("sha256", "=", sha256), ("kind", "=", "grad_cam")])
    return table["uri"][0].as_py() if table.num_rows else None
