"""The catalog's read models: images and their sightings, parts, current labels and their history,
corrections, curation history, the review queue, ontology versions, latest predictions, part
dispositions, dataset versions, models, regression replays, promotions, engines, the lines' time zones and the
stations' tokens (without their hashes), each a set of fold functions over the events it cares about.

The current label of an image is the latest human verdict on it: a LabelRecorded, or a CorrectionRecorded
of a label or of a prediction (a reviewer saying "this is a crack" is a label, whatever it corrected).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from catalog.projections import set_based
from catalog.projections.framework import PageEvent, Projection, Row


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _by_image(event: PageEvent, payload: dict[str, Any]) -> tuple[str]:
    return (payload["sha256"],)


# -- images ---------------------------------------------------------------------------------------------------

IMAGE_COLUMNS = (
    "sha256", "part_id", "line", "station", "camera", "captured_at", "width", "height", "channels", "bit_depth",
    "byte_size", "blob_uri", "thumbnail_uri", "source_path", "metadata", "sightings", "excluded",
    "exclusion_reason", "ingested_position", "last_position", "label", "label_ontology_version",
)


def _image_ingested(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row:
    if row is not None:  # the same bytes seen again (another path or part): one image, one more sighting
        return row | {"sightings": row["sightings"] + 1, "last_position": e.position}
    return {
        "sha256": p["sha256"], "part_id": p["part_id"], "line": p["line"], "station": p["station"],
        "camera": p["camera"], "captured_at": _ts(p["captured_at"]), "width": p["width"], "height": p["height"],
        "channels": p["channels"], "bit_depth": p["bit_depth"], "byte_size": p["byte_size"],
        "blob_uri": p["blob_uri"], "thumbnail_uri": p.get("thumbnail_uri"), "source_path": p["source_path"],
        "metadata": p.get("metadata", {}), "sightings": 1, "excluded": False, "exclusion_reason": None,
        "ingested_position": e.position, "last_position": e.position, "label": None, "label_ontology_version": None,
    }


def _image_excluded(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row | None:
    if row is None:
        return None
    return row | {"excluded": True, "exclusion_reason": p["reason"], "last_position": e.position}


def _image_included(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row | None:
    if row is None:
        return None
    return row | {"excluded": False, "exclusion_reason": None, "last_position": e.position}


def _image_labelled(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row | None:
    if row is None:
        return None
    label = p["label"] if e.type == "LabelRecorded" else p["new_label"]
    return row | {"label": label, "label_ontology_version": p["ontology_version"], "last_position": e.position}


IMAGES = Projection(
    name="images",
    table="images",
    key=("sha256",),
    columns=IMAGE_COLUMNS,
    folds={"ImageIngested": _image_ingested, "ImageExcluded": _image_excluded, "ImageIncluded": _image_included,
           "LabelRecorded": _image_labelled, "CorrectionRecorded": _image_labelled},
    key_of=dict.fromkeys(("ImageIngested", "ImageExcluded", "ImageIncluded", "LabelRecorded", "CorrectionRecorded"),
                         _by_image),
    jsonb_columns=frozenset({"metadata"}),
    sql=set_based.IMAGES,
)

IMAGE_SIGHTINGS = Projection(
    name="image_sightings",
    table="image_sightings",
    key=("position",),
    columns=("position", "sha256", "source_path", "part_id", "line", "station", "camera", "captured_at"),
    folds={"ImageIngested": lambda row, e, p: {
        "position": e.position, "sha256": p["sha256"], "source_path": p["source_path"], "part_id": p["part_id"],
        "line": p["line"], "station": p["station"], "camera": p["camera"], "captured_at": _ts(p["captured_at"]),
    }},
    key_of={"ImageIngested": lambda e, p: (e.position,)},
    append_only=True,
    sql=set_based.IMAGE_SIGHTINGS,
)

CURATION_HISTORY = Projection(
    name="curation_history",
    table="curation_history",
    key=("position",),
    columns=("position", "sha256", "excluded", "reason"),
    folds={t: (lambda row, e, p: {"position": e.position, "sha256": p["sha256"],
                                  "excluded": e.type == "ImageExcluded", "reason": p["reason"]})
           for t in ("ImageExcluded", "ImageIncluded")},
    key_of=dict.fromkeys(("ImageExcluded", "ImageIncluded"), lambda e, p: (e.position,)),
    append_only=True,
)

# -- parts ----------------------------------------------------------------------------------------------------


def _part_sighted(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row:
    captured = _ts(p["captured_at"])
    if row is None:
        return {"part_id": p["part_id"], "line": p["line"], "first_captured_at": captured,
                "last_captured_at": captured, "image_count": 1, "last_position": e.position}
    return row | {
        "first_captured_at": min(row["first_captured_at"], captured),
        "last_captured_at": max(row["last_captured_at"], captured),
        "image_count": row["image_count"] + 1,
        "last_position": e.position,
    }


PARTS = Projection(
    name="parts",
    table="parts",
    key=("part_id",),
    columns=("part_id", "line", "first_captured_at", "last_captured_at", "image_count", "last_position"),
    folds={"ImageIngested": _part_sighted},
    key_of={"ImageIngested": lambda e, p: (p["part_id"],)},
    sql=set_based.PARTS,
)

# -- labels ---------------------------------------------------------------------------------------------------

CURRENT_LABEL_COLUMNS = (
    "sha256", "label", "label_id", "annotator", "ontology_version", "source", "regions", "mask_uri",
    "labeled_at", "position",
)


def _label_recorded(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row:
    return {
        "sha256": p["sha256"], "label": p["label"], "label_id": p["label_id"], "annotator": p["annotator"],
        "ontology_version": p["ontology_version"], "source": "label", "regions": p.get("regions", []),
        "mask_uri": p.get("mask_uri"), "labeled_at": e.occurred_at, "position": e.position,
    }


def _correction_recorded(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row:
    keep = row or {}
    return {
        "sha256": p["sha256"], "label": p["new_label"], "label_id": p.get("label_id") or keep.get("label_id"),
        "annotator": p["corrected_by"], "ontology_version": p["ontology_version"], "source": "correction",
        # a correction changes the class, not where the defect is: regions and mask stay
        "regions": keep.get("regions", []), "mask_uri": keep.get("mask_uri"),
        "labeled_at": e.occurred_at, "position": e.position,
    }


CURRENT_LABELS = Projection(
    name="current_labels",
    table="current_labels",
    key=("sha256",),
    columns=CURRENT_LABEL_COLUMNS,
    folds={"LabelRecorded": _label_recorded, "CorrectionRecorded": _correction_recorded},
    key_of={"LabelRecorded": _by_image, "CorrectionRecorded": _by_image},
    jsonb_columns=frozenset({"regions"}),
    sql=set_based.CURRENT_LABELS,
)


def _history_row(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row:
    is_label = e.type == "LabelRecorded"
    return {
        "position": e.position, "sha256": p["sha256"], "label": p["label"] if is_label else p["new_label"],
        "label_id": p.get("label_id"), "annotator": p["annotator"] if is_label else p["corrected_by"],
        "ontology_version": p["ontology_version"], "source": "label" if is_label else "correction",
        # where the defect is: drawn by a label, which a correction keeps (none on a correction's row)
        "regions": p.get("regions", []) if is_label else None, "mask_uri": p.get("mask_uri") if is_label else None,
        "labeled_at": e.occurred_at,
    }


LABEL_HISTORY = Projection(
    name="label_history",
    table="label_history",
    key=("position",),
    columns=("position", "sha256", "label", "label_id", "annotator", "ontology_version", "source", "regions",
             "mask_uri", "labeled_at"),
    folds={"LabelRecorded": _history_row, "CorrectionRecorded": _history_row},
    key_of={"LabelRecorded": lambda e, p: (e.position,), "CorrectionRecorded": lambda e, p: (e.position,)},
    jsonb_columns=frozenset({"regions"}),
    append_only=True,
    sql=set_based.LABEL_HISTORY,
)

CORRECTIONS = Projection(
    name="corrections",
    table="corrections",
    key=("correction_id",),
    columns=("correction_id", "sha256", "target", "label_id", "prediction_event_id", "old_label", "new_label",
             "corrected_by", "reason", "corrected_at", "position"),
    folds={"CorrectionRecorded": lambda row, e, p: {
        "correction_id": p["correction_id"], "sha256": p["sha256"], "target": p["target"],
        "label_id": p.get("label_id"), "prediction_event_id": p.get("prediction_event_id"),
        "old_label": p["old_label"], "new_label": p["new_label"], "corrected_by": p["corrected_by"],
        "reason": p.get("reason", ""), "corrected_at": e.occurred_at, "position": e.position,
    }},
    key_of={"CorrectionRecorded": lambda e, p: (p["correction_id"],)},
)

# -- review queue and ontology --------------------------------------------------------------------------------

REVIEW_QUEUE = Projection(
    name="review_queue",
    table="review_queue",
    key=("queue", "sha256"),
    columns=("queue", "sha256", "strategy", "score", "reason", "requested_at", "position"),
    folds={"ReviewRequested": lambda row, e, p: {
        "queue": p["queue"], "sha256": p["sha256"], "strategy": p["strategy"], "score": p["score"],
        "reason": p.get("reason", ""), "requested_at": e.occurred_at, "position": e.position,
    }},
    key_of={"ReviewRequested": lambda e, p: (p["queue"], p["sha256"])},
)

ONTOLOGY_VERSIONS = Projection(
    name="ontology_versions",
    table="ontology_versions",
    key=("version",),
    columns=("version", "classes", "changes", "published_at", "position"),
    folds={"OntologyPublished": lambda row, e, p: {
        "version": p["version"], "classes": p["classes"], "changes": p.get("changes", []),
        "published_at": e.occurred_at, "position": e.position,
    }},
    key_of={"OntologyPublished": lambda e, p: (p["version"],)},
    jsonb_columns=frozenset({"classes", "changes"}),
)

# -- predictions and decisions --------------------------------------------------------------------------------


def _prediction(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row | None:
    # Replays of history may arrive after newer live predictions: keep the one that happened last.
    if row is not None and row["predicted_at"] > e.occurred_at:
        return None
    return {
        "sha256": p["sha256"], "engine_id": p["engine_id"], "predicted_class": p["predicted_class"],
        "scores": p["scores"], "part_id": p.get("part_id"), "heatmap_uri": p.get("heatmap_uri"),
        "predicted_at": e.occurred_at, "position": e.position,
    }


LATEST_PREDICTIONS = Projection(
    name="latest_predictions",
    table="latest_predictions",
    key=("sha256", "engine_id"),
    columns=("sha256", "engine_id", "predicted_class", "scores", "part_id", "heatmap_uri", "predicted_at",
             "position"),
    folds={"PredictionRecorded": _prediction},
    key_of={"PredictionRecorded": lambda e, p: (p["sha256"], p["engine_id"])},
    jsonb_columns=frozenset({"scores"}),
    sql=set_based.LATEST_PREDICTIONS,
)

PART_DISPOSITIONS = Projection(
    name="part_dispositions",
    table="part_dispositions",
    key=("part_id",),
    columns=("part_id", "decision", "decided_by", "decider", "rule", "rules_version", "engine_id", "decided_at",
             "position"),
    folds={"PartDispositioned": lambda row, e, p: {
        "part_id": p["part_id"], "decision": p["decision"], "decided_by": p["decided_by"],
        "decider": p["decider"], "rule": p["rule"], "rules_version": p.get("rules_version"),
        "engine_id": p.get("engine_id"), "decided_at": e.occurred_at, "position": e.position,
    }},
    key_of={"PartDispositioned": lambda e, p: (p["part_id"],)},
    sql=set_based.PART_DISPOSITIONS,
)

# -- lineage --------------------------------------------------------------------------------------------------

DATASET_VERSIONS = Projection(
    name="dataset_versions",
    table="dataset_versions",
    key=("version_id",),
    columns=("version_id", "dataset", "spec", "as_of_position", "counts", "manifest_hash", "manifest_uri",
             "published_at", "position"),
    folds={"DatasetVersionPublished": lambda row, e, p: row or {
        "version_id": p["version_id"], "dataset": p["dataset"], "spec": p["spec"],
        "as_of_position": p["as_of_position"], "counts": p["counts"], "manifest_hash": p["manifest_hash"],
        "manifest_uri": p["manifest_uri"], "published_at": e.occurred_at, "position": e.position,
    }},
    key_of={"DatasetVersionPublished": lambda e, p: (p["version_id"],)},
    jsonb_columns=frozenset({"spec", "counts"}),
)



def _model_registered(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row:
    return (row or {"onnx_sha256": None, "onnx_uri": None, "evaluation": None, "promoted_at": None}) | {
        "model_id": p["model_id"], "model": p["model"], "dataset_version_id": p["dataset_version_id"],
        "manifest_hash": p["manifest_hash"], "hyperparameters": p.get("hyperparameters", {}),
        "metrics": p.get("metrics", {}), "artifact_sha256": p["artifact_sha256"], "artifact_uri": p["artifact_uri"],
        "registered_at": e.occurred_at, "position": e.position,
    }


def _model_exported(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row | None:
    return None if row is None else row | {"onnx_sha256": p["onnx_sha256"], "onnx_uri": p["onnx_uri"]}


def _model_evaluated(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row | None:
    evaluation = {k: p[k] for k in ("dataset_version_id", "split", "metrics", "threshold", "cost_ratio", "report_uri")}
    evaluation |= {"threshold_split": p.get("threshold_split", "test"), "min_precision": p.get("min_precision")}
    return None if row is None else row | {"evaluation": evaluation}


def _model_promoted(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row | None:
    return None if row is None else row | {"promoted_at": e.occurred_at}


MODELS = Projection(
    name="models",
    table="models",
    key=("model_id",),
    columns=("model_id", "model", "dataset_version_id", "manifest_hash", "hyperparameters", "metrics",
             "artifact_sha256", "artifact_uri", "onnx_sha256", "onnx_uri", "evaluation", "registered_at",
             "promoted_at", "position"),
    folds={"ModelRegistered": _model_registered, "ModelExported": _model_exported,
           "ModelEvaluated": _model_evaluated, "ModelPromoted": _model_promoted},
    key_of=dict.fromkeys(("ModelRegistered", "ModelExported", "ModelEvaluated", "ModelPromoted"),
                         lambda e, p: (p["model_id"],)),
    jsonb_columns=frozenset({"hyperparameters", "metrics", "evaluation"}),
)

REGRESSION_REPLAYS = Projection(
    name="regression_replays",
    table="regression_replays",
    key=("position",),
    columns=("position", "model", "candidate_model_id", "champion_model_id", "passed", "images", "summary",
             "report_uri", "replayed_at"),
    folds={"RegressionReplayed": lambda row, e, p: {
        "position": e.position, "model": p["model"], "candidate_model_id": p["candidate_model_id"],
        "champion_model_id": p.get("champion_model_id"), "passed": p["passed"], "images": p["images"],
        "summary": p["summary"], "report_uri": p["report_uri"], "replayed_at": e.occurred_at,
    }},
    key_of={"RegressionReplayed": lambda e, p: (e.position,)},
    append_only=True,
    jsonb_columns=frozenset({"summary"}),
)

MODEL_PROMOTIONS = Projection(
    name="model_promotions",
    table="model_promotions",
    key=("position",),
    columns=("position", "model", "model_id", "previous_model_id", "reason", "promoted_at"),
    folds={"ModelPromoted": lambda row, e, p: {
        "position": e.position, "model": p["model"], "model_id": p["model_id"],
        "previous_model_id": p.get("previous_model_id"), "reason": p["reason"], "promoted_at": e.occurred_at,
    }},
    key_of={"ModelPromoted": lambda e, p: (e.position,)},
    append_only=True,
)

ENGINES = Projection(
    name="engines",
    table="engines",
    key=("engine_id",),
    columns=("engine_id", "model", "model_id", "onnx_sha256", "dataset_version_id", "manifest_hash", "backend",
             "precision", "device", "library_versions", "artifact_uri", "threshold", "built_at", "position"),
    # An engine id is the hash of its artifact: the first record of it stands.
    folds={"EngineBuilt": lambda row, e, p: row or {
        "engine_id": p["engine_id"], "model": p["model"], "model_id": p["model_id"], "onnx_sha256": p["onnx_sha256"],
        "dataset_version_id": p["dataset_version_id"], "manifest_hash": p["manifest_hash"], "backend": p["backend"],
        "precision": p["precision"], "device": p["device"], "library_versions": p["library_versions"],
        "artifact_uri": p["artifact_uri"], "threshold": p.get("threshold"), "built_at": e.occurred_at,
        "position": e.position,
    }},
    key_of={"EngineBuilt": lambda e, p: (p["engine_id"],)},
    jsonb_columns=frozenset({"library_versions"}),
)

# -- the site -------------------------------------------------------------------------------------------------

LINE_TIME_ZONES = Projection(
    name="line_time_zones",
    table="line_time_zones",
    key=("line",),
    columns=("line", "time_zone", "set_at", "position"),
    folds={"LineTimeZoneSet": lambda row, e, p: {
        "line": p["line"], "time_zone": p["time_zone"], "set_at": e.occurred_at, "position": e.position,
    }},
    key_of={"LineTimeZoneSet": lambda e, p: (p["line"],)},
)

# Every zone each line was set to, at its position: a dataset version reads the zones as they were at its
# position (catalog.factory_day.zones_as_of), which the log's table alone cannot tell once the events that set
# them are archived; a rebuild folds them from the archive too.
LINE_TIME_ZONE_HISTORY = Projection(
    name="line_time_zone_history",
    table="line_time_zone_history",
    key=("line", "position"),
    columns=("line", "position", "time_zone", "set_at"),
    folds={"LineTimeZoneSet": lambda row, e, p: {
        "line": p["line"], "position": e.position, "time_zone": p["time_zone"], "set_at": e.occurred_at,
    }},
    key_of={"LineTimeZoneSet": lambda e, p: (p["line"], e.position)},
    append_only=True,
)

# -- people ---------------------------------------------------------------------------------------------------


def _user_created(row, e, p):
    return row or {"username": p["username"], "full_name": p["full_name"], "roles": [], "disabled": False,
                   "credential_id": None, "password_set_at": None, "created_at": e.occurred_at,
                   "last_login_at": None, "failed_logins": 0, "last_failure_at": None, "position": e.position}


def _user_change(change):
    """A fold for an event of an existing account (an event for an unknown account changes nothing)."""
    def fold(row, e, p):
        return None if row is None else {**row, **change(row, e, p), "position": e.position}
    return fold


_USER_FOLDS = {
    "UserCreated": _user_created,
    "UserRoleGranted": _user_change(lambda row, e, p: {"roles": sorted(set(row["roles"]) | {p["role"]})}),
    "UserRoleRevoked": _user_change(lambda row, e, p: {"roles": sorted(set(row["roles"]) - {p["role"]})}),
    "UserDisabled": _user_change(lambda row, e, p: {"disabled": True}),
    "UserEnabled": _user_change(lambda row, e, p: {"disabled": False, "failed_logins": 0}),
    # A new password ends a lock-out: whoever set it vouched for the person.
    "UserPasswordSet": _user_change(lambda row, e, p: {
        "credential_id": uuid.UUID(p["credential_id"]), "password_set_at": e.occurred_at, "failed_logins": 0}),
    "UserLoggedIn": _user_change(lambda row, e, p: {"last_login_at": e.occurred_at, "failed_logins": 0}),
    "UserLoginFailed": _user_change(lambda row, e, p: {
        "failed_logins": row["failed_logins"] + 1, "last_failure_at": e.occurred_at}),
}

USERS = Projection(
    name="users",
    table="users",
    key=("username",),
    columns=("username", "full_name", "roles", "disabled", "credential_id", "password_set_at", "created_at",
             "last_login_at", "failed_logins", "last_failure_at", "position"),
    folds=_USER_FOLDS,
    key_of=dict.fromkeys(_USER_FOLDS, lambda e, p: (p["username"],)),
    jsonb_columns=frozenset({"roles"}),
)


# -- stations -------------------------------------------------------------------------------------------------


def _token_revoked(row: Row | None, e: PageEvent, p: dict[str, Any]) -> Row | None:
    if row is None or row["revoked_at"] is not None:  # the first revocation stands
        return None
    return row | {"revoked_at": e.occurred_at, "revoked_by": p["revoked_by"], "revoke_reason": p["reason"],
                  "position": e.position}


STATION_TOKENS = Projection(
    name="station_tokens",
    table="station_tokens",
    key=("token_id",),
    columns=("token_id", "line", "station", "cameras", "expires_at", "issued_by", "issued_at", "revoked_at",
             "revoked_by", "revoke_reason", "position"),
    folds={"StationTokenIssued": lambda row, e, p: row or {
        "token_id": p["token_id"], "line": p["line"], "station": p["station"], "cameras": p.get("cameras"),
        "expires_at": _ts(p["expires_at"]), "issued_by": p["issued_by"], "issued_at": e.occurred_at,
        "revoked_at": None, "revoked_by": None, "revoke_reason": None, "position": e.position,
    }, "StationTokenRevoked": _token_revoked},
    key_of=dict.fromkeys(("StationTokenIssued", "StationTokenRevoked"), lambda e, p: (p["token_id"],)),
    jsonb_columns=frozenset({"cameras"}),
)

ALL_PROJECTIONS: tuple[Projection, ...] = (
    IMAGES, IMAGE_SIGHTINGS, PARTS, CURRENT_LABELS, LABEL_HISTORY, CORRECTIONS, CURATION_HISTORY, REVIEW_QUEUE,
    ONTOLOGY_VERSIONS, LATEST_PREDICTIONS, PART_DISPOSITIONS, DATASET_VERSIONS, MODELS, REGRESSION_REPLAYS,
    MODEL_PROMOTIONS, ENGINES, LINE_TIME_ZONES, LINE_TIME_ZONE_HISTORY, USERS, STATION_TOKENS,
)
