"""The read models folded by SQL on the server agree with their Python folds, row by row, on a generated log.

The live schema is folded by the Python folds alone (the specification) and the scratch schema by the runner
as it runs in production (SQL where it can), from the same log, at the same page size; then every table of
the two schemas is compared row by row.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

import catalog
from catalog import events as ev
from catalog.projections import ProjectionRunner, set_based
from catalog.projections.read_models import ALL_PROJECTIONS
from catalog.projections.runner import LIVE, SCRATCH
from catalog.store import NewEvent

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HASH = "f" * 64
SHAS = [hashlib.sha256(f"image {i}".encode()).hexdigest() for i in range(24)]
# Images whose curation and verdicts all come before their ingestion: none of them counts.
LATE_SHAS = [hashlib.sha256(f"late image {i}".encode()).hexdigest() for i in range(6)]
PARTS = [f"P-{i}" for i in range(8)]
CLASSES = ("ok", "spot", "crack", "scratch")
ENGINES = ("e1", "e2")


def _ingested(rng: random.Random, sha: str) -> ev.ImageIngested:
    part = rng.choice(PARTS)
    return ev.ImageIngested(
        # a part seen on two lines: its row keeps the line it was first seen on
        sha256=sha, part_id=part, line=rng.choice(["line-0", "line-1"]), station="st-1", camera=rng.choice(["c1", "c2"]),
        # capture times in any order, so a part's first and last captures are rarely its first and last logged
        captured_at=T0 + timedelta(minutes=rng.randrange(-600, 600)), width=64, height=48, channels=1, bit_depth=8,
        byte_size=rng.randrange(1, 10_000), blob_uri=f"blobs/{sha}", source_path=f"{part}/{rng.randrange(99)}.png",
        thumbnail_uri=rng.choice([None, f"thumbs/{sha}"]), metadata=rng.choice([{}, {"lot": str(rng.randrange(9))}]),
    )


def _labelled(rng: random.Random, sha: str) -> ev.LabelRecorded:
    regions = [ev.Region(shape="box", x0=rng.randrange(9), y0=0, x1=20, y1=20)] if rng.random() < 0.5 else []
    return ev.LabelRecorded(sha256=sha, label_id=f"L-{rng.randrange(10**6)}", label=rng.choice(CLASSES),
                            annotator=rng.choice(["ana", "ben"]), ontology_version=rng.choice([1, 2]),
                            regions=regions, mask_uri=rng.choice([None, f"masks/{sha}.png"]))


def _corrected(rng: random.Random, sha: str) -> ev.CorrectionRecorded:
    of_label = rng.random() < 0.5  # a correction of a prediction names no label, so the label id stays
    return ev.CorrectionRecorded(
        sha256=sha, correction_id=f"C-{rng.randrange(10**6)}", target="label" if of_label else "prediction",
        label_id=f"L-{rng.randrange(10**6)}" if of_label else None, old_label=rng.choice(CLASSES),
        new_label=rng.choice(CLASSES), corrected_by="dana", reason=rng.choice(["", "rim"]), ontology_version=2,
        prediction_event_id=None if of_label else uuid.UUID(int=rng.randrange(10**6)))


def _predicted(rng: random.Random, sha: str) -> ev.PredictionRecorded:
    predicted = rng.choice(CLASSES)
    return ev.PredictionRecorded(sha256=sha, engine_id=rng.choice(ENGINES), predicted_class=predicted,
                                 scores={c: (0.7 if c == predicted else 0.1) for c in CLASSES},
                                 part_id=rng.choice([None, rng.choice(PARTS)]),
                                 heatmap_uri=rng.choice([None, f"heatmaps/{sha}.png"]))


def _dispositioned(rng: random.Random, _sha: str) -> ev.PartDispositioned:
    human = rng.random() < 0.3
    return ev.PartDispositioned(part_id=rng.choice(PARTS), decision=rng.choice(["accept", "reject"]),
                                decided_by="ana" if human else "rules", decider="human" if human else "engine",
                                rule="max_defect_score", rules_version=rng.choice([None, "r1"]),
                                engine_id=None if human else rng.choice(ENGINES))


def _excluded(rng: random.Random, sha: str) -> ev.ImageExcluded:
    return ev.ImageExcluded(sha256=sha, reason=rng.choice(["lens was dirty", "wrong window"]))


def _included(rng: random.Random, sha: str) -> ev.ImageIncluded:
    return ev.ImageIncluded(sha256=sha, reason="lens was fine")


# Each kind of event about an image, with its weight in the log: the bulk ones most often.
IMAGE_EVENTS = ((_ingested, 6), (_labelled, 5), (_predicted, 6), (_dispositioned, 2), (_corrected, 2),
                (_excluded, 1), (_included, 1))


def low_volume_events() -> list[ev.EventData]:
    """One of every other type a read model folds: they are read into Python while the rest stays on the server."""
    return [
        ev.OntologyPublished(version=1, classes=list(CLASSES)),
        ev.ReviewRequested(sha256=SHAS[0], queue="uncertain", strategy="margin", score=0.5),
        ev.DatasetVersionPublished(dataset="inspection", version_id="dv1", spec={"split": "by_part"},
                                   as_of_position=10, counts={"train": 8}, manifest_hash=HASH,
                                   manifest_uri="manifests/dv1.json"),
        ev.ModelRegistered(model="clf", model_id="m1", dataset_version_id="dv1", manifest_hash=HASH,
                           artifact_sha256=HASH, artifact_uri="models/m1.pt"),
        ev.ModelExported(model="clf", model_id="m1", onnx_sha256=HASH, onnx_uri="onnx/m1.onnx", opset=17,
                         parity_max_abs_diff=1e-6, parity_tolerance=1e-4),
        ev.ModelEvaluated(model="clf", model_id="m1", dataset_version_id="dv1", split="test",
                          metrics={"recall": 0.9}, threshold=0.4, cost_ratio=5, report_uri="reports/m1"),
        ev.RegressionReplayed(model="clf", candidate_model_id="m1", champion_model_id=None, passed=True, images=4,
                              summary={"recall_delta": 0.01}, report_uri="reports/replay"),
        ev.ModelPromoted(model="clf", model_id="m1", replay_event_id=uuid.UUID(int=1), reason="passed"),
        ev.EngineBuilt(engine_id="e1", model="clf", model_id="m1", onnx_sha256=HASH, dataset_version_id="dv1",
                       manifest_hash=HASH, backend="onnxruntime", precision="fp32", device="cpu",
                       library_versions={"onnxruntime": "1.20"}, artifact_uri="engines/e1"),
        ev.LineTimeZoneSet(line="line-0", time_zone="Europe/Berlin"),
        ev.UserCreated(username="ana", full_name="Ana"), ev.UserRoleGranted(username="ana", role="curator"),
        ev.StationTokenIssued(token_id="a" * 16, line="line-0", station="st-1", expires_at=T0 + timedelta(days=1),
                              issued_by="ops"),
    ]


def generated_log(seed: int, n: int) -> list[NewEvent]:
    """About ``n`` events: events about 24 images of 8 parts in random order (so curation, labels and corrections also
    arrive before an image's ingestion, and an image is seen again), runs of several events on one row, times
    out of order and ties, six images labelled, curated and corrected only before they are ingested, and one of
    every other type a read model folds."""
    rng = random.Random(seed)
    kinds, weights = zip(*IMAGE_EVENTS, strict=True)
    moments = [T0 + timedelta(minutes=m) for m in range(0, 120, 15)]  # few moments: predictions tie
    events: list[NewEvent] = []
    while len(events) < n:
        sha = rng.choice(SHAS)
        for _ in range(rng.choice([1, 1, 1, 4])):  # sometimes a run of events on one image, within one page
            events.append(NewEvent(rng.choices(kinds, weights)[0](rng, sha), rng.choice(moments)))
    for sha in LATE_SHAS:
        before = [_labelled(rng, sha), rng.choice([_excluded, _included])(rng, sha), _corrected(rng, sha)]
        at = rng.randrange(len(events))
        events[at:at] = [NewEvent(data, rng.choice(moments)) for data in [*before, _ingested(rng, sha)]]
    for data in low_volume_events():
        events.insert(rng.randrange(len(events)), NewEvent(data, rng.choice(moments)))
    return events


def table_rows(cat: catalog.Catalog, schema: str) -> dict[str, list[tuple]]:
    """Every read model's rows in ``schema``, in key order."""
    rows = {}
    with cat.db.connect() as conn:
        for p in ALL_PROJECTIONS:
            rows[p.table] = [tuple(r) for r in conn.exec_driver_sql(
                f"SELECT * FROM {schema}.{p.table} ORDER BY {', '.join(p.key)}").fetchall()]
    return rows


def assert_same_rows(cat: catalog.Catalog) -> None:
    spec, in_sql = table_rows(cat, LIVE), table_rows(cat, SCRATCH)
    for table, expected in spec.items():
        assert in_sql[table] == expected, f"{table}: the SQL folds disagree with the Python folds"


def fold_both_ways(cat: catalog.Catalog, page_size: int) -> None:
    """The live schema folded by the Python folds alone, the scratch schema as in production."""
    spec = ProjectionRunner(cat.db, schema=LIVE, use_sql=False)
    production = ProjectionRunner(cat.db, schema=SCRATCH)
    for runner in (spec, production):
        runner.reset()
        assert runner.catch_up(page_size=page_size) == cat.head()


@pytest.mark.parametrize("page_size", [1, 7, 100_000])
def test_sql_and_python_folds_write_the_same_rows(cat: catalog.Catalog, page_size: int):
    cat.append(generated_log(seed=page_size, n=700), catch_up=False)
    fold_both_ways(cat, page_size)
    assert_same_rows(cat)
    counts = {table: len(rows) for table, rows in table_rows(cat, SCRATCH).items()}
    assert all(counts.values()), f"the log reaches every read model: {counts}"


def test_read_models_caught_up_over_two_connections_hold_the_same_rows(cat: catalog.Catalog):
    cat.append(generated_log(seed=5, n=500), catch_up=False)
    spec = ProjectionRunner(cat.db, schema=LIVE, use_sql=False)
    production = ProjectionRunner(cat.db, schema=SCRATCH)
    spec.catch_up(page_size=7)
    assert production.catch_up(page_size=7, connections=2) == cat.head()
    assert set(production.checkpoints().values()) == {cat.head()}
    assert_same_rows(cat)


def test_the_sql_folds_continue_rows_folded_in_python_and_back(cat: catalog.Catalog):
    """The two paths take turns on the same tables: each continues from the rows the other left."""
    log = generated_log(seed=3, n=600)
    spec = ProjectionRunner(cat.db, schema=LIVE, use_sql=False)
    runners = [ProjectionRunner(cat.db, schema=SCRATCH, use_sql=use_sql) for use_sql in (True, False)]
    for turn, start in enumerate(range(0, len(log), 150)):
        cat.append(log[start:start + 150], catch_up=False)
        spec.catch_up(page_size=40)
        runners[turn % 2].catch_up(page_size=40)
    assert_same_rows(cat)


def test_the_sql_reads_the_current_schema_versions():
    """Raising an event type's schema version means revisiting the SQL that reads its payload."""
    assert {t: ev.event_class(t).schema_version for t in set_based.SQL_READS} == set_based.SQL_READS
    folded_in_sql = {t for p in ALL_PROJECTIONS if p.sql for t in p.folds}
    assert folded_in_sql == set(set_based.SQL_READS)
    assert {p.name for p in ALL_PROJECTIONS if p.sql} == set(set_based.SERVER_TIME)  # how they are balanced


SPOT_RENAMED = "stain"


@pytest.mark.parametrize("sql_updated", [True, False], ids=["sql reads v2", "sql still reads v1"])
def test_events_of_an_old_schema_version_are_folded_through_their_upcaster(
        cat: catalog.Catalog, monkeypatch: pytest.MonkeyPatch, sql_updated: bool):
    """LabelRecorded moves to v2, where 'spot' is called 'stain': the v1 events already stored must read as
    'stain' in every read model, folded in Python on the pages that hold them, and in SQL elsewhere where the
    SQL reads v2."""
    log = generated_log(seed=11, n=600)
    cat.append(log[:300], catch_up=False)  # stored at v1
    v1_positions = cat.head()

    def v1_to_v2(payload: dict) -> dict:
        return payload | {"label": SPOT_RENAMED if payload["label"] == "spot" else payload["label"]}

    monkeypatch.setattr(ev.LabelRecorded, "schema_version", 2)
    monkeypatch.setitem(ev.UPCASTERS, ("LabelRecorded", 1), v1_to_v2)
    if sql_updated:
        monkeypatch.setitem(set_based.SQL_READS, "LabelRecorded", 2)
    cat.append(log[300:], catch_up=False)  # stored at v2
    fold_both_ways(cat, page_size=50)
    assert_same_rows(cat)
    with cat.db.connect() as conn:
        history = conn.exec_driver_sql(
            f"SELECT h.label, e.payload->>'label' FROM {SCRATCH}.label_history h JOIN catalog.events e USING (position)"
            " WHERE e.type = 'LabelRecorded' AND e.position <= %(p)s", {"p": v1_positions}).fetchall()
    assert ("spot", "spot") not in history and (SPOT_RENAMED, "spot") in history
