"""The Performance page's figures as plain functions: the confusion matrix and per-class precision / recall
of an evaluation's images, and the production disagreements by kind, checked against counts made here from
the appended events."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, timedelta

import pyarrow as pa
import pytest

from catalog.errors import CatalogError
from catalog.events import PredictionRecorded
from catalog.performance import (
    class_figures,
    confusion_matrix,
    disagreement_summary,
    evaluated_models,
    evaluation_tables,
    production_disagreements,
    regression_replays,
)
from catalog.store import NewEvent
from catalog.synthetic import ENGINE_ID, FactoryShape, ontology_event, simulated_day

DAYS = [date(2026, 3, 2), date(2026, 3, 3)]


def test_confusion_matrix_and_per_class_figures() -> None:
    truth = ["ok", "ok", "ok", "crack", "crack", "scratch"]
    predicted = ["ok", "crack", "ok", "crack", "ok", "crack"]
    images = pa.table({"sha256": [f"{k:064x}" for k in range(6)], "class": truth, "predicted": predicted})

    matrix = {(c["true"], c["predicted"]): c["images"] for c in confusion_matrix(images)}
    assert matrix == {(t, p): Counter(zip(truth, predicted, strict=True))[(t, p)]
                      for t in ("ok", "crack", "scratch") for p in ("ok", "crack", "scratch")}
    assert [c["true"] for c in confusion_matrix(images)][0] == "ok"  # the good class first, then by name

    figures = {f["class"]: f for f in class_figures(images)}
    assert figures["ok"] == {"class": "ok", "images": 3, "predicted": 3, "correct": 2,
                             "precision": 2 / 3, "recall": 2 / 3}
    assert figures["crack"]["precision"] == 1 / 3 and figures["crack"]["recall"] == 1 / 2
    assert figures["scratch"]["precision"] is None and figures["scratch"]["recall"] == 0.0


@pytest.fixture
def production(cat):
    """``(cat, events)``: two synthetic days, then a second engine's later verdict on a few images."""
    events = [ontology_event()] + [e for day in DAYS for e in simulated_day(day, shape=FactoryShape(
        lines=2, stations=1, cameras=2, parts_per_line=15))]
    ingested = [e for e in events if e.data.type_name() == "ImageIngested"][:6]
    events += [NewEvent(PredictionRecorded(sha256=e.data.sha256, engine_id="engine-b", scores={"ok": 0.2, "crack": 0.8},
                                           predicted_class="crack", part_id=e.data.part_id),
                        occurred_at=e.occurred_at + timedelta(hours=1), event_id=uuid.uuid4()) for e in ingested]
    cat.append(events)
    return cat, events


def expected_disagreements(events: list[NewEvent]) -> Counter:
    """(day, kind) → images, from the events: the latest prediction against the latest human verdict."""
    label, predicted, captured = {}, {}, {}
    for e in events:
        d, kind = e.data, e.data.type_name()
        if kind == "ImageIngested":
            captured[d.sha256] = d.captured_at
        elif kind == "LabelRecorded":
            label[d.sha256] = d.label
        elif kind == "CorrectionRecorded":
            label[d.sha256] = d.new_label
        elif kind == "PredictionRecorded" and (d.sha256 not in predicted or predicted[d.sha256][0] <= e.occurred_at):
            predicted[d.sha256] = (e.occurred_at, d.predicted_class)
    counts = Counter()
    for sha, (_, model) in predicted.items():
        human = label.get(sha)
        if human is not None and human != model:
            kind = "false reject" if human == "ok" else "false accept" if model == "ok" else "other defect"
            counts[(captured[sha].astimezone(UTC).date(), kind)] += 1
    return counts


def test_disagreements_by_day_and_kind(production) -> None:
    cat, events = production
    expected = expected_disagreements(events)
    assert {(r["day"], r["kind"]): r["images"] for r in disagreement_summary(cat)} == expected

    rejects = production_disagreements(cat, kind="false reject", limit=1000)
    assert len(rejects) == sum(n for (_, kind), n in expected.items() if kind == "false reject")
    assert all(r["label"] == "ok" and r["predicted_class"] != "ok" for r in rejects)
    assert [r["captured_at"] for r in rejects] == sorted((r["captured_at"] for r in rejects), reverse=True)
    row = rejects[0]
    assert row["part_decision"] in ("accept", "reject") and row["part_id"] and row["annotator"]
    everything = production_disagreements(cat, limit=1000)
    assert len(everything) == sum(expected.values())
    assert production_disagreements(cat, limit=5, offset=5) == everything[5:10]
    assert any(r["engine_id"] == "engine-b" for r in everything)
    assert {r["engine_id"] for r in everything} <= {ENGINE_ID, "engine-b"}
    with pytest.raises(CatalogError, match="false reject"):
        production_disagreements(cat, kind="wrong")


def test_before_any_evaluation_the_page_has_nothing_to_read(cat) -> None:
    assert evaluated_models(cat) == [] and regression_replays(cat) == []
    with pytest.raises(CatalogError, match="materialize the model_evaluation asset"):
        evaluation_tables(cat.lake, "evaluations/no-such-model")
