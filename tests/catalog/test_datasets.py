"""Dataset versions on a real catalog: reproducible to the byte at a position, leak-free by part, stratified
and capped as the spec says, never holding excluded images, and checks that fail when they should."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import catalog
from catalog.curation import set_excluded
from catalog.datasets import (
    DatasetSpec,
    DatasetSpecError,
    build_dataset_version,
    check_manifest,
    load_manifest,
    publish_dataset_version,
)
from catalog.datasets.checks import check_class_proportions, check_no_part_in_two_splits
from catalog.datasets.publish import file_identity, recorded_manifest_file
from catalog.events import ImageIngested
from catalog.lake import parquet_bytes
from catalog.queries import ImageFilter
from catalog.store import NewEvent
from ingestion.labels import record_correction, record_label
from ingestion.ontology_publish import publish_ontology

ALL = {"counts": {"ok": "all", "scratch": "all", "spot": "all", "crack": "all"}}


def spec(**fields) -> DatasetSpec:
    return DatasetSpec.parse({"name": "test-set", "sampling": ALL, "seed": 5} | fields)


def labelled_images(cat: catalog.Catalog) -> dict[str, str]:
    with cat.db.connect() as conn:
        return dict(conn.exec_driver_sql(
            "SELECT sha256, label FROM projections.images WHERE label IS NOT NULL AND NOT excluded").fetchall())


def test_a_version_holds_every_curated_labelled_image_with_its_class(factory_cat: catalog.Catalog):
    version = build_dataset_version(factory_cat.db, spec())
    manifest = version.manifest
    assert manifest.schema.names == ["sha256", "class", "split", "weight", "part_id", "day", "line", "station",
                                     "camera", "captured_at", "mask_uri", "regions"]
    assert dict(zip(manifest["sha256"].to_pylist(), manifest["class"].to_pylist(), strict=True)) == \
        labelled_images(factory_cat)
    assert manifest["sha256"].to_pylist() == sorted(manifest["sha256"].to_pylist())
    assert version.counts["images"] == manifest.num_rows
    assert version.counts["train"] + version.counts["validation"] + version.counts["test"] == manifest.num_rows
    # class weights balance the training split: each class's images weigh the same in all
    train = manifest.filter(pc.equal(manifest["split"], "train"))
    per_class = {}
    for cls, weight in zip(train["class"].to_pylist(), train["weight"].to_pylist(), strict=True):
        per_class[cls] = per_class.get(cls, 0) + weight
    assert max(per_class.values()) == pytest.approx(min(per_class.values()))
    assert min(manifest["weight"].to_pylist()) > 0
    # images carry the mask and regions their label was recorded with
    with factory_cat.db.connect() as conn:
        masks = dict(conn.exec_driver_sql("SELECT sha256, mask_uri FROM projections.current_labels").fetchall())
    assert dict(zip(manifest["sha256"].to_pylist(), manifest["mask_uri"].to_pylist(), strict=True)) == \
        {sha: masks[sha] for sha in manifest["sha256"].to_pylist()}
    assert any(m for m in manifest["mask_uri"].to_pylist())


def test_same_spec_at_same_position_is_byte_identical_whatever_happens_later(factory_cat: catalog.Catalog):
    cat = factory_cat
    published = publish_dataset_version(cat, spec(), actor="test")
    path = cat.lake.root / published.manifest_uri
    first = path.read_bytes()
    assert hashlib.sha256(first).hexdigest() == published.manifest_hash
    assert published.version_id == f"test-set-{published.manifest_hash[:12]}"
    position = published.version.position

    # After the position: a new label, a correction, an exclusion and a new image.
    version_images = published.version.manifest["sha256"].to_pylist()
    classes = dict(zip(version_images, published.version.manifest["class"].to_pylist(), strict=True))
    corrected = version_images[0]
    record_correction(cat, sha256=corrected, new_label="crack" if classes[corrected] != "crack" else "ok",
                      corrected_by="dana", reason="second look", actor="test")
    excluded = version_images[1]
    set_excluded(cat, ImageFilter(parts=(published.version.manifest["part_id"][1].as_py(),)), exclude=True,
                 reason="wrongly collected", actor="test")
    new_sha = "f" * 64
    cat.append([NewEvent(ImageIngested(
        sha256=new_sha, part_id="late-part", line="line1", station="st1", camera="cam1",
        captured_at=datetime(2026, 3, 3, 9, tzinfo=UTC), width=128, height=128, channels=1, bit_depth=8,
        byte_size=100, blob_uri=f"blob:{new_sha}", source_path="late.png"), datetime.now(UTC))])
    record_label(cat, sha256=new_sha, label="scratch", annotator="ana", actor="test")

    again = build_dataset_version(cat.db, spec(), position=position)
    assert parquet_bytes(again.manifest) == first
    republished = publish_dataset_version(cat, spec(), position=position, actor="test")
    assert republished.already_published and republished.version_id == published.version_id
    assert path.read_bytes() == first

    now = build_dataset_version(cat.db, spec())
    now_classes = dict(zip(now.manifest["sha256"].to_pylist(), now.manifest["class"].to_pylist(), strict=True))
    assert excluded not in now_classes and new_sha in now_classes
    assert now_classes[corrected] != classes[corrected]
    assert parquet_bytes(now.manifest) != first


def test_publishing_records_the_event_and_the_read_model(factory_cat: catalog.Catalog):
    published = publish_dataset_version(factory_cat, spec(), actor="curator")
    events = factory_cat.store.read_stream("dataset:test-set")
    assert len(events) == 1
    data = events[0].data
    assert (data.version_id, data.manifest_hash, data.as_of_position) == \
        (published.version_id, published.manifest_hash, published.version.position)
    assert data.spec["sampling"]["counts"] == ALL["counts"] and data.spec["ontology_version"] == 1
    # the recorded spec, defaults spelled out, rebuilds the same version
    rebuilt = build_dataset_version(factory_cat.db, DatasetSpec.parse(data.spec), position=data.as_of_position)
    assert rebuilt.manifest.equals(published.version.manifest)
    assert events[0].metadata["actor"] == "curator"
    with factory_cat.db.connect() as conn:
        row = conn.exec_driver_sql("SELECT dataset, counts, manifest_uri FROM projections.dataset_versions"
                                   " WHERE version_id = %(v)s", {"v": published.version_id}).one()
    assert row == ("test-set", published.version.counts, published.manifest_uri)
    loaded = load_manifest(factory_cat.lake, published.manifest_uri, expected_hash=published.manifest_hash)
    assert loaded.equals(published.version.manifest)
    # the file as written is recorded as found intact (catalog.manifest_files): a trace need not hash it again
    with factory_cat.db.connect() as conn:
        assert recorded_manifest_file(conn, published.manifest_hash, published.manifest_uri) == \
            file_identity(factory_cat.lake, published.manifest_uri) is not None
    (factory_cat.lake.root / published.manifest_uri).write_bytes(b"tampered")
    with pytest.raises(catalog.CatalogError, match="does not match the recorded manifest hash"):
        load_manifest(factory_cat.lake, published.manifest_uri, expected_hash=published.manifest_hash)


def test_split_is_by_part_and_stratified_by_the_parts_rarest_class(factory_cat: catalog.Catalog):
    manifest = build_dataset_version(factory_cat.db, spec(split={"train": 0.5, "validation": 0.25,
                                                                     "test": 0.25})).manifest
    splits_of_part: dict[str, set[str]] = {}
    for part, split in zip(manifest["part_id"].to_pylist(), manifest["split"].to_pylist(), strict=True):
        splits_of_part.setdefault(part, set()).add(split)
    assert all(len(s) == 1 for s in splits_of_part.values())
    assert check_no_part_in_two_splits(manifest).passed
    part_counts = {s: sum(1 for v in splits_of_part.values() if v == {s}) for s in ("train", "validation", "test")}
    parts = len(splits_of_part)
    assert abs(part_counts["train"] - parts / 2) <= 3 and abs(part_counts["test"] - parts / 4) <= 3
    # ok parts are split by share, each stratum on its own: every split gets ok parts
    ok_only = {p for p, c in _classes_of_parts(manifest).items() if c == {"ok"}}
    assert {next(iter(splits_of_part[p])) for p in ok_only} == {"train", "validation", "test"}
    # a different seed moves parts between splits
    other = build_dataset_version(factory_cat.db, spec(seed=6, split={"train": 0.5, "validation": 0.25,
                                                                          "test": 0.25})).manifest
    assert other["split"].to_pylist() != manifest["split"].to_pylist()


def _classes_of_parts(manifest: pa.Table) -> dict[str, set[str]]:
    classes: dict[str, set[str]] = {}
    for part, cls in zip(manifest["part_id"].to_pylist(), manifest["class"].to_pylist(), strict=True):
        classes.setdefault(part, set()).add(cls)
    return classes


def test_stratified_counts_proportions_and_shortfall(factory_cat: catalog.Catalog):
    available = labelled_images(factory_cat)
    n_ok = sum(1 for c in available.values() if c == "ok")
    n_scratch = sum(1 for c in available.values() if c == "scratch")

    counted = build_dataset_version(factory_cat.db, spec(sampling={"counts": {"ok": 20, "scratch": "all"}}))
    assert (counted.counts["ok"], counted.counts["scratch"]) == (20, n_scratch)
    assert set(counted.manifest["class"].to_pylist()) == {"ok", "scratch"}
    assert counted.left_out["class_not_sampled"] == len(available) - n_ok - n_scratch

    shares = {"ok": 0.75, "scratch": 0.25}
    proportioned = build_dataset_version(factory_cat.db, spec(sampling={"proportions": shares}))
    assert proportioned.counts["scratch"] == n_scratch  # the scarce class limits the total
    assert proportioned.counts["ok"] == 3 * n_scratch
    assert check_class_proportions(proportioned.manifest, proportioned.spec).passed

    too_many = spec(sampling={"proportions": shares, "total": 4 * n_scratch + 40})
    short = build_dataset_version(factory_cat.db, too_many)
    assert short.shortfall == {"scratch": 10}
    outcome = check_class_proportions(short.manifest, too_many)
    assert not outcome.passed and "scratch" in outcome.detail


def test_caps_per_part_and_per_day_and_even_draw_across_days(factory_cat: catalog.Catalog):
    capped = build_dataset_version(factory_cat.db, spec(balance={"max_per_part": 1})).manifest
    per_class_part = pc.value_counts(pc.binary_join_element_wise(capped["class"], capped["part_id"], "|"))
    assert max(v["counts"] for v in per_class_part.to_pylist()) == 1

    by_day = build_dataset_version(factory_cat.db, spec(balance={"max_per_day": 5})).manifest
    ok = by_day.filter(pc.equal(by_day["class"], "ok"))
    assert {v["counts"] for v in pc.value_counts(ok["day"]).to_pylist()} == {5}

    # drawing 8 ok images from 4 days takes 2 from each
    drawn = build_dataset_version(factory_cat.db, spec(sampling={"counts": {"ok": 8}})).manifest
    assert sorted(v["counts"] for v in pc.value_counts(drawn["day"]).to_pylist()) == [2, 2, 2, 2]


def test_excluded_images_never_appear(factory_cat: catalog.Catalog):
    report = set_excluded(factory_cat, ImageFilter(lines=("line1",)), exclude=True, reason="lamp too dim",
                          actor="test")
    assert report.changed > 0
    manifest = build_dataset_version(factory_cat.db, spec()).manifest
    assert set(manifest["line"].to_pylist()) == {"line2"}


def test_filters_and_the_ontology_version_the_labels_are_read_in(factory_cat: catalog.Catalog):
    cat = factory_cat
    start = datetime(2026, 3, 3, tzinfo=UTC)
    filtered = build_dataset_version(cat.db, spec(filters={"cameras": ["cam2"], "captured_from": start.isoformat()}))
    assert set(filtered.manifest["camera"].to_pylist()) == {"cam2"}
    assert min(filtered.manifest["captured_at"].to_pylist()) >= start
    before = cat.head()
    publish_ontology(cat, {"version": 2, "classes": ["ok", "scratch", "spot", "fissure"],
                           "changes": [{"op": "rename", "sources": ["crack"], "targets": ["fissure"]}]}, actor="test")
    with pytest.raises(DatasetSpecError, match="crack: not classes of ontology version 2"):
        build_dataset_version(cat.db, spec())
    renamed = build_dataset_version(cat.db, spec(sampling={"counts": {"fissure": "all"}}))
    old = build_dataset_version(cat.db, spec(sampling={"counts": {"crack": "all"}}, ontology_version=1))
    assert renamed.counts["images"] == old.counts["images"] > 0
    assert set(renamed.manifest["class"].to_pylist()) == {"fissure"}
    # at a position before version 2 was published, only version 1 exists
    with pytest.raises(DatasetSpecError, match="ontology version 2 was not published by position"):
        build_dataset_version(cat.db, spec(ontology_version=2), position=before)


def test_checks_fail_on_leaks_late_images_and_excluded_images(factory_cat: catalog.Catalog):
    cat = factory_cat
    chosen = spec()
    version = build_dataset_version(cat.db, chosen)
    assert all(o.passed for o in check_manifest(cat, version.manifest, chosen, version.position))

    manifest = version.manifest
    parts = manifest["part_id"].to_pylist()
    shared = next(p for p in parts if parts.count(p) > 1)
    first_row = parts.index(shared)
    splits = manifest["split"].to_pylist()
    splits[first_row] = "test" if splits[first_row] != "test" else "train"
    leaky = manifest.set_column(manifest.schema.get_field_index("split"), "split", pa.array(splits))
    outcome = check_no_part_in_two_splits(leaky)
    assert not outcome.passed and shared in outcome.metadata["parts"][0]

    # the same manifest checked at an earlier position: its images were not there yet
    outcomes = {o.name: o for o in check_manifest(cat, manifest, chosen, 3)}
    assert not outcomes["no_image_newer_than_position"].passed

    # an image excluded before the position may not be in the version
    excluded = manifest["sha256"][0].as_py()
    set_excluded(cat, ImageFilter(parts=(parts[0],)), exclude=True, reason="wrongly collected", actor="test")
    outcomes = {o.name: o for o in check_manifest(cat, manifest, chosen, cat.head())}
    assert not outcomes["no_excluded_image"].passed
    assert excluded[:12] in outcomes["no_excluded_image"].metadata["images"][0]
    # at the version's own position it was fine, and the later exclusion is reported, not failed
    outcomes = {o.name: o for o in check_manifest(cat, manifest, chosen, version.position)}
    assert outcomes["no_excluded_image"].passed and outcomes["no_excluded_image"].metadata["excluded_since"] >= 1


@pytest.mark.parametrize(("fields", "message"), [
    ({"sampling": {"proportions": {"ok": 0.5, "crack": 0.4}}}, "must add up to 1"),
    ({"sampling": {"counts": {"ok": 0}}}, "counts above 0"),
    ({"sampling": {"counts": {"ok": 1}, "proportions": {"ok": 1.0}}}, "exactly one of"),
    ({"split": {"train": 0.9, "validation": 0.2, "test": 0.0}}, "must add up to 1"),
    ({"filters": {"captured_from": "2026-03-02T00:00:00"}}, "timezone"),
    ({"sampling": ALL, "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_malformed_specs_are_refused_with_the_field_named(fields, message):
    with pytest.raises(DatasetSpecError, match=message):
        spec(**fields)


def test_specs_from_yaml_and_positions_beyond_the_read_models(factory_cat: catalog.Catalog, tmp_path):
    with pytest.raises(DatasetSpecError, match="a spec is a mapping"):
        DatasetSpec.from_yaml("- just\n- a list\n")
    with pytest.raises(DatasetSpecError, match="unknown_class: not classes of ontology version 1"):
        build_dataset_version(factory_cat.db, spec(sampling={"counts": {"unknown_class": 3}}))
    with pytest.raises(DatasetSpecError, match="catch the projections up"):
        build_dataset_version(factory_cat.db, spec(), position=factory_cat.head() + 100)
    with pytest.raises(DatasetSpecError, match="no labelled, curated image passes the filters"):
        build_dataset_version(factory_cat.db, spec(filters={"lines": ["no-such-line"]}))
    path = tmp_path / "s.yaml"
    path.write_text("name: from-file\nsampling:\n  counts: {ok: 3}\n")
    assert DatasetSpec.from_yaml(path).name == "from-file"
