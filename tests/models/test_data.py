"""Manifest rows become samples; crops of defect images hold their defect."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from models.data import Box, ManifestError, SampleSet, crop_centre, region_boxes, to_input


def _manifest(**changes: list) -> pa.Table:
    columns = {
        "sha256": ["a", "b"],
        "class": ["ok", "spot"],
        "split": ["train", "test"],
        "weight": [0.6, 3.0],
    }
    return pa.table(columns | changes)


def test_samples_from_manifest_keep_classes_splits_and_weights() -> None:
    samples = SampleSet.from_manifest(_manifest(), lambda sha: np.zeros((8, 8), np.uint8))
    assert [(s.sha256, s.label, s.split, s.weight, s.is_defect) for s in samples] == [
        ("a", "ok", "train", 0.6, False),
        ("b", "spot", "test", 3.0, True),
    ]
    assert [s.sha256 for s in samples.split("test")] == ["b"]
    assert samples.mask(0) is None


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("split", ["train", "holdout"], "split 'holdout'"),
        ("weight", [1.0, float("nan")], "weight nan"),
        ("class", ["ok", None], "has no class"),
    ],
)
def test_bad_manifest_rows_are_named(column: str, values: list, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        SampleSet.from_manifest(_manifest(**{column: values}), lambda sha: np.zeros((8, 8), np.uint8))


def test_missing_columns_are_listed() -> None:
    with pytest.raises(ManifestError, match="weight"):
        SampleSet.from_manifest(pa.table({"sha256": ["a"], "class": ["ok"], "split": ["train"]}), print)


def test_region_boxes_of_each_shape() -> None:
    regions = [
        {"shape": "ellipse", "cx": 50, "cy": 40, "rx": 10, "ry": 4, "angle": 90},
        {"shape": "box", "x0": 1, "y0": 2, "x1": 3, "y1": 4},
        {"shape": "polygon", "points": [[5, 9], [7, 1], [6, 3]]},
    ]
    boxes = region_boxes(json.dumps(regions))
    assert boxes[0] == pytest.approx(Box(46, 30, 54, 50))  # turned upright: 4 wide, 10 high
    assert boxes[1:] == (Box(1, 2, 3, 4), Box(5, 1, 7, 9))
    assert region_boxes(None) == ()


def test_defect_crops_contain_the_defect() -> None:
    mask = np.zeros((512, 512), bool)
    mask[400:403, 20:60] = True  # a short scratch near the bottom-left corner
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left = crop_centre(mask.shape, np.nonzero(mask), (), 128, 0.25, rng)
        assert 0 <= top <= 384 and 0 <= left <= 384
        assert mask[top : top + 128, left : left + 128].any()
    top, left = crop_centre(mask.shape, None, (Box(300, 300, 310, 310),), 64, 0.0, rng)
    assert top <= 305 <= top + 64 and left <= 305 <= left + 64


def test_region_crops_centre_on_the_ellipse_not_its_box() -> None:
    # A long thin ellipse along the diagonal (a scratch's region): its bounding box is mostly empty corners.
    (box,) = region_boxes(json.dumps([{"cx": 256, "cy": 256, "rx": 150, "ry": 3, "angle": 45}]))
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left = crop_centre((512, 512), None, (box,), 32, 0.0, rng)
        y, x = top + 16, left + 16  # the crop's centre
        assert abs((x - 256) - (y - 256)) / np.sqrt(2) <= 3 + 1.5, (y, x)  # within the ellipse's half-width


def test_to_input_normalisation() -> None:
    x = to_input(np.array([[0, 128, 255]], np.uint8))
    assert x.shape == (1, 1, 1, 3)
    assert x.flatten().tolist() == pytest.approx([-2.0, (128 / 255 - 0.5) / 0.25, 2.0], abs=1e-6)
