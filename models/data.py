"""Training samples read from a dataset version's manifest, and the crops the networks learn from.

The catalog stays outside: images and masks arrive through `load_image(sha256)` and `load_mask(mask_uri)`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import pyarrow as pa
import torch

from catalog.ontology import OK_CLASS

SPLITS = ("train", "validation", "test")

# The networks and their ONNX files take x = (gray / 255 - GRAY_MEAN) / GRAY_STD, float32 N x 1 x H x W.
# Fixed constants rather than per-image statistics, so a server needs nothing but these two numbers.
GRAY_MEAN = 0.5
GRAY_STD = 0.25

_MANIFEST_COLUMNS = ("sha256", "class", "split", "weight")

LoadImage = Callable[[str], np.ndarray]
LoadMask = Callable[[str], "np.ndarray | None"]


class ManifestError(ValueError):
    """The manifest cannot be trained on as it stands; the message names the row and what to fix."""


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 gray images, (H, W) or (N, H, W), as the float32 N x 1 x H x W tensor the networks take."""
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(
            f"expected uint8 images of shape (H, W) or (N, H, W), got {array.dtype} {array.shape}"
        )
    if array.ndim == 2:
        array = array[None]
    x = torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32)[:, None]
    return (x / 255.0 - GRAY_MEAN) / GRAY_STD


class Standardise(torch.nn.Module):
    """Each input image scaled to zero mean and unit deviation, the first layer of both networks. A lamp that
    dims by 20 % scales texture and defect alike; seen this way nothing changes, where a network fed raw gray
    levels would have to learn that invariance from examples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float64: summing a quarter million float32 values in different orders (torch, ONNX Runtime)
        # moves the mean by ~1e-5, and the deeper layers amplify that past the export's parity tolerance.
        d = x.double()
        mean = d.mean(dim=(2, 3), keepdim=True)
        std = (d - mean).square().mean(dim=(2, 3), keepdim=True).add(1e-6).sqrt()
        return ((d - mean) / std).to(x.dtype)


@dataclass(frozen=True)
class Box:
    """A defect's bounding box in image pixels, (x0, y0) top left, (x1, y1) bottom right; for an ellipse,
    the ellipse too, (cx, cy, rx, ry, angle in degrees as cv2 draws it)."""

    x0: float
    y0: float
    x1: float
    y1: float
    ellipse: tuple[float, float, float, float, float] | None = field(default=None, compare=False)


def region_boxes(regions: str | None) -> tuple[Box, ...]:
    """The bounding boxes of a manifest's `regions` JSON (ellipses, boxes or polygons, as catalog Region)."""
    if not regions:
        return ()
    boxes = []
    for r in json.loads(regions):
        shape = r.get("shape", "ellipse")
        if shape == "ellipse":
            t = math.radians(r.get("angle") or 0.0)
            rx, ry = r["rx"], r["ry"]
            hw = math.hypot(rx * math.cos(t), ry * math.sin(t))
            hh = math.hypot(rx * math.sin(t), ry * math.cos(t))
            boxes.append(Box(r["cx"] - hw, r["cy"] - hh, r["cx"] + hw, r["cy"] + hh,
                             ellipse=(r["cx"], r["cy"], rx, ry, r.get("angle") or 0.0)))
        elif shape == "box":
            boxes.append(Box(r["x0"], r["y0"], r["x1"], r["y1"]))
        elif shape == "polygon":
            xs, ys = zip(*r["points"], strict=True)
            boxes.append(Box(min(xs), min(ys), max(xs), max(ys)))
        else:
            raise ManifestError(f"unknown region shape {shape!r}; expected ellipse, box or polygon")
    return tuple(boxes)


@dataclass(frozen=True)
class Sample:
    """One manifest row as training sees it: the image's hash, its class and where its defect is."""

    sha256: str
    label: str
    split: str
    weight: float = 1.0
    part_id: str | None = None
    mask_uri: str | None = None
    boxes: tuple[Box, ...] = ()

    @property
    def is_defect(self) -> bool:
        return self.label != OK_CLASS


class SampleSet(Sequence[Sample]):
    """Samples with the means to read their pixels; decoded images are kept in memory when `cache` is set.

    Subsets made by `split` share the loaders and the cache, so an image is decoded once per training run.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        load_image: LoadImage,
        load_mask: LoadMask | None = None,
        *,
        cache: bool = True,
    ) -> None:
        self._samples = tuple(samples)
        self._load_image = load_image
        self._load_mask = load_mask
        self._images: dict[str, np.ndarray] | None = {} if cache else None
        self._masks: dict[str, np.ndarray | None] | None = {} if cache else None
        self._pixels: dict[str, tuple[np.ndarray, np.ndarray] | None] | None = {} if cache else None

    @classmethod
    def from_manifest(
        cls,
        manifest: pa.Table,
        load_image: LoadImage,
        load_mask: LoadMask | None = None,
        *,
        cache: bool = True,
    ) -> SampleSet:
        """Samples from a dataset version's manifest (columns sha256, class, split, weight, and optionally
        part_id, mask_uri, regions)."""
        missing = [c for c in _MANIFEST_COLUMNS if c not in manifest.column_names]
        if missing:
            raise ManifestError(f"manifest lacks column(s) {missing}; it needs {list(_MANIFEST_COLUMNS)}")
        rows = manifest.to_pylist()
        samples = []
        for i, row in enumerate(rows):
            where = f"manifest row {i} (sha256 {row['sha256']})"
            if not row["class"]:
                raise ManifestError(
                    f"{where} has no class; exclude unlabeled images from the dataset version"
                )
            if row["split"] not in SPLITS:
                raise ManifestError(f"{where} has split {row['split']!r}; expected one of {SPLITS}")
            weight = row["weight"]
            if weight is None or not math.isfinite(weight) or weight <= 0:
                raise ManifestError(f"{where} has weight {weight!r}; class weights must be finite and > 0")
            try:
                boxes = region_boxes(row.get("regions"))
            except (ValueError, KeyError, TypeError) as exc:
                raise ManifestError(f"{where} has unreadable regions: {exc}") from None
            samples.append(
                Sample(
                    sha256=row["sha256"],
                    label=row["class"],
                    split=row["split"],
                    weight=float(weight),
                    part_id=row.get("part_id"),
                    mask_uri=row.get("mask_uri"),
                    boxes=boxes,
                )
            )
        return cls(samples, load_image, load_mask, cache=cache)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return self._samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def subset(self, keep: Callable[[Sample], bool]) -> SampleSet:
        chosen = SampleSet([s for s in self._samples if keep(s)], self._load_image, self._load_mask)
        chosen._images, chosen._masks, chosen._pixels = self._images, self._masks, self._pixels
        return chosen

    def split(self, name: str) -> SampleSet:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {name!r}")
        return self.subset(lambda s: s.split == name)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self._samples]

    def image(self, index: int) -> np.ndarray:
        """The sample's pixels, uint8 (H, W)."""
        sha = self._samples[index].sha256
        if self._images is not None and sha in self._images:
            return self._images[sha]
        image = np.asarray(self._load_image(sha))
        if image.dtype != np.uint8 or image.ndim != 2:
            raise ValueError(
                f"load_image({sha}) gave {image.dtype} {image.shape}; expected uint8 (H, W) gray"
            )
        if self._images is not None:
            self._images[sha] = image
        return image

    def mask(self, index: int) -> np.ndarray | None:
        """The defect mask as bool (H, W), or None where the sample has none (ok, or a region only)."""
        sample = self._samples[index]
        if not sample.mask_uri or self._load_mask is None:
            return None
        if self._masks is not None and sample.mask_uri in self._masks:
            return self._masks[sample.mask_uri]
        raw = self._load_mask(sample.mask_uri)
        mask = None if raw is None else np.asarray(raw) > 127  # masks are 0 / 255 PNGs
        if mask is not None and mask.shape != self.image(index).shape:
            raise ValueError(
                f"mask {sample.mask_uri} is {mask.shape} but image {sample.sha256} is {self.image(index).shape}"
            )
        if self._masks is not None:
            self._masks[sample.mask_uri] = mask
        return mask

    def defect_pixels(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Rows and columns of the sample's mask pixels (None without a mask); kept, since training crops
        around one of them thousands of times."""
        sample = self._samples[index]
        if not sample.mask_uri or self._load_mask is None:
            return None
        if self._pixels is not None and sample.mask_uri in self._pixels:
            return self._pixels[sample.mask_uri]
        mask = self.mask(index)
        pixels = None if mask is None else np.nonzero(mask)
        if self._pixels is not None:
            self._pixels[sample.mask_uri] = pixels
        return pixels


def crop_centre(
    shape: tuple[int, int],
    pixels: tuple[np.ndarray, np.ndarray] | None,
    boxes: Sequence[Box],
    size: int,
    jitter: float,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Top-left corner of a `size` crop: around a random defect pixel (`pixels`, the mask's rows and columns
    as np.nonzero gives them), else a random point of a labelled region, else anywhere. Jitter keeps the
    defect from always sitting dead centre."""
    h, w = shape
    if size > h or size > w:
        raise ValueError(f"crop size {size} exceeds the image ({h} x {w}); choose a smaller crop_size")
    centre: tuple[float, float] | None = None
    if pixels is not None and len(pixels[0]):
        # A random defect pixel rather than the mask's centroid: a long curved scratch may not pass through
        # its centroid, and any piece of it is a valid example.
        ys, xs = pixels
        k = int(rng.integers(len(ys)))
        centre = (float(ys[k]), float(xs[k]))
    elif boxes:
        b = boxes[int(rng.integers(len(boxes)))]
        if b.ellipse:
            # A point of the ellipse, not of its bounding box: a long diagonal scratch fills a sliver of its
            # box, and a crop around the box's empty corner would be labelled defective with no defect in it.
            cx, cy, rx, ry, angle = b.ellipse
            radius, turn = math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            u, v, t = rx * radius * math.cos(turn), ry * radius * math.sin(turn), math.radians(angle)
            centre = (cy + u * math.sin(t) + v * math.cos(t), cx + u * math.cos(t) - v * math.sin(t))
        else:
            centre = (float(rng.uniform(b.y0, b.y1)), float(rng.uniform(b.x0, b.x1)))
    if centre is None:
        return int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    shift = rng.uniform(-jitter, jitter, 2) * size
    top = int(round(centre[0] + shift[0] - size / 2))
    left = int(round(centre[1] + shift[1] - size / 2))
    # Clamped rather than padded: padding would teach the network an edge that production images lack.
    return min(max(top, 0), h - size), min(max(left, 0), w - size)


def random_turn(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A random quarter turn and flip, to apply alike to an image and everything aligned with it. Defects
    have no preferred direction, and line textures are drawn at any angle."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))

    def turn(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k)
        return np.ascontiguousarray(a[:, ::-1] if flip else a)

    return turn


def augment(
    image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, *, gain: float = 0.3
) -> tuple[np.ndarray, np.ndarray | None, Callable[[np.ndarray], np.ndarray]]:
    """A random turn of image and mask, and a brightness gain of up to +-`gain` (a line's lamp loses a few
    per cent a day before anyone replaces it); returns the turn too, for whatever else must follow the
    pixels."""
    turn = random_turn(rng)
    g = float(rng.uniform(1 - gain, 1 + gain))
    out = np.clip(turn(image).astype(np.float32) * g, 0, 255).round().astype(np.uint8)
    return out, None if mask is None else turn(mask), turn


# The drift a line's cameras go through, imitated on training crops so that the model has met it before the
# line does: dust on a lens blurs (a Gaussian of up to 3 px), a sensor grows stuck pixels (dead or hot).
DRIFT_BLUR_SIGMA = (0.5, 3.0)
DRIFT_STUCK_PIXELS = (1, 8)  # in a 128 px crop: up to ~130 on a whole 512 px image
DRIFT_SENSOR_NOISE = 1.0  # gray levels a camera adds after the lens: blur must not erase the noise too


def imitate_drift(crop: np.ndarray, rng: np.random.Generator, chance: float) -> np.ndarray:
    """The uint8 crop, blurred with probability `chance`, then given stuck pixels with probability `chance`.
    Neither changes what the crop shows: a defect stays a defect and an ok surface stays ok."""
    out = crop
    if rng.random() < chance:
        blurred = cv2.GaussianBlur(crop.astype(np.float32), (0, 0), float(rng.uniform(*DRIFT_BLUR_SIGMA)))
        blurred += rng.normal(0, DRIFT_SENSOR_NOISE, crop.shape).astype(np.float32)
        out = np.clip(blurred, 0, 255).round().astype(np.uint8)
    if rng.random() < chance:
        n = int(rng.integers(DRIFT_STUCK_PIXELS[0], DRIFT_STUCK_PIXELS[1] + 1))
        out = out.copy()
        out[rng.integers(0, crop.shape[0], n), rng.integers(0, crop.shape[1], n)] = rng.choice([0, 255], n)
    return out
