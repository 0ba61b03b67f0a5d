"""Real photographed surfaces as the simulator's texture: windows of photographs shipped in installed wheels,
moved, zoomed and turned per part, with defects as faint as a few times the local texture's deviation."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingestion.simulated_factory import simulate_factory
from ingestion.simulator.photos import DEFAULT_SURFACES, PHOTOGRAPHS, RESERVED, photo_window, photograph


def test_every_listed_photograph_loads_from_its_wheel_and_the_reserved_ones_are_never_defaults() -> None:
    for name in PHOTOGRAPHS:
        image = photograph(name)
        assert image.ndim == 2 and min(image.shape) >= 300
        assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1) < 1e-3
    assert not set(RESERVED) & set(DEFAULT_SURFACES)


def test_each_part_shows_its_own_window_and_the_same_seed_the_same_one() -> None:
    a = photo_window("moon", 128, np.random.default_rng(1))
    b = photo_window("moon", 128, np.random.default_rng(2))
    assert a.shape == (128, 128) and not np.allclose(a, b)
    assert np.array_equal(a, photo_window("moon", 128, np.random.default_rng(1)))


def test_an_unknown_surface_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown surface photograph.*moon"):
        simulate_factory(tmp_path / "f", days=1, seed=0, size="tiny", image_size=128, surfaces=("marble",))


def test_defects_on_a_photograph_are_a_few_times_the_local_deviation(tmp_path: Path) -> None:
    summary = simulate_factory(tmp_path / "f", days=3, seed=3, size="small", image_size=256,
                               surfaces=("moon", "aero", "retina"), workers=1)
    with summary.truth_path.open(encoding="utf-8", newline="") as f:
        defective = [r for r in csv.DictReader(f) if r["true_label"] in ("scratch", "crack")]
    assert defective
    ratios = []
    for row in defective:
        image = cv2.imread(str(summary.out / row["path"]), cv2.IMREAD_GRAYSCALE)
        if image is None:  # a planted broken file
            continue
        mask = cv2.imread(str(summary.out / row["path"].replace(".png", "_mask.png")), cv2.IMREAD_GRAYSCALE) > 0
        fine = image.astype(np.float32) - cv2.GaussianBlur(image.astype(np.float32), (0, 0), 8)
        ring = (cv2.dilate(mask.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0) & ~mask
        ratios.append(abs(float(fine[mask].mean())) / float(fine[ring].std()))
    # Faint but there: thin strokes drawn at 2.5-4.5 local deviations, blurred a little by the optics.
    assert 1.0 < float(np.median(ratios)) < 5.0
