"""Defect examples made on crops of ok images: synthetic anomalies where labels give no pixels, and real
defects cut from masked examples and pasted elsewhere where they do.

With image-level labels a network is told that an image holds a defect, never where; a line delivers a
few hundred such images and thousands of ok ones. An ok crop with an anomaly painted on it is a defect
example whose every pixel is known, and there are as many as there are ok crops. The shapes are generic
(strokes of any curvature and width, wandering forked lines, irregular blobs cut from smooth noise, as in
DRAEM), not a copy of any
line's defects, and their contrast is measured against the crop's own fine texture, so a faint anomaly on a
busy surface is as faint as a real one would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CONTRAST = (1.5, 5.0)  # multiples of the local fine-texture deviation
_FLOOR = 3.0  # gray levels: on a smooth surface the sensor noise is the yardstick


def _stroke(size: int, rng: np.random.Generator) -> np.ndarray:
    length = rng.uniform(0.15, 0.9) * size
    theta = rng.uniform(0, np.pi)
    centre = rng.uniform(0.25, 0.75, 2) * size
    along = np.array([np.cos(theta), np.sin(theta)])
    normal = np.array([-along[1], along[0]])
    p0, p2 = centre - along * length / 2, centre + along * length / 2
    p1 = centre + normal * rng.normal(0, 0.25) * length
    t = np.linspace(0, 1, 32)[:, None]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    canvas = np.zeros((size, size), np.float32)
    thickness = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))  # most scratches are a pixel or two wide
    cv2.polylines(canvas, [np.round(points * 16).astype(np.int32)], False, 1.0, thickness, cv2.LINE_AA, 4)
    return canvas


def _walk(size: int, rng: np.random.Generator) -> np.ndarray:
    """A wandering line that now and then forks: the shape of a crack."""
    canvas = np.zeros((size, size), np.float32)
    walks = [(rng.uniform(0.25, 0.75, 2) * size, rng.uniform(0, 2 * np.pi), int(rng.uniform(0.2, 0.6) * size / 2))]
    forks = 0
    while walks:
        p, heading, steps = walks.pop()
        for left in range(steps, 0, -1):
            heading += rng.normal(0, 0.35)
            q = p + 2.0 * np.array([np.cos(heading), np.sin(heading)])
            if not (0 <= q[0] < size and 0 <= q[1] < size):
                break
            cv2.line(canvas, tuple(np.round(p * 16).astype(int)), tuple(np.round(q * 16).astype(int)), 1.0, 1,
                     cv2.LINE_AA, 4)
            p = q
            if forks < 3 and rng.random() < 0.04:
                forks += 1
                walks.append((p.copy(), heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0), left // 2))
    return canvas


def _blob(size: int, rng: np.random.Generator) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), rng.uniform(2, 8))
    noise /= noise.std() + 1e-6
    window = np.zeros((size, size), np.float32)
    radius = rng.uniform(0.03, 0.2) * size
    centre = rng.uniform(0.25, 0.75, 2) * size
    cv2.circle(window, (int(centre[0]), int(centre[1])), int(radius), 1.0, -1)
    window = cv2.GaussianBlur(window, (0, 0), radius / 2 + 1)
    blob = ((noise + 2.5 * window) > 2.0).astype(np.float32) * (window > 0.05)
    if not blob.any():  # a draw whose noise missed the window: a round blob still makes the example
        blob = (window > 0.5).astype(np.float32)
    return cv2.GaussianBlur(blob, (0, 0), rng.uniform(0.5, 2.0))


def paint_anomaly(crop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 crop with an anomaly painted on, and the anomaly's mask (bool)."""
    size = crop.shape[0]
    canvas = [_stroke, _blob, _walk][int(rng.choice(3, p=[0.4, 0.4, 0.2]))](size, rng)
    if not canvas.any():  # a walk that left the crop at once: a stroke instead
        canvas = _stroke(size, rng)
    canvas /= max(float(canvas.max()), 1e-6)
    mask = canvas > 0.35
    surface = crop.astype(np.float32)
    fine = surface - cv2.GaussianBlur(surface, (0, 0), 8)
    near = cv2.dilate(mask.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0
    deviation = max(_FLOOR, float(fine[near].std()))
    delta = rng.choice([-1.0, 1.0]) * rng.uniform(*CONTRAST) * deviation
    painted = np.clip(surface + delta * canvas, 0, 255).round().astype(np.uint8)
    return painted, mask


@dataclass(frozen=True)
class CutDefect:
    """A real defect lifted off its image: what it adds to the surface under it, and its mask."""

    label: str
    delta: np.ndarray  # float32 gray levels, fading to zero within two pixels of the mask
    mask: np.ndarray  # bool, same shape


def cut_defect(image: np.ndarray, mask: np.ndarray, label: str) -> CutDefect | None:
    """The defect of a masked example as the difference between its pixels and the surface inpainted from
    around it, or None when the mask is empty.

    Defects add to the surface they lie on (a scratch brightens, a stain darkens what is under it), so the
    difference pasted onto another ok crop makes a new example of the real shape, width and profile; a line
    has a few dozen masked defects, and each can land on any of thousands of ok surfaces.
    """
    if not mask.any():
        return None
    # The mask is where the stroke is strong; its soft edge reaches a few pixels further, so the surface is
    # inpainted from beyond that.
    hole = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(hole)
    y0, y1, x0, x1 = max(ys.min() - 4, 0), ys.max() + 5, max(xs.min() - 4, 0), xs.max() + 5
    window = (slice(y0, y1), slice(x0, x1))
    surface = cv2.inpaint(image[window], hole[window], 5, cv2.INPAINT_TELEA)
    # Taken where the defect is and fading within two pixels of it: further out the difference is only the
    # inpainting's guess at the texture, which pasted elsewhere would be a band of foreign texture.
    core = mask[window].astype(np.float32)
    keep = np.maximum(core, np.clip(cv2.GaussianBlur(core, (0, 0), 1.0) * 2, 0, 1))
    delta = (image[window].astype(np.float32) - surface.astype(np.float32)) * keep
    return CutDefect(label, delta, mask[window].copy())


def paste_defect(crop: np.ndarray, defect: CutDefect, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 crop with the cut defect added at a random place, turned and flipped at random (so that a
    random pixel of it lies in the middle half of the crop), and the pasted part of its mask."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    delta, mask = np.rot90(defect.delta, k), np.rot90(defect.mask, k)
    if flip:
        delta, mask = delta[:, ::-1], mask[:, ::-1]
    size = crop.shape[0]
    ys, xs = np.nonzero(mask)
    pick = int(rng.integers(len(ys)))
    target = rng.uniform(0.25, 0.75, 2) * size
    top, left = int(target[0]) - int(ys[pick]), int(target[1]) - int(xs[pick])
    # The overlap of the pasted patch with the crop, in crop and in patch coordinates.
    c0, c1 = max(top, 0), min(top + delta.shape[0], size)
    d0, d1 = max(left, 0), min(left + delta.shape[1], size)
    patch = (slice(c0 - top, c1 - top), slice(d0 - left, d1 - left))
    out = crop.astype(np.float32)
    out[c0:c1, d0:d1] += delta[patch] * np.float32(rng.uniform(0.8, 1.2))
    pasted = np.zeros(crop.shape, bool)
    pasted[c0:c1, d0:d1] = mask[patch]
    return np.clip(out, 0, 255).round().astype(np.uint8), pasted
