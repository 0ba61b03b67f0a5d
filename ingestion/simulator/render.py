"""Turning one planned image into pixels and files; runs in worker processes, so jobs carry all they need."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ingestion.simulator.defects import Ellipse, draw_defect, ellipse_around
from ingestion.simulator.drift import stuck_pixel_map
from ingestion.simulator.plan import Stream, rng_for
from ingestion.simulator.textures import TextureSpec, render_texture

SENSOR_NOISE = 1.0  # gray levels of read noise
# Rendered gray levels stay inside this range, so exact 0 and 255 only ever come from stuck pixels.
GRAY_MIN, GRAY_MAX = 6, 249
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # textured noise barely compresses; favour speed


@dataclass(frozen=True)
class RenderJob:
    index: int
    seed: int
    key: tuple[int, int, int, int]  # (day, line, part, camera): seeds the image's own random stream
    sensor: tuple[int, int, int]  # (line, station, camera): seeds where this sensor's stuck pixels sit
    size: int
    texture: TextureSpec
    defect: str | None
    brightness: float
    blur_sigma: float
    stuck_pixels: int
    image_path: Path
    mask_path: Path | None


@dataclass(frozen=True)
class RenderResult:
    index: int
    defect_area: int
    ellipse: Ellipse | None


def render(job: RenderJob) -> tuple[np.ndarray, np.ndarray | None]:
    """The image as the camera delivers it, and the defect's mask (None for an ok image)."""
    rng = rng_for(job.seed, Stream.RENDER, *job.key)
    scene = render_texture(job.texture, job.size, rng)
    mask = draw_defect(scene, job.defect, rng, relative=job.texture.is_photo) if job.defect else None
    # Order follows the light path: lamp on the scene, dust on the lens, then noise on the sensor.
    scene *= np.float32(job.brightness)
    if job.blur_sigma > 0:
        scene = cv2.GaussianBlur(scene, (0, 0), job.blur_sigma)
    # Triangular noise (sum of two uniforms) looks like Gaussian read noise at a fifth of the cost.
    noise = (
        rng.random(scene.shape, dtype=np.float32) + rng.random(scene.shape, dtype=np.float32) - np.float32(1)
    )
    scene += noise * np.float32(SENSOR_NOISE * np.sqrt(6))
    image = np.clip(np.rint(scene), GRAY_MIN, GRAY_MAX).astype(np.uint8)
    if job.stuck_pixels:
        rows, cols, values = stuck_pixel_map(
            rng_for(job.seed, Stream.SENSOR, *job.sensor), job.size, job.stuck_pixels
        )
        image[rows, cols] = values
    return image, mask


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image, PNG_PARAMS)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())


def render_batch(jobs: list[RenderJob]) -> list[RenderResult]:
    """Render and write a batch of images with their masks; returns what the labels need."""
    results = []
    for job in jobs:
        image, mask = render(job)
        _write_png(job.image_path, image)
        if mask is None:
            results.append(RenderResult(job.index, 0, None))
            continue
        assert job.mask_path is not None
        _write_png(job.mask_path, mask)
        results.append(RenderResult(job.index, int(np.count_nonzero(mask)), ellipse_around(mask)))
    return results


def init_worker() -> None:
    # One process per core already; OpenCV's own thread pool would only oversubscribe.
    cv2.setNumThreads(1)
