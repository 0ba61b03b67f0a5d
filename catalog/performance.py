"""How well the models do, as plain data for the Performance page: each model's latest evaluation (its figures
from `ModelEvaluated`, its per-image and per-slice tables in ``lake/evaluations/<model>/``), the confusion
matrix and per-class precision / recall derived from them, the regression gate's verdicts on candidates, and
the production disagreements between the latest prediction and the current human label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.activity import DISAGREEING, read_rows
from catalog.errors import CatalogError
from catalog.factory_day import day_sql
from catalog.lake import Lake
from catalog.lineage import champion_of
from catalog.ontology import OK_CLASS

if TYPE_CHECKING:
    from catalog import Catalog

# Kinds of disagreement, the costly one first: a good part the model would scrap.
DISAGREEMENTS = {
    "false reject": "model says defect, human says ok",
    "false accept": "model says ok, human says defect",
    "other defect": "both say defect, not the same one",
}
_KIND = (f"CASE WHEN i.label = '{OK_CLASS}' THEN 'false reject' WHEN p.predicted_class = '{OK_CLASS}'"
         " THEN 'false accept' ELSE 'other defect' END")


@dataclass(frozen=True)
class EvaluatedModel:
    """A model's latest `ModelEvaluated`."""

    model_id: str
    model: str
    dataset_version_id: str
    split: str
    metrics: dict[str, float]
    threshold: float
    cost_ratio: float
    report_uri: str
    registered_at: datetime
    champion: bool


def evaluated_models(cat: Catalog) -> list[EvaluatedModel]:
    """Every model with an evaluation, the champions first, then newest first."""
    sql = f"""
        SELECT m.model_id, m.model, m.evaluation, m.registered_at,
               coalesce(m.model_id = {champion_of('m.model')}, false)
        FROM projections.models m WHERE m.evaluation IS NOT NULL ORDER BY m.position DESC"""
    with cat.read() as conn:
        rows = conn.exec_driver_sql(sql).fetchall()
    models = [EvaluatedModel(model_id=r[0], model=r[1], dataset_version_id=r[2]["dataset_version_id"],
                             split=r[2]["split"], metrics=r[2]["metrics"], threshold=r[2]["threshold"],
                             cost_ratio=r[2]["cost_ratio"], report_uri=r[2]["report_uri"], registered_at=r[3],
                             champion=r[4]) for r in rows]
    return sorted(models, key=lambda m: not m.champion)  # stable: newest first within each group


@dataclass(frozen=True)
class EvaluationTables:
    images: pa.Table  # sha256, part_id, day, camera_key, class, predicted, defect_score, called_defect
    slices: pa.Table  # slice, value, images, defects, accuracy, defect_recall, false_accepts, false_rejects


def evaluation_tables(lake: Lake, report_uri: str) -> EvaluationTables:
    """The per-image and per-slice tables an evaluation wrote to the lake."""
    folder = lake.root / report_uri
    if not (folder / "images.parquet").is_file() or not (folder / "slices.parquet").is_file():
        raise CatalogError(f"no evaluation tables in {folder}: materialize the model_evaluation asset again "
                           "(the lake may have been moved)")
    return EvaluationTables(pq.read_table(folder / "images.parquet"), pq.read_table(folder / "slices.parquet"))


def confusion_matrix(images: pa.Table) -> list[dict[str, Any]]:
    """Every (true, predicted) pair of the classes seen, with its number of images (zeros included)."""
    counts = {(r["class"], r["predicted"]): r["sha256_count"]
              for r in images.group_by(["class", "predicted"]).aggregate([("sha256", "count")]).to_pylist()}
    classes = _classes(images)
    return [{"true": t, "predicted": p, "images": counts.get((t, p), 0)} for t in classes for p in classes]


def class_figures(images: pa.Table) -> list[dict[str, Any]]:
    """Per class: images (support), predicted, correct, precision and recall (None where undefined)."""
    truth, predicted = images["class"].to_pylist(), images["predicted"].to_pylist()
    figures = []
    for c in _classes(images):
        support = truth.count(c)
        called = predicted.count(c)
        correct = sum(1 for t, p in zip(truth, predicted, strict=True) if t == p == c)
        figures.append({"class": c, "images": support, "predicted": called, "correct": correct,
                        "precision": correct / called if called else None,
                        "recall": correct / support if support else None})
    return figures


def _classes(images: pa.Table) -> list[str]:
    seen = set(images["class"].to_pylist()) | set(images["predicted"].to_pylist())
    return sorted(seen, key=lambda c: (c != OK_CLASS, c))


def regression_replays(cat: Catalog, *, limit: int = 50) -> list[dict[str, Any]]:
    """Regression replays, newest first: replayed_at, model, candidate_model_id, champion_model_id, passed,
    images, reasons (the gate's), report_uri."""
    sql = """
        SELECT replayed_at, model, candidate_model_id, champion_model_id, passed, images, summary, report_uri
        FROM projections.regression_replays ORDER BY position DESC LIMIT %(limit)s"""
    with cat.read() as conn:
        rows = [dict(r._mapping) for r in conn.exec_driver_sql(sql, {"limit": limit})]
    for row in rows:
        row["reasons"] = "; ".join(row.pop("summary").get("reasons", []))
    return rows


def replay_slices(lake: Lake, report_uri: str) -> pa.Table | None:
    """The per-slice comparison a replay wrote (kind, value, images, defects, champion and candidate accuracy
    and recall, judged, worse), or None when the lake no longer holds it."""
    path = lake.root / report_uri / "slices.parquet"
    return pq.read_table(path) if path.is_file() else None


def disagreement_summary(cat: Catalog) -> list[dict[str, Any]]:
    """Production images whose latest prediction is not their current human label, per factory day of
    capture and kind (see `DISAGREEMENTS`): day, kind, images."""
    sql = f"""
        SELECT {day_sql('i.captured_at', 'i.line')} AS day, {_KIND} AS kind, count(*) AS images
        FROM projections.images i {DISAGREEING} GROUP BY 1, 2 ORDER BY 1, 2"""
    return read_rows(cat, sql, {})


def production_disagreements(cat: Catalog, *, kind: str | None = None, limit: int = 20,
                             offset: int = 0) -> list[dict[str, Any]]:
    """The disagreements (of one kind, if given), newest capture first: captured_at, part_id, line, camera,
    sha256, label, annotator, predicted_class, score (the predicted class's), engine_id, kind, and the part's
    decision and rule."""
    if kind is not None and kind not in DISAGREEMENTS:
        raise CatalogError(f"unknown kind of disagreement {kind!r}: one of {', '.join(DISAGREEMENTS)}")
    sql = f"""
        SELECT i.captured_at, i.part_id, i.line, i.camera, i.sha256, i.label, c.annotator, p.predicted_class,
               (p.scores ->> p.predicted_class)::float AS score, p.engine_id, {_KIND} AS kind,
               d.decision AS part_decision, d.rule AS part_rule
        FROM projections.images i {DISAGREEING}
        LEFT JOIN projections.current_labels c ON c.sha256 = i.sha256
        LEFT JOIN projections.part_dispositions d ON d.part_id = i.part_id
        WHERE %(kind)s::text IS NULL OR {_KIND} = %(kind)s
        ORDER BY i.captured_at DESC, i.sha256 LIMIT %(limit)s OFFSET %(offset)s"""
    return read_rows(cat, sql, {"kind": kind, "limit": limit, "offset": offset})
