"""Images as the pages draw them: enlarged, any bit depth, with regions and masks over them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from apps.ui.overlays import LABEL_COLOUR, PREDICTION_COLOUR, draw_regions


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_a_small_grey_image_is_enlarged_with_the_regions_outlined() -> None:
    grey = np.full((64, 32), 100, np.uint8)
    drawn = decoded(draw_regions(png(grey), [{"shape": "ellipse", "cx": 16, "cy": 16, "rx": 8, "ry": 4, "angle": 0}],
                                 predicted=[{"shape": "box", "x0": 2, "y0": 40, "x1": 20, "y1": 60}]))
    assert drawn.shape == (1024, 512, 3)  # 16 times: the short side reaches 512
    assert tuple(drawn[16 * 16, 24 * 16 - 1]) == LABEL_COLOUR  # the ellipse's right end
    assert tuple(drawn[50 * 16, 2 * 16]) == PREDICTION_COLOUR  # the box's left side
    assert tuple(drawn[8, 8]) == (100, 100, 100)  # untouched elsewhere


def test_sixteen_bit_images_and_masks() -> None:
    deep = np.zeros((512, 512), np.uint16)
    deep[:, 256:] = 4000
    mask = np.zeros((128, 128), np.uint8)
    mask[:10, :10] = 255  # a mask at another resolution covers the same part of the image
    drawn = decoded(draw_regions(png(deep), mask=png(mask)))
    assert drawn.shape == (512, 512, 3)
    assert drawn[300, 300, 0] == 4000 >> 8 and drawn[300, 10, 0] == 0  # the high byte, as every reader sees it (imaging.gray)
    b, g, r = drawn[5, 5]
    assert r > 100 and b == g == 0  # tinted red


def test_bytes_that_are_no_image_say_so() -> None:
    with pytest.raises(ValueError, match="do not decode"):
        draw_regions(b"not an image")
