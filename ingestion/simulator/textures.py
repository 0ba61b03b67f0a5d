"""Grayscale surface textures: procedural ones in the spirit of DAGM 2007 (filtered noise, weave, granular,
brushed), or windows of real photographs (`ingestion.simulator.photos`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ingestion.simulator.photos import photo_window

TEXTURE_MODELS = ("noise", "weave", "granular", "brushed")


@dataclass(frozen=True)
class TextureSpec:
    """The surface one line produces; lengths in pixels, angles in degrees (x right, y down)."""

    model: str
    mean: float  # gray level of the lit surface
    contrast: float  # standard deviation of the texture in gray levels
    scale: float  # correlation length across the grain
    elongation: float  # correlation length along the grain, as a multiple of `scale`
    angle: float  # grain or weave direction
    period: float  # weave thread period
    density: float  # grains per pixel
    photo: str | None = None  # model "photo": the photograph (`photos.PHOTOGRAPHS`) the line's parts show

    @property
    def is_photo(self) -> bool:
        return self.model == "photo"


def line_texture(rng: np.random.Generator, line_idx: int, surfaces: tuple[str, ...] | None = None
                 ) -> TextureSpec:
    """Pick the texture of a line: the model cycles with the line number, parameters come from `rng`. With
    `surfaces` (photograph names), the line shows the photograph its number picks, wrapping round."""
    if surfaces:
        return TextureSpec(model="photo", mean=float(rng.uniform(118, 138)), contrast=float(rng.uniform(16, 22)),
                           scale=1.0, elongation=1.0, angle=0.0, period=0.0, density=0.0,
                           photo=surfaces[line_idx % len(surfaces)])
    model = TEXTURE_MODELS[line_idx % len(TEXTURE_MODELS)]
    return TextureSpec(
        model=model,
        mean=float(rng.uniform(118, 138)),
        contrast=float(rng.uniform(16, 22)),
        scale=float(rng.uniform(1.0, 2.5)),
        elongation=float(rng.uniform(1.5, 4.0) if model == "noise" else rng.uniform(20, 40)),
        angle=float(rng.uniform(0, 180)),
        period=float(rng.uniform(6, 9)),
        density=float(rng.uniform(0.03, 0.08)),
    )


@lru_cache(maxsize=4)
def _frequencies(size: int) -> tuple[np.ndarray, np.ndarray]:
    fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    return fx, fy


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


def _field(rng: np.random.Generator, size: int, along: float, across: float, angle: float) -> np.ndarray:
    """A standardized random field whose correlation lengths are `along` and `across` direction `angle`.

    White noise is drawn straight in the frequency domain and shaped by an oriented Gaussian there: cv2 only
    blurs axis-aligned, and skipping the forward FFT halves the cost. Uniform draws are enough, since the
    filter sums so many of them that the field comes out Gaussian.
    """
    fx, fy = _frequencies(size)
    t = np.deg2rad(angle)
    c, s = np.float32(np.cos(t)), np.float32(np.sin(t))
    fu = fx * c + fy * s
    fv = fy * c - fx * s
    gain = np.exp(
        np.float32(-2 * np.pi**2) * (np.float32(along**2) * fu * fu + np.float32(across**2) * fv * fv)
    )
    spectrum = np.empty(gain.shape, np.complex64)
    spectrum.real = rng.random(gain.shape, dtype=np.float32) - np.float32(0.5)
    spectrum.imag = rng.random(gain.shape, dtype=np.float32) - np.float32(0.5)
    return _standardize(np.fft.irfft2(spectrum * gain, s=(size, size)).astype(np.float32))


def _standardize(t: np.ndarray) -> np.ndarray:
    return (t - t.mean()) / (t.std() + 1e-6)


def render_texture(spec: TextureSpec, size: int, rng: np.random.Generator) -> np.ndarray:
    """One camera's view of one part's surface, as float32 gray levels."""

    def field(along: float, across: float, angle: float = 0.0) -> np.ndarray:
        return _field(rng, size, along, across, angle)

    # Parts never sit perfectly aligned in the fixture, so the grain direction wanders a little.
    angle = spec.angle + float(rng.normal(0, 2))
    if spec.model == "noise":
        t = 0.8 * field(spec.scale * spec.elongation, spec.scale, angle) + 0.45 * field(
            4 * spec.scale, 4 * spec.scale
        )
    elif spec.model == "brushed":
        t = field(spec.scale * spec.elongation, 0.7, angle) + 0.35 * field(6, 6)
    elif spec.model == "weave":
        xs, ys = _grid(size)
        a = np.deg2rad(angle)
        u = xs * np.float32(np.cos(a)) + ys * np.float32(np.sin(a))
        v = ys * np.float32(np.cos(a)) - xs * np.float32(np.sin(a))
        # Threads wander: a smooth phase warp keeps the weave from looking machine-perfect.
        k = np.float32(2 * np.pi / spec.period)
        g1 = np.cos(k * u + np.float32(1.2) * field(10, 10))
        g2 = np.cos(k * v + np.float32(1.2) * field(10, 10))
        t = g1 + g2 + 0.6 * g1 * g2 + 0.5 * field(0.8, 0.8)
    elif spec.model == "photo":
        assert spec.photo is not None
        t = photo_window(spec.photo, size, rng)
    elif spec.model == "granular":
        sparse = rng.random((size, size), dtype=np.float32) < spec.density
        grains = (rng.random((size, size), dtype=np.float32) - np.float32(0.5)) * sparse
        grains = cv2.GaussianBlur(grains, (0, 0), 0.6 + 0.3 * spec.scale)
        # Soft-clip the rare heavy grains so they do not all saturate to black and white.
        t = 2.5 * np.tanh(_standardize(grains) / np.float32(2.5)) + 0.5 * field(16, 16)
    else:
        raise ValueError(f"unknown texture model {spec.model!r}")
    mean = spec.mean + float(rng.normal(0, 3))  # part-to-part variation of the surface finish
    # A photograph keeps the photograph's scale, so a window of a smooth plain stays smooth.
    t = t if spec.is_photo else _standardize(t)
    return (np.float32(mean) + np.float32(spec.contrast) * t).astype(np.float32)
