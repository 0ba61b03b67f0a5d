"""`visionledger ontology`, `labels import` and `corrections import`, run as a user would: real processes against a
real catalog, with their output and exit status."""

from __future__ import annotations

import json
from pathlib import Path

import catalog
from identity.people import add_user
from tests.builders import (
    IMAGE_PATHS,
    correction_row,
    ingest_images,
    label_row,
    publish_v1,
    query,
    run_cli,
    write_csv,
)

PASSWORD = "correct horse battery"
SIGNED_BY_ANA = ("--user", "ana", "--password-stdin")  # an annotator, whom each test adds (`_add_ana`)


def _add_ana(cat: catalog.Catalog) -> None:
    add_user(cat, "ana", "Ana Annotator", PASSWORD, ["annotator"], actor="test")


def test_publish_import_correct_and_show(database, tmp_path: Path):
    env = database.env()
    (tmp_path / "ontology.yaml").write_text("version: 1\nclasses: [ok, scratch, spot, crack]\n")
    published = run_cli("ontology", "publish", str(tmp_path / "ontology.yaml"), env=env)
    assert "ontology version 1 published: ok, scratch, spot, crack" in published.stdout
    with catalog.open(database.settings) as cat:
        shas = ingest_images(cat, IMAGE_PATHS)
        _add_ana(cat)
    rows = [label_row(1, "scratch"), label_row(2, "crack", IMAGE_PATHS[1])]
    write_csv(tmp_path / "labels.csv", [{("defect" if k == "label" else k): v for k, v in r.items()} for r in rows])
    imported = run_cli("labels", "import", str(tmp_path / "labels.csv"), "--map", "label=defect", "--actor", "qa",
                       env=env)
    assert "│ recorded         │ 2 │" in imported.stdout and "refused rows" not in imported.stdout
    write_csv(tmp_path / "corrections.csv", [correction_row(1, "scratch", "spot")])
    corrected = run_cli("corrections", "import", str(tmp_path / "corrections.csv"), "--json", *SIGNED_BY_ANA,
                        env=env, stdin=PASSWORD + "\n")
    assert json.loads(corrected.stdout) | {"file": None} == {
        "file": None, "rows": 1, "recorded": 1, "already_recorded": 0, "rejected": 0, "conflicts": 0, "problems": []}
    (tmp_path / "v2.yaml").write_text(
        "classes: [ok, scratch, spot, hairline, fracture]\nchanges: [{op: split, sources: [crack], "
        "targets: [hairline, fracture]}]\n")
    split = run_cli("ontology", "publish", str(tmp_path / "v2.yaml"), env=env)
    assert "1 images queued for review in 'ontology-split'" in split.stdout
    shown = json.loads(run_cli("ontology", "show", "--json", env=env).stdout)
    assert [(v["version"], v["classes"]) for v in shown] == [
        (1, ["ok", "scratch", "spot", "crack"]), (2, ["ok", "scratch", "spot", "hairline", "fracture"])]
    with catalog.open(database.settings) as cat:
        assert query(cat, "SELECT sha256, label, source FROM projections.current_labels ORDER BY label") == [
            (shas[IMAGE_PATHS[1]], "crack", "label"), (shas[IMAGE_PATHS[0]], "spot", "correction")]
        assert query(cat, "SELECT sha256 FROM projections.review_queue") == [(shas[IMAGE_PATHS[1]],)]


def test_refused_rows_are_reported_and_exit_with_status_1(database, tmp_path: Path):
    env = database.env()
    with catalog.open(database.settings) as cat:
        publish_v1(cat)
        ingest_images(cat, IMAGE_PATHS)
        _add_ana(cat)
    labels = write_csv(tmp_path / "labels.csv",
                       [label_row(1, "scratch"), label_row(2, "dent", IMAGE_PATHS[1])])
    result = run_cli("labels", "import", str(labels), "--json", env=env, check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 1 and (report["recorded"], report["rejected"]) == (1, 1)
    assert report["problems"][0]["reason"] == "unknown_class"
    corrections = write_csv(tmp_path / "corrections.csv", [correction_row(1, "ok", "spot")])
    conflict = run_cli("corrections", "import", str(corrections), *SIGNED_BY_ANA, env=env, stdin=PASSWORD + "\n",
                       check=False)
    assert conflict.returncode == 1
    assert "│ conflicts        │ 1 │" in conflict.stdout and "old_label_mismatch" in conflict.stdout
    (tmp_path / "bad.yaml").write_text("version: 2\nclasses: [ok]\n")
    refused = run_cli("ontology", "publish", str(tmp_path / "bad.yaml"), env=env, check=False)
    assert refused.returncode == 1 and "OntologyError: version 2 lists ['ok']" in refused.stderr
    with catalog.open(database.settings) as cat:
        assert query(cat, "SELECT label_id, label, source FROM projections.current_labels") == [
            ("lbl-1", "scratch", "label")]
        assert query(cat, "SELECT count(*) FROM projections.ontology_versions") == [(1,)]
