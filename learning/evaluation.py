"""The evaluation of a model: its operating threshold chosen on the validation split for a precision floor,
then its figures at that threshold on the held-out test split, broken down the way a factory thinks: per
part, per day, per defect and per camera. Tables and plots go to ``lake/evaluations/<model>/``;
``ModelEvaluated`` records the headline figures and the threshold, which the model's engines carry."""

from datetime import UTC, datetime
from typing import Any

import altair as alt
import duckdb
import numpy as np
import pyarrow as pa
import vl_convert as vlc
from pydantic import BaseModel

from catalog import Catalog
from catalog.errors import CatalogError
from catalog.events import ModelEvaluated
from catalog.ontology import OK_CLASS
from catalog.store import NewEvent, event_id_for
from learning.registry import (
    CLASSIFIER,
    SEGMENTER,
    dataset_version,
    load_checkpoint,
    model_row,
    samples,
)
from models import metrics
from models.classifier import classify
from models.evaluation import evaluate_classifier, evaluate_segmenter

SLICES = {"part": "part_id", "day": "CAST(day AS VARCHAR)", "defect": "class", "camera": "camera_key"}


class EvaluationConfig(BaseModel):
    """The model (default: the latest classifier), the cost of a false accept in false rejects (DAGM used
    1:20) and the precision floor at which recall is reported."""

    model_id: str | None = None
    cost_ratio: float = metrics.DAGM_FALSE_ACCEPT_COST
    min_precision: float = 0.95


def validation_operating_point(model, validation, manifest: pa.Table, min_precision: float) -> dict[str, float]:
    """The threshold with the highest validation recall at precision >= ``min_precision`` (1.0, flagging
    only certain defects, when no threshold reaches the floor), and what it gives there: image precision and
    recall, and the share of good parts (every image labelled ok) that it rejects. An empty split gives 1.0
    and no figures (NaN), which no quality floor passes."""
    if not len(validation):
        nan = float("nan")
        return {"threshold": 1.0, "validation_images": 0.0, "validation_precision": nan, "validation_recall": nan,
                "validation_good_parts_rejected": nan, "validation_defective_parts_rejected": nan}
    scores = classify(model, [validation.image(i) for i in range(len(validation))]).defect_scores
    is_defect = np.array([label != OK_CLASS for label in validation.labels])
    point = metrics.recall_at_precision(is_defect, scores, min_precision) if is_defect.any() else None
    threshold = min(1.0, point.threshold) if point and np.isfinite(point.threshold) else 1.0
    there = metrics.at_threshold(is_defect, scores, threshold)
    called = scores >= threshold
    parts = {r["sha256"]: r["part_id"] for r in manifest.select(["sha256", "part_id"]).to_pylist()}
    bad_parts, rejected = set(), set()
    for sample, flagged in zip(validation, called, strict=True):
        if sample.is_defect:
            bad_parts.add(parts[sample.sha256])
        if flagged:
            rejected.add(parts[sample.sha256])
    good = {parts[s.sha256] for s in validation} - bad_parts
    return {
        "threshold": float(threshold),
        "validation_images": float(len(validation)),
        "validation_precision": there.precision,
        "validation_recall": there.recall,
        "validation_good_parts_rejected": len(good & rejected) / len(good) if good else 0.0,
        "validation_defective_parts_rejected": len(bad_parts & rejected) / len(bad_parts) if bad_parts else float("nan"),
    }


def per_image(manifest: pa.Table, shas: list[str], classes: tuple[str, ...], probabilities: np.ndarray,
              threshold: float) -> pa.Table:
    """One row per test image: its slices, its human class, the model's class and defect score, and the
    decision at ``threshold``."""
    ok = classes.index(OK_CLASS)
    rows = {r["sha256"]: r for r in manifest.select(["sha256", "part_id", "day", "line", "station", "camera",
                                                     "class"]).to_pylist()}
    scores = 1.0 - probabilities[:, ok]
    return pa.table({
        "sha256": shas,
        "part_id": [rows[s]["part_id"] for s in shas],
        "day": pa.array([rows[s]["day"] for s in shas], pa.date32()),
        "camera_key": [f"{rows[s]['line']}/{rows[s]['station']}/{rows[s]['camera']}" for s in shas],
        "class": [rows[s]["class"] for s in shas],
        "predicted": [classes[i] for i in probabilities.argmax(axis=1)],
        "defect_score": pa.array(scores, pa.float64()),
        "called_defect": pa.array(scores >= threshold, pa.bool_()),
    })


def slice_table(images: pa.Table) -> pa.Table:
    """Per slice: images, accuracy of the class, defect recall and false accepts / rejects at the threshold."""
    con = duckdb.connect()
    con.register("images", images)
    parts = [
        f"""SELECT '{kind}' AS slice, {column} AS value, count(*)::BIGINT AS images,
                   count(*) FILTER (WHERE class <> '{OK_CLASS}')::BIGINT AS defects,
                   avg(CASE WHEN predicted = class THEN 1.0 ELSE 0.0 END) AS accuracy,
                   avg(CASE WHEN called_defect THEN 1.0 ELSE 0.0 END) FILTER (WHERE class <> '{OK_CLASS}') AS defect_recall,
                   count(*) FILTER (WHERE class <> '{OK_CLASS}' AND NOT called_defect)::BIGINT AS false_accepts,
                   count(*) FILTER (WHERE class = '{OK_CLASS}' AND called_defect)::BIGINT AS false_rejects
            FROM images GROUP BY ALL"""
        for kind, column in SLICES.items()
    ]
    return con.sql(" UNION ALL ".join(parts) + " ORDER BY slice, value").to_arrow_table()


def evaluation_chart(figures: dict[str, Any], classes: tuple[str, ...], curve: metrics.PRCurve,
                     slices: pa.Table, title: str) -> alt.VConcatChart:
    confusion = [{"true": classes[i], "predicted": classes[j], "images": int(n)}
                 for i, row in enumerate(figures["confusion"]) for j, n in enumerate(row)]
    base = alt.Chart(alt.Data(values=confusion)).encode(
        x=alt.X("predicted:N", sort=list(classes)), y=alt.Y("true:N", sort=list(classes)))
    matrix = (base.mark_rect().encode(color=alt.Color("images:Q", scale=alt.Scale(scheme="blues")))
              + base.mark_text().encode(text="images:Q")).properties(title="confusion matrix (test split)",
                                                                         width=220, height=220)
    points = [{"recall": float(r), "precision": float(p)} for r, p in zip(curve.recall, curve.precision, strict=True)]
    pr = alt.Chart(alt.Data(values=points)).mark_line(point=True, interpolate="step-after").encode(
        x=alt.X("recall:Q", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("precision:Q", scale=alt.Scale(domain=[0, 1]))).properties(
        title=f"defect vs ok (AP {figures.get('average_precision', float('nan')):.3f})", width=220, height=220)
    rows = [r for r in slices.to_pylist() if r["slice"] != "part"]  # parts are many: the table holds them
    bars = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 1])), y=alt.Y("value:N", title=None),
        color=alt.Color("slice:N", legend=None), row=alt.Row("slice:N", title=None),
        tooltip=["slice:N", "value:N", "images:Q", "accuracy:Q", "defect_recall:Q", "false_accepts:Q"],
    ).resolve_scale(y="independent").properties(width=300, title="accuracy per day, defect and camera")
    return alt.vconcat(alt.hconcat(matrix, pr), bars).properties(title=title)


def evaluate(cat: Catalog, config: EvaluationConfig, log) -> tuple[ModelEvaluated, dict[str, Any]]:
    row = model_row(cat, CLASSIFIER, config.model_id)
    model = load_checkpoint(cat, row.artifact_uri).model
    version = dataset_version(cat, row.dataset_version_id)
    manifest, sample_set = samples(cat, version)
    test, validation = sample_set.split("test"), sample_set.split("validation")
    if not len(test):
        raise CatalogError(f"{version.version_id} has no test split to measure the model on")
    if not len(validation):
        log(f"{version.version_id} has no validation split: the threshold is 1.0, and the quality floor will "
            "refuse the model")
    log(f"choosing the threshold of {row.model_id} on {len(validation):,} validation images, measuring it on "
        f"{len(test):,} test images of {version.version_id}")
    point = validation_operating_point(model, validation, manifest, config.min_precision)
    threshold = point["threshold"]
    log(f"operating threshold {threshold:.4f}: validation recall {point['validation_recall']:.3f} at precision "
        f"{point['validation_precision']:.3f}, {point['validation_good_parts_rejected']:.1%} of good parts rejected")
    classification = classify(model, [test.image(i) for i in range(len(test))])
    figures = evaluate_classifier(model, test, min_precision=config.min_precision,
                                  false_accept_cost=config.cost_ratio, classification=classification,
                                  threshold=threshold) | point
    images = per_image(manifest, [s.sha256 for s in test], model.classes, classification.probabilities, threshold)
    slices = slice_table(images)
    is_defect = np.array([label != OK_CLASS for label in test.labels])
    curve = metrics.pr_curve(is_defect, classification.defect_scores)
    folder = f"evaluations/{row.model_id}"
    lake = cat.lake
    lake.write_parquet(f"{folder}/images.parquet", images)
    lake.write_parquet(f"{folder}/slices.parquet", slices)
    chart = evaluation_chart(figures, model.classes, curve, slices, f"{row.model_id} on {version.version_id}")
    png = lake.write_bytes(f"{folder}/evaluation.png", vlc.vegalite_to_png(chart.to_json(), scale=2))
    lake.write_bytes(f"{folder}/evaluation.html", chart.to_html().encode())
    headline = {k: float(v) for k, v in figures.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)}
    event = ModelEvaluated(model=CLASSIFIER, model_id=row.model_id, dataset_version_id=version.version_id,
                           split="test", metrics=headline, threshold=threshold,
                           cost_ratio=config.cost_ratio, report_uri=folder, threshold_split="validation",
                           min_precision=config.min_precision)
    cat.append([NewEvent(event, datetime.now(UTC),
                         # "validation": evaluations recorded before the threshold was chosen there had other
                         # payloads under the same key.
                         event_id=event_id_for("evaluation", row.model_id, config.cost_ratio, config.min_precision,
                                               "validation"),
                         metadata={"actor": "dagster", "source": "learning.evaluation"})])
    extra: dict[str, Any] = {"png": str(png), "figures": figures, "slices": slices}
    try:  # the U-Net trained on the same dataset version, measured on the same test split
        segmenter = model_row(cat, SEGMENTER)
    except CatalogError:
        segmenter = None
    if segmenter is not None and segmenter.dataset_version_id == version.version_id:
        seg_figures = evaluate_segmenter(load_checkpoint(cat, segmenter.artifact_uri).model, test)
        extra["segmenter"] = seg_figures
        cat.append([NewEvent(
            ModelEvaluated(model=SEGMENTER, model_id=segmenter.model_id, dataset_version_id=version.version_id,
                           split="test", metrics={k: float(v) for k, v in seg_figures.items() if np.isfinite(v)},
                           threshold=float(seg_figures["threshold"]), cost_ratio=config.cost_ratio,
                           report_uri=folder),
            datetime.now(UTC), event_id=event_id_for("evaluation", segmenter.model_id, version.version_id),
            metadata={"actor": "dagster", "source": "learning.evaluation"})])
    return event, extra
