"""Images as the pages show them: any bit depth made displayable, enlarged so outlines stay sharp, with label
regions (ellipses, boxes, polygons) and defect masks drawn over them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import cv2
import numpy as np

from imaging.gray import bgr8, decode

LABEL_COLOUR = (0, 200, 255)  # BGR amber: what a human marked
PREDICTION_COLOUR = (255, 80, 255)  # BGR magenta: what the engine saw
MASK_COLOUR = np.array([0, 0, 255], dtype=np.float32)  # BGR red


def draw_regions(image: bytes, regions: Iterable[Mapping[str, Any]] = (), *,
                 predicted: Iterable[Mapping[str, Any]] = (), mask: bytes | None = None, min_side: int = 512) -> bytes:
    """``image`` (any bit depth) enlarged to at least ``min_side`` on its short side (nearest neighbour: pixels
    stay pixels, outlines stay sharp), the mask tinted red, a human's ``regions`` outlined in amber and the
    engine's ``predicted`` ones in magenta, as PNG bytes. Regions are in the image's own pixels, as
    LabelRecorded and PredictionRecorded give them."""
    canvas = bgr8(decode(image))
    scale = max(1, -(-min_side // min(canvas.shape[:2])))
    if scale > 1:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if mask is not None:
        marked = cv2.imdecode(np.frombuffer(mask, np.uint8), cv2.IMREAD_GRAYSCALE)
        if marked is not None:
            marked = cv2.resize(marked, canvas.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
            canvas[marked] = (0.55 * canvas[marked] + 0.45 * MASK_COLOUR).astype(np.uint8)
    for found, colour in ((regions, LABEL_COLOUR), (predicted, PREDICTION_COLOUR)):
        for region in found:
            _outline(canvas, region, scale, colour, thickness=scale)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise ValueError("could not encode the image")
    return png.tobytes()


def _outline(canvas: np.ndarray, region: Mapping[str, Any], scale: int, colour: tuple[int, int, int], *,
             thickness: int) -> None:
    def px(value: float) -> int:
        return round(value * scale)

    shape = region.get("shape")
    if shape == "ellipse" and region.get("cx") is not None:
        axes = (max(1, px(region.get("rx") or 0)), max(1, px(region.get("ry") or 0)))
        cv2.ellipse(canvas, (px(region["cx"]), px(region["cy"])), axes, float(region.get("angle") or 0), 0, 360,
                    colour, thickness, cv2.LINE_AA)
    elif shape == "box" and region.get("x0") is not None:
        cv2.rectangle(canvas, (px(region["x0"]), px(region["y0"])), (px(region["x1"]), px(region["y1"])), colour,
                      thickness, cv2.LINE_AA)
    elif shape == "polygon" and region.get("points"):
        points = np.array([[px(x), px(y)] for x, y in region["points"]], dtype=np.int32)
        cv2.polylines(canvas, [points], True, colour, thickness, cv2.LINE_AA)
