"""What the trace needs of a dataset version is kept when it is published: the kept facts answer as the
manifest and the label history computed now do (membership, who labelled each class, relabelled since), a
version published without them traces the same from its manifest, publishing again keeps nothing twice, and
nobody may change what is kept."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from catalog import audit
from catalog.audit import forget_versions, part_audit
from catalog.datasets import DatasetSpec, load_manifest, publish, publish_dataset_version
from catalog.datasets.facts import ManifestFacts, StoredFacts, store_facts, version_facts
from catalog.events import CorrectionRecorded, DatasetVersionPublished, EngineBuilt, ModelRegistered
from catalog.store import NewEvent
from tests.catalog.test_audit import judge, part_in, version_of


def facts_both_ways(conn, cat, version: dict) -> tuple[StoredFacts, ManifestFacts]:
    stored = version_facts(conn, version["manifest_hash"], version["as_of_position"], lambda: pytest.fail("read"))
    manifest = load_manifest(cat.lake, version["manifest_uri"], expected_hash=version["manifest_hash"])
    assert isinstance(stored, StoredFacts)
    return stored, ManifestFacts(conn, manifest, version["as_of_position"])


def test_the_facts_kept_at_publish_answer_as_the_manifest_and_the_history_do(built_engine) -> None:
    cat, engine_id = built_engine
    version = version_of(cat, engine_id)
    rows = version["manifest"]
    victim = next(r for r in rows if r["split"] == "train" and r["class"] == "ok")
    cat.append([NewEvent(CorrectionRecorded(
        sha256=victim["sha256"], correction_id="facts-test-fix", target="label", old_label="ok", new_label="spot",
        corrected_by="zoe", ontology_version=1), occurred_at=victim["captured_at"] + timedelta(days=30),
        event_id=uuid.uuid4())])
    with cat.read() as conn:
        stored, computed = facts_both_ways(conn, cat, version)
        shas = [r["sha256"] for r in rows[::7]] + ["0" * 64]
        assert stored.membership(shas) == computed.membership(shas) == {
            r["sha256"]: (r["split"], r["class"]) for r in rows[::7]}
        for cls in sorted({r["class"] for r in rows}) + ["no-such-class"]:
            assert stored.class_labels(cls) == computed.class_labels(cls), cls
            assert stored.relabelled_since(cls) == computed.relabelled_since(cls), cls
        assert stored.relabelled_since("ok") == 1


def test_a_version_published_without_kept_facts_traces_the_same_from_its_manifest(built_engine) -> None:
    cat, engine_id = built_engine
    version = version_of(cat, engine_id)
    part_id = part_in(version, "train")
    judge(cat, engine_id, part_id, "ok", decision="accept")
    # The same rows written with other Parquet settings: another file, another hash, the same manifest; its
    # event appended by other means than publishing, so no facts are kept for it.
    copy = f"{version['version_id']}-copy"
    uri = version["manifest_uri"].replace(version["version_id"], copy)
    (cat.lake.root / uri).parent.mkdir(parents=True)
    pq.write_table(load_manifest(cat.lake, version["manifest_uri"]), cat.lake.root / uri, compression="none")
    other_hash = hashlib.sha256((cat.lake.root / uri).read_bytes()).hexdigest()
    with cat.db.connect() as conn:
        model = conn.exec_driver_sql("SELECT model FROM projections.engines WHERE engine_id = %(e)s",
                                     {"e": engine_id}).scalar_one()
    at, other = datetime.now(UTC), "engine-of-the-copy"
    cat.append([
        NewEvent(DatasetVersionPublished(dataset="copy", version_id=copy, spec={}, counts={},
                                         as_of_position=version["as_of_position"], manifest_hash=other_hash,
                                         manifest_uri=uri), at),
        NewEvent(ModelRegistered(model=model, model_id="model-of-the-copy", dataset_version_id=copy,
                                 manifest_hash=other_hash, artifact_sha256="0" * 64, artifact_uri="m.pt"), at),
        NewEvent(EngineBuilt(engine_id=other, model=model, model_id="model-of-the-copy", onnx_sha256="0" * 64,
                             dataset_version_id=copy, manifest_hash=other_hash, backend="onnxruntime",
                             precision="fp32", device="cpu", library_versions={}, artifact_uri="e.bin"), at)])
    judge(cat, other, part_id, "ok", decision="accept")

    chains = {c.engine_id: c for c in part_audit(cat, part_id).chains}
    kept, computed = chains[engine_id], chains[other]
    assert computed.manifest_verified and computed.problem is None
    assert computed.membership == kept.membership and computed.evidence == kept.evidence


def test_publishing_again_keeps_nothing_twice_and_nobody_changes_what_is_kept(built_engine) -> None:
    cat, engine_id = built_engine
    version = version_of(cat, engine_id)
    spec = DatasetSpec.from_yaml("assets/dataset_specs/inspection_all.yaml")
    again = publish_dataset_version(cat, spec, position=version["as_of_position"])
    assert again.already_published and again.manifest_hash == version["manifest_hash"]
    manifest = load_manifest(cat.lake, version["manifest_uri"])
    assert not store_facts(cat, version["manifest_hash"], manifest, version["as_of_position"])
    with cat.db.connect() as conn:
        members = conn.exec_driver_sql("SELECT count(*) FROM catalog.manifest_members").scalar()
        assert members == manifest.num_rows
        trained = conn.exec_driver_sql("SELECT sum(training_images) FROM catalog.manifest_class_labels").scalar()
        assert trained == pc.sum(pc.equal(manifest["split"], "train")).as_py()
    with pytest.raises(Exception, match="permission denied"), cat.db.begin() as conn:
        conn.exec_driver_sql("UPDATE catalog.manifest_members SET split = 'train'")


def test_a_new_process_trusts_the_manifest_file_the_publisher_recorded_until_the_file_changes(
        built_engine, monkeypatch) -> None:
    cat, engine_id = built_engine
    version = version_of(cat, engine_id)
    part_id = part_in(version, "train")
    judge(cat, engine_id, part_id, "ok", decision="accept")
    hashed: list[str] = []

    def manifest_bytes(lake, uri, **kwargs):
        hashed.append(uri)
        return publish.manifest_bytes(lake, uri, **kwargs)

    monkeypatch.setattr(audit, "manifest_bytes", manifest_bytes)
    uri, manifest_hash = version["manifest_uri"], version["manifest_hash"]
    forget_versions()  # as a new process starts: nothing remembered
    # The fixture's lake is a copy of the one published to: not the file the publisher recorded.
    assert part_audit(cat, part_id).chains[0].manifest_verified and hashed == [uri]

    publish.record_manifest_file(cat, manifest_hash, uri)  # as the publisher records the file it writes
    forget_versions()
    assert part_audit(cat, part_id).chains[0].manifest_verified and hashed == [uri]

    path = cat.lake.root / uri
    path.write_bytes(path.read_bytes())  # the same bytes, written again: not the file recorded
    forget_versions()
    assert part_audit(cat, part_id).chains[0].manifest_verified and hashed == [uri, uri]

    path.write_bytes(path.read_bytes()[:-1] + b"\0")  # one byte changed
    forget_versions()
    [chain] = part_audit(cat, part_id).chains
    assert not chain.manifest_verified and "does not match the recorded manifest hash" in chain.problem
