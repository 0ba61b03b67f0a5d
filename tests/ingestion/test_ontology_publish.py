"""Publishing ontology versions against a real catalog: the chain v1 → v2 (merge, create) → v3 (split) with old
labels read through it and split images queued for review; bad files refused; two publishers at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from catalog import ConcurrencyError, event_id_for
from catalog.ontology import Ontology, OntologyError
from ingestion.labels import record_correction, record_label
from ingestion.ontology_publish import PublishReport, publish_ontology
from tests.builders import IMAGE_PATHS, event_count, ingest_images, query

V1 = "version: 1\nclasses: [ok, scratch, spot, crack]\n"
V2 = """\
version: 2
classes: [ok, surface, crack, dent]
changes:
  - {op: merge, sources: [scratch, spot], targets: [surface]}
  - {op: create, targets: [dent]}
"""
V3 = """\
version: 3
classes: [ok, surface, dent, hairline, fracture]
changes:
  - {op: split, sources: [crack], targets: [hairline, fracture]}
"""


def yaml_file(tmp_path: Path, text: str, name: str = "ontology.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def published_versions(cat) -> list[tuple[int, list[str]]]:
    return query(cat, "SELECT version, classes FROM projections.ontology_versions ORDER BY version")


def test_old_labels_read_through_the_chain_and_split_images_are_queued(cat, tmp_path):
    first = publish_ontology(cat, yaml_file(tmp_path, V1), actor="qa")
    assert (first.version, first.already_published, first.queued_for_review) == (1, False, 0)
    paths = [*IMAGE_PATHS, "line1/2026-03-02/st1/p4_cam1.png"]
    shas = [ingest_images(cat, paths)[p] for p in paths]
    for sha, label in zip(shas, ["scratch", "spot", "crack", "ok"], strict=True):
        record_label(cat, sha256=sha, label=label, annotator="ana")
    assert publish_ontology(cat, yaml_file(tmp_path, V2, "v2.yaml")).version == 2
    record_label(cat, sha256=shas[3], label="crack", annotator="ben")  # recorded under version 2
    third = publish_ontology(cat, yaml_file(tmp_path, V3, "v3.yaml"))
    assert (third.version, third.classes, third.queued_for_review) == (
        3, ("ok", "surface", "dent", "hairline", "fracture"), 2)

    ontology = Ontology.load(cat)
    held = {sha: (label, version) for sha, label, version in
            query(cat, "SELECT sha256, label, ontology_version FROM projections.current_labels")}
    assert [held[sha] for sha in shas] == [("scratch", 1), ("spot", 1), ("crack", 1), ("crack", 2)]
    assert [ontology.resolve(*held[sha]) for sha in shas] == ["surface", "surface", None, None]
    reason = "class crack was split into hairline, fracture: choose one"
    assert query(cat, "SELECT queue, sha256, strategy, score, reason FROM projections.review_queue ORDER BY 2") == sorted(
        ("ontology-split", sha, "ontology_split", 1.0, reason) for sha in shas[2:])
    assert query(cat, "SELECT event_id, metadata FROM catalog.events WHERE type = 'OntologyPublished' "
                      "ORDER BY position")[0] == (event_id_for("ontology", 1),
                                                 {"actor": "qa", "source": f"ontology publish {tmp_path}/ontology.yaml"})

    before = event_count(cat)
    for text in (V3, V1):
        again = publish_ontology(cat, yaml_file(tmp_path, text, "again.yaml"))
        assert (again.already_published, again.queued_for_review) == (True, 0)
    assert event_count(cat) == before

    record_correction(cat, sha256=shas[2], new_label="hairline", corrected_by="ben")  # a reviewer chooses
    assert query(cat, "SELECT label, ontology_version FROM projections.current_labels "
                      f"WHERE sha256 = '{shas[2]}'") == [("hairline", 3)]
    assert query(cat, f"SELECT old_label, new_label FROM projections.corrections WHERE sha256 = '{shas[2]}'") == [
        ("crack", "hairline")]


@pytest.mark.parametrize("text, message", [
    ("[ok, crack]\n", "must be a mapping like `{version: 1, classes: [ok, crack]}`, not list"),
    ("version: 2\n", "lists no classes: add e.g. `classes: [ok, scratch, crack]`"),
    ("classes: [ok\n", "is not valid YAML"),
    ("colour: blue\nclasses: [ok]\n", "unknown keys colour; expected version, classes, changes"),
    ("classes: [ok, Crack, no]\n", "classes: 'Crack', False not class names: use lower-case letters"),
    (V2.replace("op: create", "op: move"), "change 2 needs `op:` one of create, rename, merge, split"),
    ("version: 2\nclasses: [ok, scratch, spot]\n", "every class that appears, disappears or is renamed needs a "
                                                   "create, rename, merge or split"),
    (V2.replace("version: 2", "version: 3"), "says version 3, but the next version of the catalog's ontology is 2"),
    ("version: 1\nclasses: [ok, crack]\n", "version 1 is already published with other classes or changes; "
                                           "the next version is 2"),
    (V2.replace("[scratch, spot]", "[scratch, dust]"), "merge: dust not in the classes"),
])
def test_a_bad_or_inconsistent_file_is_refused_and_nothing_is_appended(cat, tmp_path, text, message):
    publish_ontology(cat, yaml_file(tmp_path, V1))
    with pytest.raises(OntologyError) as refused:
        publish_ontology(cat, yaml_file(tmp_path, text, "next.yaml"))
    assert message in str(refused.value)
    assert published_versions(cat) == [(1, ["ok", "scratch", "spot", "crack"])]
    assert event_count(cat) == 1


def test_of_two_publishers_at_once_one_gets_a_concurrency_error(cat, tmp_path, monkeypatch):
    publish_ontology(cat, yaml_file(tmp_path, V1))
    proposals = [V2, "version: 2\nclasses: [ok, scratch, spot, crack, dent]\nchanges: [{op: create, targets: [dent]}]\n"]
    barrier = threading.Barrier(len(proposals), timeout=30)
    load, waited = Ontology.load, set()

    def load_together(engine, **kwargs):  # both publishers read version 1 before either appends
        ontology = load(engine, **kwargs)
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait()
        return ontology

    monkeypatch.setattr(Ontology, "load", staticmethod(load_together))

    def publish(number: int) -> PublishReport | Exception:
        try:
            return publish_ontology(cat, yaml_file(tmp_path, proposals[number], f"p{number}.yaml"))
        except ConcurrencyError as exc:
            return exc

    with ThreadPoolExecutor(len(proposals)) as pool:
        outcomes = list(pool.map(publish, range(len(proposals))))
    winners = [o for o in outcomes if isinstance(o, PublishReport)]
    assert len(winners) == 1 and winners[0].version == 2
    assert sum(isinstance(o, ConcurrencyError) for o in outcomes) == 1
    assert published_versions(cat)[1] == (2, list(winners[0].classes))
    assert query(cat, "SELECT count(*) FROM catalog.events WHERE type = 'OntologyPublished'") == [(2,)]
