"""The drift report: materialized day by day in process against the real PostgreSQL of the tiny factory, it
must catch the simulator's dimming lamp, stuck pixels and dust on the day each starts to matter, and no more."""

from __future__ import annotations

from datetime import date

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.drift import (
    DRIFT_SCHEMA,
    MIN_IMAGES_FOR_STUCK,
    DriftConfig,
    Reference,
    band,
    camera_day_statistics,
    cameras_path,
    drift_report,
    image_statistics,
    read_drift_days,
    read_drift_history,
)
from assets.resources import CatalogResource, LakeResource
from catalog.lake import Lake

DAYS = ("2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05")  # simulator days 0..3
DIMMED = (("line1", "st1", "cam1"), ("line1", "st1", "cam2"))  # 3 % darker a day from day 1
STUCK = ("line2", "st1", "cam1")  # 12 stuck pixels on day 2, 24 on day 3
DUSTY = ("line2", "st1", "cam2")  # blurred from day 3
# When each drift starts to matter with the default bands (see DriftConfig): the lamp at 6 % (day 2), the
# first stuck pixels (day 2), dust at once (day 3), where it also halves contrast. Exact sets: nothing before,
# no other camera, no other statistic.
EXPECTED_ALERTS = {
    "2026-03-02": set(),
    "2026-03-03": set(),
    "2026-03-04": {(c, "brightness") for c in DIMMED} | {(STUCK, "stuck_pixels")},
    "2026-03-05": {(c, "brightness") for c in DIMMED}
    | {(STUCK, "stuck_pixels"), (DUSTY, "sharpness"), (DUSTY, "contrast")},
}


def _materialize(resources: dict, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([drift_report], partition_key=day, resources=resources,
                          instance=dg.DagsterInstance.ephemeral())


def test_drift_report_catches_each_drift_on_its_day(factory_cat) -> None:
    settings = factory_cat.settings
    resources = {"catalog": CatalogResource(home=str(settings.home), database_url=settings.database_url),
                 "lake": LakeResource(root=str(settings.lake_root))}
    lake_root = settings.lake_root
    tables = {}
    for day in DAYS:
        result = _materialize(resources, day)
        assert result.success
        table = pq.read_table(lake_root / f"drift/cameras/day={day}/drift.parquet")
        tables[day] = table
        rows = table.to_pylist()
        alerts = {((r["line"], r["station"], r["camera"]), r["statistic"]) for r in rows if r["in_band"] is False}
        assert alerts == EXPECTED_ALERTS[day], day
        assert {r["reference_days"] for r in rows} == {"2026-03-02"}
        assert len({(r["line"], r["station"], r["camera"]) for r in rows}) == 4

        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "stats_within_bands"
        assert check.passed == (not EXPECTED_ALERTS[day])
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["out_of_band"].value == len(EXPECTED_ALERTS[day])
        [materialization] = result.asset_materializations_for_node("drift_report")
        assert materialization.metadata["cameras"].value == 4
        assert (lake_root / f"drift/images/day={day}/stats.parquet").exists()

    assert (lake_root / "drift/drift.html").exists()
    png = lake_root / "drift/drift.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert materialization.metadata["chart"].value == str(png)

    # Re-deriving a day gives the same table, byte for byte in its values.
    again = _materialize(resources, "2026-03-04")
    assert again.success
    assert pq.read_table(lake_root / "drift/cameras/day=2026-03-04/drift.parquet").equals(tables["2026-03-04"])


def test_stuck_pixels_are_found_over_time_and_corrected_before_measuring() -> None:
    rng = np.random.default_rng(0)
    clean = [rng.normal(128, 20, (64, 64)).clip(6, 249).astype(np.uint8) for _ in range(MIN_IMAGES_FOR_STUCK)]
    stuck_rows, stuck_cols = np.array([3, 10, 40]), np.array([7, 50, 20])
    broken = [img.copy() for img in clean]
    for img in broken:
        img[stuck_rows, stuck_cols] = [0, 255, 90]  # mid-gray stuck pixels count too: they never change

    measured = camera_day_statistics(({"i": i}, lambda img=img: img) for i, img in enumerate(broken))
    assert measured.stuck_pixels == 3
    for row, img in zip(measured.images, clean, strict=True):
        assert row["corrected_pixels"] == 3
        assert row["sharpness"] == pytest.approx(image_statistics(img)["sharpness"], rel=0.02)

    too_few = camera_day_statistics(({"i": i}, lambda img=img: img) for i, img in enumerate(broken[:-1]))
    assert too_few.stuck_pixels is None


def test_image_statistics_are_mean_std_and_laplacian_variance() -> None:
    flat = np.full((32, 32), 100, np.uint8)
    assert image_statistics(flat) == {"brightness": 100.0, "contrast": 0.0, "sharpness": 0.0}


def test_bands_widen_to_sampling_noise_and_stuck_pixels_get_an_allowance() -> None:
    config = DriftConfig()
    steady = Reference(days=[date(2026, 3, 2)], images=8, values={"brightness": 100.0, "stuck_pixels": 2.0},
                       spreads={"brightness": 1.0, "stuck_pixels": None})
    assert band("brightness", steady, config) == pytest.approx((95.0, 105.0))  # 5 % is wider than the noise
    noisy = Reference(days=steady.days, images=2, values=steady.values, spreads={"brightness": 4.0})
    assert band("brightness", noisy, config) == pytest.approx((88.0, 112.0))  # 3 × 4 × sqrt(2 / 2)
    assert band("stuck_pixels", steady, config) == (0.0, 5.0)


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
