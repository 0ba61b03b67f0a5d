"""Real photographed surfaces, from the sample images that installed wheels ship, as the simulator's texture.

Procedural textures are stationary: every window has the same deviation, and nothing in them looks like a
defect unless the generator draws it. Photographs are not: a lunar crater is a spot, a road on an aerial
photograph a scratch, a retina's vessels a crack, and the local deviation changes from a smooth plain to a
crater rim within a few pixels. Each part shows its own window of its line's photograph, moved, zoomed and
turned as a part sits in its fixture.

scikit-image's `brick`, `gravel` and `grass` are reserved for a private evaluation: they are never among the
defaults, and the benchmark does not use them (a caller may still name them, which is how that evaluation
runs).
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

# name -> (package, file inside its data folder). Only photographs of things with a surface: no portraits,
# no drawings, nothing smaller than about 300 px a side (a window of it would be mostly interpolation).
PHOTOGRAPHS: dict[str, tuple[str, str]] = {
    "moon": ("skimage", "moon.png"),  # craters: spots of every size
    "aero": ("pywt", "aero.npz"),  # an aerial view: roads and field edges read as scratches
    "retina": ("skimage", "retina.jpg"),  # vessels: branching dark lines, like cracks
    "ascent": ("pywt", "ascent.npz"),  # stone steps: long straight edges
    "ihc": ("skimage", "ihc.png"),  # stained tissue: blotches
    "hubble": ("skimage", "hubble_deep_field.jpg"),  # bright points on a dark, noisy field
    "coffee": ("skimage", "coffee.png"),  # a cup on wood grain
    "coins": ("skimage", "coins.png"),  # embossed metal discs
    "brick": ("skimage", "brick.png"),  # reserved: private evaluation
    "gravel": ("skimage", "gravel.png"),  # reserved: private evaluation
    "grass": ("skimage", "grass.png"),  # reserved: private evaluation
}
RESERVED = ("brick", "gravel", "grass")
# One photograph a line, in line order, wrapping round: three look-alike-rich surfaces first.
DEFAULT_SURFACES = ("moon", "aero", "retina", "ascent", "ihc", "hubble", "coffee")


def check_surfaces(names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in PHOTOGRAPHS]
    if unknown or not names:
        raise ValueError(f"unknown surface photograph(s) {unknown}; choose among {sorted(PHOTOGRAPHS)}")


@lru_cache(maxsize=16)
def photograph(name: str) -> np.ndarray:
    """The photograph as float32 gray levels, standardized to mean 0 and deviation 1 over the whole image
    (a window keeps its own local contrast, which is what makes a real surface hard)."""
    check_surfaces((name,))
    package, file = PHOTOGRAPHS[name]
    try:
        data = (resources.files(package) / "data" / file).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            f"surface photograph {name!r} needs {file} from the {package!r} package: pip install "
            f"{'scikit-image' if package == 'skimage' else 'PyWavelets'}"
        ) from exc
    if file.endswith(".npz"):
        import io

        with np.load(io.BytesIO(data)) as archive:
            image = archive[archive.files[0]]
    else:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    image = np.asarray(image, np.float32)
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    return (image - image.mean()) / (image.std() + 1e-6)


def photo_window(name: str, size: int, rng: np.random.Generator, *, zoom: tuple[float, float] = (1.2, 2.0)
                 ) -> np.ndarray:
    """A `size` x `size` view of the photograph: a random centre, any angle, magnified by a factor drawn from
    `zoom` (a camera a little nearer or farther). The turned window stays inside the photograph where it fits;
    where it cannot, the photograph is mirrored at its edges. Standardized units."""
    source = photograph(name)
    h, w = source.shape
    zoom_factor = float(rng.uniform(*zoom))
    scale = zoom_factor * size / 512  # 512 px of output cover 512 / zoom source pixels, whatever `size`
    angle = float(rng.uniform(0, 360))
    reach = 512 / zoom_factor / math.sqrt(2)  # half the diagonal of the window, in source pixels
    cy = float(rng.uniform(reach, h - reach)) if h > 2 * reach else h / 2
    cx = float(rng.uniform(reach, w - reach)) if w > 2 * reach else w / 2
    # Output pixel (u, v) around the window's centre maps to source (cx, cy) + R(angle) (u, v) / scale.
    c, s = math.cos(math.radians(angle)) / scale, math.sin(math.radians(angle)) / scale
    half = (size - 1) / 2
    matrix = np.array([[c, -s, cx - c * half + s * half], [s, c, cy - s * half - c * half]], np.float32)
    return cv2.warpAffine(source, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)
