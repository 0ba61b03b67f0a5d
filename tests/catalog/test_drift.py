"""The drift report's tables in the lake, read back day by day or all together."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from catalog.drift import DRIFT_SCHEMA, cameras_path, read_drift_days, read_drift_history
from catalog.lake import Lake


def test_drift_days_are_read_alone_and_a_day_without_report_adds_nothing(tmp_path) -> None:
    lake = Lake(tmp_path)
    days = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    for day in days:
        row = {"day": day, "line": "l", "station": "s", "camera": "c", "images": 4, "statistic": "brightness",
               "value": 1.0, "reference": 1.0, "low": 0.9, "high": 1.1, "in_band": True,
               "reference_days": None, "reference_images": None}
        lake.write_parquet(cameras_path(day), pa.Table.from_pylist([row], schema=DRIFT_SCHEMA))
    assert read_drift_days(lake, [days[2], days[0], date(2026, 3, 9)])["day"].to_pylist() == [days[2], days[0]]
    assert read_drift_days(lake, [date(2026, 3, 9)]).num_rows == 0
    assert read_drift_history(lake)["day"].to_pylist() == days
