"""`check_catalog`: a clean catalog passes, and each kind of damage (a lost blob, a doubled lake file, a
projection row gone) is named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pyarrow as pa

from catalog.consistency import check_catalog


def test_a_clean_catalog_is_consistent(factory_cat, database) -> None:
    factory_cat.sync_lake()
    report = check_catalog(factory_cat)
    assert report.ok, report.problems()
    assert report.events == report.head == report.lake_position > 0
    assert report.blobs.images + report.blobs.artifacts == report.blobs.blobs > report.blobs.images > 0
    checked = subprocess.run([sys.executable, "-m", "apps.cli", "check", "--json"], env=database.env(),
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {
        "ok": True, "head": report.head, "events": report.events, "lake_position": report.lake_position,
        "chain_head": str(factory_cat.store.chain_head()), "chain_broken_at": None,
        "images": report.blobs.images, "blobs": report.blobs.blobs, "problems": []}


def test_damage_is_named(factory_cat) -> None:
    cat = factory_cat
    cat.sync_lake()
    lost = cat.blobs.all()[0]
    cat.blobs.path(lost).unlink()
    doubled = cat.lake.files()[0]
    shutil.copy(doubled, doubled.with_name("copy-" + doubled.name))
    with cat.db.begin() as conn:
        conn.exec_driver_sql("DELETE FROM projections.images WHERE sha256 = %(s)s", {"s": lost})
    report = check_catalog(cat)
    assert not report.ok
    assert report.blobs.events_without_blob == [lost]
    doubled_rows = cat.duckdb().execute(f"SELECT count(*) FROM read_parquet('{doubled}')").fetchone()[0]
    assert len(report.lake_doubled) == doubled_rows > 0
    assert report.projections_differing == ["images"]
    assert not (report.lake_missing or report.lake_mismatched or report.position_gaps or report.duplicate_event_ids)
    assert any("mirrored twice" in line for line in report.problems())


def test_an_interrupted_lake_sync_is_reported_until_the_next_sync_recovers_it(factory_cat) -> None:
    cat = factory_cat
    cat.lake.sync(cat.db, upto=10)
    staging = cat.lake.root / "_sync" / "staging" / "left-by-a-killed-run"
    staging.mkdir(parents=True)
    report = check_catalog(cat)
    assert report.lake_sync_interrupted and report.lake_position == 10 and not report.ok
    cat.sync_lake()
    assert check_catalog(cat).ok


def test_a_heatmap_is_a_blob_its_lake_table_names(factory_cat) -> None:
    cat = factory_cat
    cat.sync_lake()
    named, stray = cat.blobs.put(b"a heatmap overlay"), cat.blobs.put(b"a blob nothing names")
    cat.lake.write_parquet(cat.lake.heatmaps_of("model-1"), pa.table({
        "sha256": ["a" * 64], "model_id": ["model-1"], "kind": ["grad_cam"], "class": ["crack"], "uri": [named.uri]}))
    report = check_catalog(cat)
    assert report.blobs.blobs_without_event == [stray.sha256]
