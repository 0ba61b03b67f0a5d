"""Label and correction imports and the one-at-a-time API, against a real catalog: what they record, what they
refuse and why, and that refusing leaves the catalog as it was."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from catalog import Catalog, ConcurrencyError, NewEvent, event_id_for
from catalog.events import MAX_NAME_LENGTH, CorrectionRecorded, PredictionRecorded, Region
from catalog.ontology import OntologyError
from ingestion import labels as labels_module
from ingestion.labels import LabelError, import_corrections, import_labels, record_correction, record_label
from ingestion.tables import TableError
from tests.builders import (
    IMAGE_PATHS,
    INGESTED_AT,
    correction_row,
    event_count,
    ingest_images,
    label_row,
    publish_v1,
    query,
    write_csv,
)


@pytest.fixture
def shas(cat: Catalog) -> dict[str, str]:
    publish_v1(cat)
    return ingest_images(cat, IMAGE_PATHS)


def test_labels_import_records_each_row_once(cat, shas, tmp_path):
    (tmp_path / "masks").mkdir()
    mask = b"\x89PNG\r\n\x1a\n fake mask bytes"
    (tmp_path / "masks" / "p2.png").write_bytes(mask)
    region = json.dumps({"cx": 10.5, "cy": 20, "rx": 4, "ry": 2, "angle": 30})
    file = write_csv(tmp_path / "labels.csv", [
        label_row(1, "ok"),
        label_row(2, "crack", IMAGE_PATHS[1], region=region, mask_path="masks/p2.png"),
        label_row(3, "scratch", IMAGE_PATHS[2], labeled_at="2026-03-02T23:30:00-05:00"),
    ])
    calls: list[tuple[int, int]] = []
    report = import_labels(cat, file, actor="curator", progress=lambda done, total: calls.append((done, total)))
    assert (report.rows, report.recorded, report.already_recorded, report.problems) == (3, 3, 0, [])
    assert calls[-1] == (3, 3)
    mask_sha = hashlib.sha256(mask).hexdigest()
    assert cat.blobs.read(mask_sha) == mask
    assert query(cat, "SELECT sha256, label, label_id, annotator, ontology_version, source, regions, mask_uri, "
                      "labeled_at FROM projections.current_labels ORDER BY label_id") == [
        (shas[IMAGE_PATHS[0]], "ok", "lbl-1", "ana", 1, "label", [], None,
         datetime(2026, 3, 2, 9, tzinfo=UTC)),
        (shas[IMAGE_PATHS[1]], "crack", "lbl-2", "ana", 1, "label",
         [{"shape": "ellipse", "cx": 10.5, "cy": 20.0, "rx": 4.0, "ry": 2.0, "angle": 30.0, "x0": None, "y0": None,
           "x1": None, "y1": None, "points": None}], f"blob:{mask_sha}", datetime(2026, 3, 2, 9, tzinfo=UTC)),
        (shas[IMAGE_PATHS[2]], "scratch", "lbl-3", "ana", 1, "label", [], None,
         datetime(2026, 3, 3, 4, 30, tzinfo=UTC)),
    ]
    assert sorted(query(cat, "SELECT label FROM projections.images")) == [("crack",), ("ok",), ("scratch",)]
    assert query(cat, "SELECT DISTINCT metadata FROM catalog.events WHERE type = 'LabelRecorded'") == [
        ({"actor": "curator", "source": "labels import labels.csv"},)]
    before = event_count(cat)
    again = import_labels(cat, file)
    assert (again.recorded, again.already_recorded, again.problems) == (0, 3, [])
    assert event_count(cat) == before


def test_a_reused_label_id_is_a_conflict_and_the_other_rows_still_record(cat, shas, tmp_path):
    import_labels(cat, write_csv(tmp_path / "first.csv", [label_row(1, "scratch")]))
    report = import_labels(cat, write_csv(tmp_path / "second.csv", [
        label_row(1, "crack"), label_row(2, "ok", IMAGE_PATHS[1]), label_row(2, "ok", IMAGE_PATHS[1])]))
    assert (report.recorded, report.already_recorded, report.rejected, report.conflicts) == (1, 1, 0, 1)
    assert [(p.row, p.id, p.reason) for p in report.problems] == [(2, "lbl-1", "label_id_reused")]
    assert "give this one a new id" in report.problems[0].message
    assert query(cat, "SELECT label_id, label FROM projections.current_labels ORDER BY label_id") == [
        ("lbl-1", "scratch"), ("lbl-2", "ok")]


def test_bad_rows_are_rejected_with_their_reason_and_nothing_of_them_is_stored(cat, shas, tmp_path):
    delivery = tmp_path / "delivery"
    delivery.mkdir()
    (tmp_path / "secret.png").write_bytes(b"outside the delivery")
    (delivery / "link.png").symlink_to(tmp_path / "secret.png")
    rows = [
        label_row(1, "ok"),
        label_row(2, "dent"),
        label_row(3, "ok", "line9/nowhere.png"),
        label_row(4, "ok", "../" + IMAGE_PATHS[0]),
        label_row(5, "ok", labeled_at="2026-03-02T10:00:00"),
        label_row(6, "ok", labeled_at="last tuesday"),
        label_row(7, "ok", labeler=""),
        label_row(8, "ok", region="{cx: 1}"),
        label_row(9, "ok", region='{"cx": 1, "rx": -2}'),
        label_row(10, "ok", mask_path="../secret.png"),
        label_row(11, "ok", mask_path="link.png"),
        label_row(12, "ok", mask_path="missing.png"),
        label_row(13, "Crack!"),
    ]
    report = import_labels(cat, write_csv(delivery / "labels.csv", rows))
    assert (report.recorded, report.rejected, report.conflicts) == (1, 12, 0)
    assert [(p.row, p.reason) for p in report.problems] == [
        (3, "unknown_class"), (4, "unknown_image"), (5, "unknown_image"), (6, "bad_timestamp"), (7, "bad_timestamp"),
        (8, "missing_field"), (9, "bad_region"), (10, "bad_region"), (11, "bad_mask_path"), (12, "bad_mask_path"),
        (13, "missing_mask"), (14, "unknown_class")]
    messages = {p.id: p.message for p in report.problems}
    assert messages["lbl-2"] == ("'dent' is not a class of ontology version 1; known classes: ok, scratch, spot, "
                                 "crack (publish a new version with `visionledger ontology publish` to add one)")
    assert "has no UTC offset" in messages["lbl-5"] and "labeler empty" in messages["lbl-7"]
    assert "no image was ingested from path 'line9/nowhere.png'" in messages["lbl-3"]
    assert json.loads(report.to_json())["problems"][0] == {
        "row": 3, "id": "lbl-2", "reason": "unknown_class", "message": messages["lbl-2"]}
    assert query(cat, "SELECT label_id FROM projections.current_labels") == [("lbl-1",)]
    assert not cat.blobs.exists(hashlib.sha256(b"outside the delivery").hexdigest())


def test_control_characters_and_over_long_fields_are_refused_per_row_naming_the_field(cat, shas, tmp_path):
    labels = import_labels(cat, write_csv(tmp_path / "labels.csv", [
        label_row(1, "ok", part_id="p\x001"),  # would otherwise reach the catalog's lookups and jsonb
        label_row(2, "ok", IMAGE_PATHS[1], labeler="a" * (MAX_NAME_LENGTH + 1)),
        label_row(3, "ok", IMAGE_PATHS[0] + "\x00"),
        label_row(4, "ok", IMAGE_PATHS[2]),
    ]))
    assert (labels.rows, labels.recorded, labels.rejected) == (4, 1, 3)
    assert [(p.row, p.id, p.reason, p.message) for p in labels.problems] == [
        (2, "lbl-1", "bad_field", "part_id contains the control character U+0000 at position 1"),
        (3, "lbl-2", "bad_field", f"labeler is {MAX_NAME_LENGTH + 1} characters long, above the limit of "
                                  f"{MAX_NAME_LENGTH}"),
        (4, "lbl-3", "bad_field", f"path contains the control character U+0000 at position {len(IMAGE_PATHS[0])}"),
    ]
    assert query(cat, "SELECT label_id FROM projections.current_labels") == [("lbl-4",)]
    import_labels(cat, write_csv(tmp_path / "good.csv", [label_row(1, "ok")]))
    before = event_count(cat)
    corrections = import_corrections(cat, write_csv(tmp_path / "corrections.csv", [
        correction_row(1, "ok", "crack", reason="looked again\x00"),
        correction_row(2, "ok", "scratch", correction_id="cor-\x1b2"),
        correction_row(3, "ok", "crack", reason="two\nlines"),  # free text keeps its line breaks
    ]))
    assert [(p.row, p.id, p.reason, p.message) for p in corrections.problems] == [
        (2, "cor-1", "bad_field", "reason contains the control character U+0000 at position 12"),
        (3, "cor-\\x1b2", "bad_field", "correction_id contains the control character U+001B at position 4"),
    ]
    assert corrections.recorded == 1 and event_count(cat) == before + 1
    assert query(cat, "SELECT label FROM projections.current_labels WHERE label_id = 'lbl-1'") == [("crack",)]


def test_renamed_columns_and_a_sha256_column_instead_of_path(cat, shas, tmp_path):
    file = write_csv(tmp_path / "theirs.csv", [
        {"id": "L-9", "sha256": shas[IMAGE_PATHS[1]].upper(), "defect": "spot", "who": "chen",
         "when": "2026-03-02T11:00:00Z"}])
    column_map = {"label_id": "id", "label": "defect", "labeler": "who", "labeled_at": "when"}
    report = import_labels(cat, file, column_map=column_map)
    assert (report.recorded, report.problems) == (1, [])
    assert query(cat, "SELECT sha256, label_id, label, annotator FROM projections.current_labels") == [
        (shas[IMAGE_PATHS[1]], "L-9", "spot", "chen")]
    with pytest.raises(TableError, match=r"lacks column\(s\) label_id, label, labeler, labeled_at; it has id, sha256, "
                                         r"defect, who, when \(rename with --map canonical=theirs\)"):
        import_labels(cat, file)
    with pytest.raises(TableError, match="--map colour: not a column of this file; the canonical columns are label_id"):
        import_labels(cat, file, column_map={**column_map, "colour": "defect"})


def test_importing_before_any_ontology_is_published_says_how_to_publish_one(cat, tmp_path):
    ingest_images(cat, IMAGE_PATHS)
    with pytest.raises(OntologyError, match=r"run `visionledger ontology publish FILE`"):
        import_labels(cat, write_csv(tmp_path / "labels.csv", [label_row(1, "ok")]))
    assert query(cat, "SELECT count(*) FROM catalog.events WHERE type = 'LabelRecorded'") == [(0,)]


def test_corrections_apply_in_row_order_and_change_the_current_label(cat, shas, tmp_path):
    import_labels(cat, write_csv(tmp_path / "labels.csv", [label_row(1, "scratch")]))
    file = write_csv(tmp_path / "corrections.csv", [correction_row(1, "scratch", "crack"),
                                                      correction_row(2, "crack", "spot")])
    report = import_corrections(cat, file, actor="reviewer")
    assert (report.recorded, report.problems) == (2, [])
    assert query(cat, "SELECT label, label_id, annotator, source, labeled_at FROM projections.current_labels") == [
        ("spot", "lbl-1", "ben", "correction", datetime(2026, 3, 3, 1, tzinfo=UTC))]
    assert query(cat, "SELECT label FROM projections.images WHERE label IS NOT NULL") == [("spot",)]
    assert query(cat, "SELECT correction_id, old_label, new_label FROM projections.corrections ORDER BY 1") == [
        ("cor-1", "scratch", "crack"), ("cor-2", "crack", "spot")]
    again = import_corrections(cat, file)
    assert (again.recorded, again.already_recorded, again.problems) == (0, 2, [])


def test_a_stale_correction_is_a_conflict_and_changes_nothing(cat, shas, tmp_path):
    import_labels(cat, write_csv(tmp_path / "labels.csv", [label_row(1, "scratch")]))
    before = event_count(cat)
    report = import_corrections(cat, write_csv(tmp_path / "corrections.csv", [
        correction_row(1, "spot", "crack"), correction_row(2, "ok", "crack", IMAGE_PATHS[1]),
        correction_row(3, "scratch", "dent")]))
    assert (report.recorded, report.rejected, report.conflicts) == (0, 2, 1)
    assert [(p.id, p.reason) for p in report.problems] == [
        ("cor-1", "old_label_mismatch"), ("cor-2", "unknown_label"), ("cor-3", "unknown_class")]
    assert report.problems[0].message.startswith(f"old_label is 'spot' but the catalog holds 'scratch' for image "
                                                 f"{shas[IMAGE_PATHS[0]]}; nothing was changed")
    assert event_count(cat) == before
    assert query(cat, "SELECT label, source FROM projections.current_labels") == [("scratch", "label")]


def test_record_label_and_correction_one_at_a_time(cat, shas):
    sha = shas[IMAGE_PATHS[0]]
    region = Region(shape="ellipse", cx=5, cy=6, rx=2, ry=1, angle=0)
    record_label(cat, sha256=sha, label="crack", annotator="ana", label_id="ui-1", regions=[region], actor="ana")
    with pytest.raises(LabelError, match="'dent' is not a class of ontology version 1; known classes: ok, scratch"):
        record_label(cat, sha256=sha, label="dent", annotator="ana")
    with pytest.raises(LabelError, match=f"no image with sha256 {'0' * 64}"):
        record_label(cat, sha256="0" * 64, label="ok", annotator="ana")
    record_correction(cat, sha256=sha, new_label="spot", corrected_by="ben", correction_id="ui-c1")
    with pytest.raises(LabelError, match="old_label is 'crack' but the catalog holds 'spot'"):
        record_correction(cat, sha256=sha, new_label="ok", corrected_by="ben", old_label="crack")
    prediction = NewEvent(PredictionRecorded(sha256=sha, engine_id="e1", scores={"ok": 0.9}, predicted_class="ok"),
                          occurred_at=INGESTED_AT)
    cat.append([prediction])
    record_correction(cat, sha256=sha, new_label="scratch", corrected_by="chen", target="prediction",
                      prediction_event_id=prediction.event_id, correction_id="ui-c2")
    assert query(cat, "SELECT correction_id, target, old_label, new_label FROM projections.corrections "
                      "ORDER BY 1") == [("ui-c1", "label", "crack", "spot"), ("ui-c2", "prediction", "ok", "scratch")]
    assert query(cat, "SELECT label, regions FROM projections.current_labels") == [
        ("scratch", [region.model_dump()])]


def test_record_correction_refuses_when_the_image_changed_meanwhile(cat, shas, monkeypatch):
    sha = shas[IMAGE_PATHS[0]]
    record_label(cat, sha256=sha, label="scratch", annotator="ana")
    read_labels = labels_module.current_labels

    def another_reviewer_first(cat_, shas_):
        held = read_labels(cat_, shas_)
        cat.record(CorrectionRecorded(sha256=sha, correction_id="other", target="label", old_label="scratch",
                                      new_label="crack", corrected_by="dan", ontology_version=1),
                   occurred_at=INGESTED_AT, event_id=event_id_for("correction", "other"))
        return held

    monkeypatch.setattr(labels_module, "current_labels", another_reviewer_first)
    with pytest.raises(ConcurrencyError, match=f"stream 'image:{sha}'"):
        record_correction(cat, sha256=sha, new_label="spot", corrected_by="ben")
    assert query(cat, "SELECT correction_id, new_label FROM projections.corrections") == [("other", "crack")]
