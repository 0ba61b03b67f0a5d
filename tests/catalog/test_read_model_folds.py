"""Read-model folds on events built in memory: the rows each projection would write for a page, no database.

Events are given the shape the store gives them (payload as JSON read back into a dict) and folded through
the same ``Projection.relevant`` and ``Projection.fold`` that ``Projection.apply`` calls before it writes.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from catalog import events as ev
from catalog.projections import read_models as rm
from catalog.projections.framework import Key, Page, PageEvent, Projection, Row

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SHA = "a" * 64
OTHER_SHA = "b" * 64
HASH = "f" * 64


def logged(data: ev.EventData, position: int, at: datetime = T0) -> PageEvent:
    """``data`` as the store hands it to the folds: its payload serialised as on append and read back."""
    return PageEvent(position, data.type_name(), type(data).schema_version, json.loads(data.model_dump_json()), at)


def page(*events: ev.EventData | tuple[ev.EventData, datetime], first: int = 1) -> Page:
    """A page of ``events`` at positions ``first``, ``first + 1``, ...; each occurred at T0 unless given as
    (event, occurred_at)."""
    timed = [e if isinstance(e, tuple) else (e, T0) for e in events]
    return Page.of([logged(data, first + i, at) for i, (data, at) in enumerate(timed)])


def fold(projection: Projection, events: Page, rows: dict[Key, Row] | None = None, after: int = 0) -> dict[Key, Row]:
    """The rows ``projection`` writes for ``events`` after ``after``, given the rows as they stand (``rows``
    is updated in place, as the runner's cache is)."""
    return projection.fold(projection.relevant(events, after), {} if rows is None else rows)


def ingested(sha: str = SHA, part: str = "P-1", at: datetime = T0, **extra) -> ev.ImageIngested:
    return ev.ImageIngested(
        sha256=sha, part_id=part, line="line-a", station="st-1", camera="cam-1", captured_at=at, width=64,
        height=48, channels=1, bit_depth=8, byte_size=99, blob_uri=f"blobs/{sha}", source_path=f"{part}.png",
        **extra,
    )


def labelled(label: str = "spot", sha: str = SHA, **extra) -> ev.LabelRecorded:
    return ev.LabelRecorded(sha256=sha, label_id="L1", label=label, annotator="ana", ontology_version=1, **extra)


def corrected(new: str = "crack", old: str = "spot", sha: str = SHA, **extra) -> ev.CorrectionRecorded:
    fields = {"target": "label", "label_id": "L1", "ontology_version": 1} | extra
    return ev.CorrectionRecorded(sha256=sha, correction_id=f"C-{new}", old_label=old, new_label=new,
                                 corrected_by="dana", **fields)


def predicted(cls: str, engine: str = "e1", sha: str = SHA) -> ev.PredictionRecorded:
    return ev.PredictionRecorded(sha256=sha, engine_id=engine, scores={cls: 0.9}, predicted_class=cls, part_id="P-1")


def registered(model_id: str = "m1", **extra) -> ev.ModelRegistered:
    return ev.ModelRegistered(model="clf", model_id=model_id, dataset_version_id="dv1", manifest_hash=HASH,
                              artifact_sha256=HASH, artifact_uri=f"models/{model_id}.pt", **extra)


def exported(model_id: str = "m1") -> ev.ModelExported:
    return ev.ModelExported(model="clf", model_id=model_id, onnx_sha256=HASH, onnx_uri=f"onnx/{model_id}.onnx",
                            opset=17, parity_max_abs_diff=1e-6, parity_tolerance=1e-4)


def evaluated(model_id: str = "m1") -> ev.ModelEvaluated:
    return ev.ModelEvaluated(model="clf", model_id=model_id, dataset_version_id="dv1", split="test",
                             metrics={"recall": 0.9}, threshold=0.4, cost_ratio=5, report_uri="reports/m1")


def promoted(model_id: str = "m1", previous: str | None = None) -> ev.ModelPromoted:
    return ev.ModelPromoted(model="clf", model_id=model_id, previous_model_id=previous,
                            replay_event_id=uuid.UUID(int=1), reason="passed the replay")


def replayed(passed: bool = True) -> ev.RegressionReplayed:
    return ev.RegressionReplayed(model="clf", candidate_model_id="m2", champion_model_id="m1", passed=passed,
                                 images=40, summary={"recall_delta": 0.01}, report_uri="reports/replay")


def built(engine_id: str = "eng-1", device: str = "cpu") -> ev.EngineBuilt:
    return ev.EngineBuilt(engine_id=engine_id, model="clf", model_id="m1", onnx_sha256=HASH,
                          dataset_version_id="dv1", manifest_hash=HASH, backend="onnxruntime", precision="fp32",
                          device=device, library_versions={"onnxruntime": "1.20"}, artifact_uri="engines/eng-1")


def published(version_id: str = "dv1", counts: dict[str, int] | None = None) -> ev.DatasetVersionPublished:
    return ev.DatasetVersionPublished(dataset="inspection", version_id=version_id, spec={"split": "by_part"},
                                      as_of_position=10, counts=counts or {"train": 8, "test": 2},
                                      manifest_hash=HASH, manifest_uri=f"manifests/{version_id}.json")


def dispositioned(decision: str, decider: str = "engine") -> ev.PartDispositioned:
    return ev.PartDispositioned(part_id="P-1", decision=decision, decided_by="rules" if decider == "engine" else "ana",
                                decider=decider, rule="max_defect_score", rules_version="r1", engine_id="e1")


def review(queue: str = "uncertain", score: float = 0.5) -> ev.ReviewRequested:
    return ev.ReviewRequested(sha256=SHA, queue=queue, strategy="margin", score=score)


# One event of every type a read model folds, in an order a factory could log them.
EVERY_KIND = (
    ev.OntologyPublished(version=1, classes=["ok", "spot", "crack"]),
    ingested(), labelled(), corrected(), predicted("spot"), dispositioned("reject"), review(),
    ev.ImageExcluded(sha256=SHA, reason="lens was dirty"), ev.ImageIncluded(sha256=SHA, reason="lens was fine"),
    published(), registered(), exported(), evaluated(), replayed(), promoted(), built(),
    ev.LineTimeZoneSet(line="line-a", time_zone="Europe/Berlin"),
    ev.UserCreated(username="ana", full_name="Ana"), ev.UserRoleGranted(username="ana", role="curator"),
    ev.UserPasswordSet(username="ana", credential_id=uuid.uuid4()),
    ev.StationTokenIssued(token_id="a" * 16, line="line-a", station="st-1", expires_at=T0 + timedelta(days=1),
                          issued_by="ops"),
)


# -- every read model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("projection", rm.ALL_PROJECTIONS, ids=lambda p: p.name)
def test_every_row_has_the_table_columns_and_its_own_key(projection: Projection):
    rows = fold(projection, page(*EVERY_KIND))
    assert rows, f"no event in EVERY_KIND reaches {projection.name}"
    for key, row in rows.items():
        assert set(row) == set(projection.columns)  # the COPY writes exactly these columns
        assert tuple(row[k] for k in projection.key) == key  # rows loaded back are found under the same key


def test_an_event_no_read_model_folds_changes_nothing():
    rejected = ev.ImageRejected(delivery_key="d1", reason=ev.RejectReason.UNREADABLE, detail="bad header", sha256=SHA)
    rows: dict[Key, Row] = {}
    for projection in rm.ALL_PROJECTIONS:
        assert projection.relevant(page(rejected), after=0) == []
        assert fold(projection, page(rejected), rows) == {}
    assert rows == {}


def test_events_a_read_model_does_not_fold_are_skipped_among_those_it_does():
    mixed = page(predicted("spot"), ingested(), ev.OntologyPublished(version=1, classes=["ok"]), labelled())
    assert [(key, e.type) for key, e, _ in rm.IMAGES.relevant(mixed, after=0)] == [
        ((SHA,), "ImageIngested"), ((SHA,), "LabelRecorded")]
    assert list(fold(rm.ENGINES, mixed)) == []


def test_events_up_to_the_checkpoint_are_not_folded_again():
    events = page(ingested(), ingested(part="P-2"), ingested(part="P-3"))
    rows: dict[Key, Row] = {}
    fold(rm.IMAGES, events, rows, after=0)
    again = fold(rm.IMAGES, events, rows, after=3)
    assert again == {} and rows[(SHA,)]["sightings"] == 3
    assert [key for key, _, _ in rm.IMAGE_SIGHTINGS.relevant(events, after=2)] == [(3,)]


# -- images ----------------------------------------------------------------------------------------------------


def test_image_ingested_creates_the_image_row():
    (row,) = fold(rm.IMAGES, page(ingested(at=T0 + timedelta(minutes=3), metadata={"lot": "7"}), first=5)).values()
    assert row == {
        "sha256": SHA, "part_id": "P-1", "line": "line-a", "station": "st-1", "camera": "cam-1",
        "captured_at": T0 + timedelta(minutes=3), "width": 64, "height": 48, "channels": 1, "bit_depth": 8,
        "byte_size": 99, "blob_uri": f"blobs/{SHA}", "thumbnail_uri": None, "source_path": "P-1.png",
        "metadata": {"lot": "7"}, "sightings": 1, "excluded": False, "exclusion_reason": None,
        "ingested_position": 5, "last_position": 5, "label": None, "label_ontology_version": None,
    }


def test_the_same_bytes_seen_again_are_one_image_with_one_more_sighting():
    rows = fold(rm.IMAGES, page(ingested(), ingested(part="P-2"), ingested(OTHER_SHA)))
    image = rows[(SHA,)]
    assert (image["sightings"], image["part_id"], image["ingested_position"], image["last_position"]) == (2, "P-1", 1, 2)
    assert rows[(OTHER_SHA,)]["sightings"] == 1


def test_exclusion_and_inclusion_flip_the_image_across_pages():
    rows: dict[Key, Row] = {}
    fold(rm.IMAGES, page(ingested()), rows)
    excluded = fold(rm.IMAGES, page(ev.ImageExcluded(sha256=SHA, reason="lens was dirty"), first=2), rows)
    assert {k: excluded[(SHA,)][k] for k in ("excluded", "exclusion_reason", "last_position")} == {
        "excluded": True, "exclusion_reason": "lens was dirty", "last_position": 2}
    included = fold(rm.IMAGES, page(ev.ImageIncluded(sha256=SHA, reason="lens was fine"), first=3), rows)
    assert (included[(SHA,)]["excluded"], included[(SHA,)]["exclusion_reason"]) == (False, None)
    assert rows[(SHA,)] == included[(SHA,)]  # the cache holds the row the next page starts from


def test_curation_or_labels_of_an_image_never_ingested_change_nothing():
    events = page(ev.ImageExcluded(sha256=SHA, reason="lens was dirty"), ev.ImageIncluded(sha256=SHA, reason="fine"),
                  labelled(), corrected())
    assert fold(rm.IMAGES, events) == {}


def test_the_image_carries_the_latest_human_verdict():
    rows = fold(rm.IMAGES, page(ingested(), labelled("spot"), corrected("crack", ontology_version=2)))
    assert (rows[(SHA,)]["label"], rows[(SHA,)]["label_ontology_version"], rows[(SHA,)]["last_position"]) == (
        "crack", 2, 3)
    relabelled = fold(rm.IMAGES, page(labelled("ok"), first=4), rows)
    assert relabelled[(SHA,)]["label"] == "ok"


def test_a_sighting_row_per_ingestion_even_of_the_same_bytes():
    rows = fold(rm.IMAGE_SIGHTINGS, page(ingested(), ingested(part="P-2", at=T0 + timedelta(hours=1))))
    assert [(r["position"], r["sha256"], r["part_id"], r["captured_at"]) for r in rows.values()] == [
        (1, SHA, "P-1", T0), (2, SHA, "P-2", T0 + timedelta(hours=1))]


def test_curation_history_keeps_each_exclusion_and_inclusion():
    rows = fold(rm.CURATION_HISTORY, page(ev.ImageExcluded(sha256=SHA, reason="lens was dirty"),
                                          ev.ImageIncluded(sha256=SHA, reason="lens was fine")))
    assert list(rows.values()) == [
        {"position": 1, "sha256": SHA, "excluded": True, "reason": "lens was dirty"},
        {"position": 2, "sha256": SHA, "excluded": False, "reason": "lens was fine"},
    ]


# -- parts -----------------------------------------------------------------------------------------------------


def test_a_part_spans_its_images_capture_times_whatever_their_order():
    late, early = T0 + timedelta(minutes=9), T0 - timedelta(minutes=4)
    # The last capture logged is neither the first nor the last taken.
    rows = fold(rm.PARTS, page(ingested(at=late), ingested(OTHER_SHA, at=early), ingested("c" * 64, at=T0),
                               ingested(part="P-2")))
    assert rows[("P-1",)] == {"part_id": "P-1", "line": "line-a", "first_captured_at": early,
                              "last_captured_at": late, "image_count": 3, "last_position": 3}
    assert rows[("P-2",)]["image_count"] == 1


# -- labels ----------------------------------------------------------------------------------------------------


def test_current_label_from_a_label():
    region = ev.Region(shape="box", x0=1, y0=2, x1=5, y1=6)
    (row,) = fold(rm.CURRENT_LABELS, page((labelled(regions=[region], mask_uri="masks/1.png"), T0 + timedelta(1)))
                  ).values()
    assert row == {
        "sha256": SHA, "label": "spot", "label_id": "L1", "annotator": "ana", "ontology_version": 1,
        "source": "label", "regions": [json.loads(region.model_dump_json())], "mask_uri": "masks/1.png",
        "labeled_at": T0 + timedelta(1), "position": 1,
    }


def test_a_correction_changes_the_class_but_keeps_where_the_defect_is():
    region = ev.Region(shape="ellipse", cx=3, cy=4, rx=2, ry=1, angle=0)
    rows = fold(rm.CURRENT_LABELS, page(labelled(regions=[region], mask_uri="masks/1.png"),
                                        (corrected("crack", label_id=None), T0 + timedelta(hours=1))))
    row = rows[(SHA,)]
    assert (row["label"], row["annotator"], row["source"], row["labeled_at"], row["position"]) == (
        "crack", "dana", "correction", T0 + timedelta(hours=1), 2)
    assert (row["label_id"], row["regions"][0]["shape"], row["mask_uri"]) == ("L1", "ellipse", "masks/1.png")


def test_a_correction_of_a_prediction_is_the_first_label_of_an_unlabelled_image():
    row = fold(rm.CURRENT_LABELS, page(corrected("crack", old="ok", target="prediction", label_id=None)))[(SHA,)]
    assert (row["label"], row["label_id"], row["regions"], row["mask_uri"]) == ("crack", None, [], None)


def test_a_later_label_replaces_the_corrected_one_with_its_own_regions():
    rows: dict[Key, Row] = {}
    fold(rm.CURRENT_LABELS, page(labelled(regions=[ev.Region(shape="box", x0=0, y0=0, x1=1, y1=1)]), corrected()),
         rows)
    row = fold(rm.CURRENT_LABELS, page(labelled("ok"), first=3), rows)[(SHA,)]
    assert (row["label"], row["source"], row["regions"], row["position"]) == ("ok", "label", [], 3)


def test_label_history_keeps_every_verdict_in_order():
    rows = fold(rm.LABEL_HISTORY, page(labelled("spot"), (corrected("crack"), T0 + timedelta(hours=1))))
    assert [(r["position"], r["label"], r["annotator"], r["source"], r["labeled_at"]) for r in rows.values()] == [
        (1, "spot", "ana", "label", T0), (2, "crack", "dana", "correction", T0 + timedelta(hours=1))]


def test_a_correction_row_records_both_labels():
    prediction_id = uuid.UUID(int=7)
    (row,) = fold(rm.CORRECTIONS, page(labelled(), corrected("crack", target="prediction", label_id=None,
                                                             prediction_event_id=prediction_id, reason="rim"))
                  ).values()
    assert row == {
        "correction_id": "C-crack", "sha256": SHA, "target": "prediction", "label_id": None,
        "prediction_event_id": str(prediction_id), "old_label": "spot", "new_label": "crack", "corrected_by": "dana",
        "reason": "rim", "corrected_at": T0, "position": 2,
    }


# -- review queue and ontology ---------------------------------------------------------------------------------


def test_a_new_review_request_for_a_queued_image_replaces_its_score():
    rows: dict[Key, Row] = {}
    fold(rm.REVIEW_QUEUE, page(review(score=0.5), review("drift", score=0.2)), rows)
    again = fold(rm.REVIEW_QUEUE, page(review(score=0.8), first=3), rows)
    assert list(again) == [("uncertain", SHA)] and again[("uncertain", SHA)]["score"] == 0.8
    assert rows[("drift", SHA)]["score"] == 0.2


def test_ontology_versions_one_row_each():
    merge = ev.OntologyChange(op="merge", sources=["spot", "speck"], targets=["spot"])
    rows = fold(rm.ONTOLOGY_VERSIONS, page(ev.OntologyPublished(version=1, classes=["ok", "spot", "speck"]),
                                           ev.OntologyPublished(version=2, classes=["ok", "spot"], changes=[merge])))
    assert rows[(1,)]["changes"] == [] and rows[(2,)]["classes"] == ["ok", "spot"]
    assert rows[(2,)]["changes"] == [{"op": "merge", "sources": ["spot", "speck"], "targets": ["spot"]}]


# -- predictions and decisions ---------------------------------------------------------------------------------


def test_latest_prediction_per_engine_is_the_one_that_happened_last():
    rows: dict[Key, Row] = {}
    first = fold(rm.LATEST_PREDICTIONS, page((predicted("ok"), T0 + timedelta(hours=1)), (predicted("spot", "e2"), T0)),
                 rows)
    assert {k: r["predicted_class"] for k, r in first.items()} == {(SHA, "e1"): "ok", (SHA, "e2"): "spot"}
    # A replay of older history logged later is not the latest; a newer one is.
    assert fold(rm.LATEST_PREDICTIONS, page((predicted("crack"), T0), first=3), rows) == {}
    newer = fold(rm.LATEST_PREDICTIONS, page((predicted("crack"), T0 + timedelta(hours=2)), first=4), rows)
    assert (newer[(SHA, "e1")]["predicted_class"], newer[(SHA, "e1")]["position"]) == ("crack", 4)
    assert rows[(SHA, "e1")]["scores"] == {"crack": 0.9}


def test_latest_prediction_at_the_same_moment_goes_to_the_later_event():
    rows = fold(rm.LATEST_PREDICTIONS, page(predicted("ok"), predicted("spot")))
    assert rows[(SHA, "e1")]["predicted_class"] == "spot"


def test_a_later_disposition_of_a_part_overrides_the_earlier():
    rows = fold(rm.PART_DISPOSITIONS, page(dispositioned("reject"), (dispositioned("accept", "human"), T0 + timedelta(1))))
    assert rows[("P-1",)] == {
        "part_id": "P-1", "decision": "accept", "decided_by": "ana", "decider": "human", "rule": "max_defect_score",
        "rules_version": "r1", "engine_id": "e1", "decided_at": T0 + timedelta(1), "position": 2,
    }


# -- lineage ---------------------------------------------------------------------------------------------------


def test_the_first_publication_of_a_dataset_version_stands():
    rows: dict[Key, Row] = {}
    fold(rm.DATASET_VERSIONS, page(published()), rows)
    again = fold(rm.DATASET_VERSIONS, page((published(counts={"train": 1}), T0 + timedelta(1)), first=2), rows)
    assert again[("dv1",)]["counts"] == {"train": 8, "test": 2}
    assert (again[("dv1",)]["position"], again[("dv1",)]["published_at"]) == (1, T0)


def test_a_model_row_gathers_registration_export_evaluation_and_promotion():
    rows: dict[Key, Row] = {}
    fold(rm.MODELS, page(registered(metrics={"val_f1": 0.8})), rows)
    assert {k: rows[("m1",)][k] for k in ("onnx_sha256", "evaluation", "promoted_at", "metrics", "position")} == {
        "onnx_sha256": None, "evaluation": None, "promoted_at": None, "metrics": {"val_f1": 0.8}, "position": 1}
    fold(rm.MODELS, page(exported(), evaluated(), (promoted(), T0 + timedelta(1)), first=2), rows)
    row = rows[("m1",)]
    assert (row["onnx_sha256"], row["onnx_uri"], row["promoted_at"], row["position"]) == (
        HASH, "onnx/m1.onnx", T0 + timedelta(1), 1)
    assert row["evaluation"] == {"dataset_version_id": "dv1", "split": "test", "metrics": {"recall": 0.9},
                                 "threshold": 0.4, "cost_ratio": 5.0, "report_uri": "reports/m1",
                                 "threshold_split": "test", "min_precision": None}


def test_a_model_registered_again_keeps_its_export_and_evaluation():
    rows: dict[Key, Row] = {}
    fold(rm.MODELS, page(registered(), exported(), evaluated()), rows)
    row = fold(rm.MODELS, page(registered(hyperparameters={"lr": 0.1}), first=4), rows)[("m1",)]
    assert (row["hyperparameters"], row["onnx_uri"], row["evaluation"]["threshold"], row["position"]) == (
        {"lr": 0.1}, "onnx/m1.onnx", 0.4, 4)


def test_model_events_for_an_unregistered_model_change_nothing():
    assert fold(rm.MODELS, page(exported("m9"), evaluated("m9"), promoted("m9"))) == {}


def test_regression_replays_and_promotions_one_row_per_event():
    replays = fold(rm.REGRESSION_REPLAYS, page(replayed(False), replayed(True)))
    assert [(r["position"], r["passed"], r["summary"]) for r in replays.values()] == [
        (1, False, {"recall_delta": 0.01}), (2, True, {"recall_delta": 0.01})]
    promotions = fold(rm.MODEL_PROMOTIONS, page(promoted("m1"), promoted("m2", previous="m1")))
    assert [(r["model_id"], r["previous_model_id"], r["reason"]) for r in promotions.values()] == [
        ("m1", None, "passed the replay"), ("m2", "m1", "passed the replay")]


def test_the_first_record_of_an_engine_stands():
    rows: dict[Key, Row] = {}
    fold(rm.ENGINES, page(built(device="cpu")), rows)
    row = fold(rm.ENGINES, page((built(device="cuda:0"), T0 + timedelta(1)), first=2), rows)[("eng-1",)]
    assert (row["device"], row["built_at"], row["position"], row["threshold"]) == ("cpu", T0, 1, None)
    assert row["library_versions"] == {"onnxruntime": "1.20"}


def test_line_time_zones_keep_each_lines_latest_zone() -> None:
    later = T0 + timedelta(days=3)
    rows = fold(rm.LINE_TIME_ZONES, page(ev.LineTimeZoneSet(line="line-a", time_zone="UTC"),
                                         ev.LineTimeZoneSet(line="line-b", time_zone="America/Chicago"),
                                         (ev.LineTimeZoneSet(line="line-a", time_zone="Europe/Berlin"), later)))
    assert rows == {("line-a",): {"line": "line-a", "time_zone": "Europe/Berlin", "set_at": later, "position": 3},
                    ("line-b",): {"line": "line-b", "time_zone": "America/Chicago", "set_at": T0, "position": 2}}


def test_line_time_zone_history_keeps_every_zone_at_its_position() -> None:
    later = T0 + timedelta(days=3)
    rows = fold(rm.LINE_TIME_ZONE_HISTORY, page(ev.LineTimeZoneSet(line="line-a", time_zone="UTC"),
                                                ev.LineTimeZoneSet(line="line-b", time_zone="America/Chicago"),
                                                (ev.LineTimeZoneSet(line="line-a", time_zone="Europe/Berlin"), later)))
    assert rows == {("line-a", 1): {"line": "line-a", "position": 1, "time_zone": "UTC", "set_at": T0},
                    ("line-b", 2): {"line": "line-b", "position": 2, "time_zone": "America/Chicago", "set_at": T0},
                    ("line-a", 3): {"line": "line-a", "position": 3, "time_zone": "Europe/Berlin", "set_at": later}}


def test_users_count_failed_logins_in_a_row_until_a_success_or_a_new_password():
    ana = [ev.UserCreated(username="ana", full_name="Ana"), ev.UserRoleGranted(username="ana", role="curator"),
           ev.UserRoleGranted(username="ana", role="annotator"), ev.UserRoleRevoked(username="ana", role="curator")]
    failed = ev.UserLoginFailed(username="ana", reason="wrong_password")
    rows = fold(rm.USERS, page(*ana, failed, failed))
    assert rows[("ana",)]["roles"] == ["annotator"] and rows[("ana",)]["failed_logins"] == 2
    rows = fold(rm.USERS, page(*ana, failed, failed, ev.UserLoggedIn(username="ana"), failed))
    assert rows[("ana",)]["failed_logins"] == 1 and rows[("ana",)]["last_login_at"] is not None
    rows = fold(rm.USERS, page(*ana, failed, ev.UserPasswordSet(username="ana", credential_id=uuid.uuid4())))
    assert rows[("ana",)]["failed_logins"] == 0
    rows = fold(rm.USERS, page(ev.UserLoginFailed(username="nobody", reason="wrong_password")))
    assert rows == {}  # events of an account that does not exist make no row


def test_station_tokens_keep_the_scope_and_the_first_revocation() -> None:
    later, expires = T0 + timedelta(hours=1), T0 + timedelta(days=90)
    issued = ev.StationTokenIssued(token_id="a" * 16, line="line-a", station="st-1", cameras=["cam-1"],
                                   expires_at=expires, issued_by="ops")
    rows = fold(rm.STATION_TOKENS, page(
        issued, ev.StationTokenIssued(token_id="b" * 16, line="line-a", station="st-2", expires_at=expires,
                                      issued_by="ops"),
        (ev.StationTokenRevoked(token_id="a" * 16, reason="leaked", revoked_by="sec"), later),
        (ev.StationTokenRevoked(token_id="a" * 16, reason="again", revoked_by="other"), later + timedelta(hours=1))))
    assert rows[("a" * 16,)] == {
        "token_id": "a" * 16, "line": "line-a", "station": "st-1", "cameras": ["cam-1"], "expires_at": expires,
        "issued_by": "ops", "issued_at": T0, "revoked_at": later, "revoked_by": "sec", "revoke_reason": "leaked",
        "position": 3}
    assert rows[("b" * 16,)]["cameras"] is None and rows[("b" * 16,)]["revoked_at"] is None
