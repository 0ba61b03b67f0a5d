"""Ingesting deliveries: every reject reason, duplicates, bit depths, idempotency, and a SIGKILL mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import catalog
from catalog.consistency import check_blobs
from catalog.events import MAX_NAME_LENGTH
from imaging.intake import Limits
from ingestion.ingest import ingest
from ingestion.tables import TableError
from tests.builders import MANIFEST_CAPTURED_AT, png, texture, write_manifest


def images(cat: catalog.Catalog) -> list[tuple]:
    with cat.db.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT source_path, width, height, channels, bit_depth, sightings FROM projections.images"
            " ORDER BY source_path")]


@pytest.fixture
def delivery(tmp_path: Path) -> Path:
    root = tmp_path / "delivery"
    root.mkdir()
    return root


def test_every_bad_input_is_quarantined_with_its_reason(cat: catalog.Catalog, delivery: Path, tmp_path: Path):
    good = png(delivery / "good.png", texture(1))
    (delivery / "empty.png").write_bytes(b"")
    (delivery / "text.png").write_text("GET / HTTP/1.1\r\n")
    (delivery / "truncated.png").write_bytes(good[: len(good) // 2])
    (delivery / "corrupt.png").write_bytes(good[:40] + bytes(len(good) - 52) + good[-12:])  # intact ends
    png(delivery / "huge.png", texture(2, (300, 300)))
    (delivery / "folder.png").mkdir()
    outside = tmp_path / "secret.png"
    png(outside, texture(3))
    (delivery / "escape.png").symlink_to(outside)
    manifest = write_manifest(delivery, [
        {"path": "good.png"},
        {"path": "empty.png"},
        {"path": "text.png"},
        {"path": "truncated.png"},
        {"path": "corrupt.png"},
        {"path": "huge.png"},
        {"path": "folder.png"},
        {"path": "missing.png"},
        {"path": "../secret.png"},
        {"path": str(outside)},
        {"path": "escape.png"},
        {"path": "good.png", "captured_at": "2026-03-02T08:00:00"},
        {"path": "good.png", "captured_at": "last tuesday"},
        {"path": "good.png", "part_id": ""},
    ])
    before = {p: p.read_bytes() for p in delivery.glob("*.png") if p.is_file()}
    report = ingest(cat, manifest, limits=Limits(max_pixels=200 * 200), workers=2)
    assert [(r.row, r.reason) for r in report.rejected_rows] == [
        (3, "empty"), (4, "not_an_image"), (5, "truncated"), (6, "unreadable"), (7, "too_large"),
        (8, "unreadable"), (9, "missing_file"), (10, "outside_root"), (11, "outside_root"), (12, "outside_root"),
        (13, "bad_timestamp"), (14, "bad_timestamp"), (15, "missing_field"),
    ]
    details = {r.reason: r.detail for r in report.rejected_rows}
    assert "300x300 = 90,000 pixels, above the limit of 40,000" in details["too_large"]
    assert "has no UTC offset" in report.rejected_rows[10].detail
    assert "empty field(s): part_id" in details["missing_field"]
    assert report.ingested == 1 and report.to_json()["rejected"] == 13
    # quarantine is in the log, with the reason, and nothing delivered was touched
    stored = [e.data for e in cat.store.read(types=["ImageRejected"])]
    assert [d.reason.value for d in stored] == [r.reason for r in report.rejected_rows]
    assert stored[0].row["path"] == "empty.png"
    assert {p: p.read_bytes() for p in before} == before
    assert check_blobs(cat, cat.blobs).ok


def test_control_characters_and_over_long_fields_are_quarantined_naming_the_field(cat: catalog.Catalog,
                                                                                   delivery: Path):
    for i in range(6):
        png(delivery / f"{i}.png", texture(i))
    (delivery / "x.png").write_bytes(b"never opened")
    manifest = write_manifest(delivery, [
        {"path": "0.png"},
        {"path": "1.png", "part_id": "P-\x00-1"},  # PostgreSQL's jsonb cannot store NUL at all
        {"path": "2.png", "camera": "cam\x1b[2J"},
        {"path": "3.png", "station": "s" * (MAX_NAME_LENGTH + 1)},
        {"path": "4.png", "lot": "L\x07"},  # another column: free text, still no control characters
        {"path": "x.png\x00.png"},
        {"path": "5.png", "lot": "two\nlines"},  # free text keeps its line breaks
    ], extra=("lot",))
    report = ingest(cat, manifest)
    assert (report.ingested, report.rejected) == (2, 5)
    assert [(r.row, r.reason, r.detail) for r in report.rejected_rows] == [
        (3, "bad_field", "part_id contains the control character U+0000 at position 2"),
        (4, "bad_field", "camera contains the control character U+001B at position 3"),
        (5, "bad_field", f"station is {MAX_NAME_LENGTH + 1} characters long, above the limit of {MAX_NAME_LENGTH}"),
        (6, "bad_field", "lot contains the control character U+0007 at position 1"),
        (7, "bad_field", "path contains the control character U+0000 at position 5"),
    ]
    assert [i[0] for i in images(cat)] == ["0.png", "5.png"]
    quarantined = [e.data for e in cat.store.read(types=["ImageRejected"])]
    assert [q.reason for q in quarantined] == ["bad_field"] * 5
    assert quarantined[0].row["part_id"] == "P-\\x00-1"  # kept as it can be stored and read
    assert quarantined[4].source_path == "x.png\\x00.png"
    head = cat.head()
    again = ingest(cat, manifest)  # the same delivery again: the same quarantine, nothing appended
    assert (again.already_ingested, again.rejected, cat.head()) == (2, 5, head)


def test_same_bytes_twice_are_one_image_with_two_sightings(cat: catalog.Catalog, delivery: Path):
    data = png(delivery / "a.png", texture(1))
    (delivery / "again.png").write_bytes(data)
    manifest = write_manifest(delivery, [{"path": "a.png"}, {"path": "again.png", "part_id": "P-2"}])
    report = ingest(cat, manifest)
    assert (report.ingested, report.duplicates) == (1, 1)
    assert images(cat) == [("a.png", 64, 64, 1, 8, 2)]
    assert len(cat.blobs.all()) == 1
    with cat.db.connect() as conn:
        sightings = conn.exec_driver_sql("SELECT part_id FROM projections.image_sightings ORDER BY 1").fetchall()
    assert [s[0] for s in sightings] == ["P-1", "P-2"]


def test_bit_depth_channels_and_unknown_columns_are_recorded(cat: catalog.Catalog, delivery: Path):
    png(delivery / "deep.png", texture(4, dtype=np.uint16))
    png(delivery / "colour.png", texture(5, (32, 48, 3)))
    cv2.imwrite(str(delivery / "photo.jpg"), texture(6, (40, 40, 3)))
    manifest = write_manifest(delivery, [{"path": "deep.png", "lot": "L7"}, {"path": "colour.png", "lot": "L8"},
                                         {"path": "photo.jpg", "lot": ""}], extra=("lot",))
    ingest(cat, manifest)
    assert images(cat) == [("colour.png", 48, 32, 3, 8, 1), ("deep.png", 64, 64, 1, 16, 1),
                           ("photo.jpg", 40, 40, 3, 8, 1)]
    ingested = {e.data.source_path: e.data for e in cat.store.read(types=["ImageIngested"])}
    assert ingested["deep.png"].metadata == {"lot": "L7"} and ingested["photo.jpg"].format == "jpeg"
    thumbnail = cat.settings.home / ingested["colour.png"].thumbnail_uri
    assert cv2.imread(str(thumbnail)).shape[:2] == (32, 48)


def test_the_same_delivery_twice_adds_nothing(cat: catalog.Catalog, delivery: Path):
    for i in range(5):
        png(delivery / f"{i}.png", texture(i))
    manifest = write_manifest(delivery, [{"path": f"{i}.png"} for i in range(5)] + [{"path": "gone.png"}])
    first = ingest(cat, manifest)
    head = cat.head()
    second = ingest(cat, manifest)
    assert (first.ingested, first.rejected) == (5, 1)
    assert (second.ingested, second.duplicates, second.already_ingested, second.rejected) == (0, 0, 5, 1)
    assert cat.head() == head


def test_column_map_and_a_manifest_missing_columns(cat: catalog.Catalog, delivery: Path):
    png(delivery / "a.png", texture(1))
    (delivery / "theirs.csv").write_text(
        f"file,serial,line,station,camera,timestamp\na.png,S-9,l,s,c,{MANIFEST_CAPTURED_AT}\n")
    with pytest.raises(TableError, match="lacks column.*path, part_id, captured_at.*--map canonical=theirs"):
        ingest(cat, delivery / "theirs.csv")
    report = ingest(cat, delivery / "theirs.csv",
                    column_map={"path": "file", "part_id": "serial", "captured_at": "timestamp"})
    assert report.ingested == 1
    assert cat.store.read()[0].data.part_id == "S-9"


def test_sigkill_during_ingest_then_resume_leaves_nothing_lost_or_doubled(cat, database, delivery: Path):
    count = 240
    for i in range(count):
        png(delivery / f"img{i:03d}.png", texture(i, (96, 96)))
    write_manifest(delivery, [{"path": f"img{i:03d}.png", "part_id": f"P-{i}"} for i in range(count)])
    command = [sys.executable, "-m", "apps.cli", "ingest", str(delivery), "--workers", "2", "--batch-size", "20"]
    staged = cat.settings.blob_root / ".staging"
    killed = 0
    # Kill while files are being staged (nothing appended yet), then just after a batch was appended, then
    # a little later: the three places where a blob and its event could part company.
    for moment in ("staging", "appended", "later"):
        start = cat.head()
        proc = subprocess.Popen(command, env=database.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if moment == "staging" and staged.exists() and any(staged.iterdir()):
                break
            if moment != "staging" and cat.head() > start:
                time.sleep(0.05 if moment == "later" else 0)
                break
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed == 3, "the ingest finished before it could be killed: make the delivery bigger"
    assert cat.head() < count
    result = subprocess.run([*command, "--json"], env=database.env(), capture_output=True, text=True, check=True)
    assert '"rejected": 0' in result.stdout
    ingested = cat.store.read(types=["ImageIngested"], limit=None)
    assert len(ingested) == count and len({e.data.sha256 for e in ingested}) == count
    consistency = check_blobs(cat, cat.blobs)
    assert consistency.ok and consistency.images == consistency.blobs == count
    assert cat.rebuild_projections(check_only=True).equal
