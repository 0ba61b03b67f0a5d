"""Backfilling image records whose pixels are elsewhere: the records and their labels reach the read models, bad
rows are quarantined with their reason while the rest is stored, a second run appends nothing, and the command
says what it did."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.queries import ImageFilter, query_images
from ingestion.backfill import backfill
from tests.builders import cli_env, event_count, publish_v1, query, run_cli

FIRST = datetime(2025, 3, 1, 6, tzinfo=UTC)


def record(n: int, **changes) -> dict:
    """The record of image ``n``, labelled crack when n is a multiple of 3."""
    sha = hashlib.sha256(f"backfill-{n}".encode()).hexdigest()
    return {"sha256": sha, "blob_uri": f"s3://archive/{sha}.png", "part_id": f"P{n // 2:04d}", "line": "line1",
            "station": "st1", "camera": f"cam{n % 2}", "captured_at": FIRST + timedelta(minutes=n), "width": 512,
            "height": 512, "byte_size": 90_000, "label": "crack" if n % 3 == 0 else None,
            "labeler": "ana" if n % 3 == 0 else None, **changes}


def write_records(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_records_and_labels_reach_the_read_models_and_a_second_run_appends_nothing(cat, tmp_path) -> None:
    publish_v1(cat)
    records = write_records(tmp_path / "year.parquet", [record(n) for n in range(30)])

    report = backfill(cat, records, actor="archivist")
    assert (report.rows, report.images, report.labels, report.rejected) == (30, 30, 10, 0)
    stored = {r["sha256"]: r for r in query_images(cat, ImageFilter(), limit=100)}
    assert len(stored) == 30
    first, third = record(0), record(1)
    assert stored[first["sha256"]]["label"] == "crack" and stored[third["sha256"]]["label"] is None
    assert stored[first["sha256"]]["captured_at"] == first["captured_at"]
    assert query(cat, "SELECT blob_uri, part_id FROM projections.images WHERE sha256 = %(s)s",
                 {"s": first["sha256"]}) == [
        (first["blob_uri"], first["part_id"])]

    head = event_count(cat)
    again = backfill(cat, records)
    assert (again.images, again.labels, again.already_recorded) == (0, 0, 40)
    assert event_count(cat) == head


def test_bad_rows_are_quarantined_with_their_reason_and_the_rest_is_stored(cat, tmp_path) -> None:
    publish_v1(cat)
    bad = {
        "missing_field": record(1, camera=None),
        "bad_timestamp": record(2, captured_at="2025-03-01T08:00:00"),
        "bad_field": record(3, label="dent"),  # not a class of the ontology
    }
    rows = [record(0), *bad.values(), record(4, sha256="not-a-sha"), record(5, line="line\x07"), record(6)]
    # times as ISO 8601 text, as a file exported from elsewhere may carry them
    rows = [r | {"captured_at": str(r["captured_at"]).replace(" ", "T")} for r in rows]
    report = backfill(cat, write_records(tmp_path / "mixed.parquet", rows))

    assert report.images == 2 and report.rejected_by_reason() == {"bad_field": 3, "bad_timestamp": 1,
                                                                  "missing_field": 1}
    assert [r.row for r in report.rejected_rows] == [2, 3, 4, 5, 6]
    assert "dent" in report.rejected_rows[2].detail and "sha256" in report.rejected_rows[3].detail
    good = {record(0)["sha256"], record(6)["sha256"]}  # both labelled: nothing of a refused row is stored
    assert {r[0] for r in query(cat, "SELECT sha256 FROM projections.images")} == good
    assert {r[0] for r in query(cat, "SELECT payload->>'sha256' FROM catalog.events WHERE type = 'LabelRecorded'")} == good
    quarantined = query(cat, "SELECT payload->>'reason' FROM catalog.events WHERE type = 'ImageRejected'")
    assert sorted(r[0] for r in quarantined) == ["bad_field"] * 3 + ["bad_timestamp", "missing_field"]


def test_the_command_reports_what_it_did_and_fails_when_a_row_was_refused(cat, tmp_path) -> None:
    publish_v1(cat)
    records = write_records(tmp_path / "year.parquet", [record(n) for n in range(6)] + [record(9, width=-1)])
    result = run_cli("images", "backfill", str(records), "--json", env=cli_env(cat), check=False)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["images"], report["labels"], report["rejected_by_reason"]) == (6, 2, {"bad_field": 1})
    assert report["rejected_rows"][0]["row"] == 7 and "width" in report["rejected_rows"][0]["detail"]
    missing = write_records(tmp_path / "thin.parquet", [{"sha256": "0" * 64}])
    result = run_cli("images", "backfill", str(missing), env=cli_env(cat), check=False)
    assert result.returncode != 0 and "lacks column(s) blob_uri" in result.stderr
