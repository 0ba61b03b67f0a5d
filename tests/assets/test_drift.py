"""The drift report: materialized day by day in process against the real PostgreSQL of the tiny factory, it
must catch the simulator's dimming lamp, stuck pixels and dust on the first day of each, and no more."""

from __future__ import annotations

from datetime import date

import cv2
import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.drift import drift_report
from assets.resources import CatalogResource, LakeResource
from catalog.lake import Lake
from learning.drift import (
    DRIFT_SCHEMA,
    IMAGE_SCHEMA,
    DayMeasurement,
    DriftConfig,
    Reference,
    Sample,
    band,
    camera_day_statistics,
    cameras_path,
    compare_with_reference,
    image_statistics,
    line_significance,
    read_drift_days,
    read_drift_history,
    stuck_pixel_band,
)

DAYS = ("2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05")  # simulator days 0..3
DIMMED = (("line1", "st1", "cam1"), ("line1", "st1", "cam2"))  # 3 % darker a day from day 1
STUCK = ("line2", "st1", "cam1")  # 12 stuck pixels on day 2, 24 on day 3
DUSTY = ("line2", "st1", "cam2")  # blurred from day 3
# Each drift on its first day: the lamp at 3 % in contrast (which follows the lamp and, on a procedural
# surface, hardly varies from part to part), in brightness from 6 % (both cameras of the line darker
# together); the first stuck pixels; the dust in sharpness (and contrast, which it halves). Exact sets:
# nothing before, no other camera, no other statistic.
EXPECTED_ALERTS = {
    "2026-03-02": set(),
    "2026-03-03": {(c, "contrast") for c in DIMMED},
    "2026-03-04": {(c, s) for c in DIMMED for s in ("brightness", "contrast")} | {(STUCK, "stuck_pixels")},
    "2026-03-05": {(c, s) for c in DIMMED for s in ("brightness", "contrast")}
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
        # With six images a camera, 6 % of brightness is not sure enough for either camera alone; both, together, are.
        assert {r["line_wide"] for r in rows if r["in_band"] is False and r["statistic"] == "brightness"} <= {True}
        assert not any(r["line_wide"] for r in rows if r["statistic"] != "brightness")
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


def textured(rng: np.random.Generator, size: int = 96, gain: float = 1.0, blur: float = 0.0) -> np.ndarray:
    """A surface with detail at every scale, lit by ``gain``, seen through a lens blurring by ``blur`` px, with
    a sensor's noise of one gray level added after the lens."""
    scene = np.zeros((size, size), np.float32)
    for sigma in (0.7, 1.5, 3.0, 6.0):
        layer = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
        scene += layer / layer.std()
    scene = gain * (128 + 10 * scene)
    if blur:
        scene = cv2.GaussianBlur(scene, (0, 0), blur)
    return np.rint(scene + rng.standard_normal(scene.shape)).clip(6, 249).astype(np.uint8)


def test_stuck_pixels_are_found_over_time_and_corrected_before_measuring() -> None:
    rng = np.random.default_rng(0)
    clean = [textured(rng) for _ in range(4)]
    stuck_rows, stuck_cols = np.array([3, 10, 40]), np.array([7, 50, 20])
    broken = [img.copy() for img in clean]
    for img in broken:
        img[stuck_rows, stuck_cols] = [0, 255, 90]  # mid-gray stuck pixels count too: they never change

    measured = camera_day_statistics(({"i": i}, lambda img=img: img) for i, img in enumerate(broken))
    assert measured.stuck_pixels == 3
    # Live pixels agree in ~2 % of image pairs, all 4 images in ~5 of a million: 3 are more than chance.
    assert measured.stuck_by_chance < 0.1 and stuck_pixel_band(0, measured.stuck_by_chance, DriftConfig())[1] < 3
    for row, img in zip(measured.images, clean, strict=True):
        assert row["corrected_pixels"] == 3
        assert row["sharpness"] == pytest.approx(image_statistics(img)["sharpness"], rel=0.02)

    # Two images compare pixel by pixel, but chance explains every pixel they share; one image tells nothing.
    two = camera_day_statistics(({"i": i}, lambda img=img: img) for i, img in enumerate(broken[:2]))
    assert two.stuck_pixels > 3 and stuck_pixel_band(0, two.stuck_by_chance, DriftConfig())[1] >= two.stuck_pixels
    assert camera_day_statistics([({"i": 0}, lambda: broken[0])]).stuck_pixels is None


def test_the_first_stuck_pixel_counts_unless_chance_explains_it() -> None:
    config = DriftConfig()
    assert stuck_pixel_band(2, 1e-6, config) == (0.0, 2.0)  # chance makes none: one more stuck pixel is news
    assert stuck_pixel_band(2, None, config) == (0.0, 2.0)
    assert stuck_pixel_band(0, 0.5, config) == (0.0, 4.0)  # Poisson(0.5) reaches 5 less than once in 1,000


def test_flat_image_has_its_gray_level_and_no_contrast_sharpness_or_noise() -> None:
    flat = np.full((32, 32), 100, np.uint8)
    assert image_statistics(flat) == {"brightness": 100.0, "contrast": 0.0, "sharpness": 0.0, "noise": 0.0}


def test_sharpness_follows_the_lens_not_the_lamp() -> None:
    def sharpness(**kwargs) -> float:
        rng = np.random.default_rng(1)
        return float(np.mean([image_statistics(textured(rng, **kwargs))["sharpness"] for _ in range(6)]))

    sharp = sharpness()
    assert sharpness(gain=0.8) == pytest.approx(sharp, rel=0.05)  # a lamp 20 % dimmer: the same lens
    assert sharpness(blur=0.7) < 0.8 * sharp  # dust blurring by 0.7 px: a fifth of the fine detail gone
    assert sharpness(blur=1.5) < 0.4 * sharp


def test_bands_are_the_tolerance_widened_to_what_chance_allows() -> None:
    config = DriftConfig()
    reference = Sample(mean=100.0, sd=1.0, n=50)
    steady = Sample(mean=100.0, sd=1.0, n=50)
    assert band("brightness", reference, steady, config, config.significance) == pytest.approx((98.0, 102.0))
    varied = Sample(mean=100.0, sd=10.0, n=17)
    low, high = band("brightness", reference, varied, config, config.significance)
    assert high - 100 == pytest.approx(3.9 * 10 / 17 ** 0.5, rel=0.05)  # t at 0.1 % two-sided, 16 df: ~3.9
    assert low == pytest.approx(200 - high)
    looser = band("brightness", reference, varied, config, line_significance(2, config.significance))
    assert looser[1] < high
    assert band("brightness", Sample(100.0, None, 1), Sample(98.0, None, 1), config, config.significance) is None


def measurement(day: date, values: dict[tuple[str, str, str], list[float]]) -> DayMeasurement:
    """A day where each camera's images have the given brightness (and contrast and sharpness that never move)."""
    rows = [{"day": day, "line": c[0], "station": c[1], "camera": c[2], "sha256": f"{c}{k}", "captured_at": None,
             "excluded": False, "brightness": v, "contrast": 20.0, "sharpness": 0.5, "noise": 1.0,
             "corrected_pixels": 0} for c, vs in values.items() for k, v in enumerate(vs)]
    return DayMeasurement(day, pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA), dict.fromkeys(values, 0),
                          dict.fromkeys(values, 0.0))


def test_a_line_that_moves_together_is_flagged_where_one_camera_alone_is_not() -> None:
    rng = np.random.default_rng(2)
    cameras = [("lineA", "st1", "cam1"), ("lineA", "st1", "cam2"), ("lineB", "st1", "cam1"), ("lineB", "st1", "cam2")]

    def parts(mean: float) -> list[float]:  # 17 parts whose gray level varies by 4 %
        return list(mean + 5 * rng.standard_normal(17))

    reference_day = measurement(date(2026, 3, 2), {c: parts(128) for c in cameras})
    references = {c: Reference([reference_day.day], 17, {s: Sample.of(reference_day.values(c, s))
                                                          for s in ("brightness", "contrast", "sharpness")}, 0)
                  for c in cameras}
    # Line A's lamp is 4 % dimmer: both its cameras darker. On line B one camera alone looks as dark.
    darker = {c: [v * 0.96 for v in reference_day.values(c, "brightness")] for c in cameras[:3]}
    today = measurement(date(2026, 3, 3), darker | {cameras[3]: reference_day.values(cameras[3], "brightness")})
    rows = {(r["line"], r["camera"]): r for r in compare_with_reference(today, references, DriftConfig()).to_pylist()
            if r["statistic"] == "brightness"}
    assert [rows[("lineA", c)]["in_band"] for c in ("cam1", "cam2")] == [False, False]
    assert rows[("lineA", "cam1")]["line_wide"] and rows[("lineA", "cam2")]["line_wide"]
    assert rows[("lineB", "cam1")]["in_band"] and not rows[("lineB", "cam1")]["line_wide"]
    assert rows[("lineB", "cam2")]["in_band"]


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
