"""Per-day figures, a day's timeline and rows, lineage records, the engine in service and the lineage graph,
checked against what the appended events say, counted here in Python."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest

from catalog import activity
from catalog import events as ev
from catalog.lineage import CLASSIFIER
from catalog.store import NewEvent
from catalog.synthetic import ENGINE_ID, FactoryShape, ontology_event, simulated_day

FIRST = date(2026, 3, 2)
DAYS = [FIRST + timedelta(days=k) for k in range(3)]
SHAPE = FactoryShape(lines=2, stations=1, cameras=2, parts_per_line=12)
HASH = "a" * 64


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


@pytest.fixture
def factory(cat):
    """``(cat, events)``: three simulated days (48 images a day) appended and projected."""
    events = [ontology_event()] + [e for day in DAYS for e in simulated_day(day, shape=SHAPE)]
    cat.append(events)
    return cat, events


def expected_figures(events: list[NewEvent]) -> dict[date, dict[str, int]]:
    """The per-day figures, counted from the events themselves."""
    images, parts = Counter(), defaultdict(set)
    rejects, corrections, disagreements = Counter(), Counter(), Counter()
    label, predicted, captured, judged_on = {}, {}, {}, {}
    for e in events:
        data = e.data
        if isinstance(data, ev.ImageIngested):
            images[utc_day(data.captured_at)] += 1
            parts[utc_day(data.captured_at)].add(data.part_id)
            captured[data.sha256] = utc_day(data.captured_at)
        elif isinstance(data, ev.LabelRecorded):
            label[data.sha256] = data.label
        elif isinstance(data, ev.CorrectionRecorded):
            label[data.sha256] = data.new_label
            corrections[utc_day(e.occurred_at)] += 1
        elif isinstance(data, ev.PredictionRecorded):
            predicted[data.sha256] = data.predicted_class
        elif isinstance(data, ev.PartDispositioned):
            judged_on[data.part_id] = utc_day(e.occurred_at)  # the part's latest decision counts
            if data.decision == "reject":
                rejects[utc_day(e.occurred_at)] += 1
    for sha, cls in predicted.items():
        if sha in label and label[sha] != cls:
            disagreements[captured[sha]] += 1
    judged = Counter(judged_on.values())
    return {day: {"images": images[day], "parts": len(parts[day]), "judged_parts": judged[day],
                  "rejected_parts": rejects[day],
                  "disagreements": disagreements[day], "corrections": corrections[day]}
            for day in sorted(set(images) | set(judged) | set(corrections))}


def test_daily_figures_count_what_the_events_say(factory) -> None:
    cat, events = factory
    expected = expected_figures(events)
    last = max(expected)  # corrections come a day after their label: the window runs past the last image
    figures = activity.daily_figures(cat, FIRST - timedelta(days=1), last)
    assert [f.day for f in figures] == [FIRST - timedelta(days=1), *sorted(expected)]
    assert figures[0] == activity.DayFigures(FIRST - timedelta(days=1), 0, 0, 0, 0, 0, 0)  # a quiet day: zeros
    for f in figures[1:]:
        assert vars(f) == {"day": f.day} | expected[f.day], f.day
    assert sum(f.images for f in figures) == 3 * 48
    assert sum(f.disagreements for f in figures) > 0 and sum(f.corrections for f in figures) > 0


def test_image_days_span_the_captures(factory, database) -> None:
    cat, _ = factory
    assert activity.image_days(cat) == (DAYS[0], DAYS[-1])


def test_an_empty_catalog_has_no_days(cat) -> None:
    assert activity.image_days(cat) is None
    assert activity.engine_in_service(cat) is None
    assert activity.lineage_graph(activity.lineage_table(cat), activity.promotions(cat)) \
        == activity.LineageGraph()


def test_a_window_must_not_run_backwards() -> None:
    with pytest.raises(ValueError, match="empty window"):
        activity.window(DAYS[1], DAYS[0])


def test_the_timeline_adds_up_to_the_day_per_line(factory) -> None:
    cat, events = factory
    day = DAYS[1]
    hours = activity.day_timeline(cat, day)
    assert {h.line for h in hours} == {"line-0", "line-1"}
    assert all(h.hour.minute == 0 and utc_day(h.hour) == day for h in hours)
    figures = activity.daily_figures(cat, day, day)[0]
    assert sum(h.images for h in hours) == figures.images
    assert sum(h.rejected_parts for h in hours) == figures.rejected_parts
    per_line = Counter(e.data.line for e in events
                       if isinstance(e.data, ev.ImageIngested) and utc_day(e.data.captured_at) == day)
    assert {line: sum(h.images for h in hours if h.line == line) for line in per_line} == per_line


def test_rows_of_a_day_are_its_rejects_corrections_and_disagreements(factory) -> None:
    cat, events = factory
    day = DAYS[1]
    figures = activity.daily_figures(cat, day, day)[0]
    rejects = activity.rejected_parts(cat, day, day, limit=1000)
    assert len(rejects) == figures.rejected_parts
    assert [r["decided_at"] for r in rejects] == sorted((r["decided_at"] for r in rejects), reverse=True)
    assert all(r["part_id"].startswith(f"L{r['line'][-1]}-{day:%Y%m%d}") for r in rejects)
    assert len(activity.rejected_parts(cat, day, day, limit=2)) == 2

    rows = activity.disagreements(cat, day, day, limit=1000)
    assert len(rows) == figures.disagreements
    assert all(r["label"] != r["predicted_class"] and r["engine_id"] == ENGINE_ID and r["score"] == 0.9
               for r in rows)

    busiest = max(activity.daily_figures(cat, DAYS[0], DAYS[-1] + timedelta(days=1)),
                  key=lambda f: f.corrections)
    corrected = activity.corrections(cat, busiest.day, busiest.day, limit=1000)
    assert len(corrected) == busiest.corrections > 0
    assert all(r["corrected_by"] == "dana" and r["old_label"] != r["new_label"] and r["part_id"] for r in corrected)


def test_a_correction_ends_a_disagreement(factory) -> None:
    """A disagreement is with the current label: correcting the label to the model's class removes it."""
    cat, _ = factory
    day, before = max(((f.day, f.disagreements) for f in activity.daily_figures(cat, DAYS[0], DAYS[-1])),
                      key=lambda pair: pair[1])
    row = activity.disagreements(cat, day, day, limit=1)[0]
    cat.append([NewEvent(ev.CorrectionRecorded(
        sha256=row["sha256"], correction_id="fix-1", target="label", old_label=row["label"],
        new_label=row["predicted_class"], corrected_by="eve", ontology_version=1),
        datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=23))])
    after = activity.daily_figures(cat, day, day)[0]
    assert after.disagreements == before - 1
    assert [r["new_label"] for r in activity.corrections(cat, day, day) if r["corrected_by"] == "eve"] \
        == [row["predicted_class"]]


def lineage_events(at: datetime) -> tuple[list[NewEvent], dict[str, str]]:
    """A dataset version, two models trained on it, an engine of each, and the second promoted over the
    first (after a passed replay), one minute apart from ``at`` on."""
    ids = {"dataset": "inspection-all-000000000001", "m1": "inspection-classifier-m1",
           "m2": "inspection-classifier-m2", "e1": "1" * 64, "e2": "2" * 64}
    replay = uuid.uuid4()
    data = [
        ev.DatasetVersionPublished(dataset="inspection-all", version_id=ids["dataset"], spec={}, as_of_position=7,
                                   counts={"ok": 3}, manifest_hash=HASH, manifest_uri="datasets/m.parquet"),
        *(ev.ModelRegistered(model=CLASSIFIER, model_id=ids[m], dataset_version_id=ids["dataset"],
                             manifest_hash=HASH, artifact_sha256=HASH, artifact_uri=f"models/{m}")
          for m in ("m1", "m2")),
        *(ev.EngineBuilt(engine_id=ids[e], model=CLASSIFIER, model_id=ids[m], onnx_sha256=HASH,
                         dataset_version_id=ids["dataset"], manifest_hash=HASH, backend="onnxruntime",
                         precision="fp32", device="cpu", library_versions={}, artifact_uri=f"engines/{e}")
          for e, m in (("e1", "m1"), ("e2", "m2"))),
        ev.ModelPromoted(model=CLASSIFIER, model_id=ids["m1"], replay_event_id=uuid.uuid4(), reason="first"),
        ev.RegressionReplayed(model=CLASSIFIER, candidate_model_id=ids["m2"], champion_model_id=ids["m1"],
                              passed=True, images=40, summary={}, report_uri="replays/r.parquet"),
        ev.ModelPromoted(model=CLASSIFIER, model_id=ids["m2"], previous_model_id=ids["m1"], replay_event_id=replay,
                         reason="fewer false rejects"),
    ]
    return [NewEvent(d, at + timedelta(minutes=k)) for k, d in enumerate(data)], ids


def test_lineage_records_graph_and_dot(factory) -> None:
    cat, _ = factory
    at = datetime(2026, 3, 3, 12, tzinfo=UTC)
    lineage, ids = lineage_events(at)
    cat.append(lineage)

    records = activity.lineage_records(cat, DAYS[1], DAYS[1])
    assert [r.kind for r in records] == ["dataset version", "model", "model", "engine", "engine", "promotion",
                                         "regression replay", "promotion"]
    assert records[-1].id == ids["m2"] and "replaces inspection-classifier-m1" in records[-1].what
    assert activity.lineage_records(cat, DAYS[0], DAYS[0]) == []

    chains = activity.lineage_table(cat)
    assert [(r["version_id"], r["model_id"], r["engine_id"]) for r in chains] == [
        (ids["dataset"], ids["m2"], ids["e2"]), (ids["dataset"], ids["m1"], ids["e1"])]
    promoted = activity.promotions(cat)
    assert [(p["model_id"], p["previous_model_id"], p["passed"]) for p in promoted] == [
        (ids["m2"], ids["m1"], True), (ids["m1"], None, None)]

    graph = activity.lineage_graph(chains, promoted)
    assert {n.id for n in graph.nodes} == {f"dataset:{ids['dataset']}", f"model:{ids['m1']}",
                                            f"model:{ids['m2']}", f"engine:{ids['e1']}", f"engine:{ids['e2']}"}
    assert [n.id for n in graph.nodes if n.champion] == [f"model:{ids['m2']}"]
    assert {(e.source, e.target, e.label) for e in graph.edges} == {
        (f"dataset:{ids['dataset']}", f"model:{ids['m1']}", "trained"),
        (f"dataset:{ids['dataset']}", f"model:{ids['m2']}", "trained"),
        (f"model:{ids['m1']}", f"engine:{ids['e1']}", "built"),
        (f"model:{ids['m2']}", f"engine:{ids['e2']}", "built"),
        (f"model:{ids['m1']}", f"model:{ids['m2']}", "promoted"),
    }
    dot = activity.to_dot(graph)
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    assert f'"model:{ids["m1"]}" -> "model:{ids["m2"]}" [label="promoted", style=dashed];' in dot
    assert all(ident in dot for ident in ids.values())


def test_a_model_without_a_published_dataset_version_still_shows(cat) -> None:
    lineage, ids = lineage_events(datetime(2026, 3, 3, tzinfo=UTC))
    cat.append(lineage[1:2])  # the first model alone: its dataset version is not in this catalog
    graph = activity.lineage_graph(activity.lineage_table(cat), activity.promotions(cat))
    dataset = next(n for n in graph.nodes if n.kind == "dataset version")
    assert dataset.id == f"dataset:{ids['dataset']}" and "not published in this catalog" in dataset.label


def test_the_engine_in_service_decided_the_latest_part(factory) -> None:
    cat, _ = factory
    served = activity.engine_in_service(cat)
    assert served.engine_id == ENGINE_ID and served.model_id is None and not served.champion  # no EngineBuilt

    lineage, ids = lineage_events(datetime(2026, 3, 6, tzinfo=UTC))
    decided = datetime(2026, 3, 7, 9, tzinfo=UTC)
    cat.append(lineage + [
        NewEvent(ev.PartDispositioned(part_id="P-late", decision="accept", decided_by=ids["e2"], decider="engine",
                                      rule="all_images_ok", engine_id=ids["e2"]), decided),
        # a replay of history records predictions, never decisions: it does not change the engine in service
        NewEvent(ev.PredictionRecorded(sha256=HASH, engine_id=ids["e1"], scores={"ok": 1.0}, predicted_class="ok"),
                 decided + timedelta(hours=1)),
    ])
    served = activity.engine_in_service(cat)
    assert (served.engine_id, served.model_id, served.dataset_version_id, served.champion) == (
        ids["e2"], ids["m2"], ids["dataset"], True)
    assert served.last_decision_at == decided
