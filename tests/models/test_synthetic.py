"""Defect examples made on ok crops (real defects cut and pasted, synthetic anomalies), and imitated drift."""

from __future__ import annotations

import cv2
import numpy as np

from models.data import SampleSet, imitate_drift
from models.synthetic import cut_defect, paste_defect
from models.training import _crop_batch, _defect_bank


def _scratched(surface_level: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth ramp with a dark one-pixel scratch (20 gray levels) drawn across it, and the scratch's mask."""
    ramp = np.tile(np.linspace(surface_level - 30, surface_level + 30, 96, dtype=np.float32), (96, 1))
    canvas = np.zeros((96, 96), np.uint8)
    cv2.line(canvas, (10, 20), (80, 70), 255, 1)
    image = np.clip(ramp - 20 * (canvas / 255.0), 0, 255).round().astype(np.uint8)
    return image, canvas > 0


def test_a_cut_defect_pasted_elsewhere_carries_the_defect_and_nothing_else() -> None:
    image, mask = _scratched(140)
    defect = cut_defect(image, mask, "scratch")
    assert defect is not None and defect.label == "scratch" and defect.mask.sum() == mask.sum()
    # The ramp under the scratch is inpainted away: what is left is the scratch's own -20.
    assert np.median(defect.delta[defect.mask]) < -15
    assert np.abs(defect.delta[~cv2.dilate(defect.mask.astype(np.uint8), np.ones((7, 7))).astype(bool)]).max() < 1

    flat = np.full((64, 64), 90, np.uint8)
    pasted, where = paste_defect(flat, defect, np.random.default_rng(0))
    assert where.any() and where.shape == flat.shape
    changed = pasted.astype(int) - 90
    assert changed[where].max() < -10  # darker where the mask landed, by 0.8-1.2 times the scratch
    near = cv2.dilate(where.astype(np.uint8), np.ones((7, 7))).astype(bool)
    assert not changed[~near].any()  # and untouched away from it


def test_nothing_is_cut_from_an_empty_mask() -> None:
    image, _ = _scratched(100)
    assert cut_defect(image, np.zeros(image.shape, bool), "spot") is None


def test_imitated_drift_blurs_and_sticks_pixels_only_when_drawn() -> None:
    rng = np.random.default_rng(1)
    crop = np.where(np.indices((64, 64)).sum(axis=0) % 4 < 2, 110, 150).astype(np.uint8)  # sharp stripes
    assert np.array_equal(imitate_drift(crop, rng, 0.0), crop)
    drifted = imitate_drift(crop, rng, 1.0)
    stuck = (drifted == 0) | (drifted == 255)
    assert 1 <= stuck.sum() <= 8
    sharpness = cv2.Laplacian(crop, cv2.CV_64F).var()
    assert cv2.Laplacian(np.where(stuck, 130, drifted).astype(np.uint8), cv2.CV_64F).var() < 0.5 * sharpness


def test_ok_crops_get_the_real_defects_of_masked_samples(tiny_samples: SampleSet) -> None:
    train = tiny_samples.split("train")
    bank = _defect_bank(train)
    masked = [s for i, s in enumerate(train) if s.is_defect and train.mask(i) is not None and train.mask(i).any()]
    assert len(bank) == len(masked) > 0
    ok = [i for i, s in enumerate(train) if not s.is_defect][:8]
    crops = _crop_batch(train, ok, 64, 0.25, np.random.default_rng(2), synthetic_fraction=0.999, bank=bank,
                        pasted_fraction=1.0)
    assert all(label in {b.label for b in bank} for label in crops.pasted)
    assert crops.defect.tolist() == [1.0] * 8 and crops.typed.all() and crops.known.all()
    assert all(crops.masks[k].any() for k in range(8))
