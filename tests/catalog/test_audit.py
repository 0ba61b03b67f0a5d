"""The audit chain of a part on a catalog with a real dataset version, model and engine: the decision and its
rule, the images' predictions and labels, the events in time order, whether the part was trained on, and who
labelled the training images of the predicted class, all checked against the manifest and the label history
read here; and a chain that breaks says where."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import timedelta

import pyarrow.parquet as pq
import pytest

from catalog.audit import part_audit
from catalog.errors import CatalogError
from catalog.events import CorrectionRecorded, PartDispositioned, PredictionRecorded
from catalog.store import NewEvent


def version_of(cat, engine_id: str) -> dict:
    with cat.db.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT d.version_id, d.manifest_hash, d.manifest_uri, d.as_of_position FROM projections.engines e"
            " JOIN projections.dataset_versions d ON d.version_id = e.dataset_version_id"
            " WHERE e.engine_id = %(e)s", {"e": engine_id}).one()
    return dict(row._mapping) | {"manifest": pq.read_table(cat.lake.root / row.manifest_uri).to_pylist()}


def part_in(version: dict, split: str) -> str:
    """A part all of whose images are in ``split`` (parts never straddle splits)."""
    return sorted(r["part_id"] for r in version["manifest"] if r["split"] == split)[0]


def judge(cat, engine_id: str, part_id: str, predicted: str, *, decision: str = "reject") -> list[str]:
    """Record the engine's prediction for each image of the part and the part's decision, as the server does;
    the part's image shas."""
    with cat.db.connect() as conn:
        images = conn.exec_driver_sql("SELECT sha256, captured_at FROM projections.images WHERE part_id = %(p)s"
                                      " ORDER BY captured_at", {"p": part_id}).fetchall()
    events = [NewEvent(PredictionRecorded(
        sha256=sha, engine_id=engine_id, scores={"ok": 0.1, predicted: 0.9} if predicted != "ok" else {"ok": 0.9},
        predicted_class=predicted, part_id=part_id, defect_score=0.9 if predicted != "ok" else 0.1,
        regions=[{"shape": "box", "x0": 10, "y0": 10, "x1": 30, "y1": 40}]),
        occurred_at=at + timedelta(milliseconds=50), event_id=uuid.uuid4()) for sha, at in images]
    events.append(NewEvent(PartDispositioned(
        part_id=part_id, decision=decision, decided_by=engine_id, decider="engine", rule=f"any-{predicted}",
        rules_version="audit-test@1", engine_id=engine_id, image_sha256s=[s for s, _ in images],
        reason=f"{predicted} 0.90"), occurred_at=images[-1][1] + timedelta(seconds=1), event_id=uuid.uuid4()))
    cat.append(events)
    return [sha for sha, _ in images]


def labels_in_force(cat, shas: list[str], position: int) -> dict[str, tuple[str, str]]:
    """sha → (annotator, source) of the label each image had at ``position``, from the history read here."""
    with cat.db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT sha256, annotator, source, position FROM projections.label_history"
                                    " WHERE sha256 = ANY(%(s)s) ORDER BY position", {"s": shas}).fetchall()
    return {sha: (annotator, source) for sha, annotator, source, at in rows if at <= position}


def test_a_rejected_part_reaches_the_annotators_behind_its_predicted_class(built_engine) -> None:
    cat, engine_id = built_engine
    version = version_of(cat, engine_id)
    defects = Counter(r["class"] for r in version["manifest"] if r["split"] == "train" and r["class"] != "ok")
    predicted = defects.most_common(1)[0][0]
    part_id = part_in(version, "train")
    shas = judge(cat, engine_id, part_id, predicted)

    audit = part_audit(cat, f"  {part_id} ")

    assert audit.part_id == part_id
    assert audit.decision.decision == "reject" and audit.decision.rule == f"any-{predicted}"
    assert audit.decision.rules_version == "audit-test@1" and audit.decision.reason == f"{predicted} 0.90"
    assert [i.sha256 for i in audit.images] == shas
    for image in audit.images:
        assert [p.predicted_class for p in image.predictions] == [predicted]
        assert image.predictions[0].regions[0]["shape"] == "box" and image.label is not None
    moments = [(e.occurred_at, e.position) for e in audit.timeline]
    assert moments == sorted(moments) and {e.type for e in audit.timeline} >= {
        "ImageIngested", "LabelRecorded", "PredictionRecorded", "PartDispositioned"}

    [chain] = audit.chains
    assert chain.problem is None and chain.manifest_verified
    assert chain.engine["engine_id"] == engine_id
    assert chain.model["dataset_version_id"] == version["version_id"]
    assert chain.dataset_version["manifest_hash"] == version["manifest_hash"]
    assert chain.dataset_version["as_of_position"] == version["as_of_position"]
    assert {m.sha256: m.split for m in chain.membership} == dict.fromkeys(shas, "train")
    assert chain.in_training and chain.training_verdict().startswith(f"yes: {len(shas)} of {len(shas)}")

    [evidence] = chain.evidence
    trained = [r["sha256"] for r in version["manifest"] if r["split"] == "train" and r["class"] == predicted]
    in_force = labels_in_force(cat, trained, version["as_of_position"])
    assert evidence.predicted_class == predicted and evidence.training_images == len(trained)
    assert {a["annotator"]: a["images"] for a in evidence.annotators} == Counter(a for a, _ in in_force.values())
    assert evidence.corrections == sum(1 for _, source in in_force.values() if source == "correction")
    assert 0 < len(evidence.examples) <= 5 and {e["sha256"] for e in evidence.examples} <= set(trained)


def test_a_part_the_model_never_trained_on_says_so(built_engine) -> None:
    cat, engine_id = built_engine
    version = version_of(cat, engine_id)
    part_id = part_in(version, "test")
    judge(cat, engine_id, part_id, "ok", decision="accept")

    [chain] = part_audit(cat, part_id).chains
    assert not chain.in_training
    assert chain.training_verdict().startswith("no: none of the part's") and "(others in test)" in chain.training_verdict()
    assert chain.evidence[0].predicted_class == "ok"


def test_a_label_corrected_after_the_version_is_counted_as_relabelled_not_as_its_new_annotator(built_engine) -> None:
    cat, engine_id = built_engine
    version = version_of(cat, engine_id)
    part_id = part_in(version, "train")
    judge(cat, engine_id, part_id, "ok", decision="accept")
    before = part_audit(cat, part_id).chains[0].evidence[0]
    victim = next(r for r in version["manifest"] if r["split"] == "train" and r["class"] == "ok")
    cat.append([NewEvent(CorrectionRecorded(
        sha256=victim["sha256"], correction_id="audit-test-fix", target="label", old_label="ok", new_label="spot",
        corrected_by="zoe", ontology_version=1), occurred_at=victim["captured_at"] + timedelta(days=30),
        event_id=uuid.uuid4())])

    after = part_audit(cat, part_id).chains[0].evidence[0]
    assert after.relabelled_since == before.relabelled_since + 1
    assert after.annotators == before.annotators  # the version learned from the label before the correction


def test_a_broken_chain_says_where_it_breaks(built_engine) -> None:
    cat, engine_id = built_engine
    version = version_of(cat, engine_id)
    part_id = part_in(version, "validation")
    judge(cat, "engine-nobody-built", part_id, "ok", decision="accept")
    [chain] = part_audit(cat, part_id).chains
    assert chain.engine is None and "no EngineBuilt records engine engine-nobody-built" in chain.problem
    assert chain.training_verdict().startswith("unknown")

    judge(cat, engine_id, part_id, "ok", decision="accept")
    (cat.lake.root / version["manifest_uri"]).write_bytes(b"not the manifest that was published")
    broken = next(c for c in part_audit(cat, part_id).chains if c.engine_id == engine_id)
    assert broken.model is not None and broken.dataset_version is not None and not broken.manifest_verified
    assert "does not match the recorded manifest hash" in broken.problem


def test_the_audit_is_json_ready_and_an_unknown_part_is_named(built_engine) -> None:
    cat, engine_id = built_engine
    part_id = part_in(version_of(cat, engine_id), "train")
    judge(cat, engine_id, part_id, "ok", decision="accept")
    data = json.loads(json.dumps(part_audit(cat, part_id).to_dict()))
    assert data["decision"]["decided_at"].endswith("+00:00")
    assert data["chains"][0]["in_training"] is True
    with pytest.raises(CatalogError, match="no part 'nope'"):
        part_audit(cat, "nope")
