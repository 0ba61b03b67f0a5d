"""The drift report's side of the catalog: the images each camera took on a factory day (what the report
measures), and the report's per-day tables in the lake, their schema and their readers (what the app shows).
Measuring the images and judging them against their reference is `learning.drift`'s job."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.factory_day import day_sql, on_days
from catalog.lake import Lake

if TYPE_CHECKING:
    from catalog import Catalog

STATISTICS = ("brightness", "contrast", "sharpness", "stuck_pixels")

Camera = tuple[str, str, str]  # (line, station, camera): a camera is named per station, stations per line

DRIFT_SCHEMA = pa.schema([
    ("day", pa.date32()),
    ("line", pa.string()),
    ("station", pa.string()),
    ("camera", pa.string()),
    ("images", pa.int32()),
    ("statistic", pa.string()),
    ("value", pa.float64()),  # the day's mean over the camera's images; the count for stuck_pixels
    ("reference", pa.float64()),
    ("low", pa.float64()),
    ("high", pa.float64()),
    ("in_band", pa.bool_()),  # null when the value or the reference is unknown: no alert, nothing to compare
    ("reference_days", pa.string()),
    ("reference_images", pa.int32()),
    # Brightness only: every camera of the line left its band on the same side that day, so the band is the
    # line's (see learning.drift.line_significance); null in reports written before the column existed.
    ("line_wide", pa.bool_()),
])


# -- what the report measures ---------------------------------------------------------------------------------


def images_of_day(cat: Catalog, day: date) -> list[dict]:
    """The factory day's images, excluded ones included (an excluded image is still what the camera saw), by
    camera and capture time: sha256, line, station, camera, captured_at, excluded and the day."""
    captured, params = on_days(day, day, "i.captured_at", "i.line")
    with cat.read() as conn:
        result = conn.exec_driver_sql(
            "SELECT i.sha256, i.line, i.station, i.camera, i.captured_at, i.excluded FROM projections.images i"
            f" WHERE {captured} ORDER BY i.line, i.station, i.camera, i.captured_at, i.sha256", params)
        return [dict(row._mapping) | {"day": day} for row in result]


def camera_days(cat: Catalog) -> dict[Camera, list[date]]:
    """Every camera's factory days with images in the catalog, in order."""
    with cat.read() as conn:
        result = conn.exec_driver_sql(
            f"SELECT DISTINCT i.line, i.station, i.camera, {day_sql('i.captured_at', 'i.line')} AS day"
            " FROM projections.images i ORDER BY 1, 2, 3, 4")
        days: dict[Camera, list[date]] = defaultdict(list)
        for line, station, camera, day in result:
            days[(line, station, camera)].append(day)
    return days


# -- the report's tables in the lake --------------------------------------------------------------------------


def cameras_path(day: date) -> str:
    """The lake path of ``day``'s drift table (DRIFT_SCHEMA)."""
    return f"drift/cameras/day={day.isoformat()}/drift.parquet"


def out_of_band(drift: pa.Table) -> list[dict]:
    return [row for row in drift.to_pylist() if row["in_band"] is False]


def read_drift_history(lake: Lake) -> pa.Table:
    """Every day's drift table written so far."""
    return _read_drift_files(sorted((lake.root / "drift" / "cameras").glob("day=*/drift.parquet")))


def read_drift_days(lake: Lake, days: Iterable[date]) -> pa.Table:
    """The drift tables of ``days`` (a day without a report adds no rows): what a page showing a few days
    reads, however long the history."""
    return _read_drift_files([path for day in days if (path := lake.root / cameras_path(day)).exists()])


def _read_drift_files(files: list[Path]) -> pa.Table:
    return pa.concat_tables([pq.read_table(f, schema=DRIFT_SCHEMA) for f in files]) if files \
        else DRIFT_SCHEMA.empty_table()
