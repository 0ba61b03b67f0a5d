"""The drift statistics on synthetic images and days: stuck pixels found over time, sharpness that follows the
lens and not the lamp, bands sized by the images behind them, and a line whose cameras move together."""

from __future__ import annotations

from datetime import date

import cv2
import numpy as np
import pyarrow as pa
import pytest

from learning.drift import (
    IMAGE_SCHEMA,
    DayMeasurement,
    DriftConfig,
    Reference,
    Sample,
    band,
    camera_day_statistics,
    compare_with_reference,
    image_statistics,
    line_significance,
    stuck_pixel_band,
)


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
