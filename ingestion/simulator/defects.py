"""Defects drawn onto a surface (scratch, spot, crack) and the ellipse a labeler would draw around them."""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import cv2
import numpy as np

DEFECT_CLASSES = ("scratch", "spot", "crack")

_SHIFT = 4  # cv2 drawing with 4 fractional bits, so sub-pixel geometry survives rounding
_ONE = 1 << _SHIFT
_MASK_LEVEL = 90  # of 255: where a soft stroke counts as defect in the mask


class Ellipse(NamedTuple):
    """A label region in image pixels; `angle` in degrees as cv2.ellipse takes it (x right, y down)."""

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float

    def to_json(self) -> str:
        return json.dumps({k: round(v, 1) for k, v in self._asdict().items()})

    @classmethod
    def from_json(cls, text: str) -> Ellipse:
        d = json.loads(text)
        return cls(d["cx"], d["cy"], d["rx"], d["ry"], d["angle"])

    def bounding_box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the rotated ellipse."""
        t = math.radians(self.angle)
        hw = math.hypot(self.rx * math.cos(t), self.ry * math.sin(t))
        hh = math.hypot(self.rx * math.sin(t), self.ry * math.cos(t))
        return self.cx - hw, self.cy - hh, self.cx + hw, self.cy + hh


def _fixed(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p) * _ONE).astype(np.int32)


def _scratch(canvas: np.ndarray, rng: np.random.Generator) -> float:
    size = canvas.shape[0]
    length = rng.uniform(0.25, 0.6) * size
    theta = rng.uniform(0, np.pi)
    centre = rng.uniform(0.3, 0.7, 2) * size
    along = np.array([np.cos(theta), np.sin(theta)])
    normal = np.array([-along[1], along[0]])
    p0, p2 = centre - along * length / 2, centre + along * length / 2
    p1 = centre + normal * rng.normal(0, 0.12) * length  # most scratches are nearly straight, some curve
    t = np.linspace(0, 1, 48)[:, None]
    pts = np.clip((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2, 2, size - 3)
    thickness = 1 if size < 384 else int(rng.integers(1, 3))
    cv2.polylines(canvas, [_fixed(pts)], False, 255, thickness, cv2.LINE_AA, _SHIFT)
    sign = 1.0 if rng.random() < 0.7 else -1.0  # fresh scratches mostly expose bright metal
    return sign * rng.uniform(40, 65)


def _spot(canvas: np.ndarray, rng: np.random.Generator) -> float:
    size = canvas.shape[0]
    r1 = max(3.0, rng.uniform(0.015, 0.05) * size)
    r2 = r1 * rng.uniform(0.5, 1.0)
    centre = rng.uniform(0.15, 0.85, 2) * size
    cv2.ellipse(
        canvas,
        tuple(_fixed(centre)),
        tuple(_fixed((r1, r2))),
        rng.uniform(0, 180),
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
        _SHIFT,
    )
    # Stains fade out towards the rim rather than ending in a hard edge.
    canvas[:] = cv2.GaussianBlur(canvas, (0, 0), max(0.8, r2 / 4))
    sign = -1.0 if rng.random() < 0.6 else 1.0
    return sign * rng.uniform(30, 55)


def _crack(canvas: np.ndarray, rng: np.random.Generator) -> float:
    """A random walk that now and then forks; each branch walks on with the steps left."""
    size = canvas.shape[0]
    thickness = 1 if size < 384 else int(rng.integers(1, 3))
    step = 2.0
    walks = [
        (
            rng.uniform(0.25, 0.75, 2) * size,
            rng.uniform(0, 2 * np.pi),
            int(rng.uniform(0.15, 0.4) * size / step),
        )
    ]
    branches = 0
    while walks:
        p, heading, steps = walks.pop()
        for remaining in range(steps, 0, -1):
            heading += rng.normal(0, 0.3)
            q = p + step * np.array([np.cos(heading), np.sin(heading)])
            if not (2 <= q[0] <= size - 3 and 2 <= q[1] <= size - 3):
                break
            cv2.line(canvas, tuple(_fixed(p)), tuple(_fixed(q)), 255, thickness, cv2.LINE_AA, _SHIFT)
            p = q
            if branches < 4 and rng.random() < 0.03:
                branches += 1
                fork = heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
                walks.append((p.copy(), fork, int(remaining * rng.uniform(0.3, 0.6))))
    return -rng.uniform(45, 75)  # cracks are shadowed, always dark


_DRAWERS = {"scratch": _scratch, "spot": _spot, "crack": _crack}


# Contrast of a defect on a real surface, in multiples of the texture's local deviation around it (DAGM's
# defects are a few times the texture's deviation): thin strokes a little stronger than areas, which gather
# more pixels of evidence.
LOCAL_CONTRAST = {"scratch": (2.5, 4.5), "spot": (2.0, 4.0), "crack": (2.5, 4.5)}
_LOCAL_FLOOR = 3.0  # gray levels: on a smooth plain the sensor's noise is what a defect stands out from


def local_deviation(surface: np.ndarray, canvas: np.ndarray) -> float:
    """Deviation of the surface's fine texture (what an 8 px blur removes) in the neighbourhood of the
    stroke on `canvas`: the yardstick a defect is faint or strong against."""
    near = cv2.dilate((canvas > 0).astype(np.uint8), np.ones((17, 17), np.uint8)) > 0
    fine = surface - cv2.GaussianBlur(surface, (0, 0), 8)
    return max(_LOCAL_FLOOR, float(fine[near].std()))


def draw_defect(surface: np.ndarray, kind: str, rng: np.random.Generator, *, relative: bool = False
                ) -> np.ndarray:
    """Add a defect of class `kind` to `surface` in place; return its pixel mask (uint8, 0/255). With
    `relative`, its contrast is a few times the local texture's deviation (`LOCAL_CONTRAST`) instead of the
    fixed gray levels drawn for the procedural textures, whose deviation is the same everywhere."""
    canvas = np.zeros(surface.shape, np.uint8)
    delta = _DRAWERS[kind](canvas, rng)
    if relative:
        delta = math.copysign(float(rng.uniform(*LOCAL_CONTRAST[kind])) * local_deviation(surface, canvas), delta)
    surface += np.float32(delta / 255.0) * canvas
    mask = canvas >= _MASK_LEVEL
    if not mask.any():  # a stroke too faint everywhere still left a mark somewhere
        mask = canvas > 0
    return mask.astype(np.uint8) * 255


def ellipse_around(mask: np.ndarray) -> Ellipse:
    """The ellipse that circumscribes the mask's tight rectangle along its principal axes."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    mean = pts.mean(axis=0)
    if len(pts) > 1:
        _, vecs = np.linalg.eigh(np.cov(pts - mean, rowvar=False))
        major = vecs[:, 1]
    else:
        major = np.array([1.0, 0.0])
    minor = np.array([-major[1], major[0]])
    d = pts - mean
    pu, pv = d @ major, d @ minor
    # Half-extent of the pixel squares, so a one-pixel-wide scratch still gets a finite width.
    a = (pu.max() - pu.min()) / 2 + 0.5
    b = (pv.max() - pv.min()) / 2 + 0.5
    centre = mean + major * (pu.max() + pu.min()) / 2 + minor * (pv.max() + pv.min()) / 2
    angle = math.degrees(math.atan2(major[1], major[0])) % 180.0
    # The ellipse through the rectangle's corners has half-axes sqrt(2) times its half-sides.
    return Ellipse(float(centre[0]), float(centre[1]), a * math.sqrt(2), b * math.sqrt(2), angle)
