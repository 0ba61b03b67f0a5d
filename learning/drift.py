"""Drift of each camera, per day: brightness, contrast, sharpness and stuck pixels against a reference window.

The open world drifts (lamps dim, pixels die, dust settles); a model trained on day 0 silently degrades. The
statistics are plain functions here; the daily Dagster asset ``drift_report`` (`assets.drift`) writes them to
the lake, plots them and warns through an asset check.

A drift should show the first day it is there, and a clean camera never. So each statistic is judged by a
test sized by the images behind it, not by a fixed band: the day's mean against the reference's with Welch's
t-test (parts differ from each other far more than a lamp dims in a day, and only the number of images tells
the two apart), a camera's line lending its evidence when every camera of the line moved the same way (one
lamp lights them all), and stuck pixels against what chance alone makes constant over the day's images.
"""

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import cache, cached_property
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel
from scipy import stats

from catalog import Catalog
from catalog.drift import (
    DRIFT_SCHEMA,
    STATISTICS,
    Camera,
    camera_days,
    cameras_path,
    images_of_day,
    read_drift_history,
)
from catalog.lake import Lake
from imaging.gray import decode_gray8

IMAGE_STATISTICS = STATISTICS[:3]
Log = Callable[[str], None]

IMAGE_SCHEMA = pa.schema([
    ("day", pa.date32()),
    ("line", pa.string()),
    ("station", pa.string()),
    ("camera", pa.string()),
    ("sha256", pa.string()),
    ("captured_at", pa.timestamp("us", tz="UTC")),
    ("excluded", pa.bool_()),
    ("brightness", pa.float64()),
    ("contrast", pa.float64()),
    ("sharpness", pa.float64()),
    ("noise", pa.float64()),  # the sensor's noise, standard deviation in gray levels (sharpness discounts it)
    ("corrected_pixels", pa.int32()),  # stuck pixels replaced by their neighbours' median before measuring
])

class DriftConfig(BaseModel):
    """The reference window, the smallest change that matters, and how sure a change must be to be reported.

    A statistic leaves its band when its day's mean differs from the reference's by more than its tolerance
    and by more than chance allows at ``significance`` (Welch's t-test over the two days' images). The
    tolerances are the smallest changes that matter to a defect classifier trained on the reference images:
    2 % of gray level or of contrast (the simulated lamp loses 3 % a day), 5 % of fine detail.
    """

    reference_days: int = 1  # each camera's first N days with images in the catalog...
    reference_dates: list[str] = []  # ...unless these ISO dates are given (then for every camera)
    brightness_tolerance: float = 0.02  # relative to the reference mean
    contrast_tolerance: float = 0.02
    sharpness_tolerance: float = 0.05
    # The chance that a clean camera's statistic leaves its band on a given day (two-sided), for the image
    # statistics and for stuck pixels alike, and that every camera of a clean line looks dimmer together:
    # about one false alert in a thousand.
    significance: float = 0.001

    def tolerance(self, statistic: str) -> float:
        return getattr(self, f"{statistic}_tolerance")


# -- statistics of one image and one camera-day ------------------------------------------------------------

# Sharpness compares the image's finest detail (what sigma 1 px of blur removes) with its mid-scale detail
# (between sigma 1 and 2 px). Dust on a lens takes the fine detail first; a dimmer lamp scales both bands
# alike, and a part seen nearer or farther moves both along a surface's (roughly power-law) spectrum, so
# their ratio follows the lens rather than the gain or what the window of the part shows. Sensor noise is
# added after the lens and so is never blurred: its share of each band is taken out first.
FINE_SIGMA, MID_SIGMA = 1.0, 2.0
# Immerkær's mask: the difference of two Laplacians cancels smooth image structure up to second order, so
# what remains on most surfaces is the sensor's noise.
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _band_energies(image: np.ndarray) -> tuple[float, float]:
    """Mean squared fine-scale and mid-scale detail of a float32 image."""
    fine_blur = cv2.GaussianBlur(image, (0, 0), FINE_SIGMA)
    mid_blur = cv2.GaussianBlur(image, (0, 0), MID_SIGMA)
    fine, mid = image - fine_blur, fine_blur - mid_blur
    return float(np.mean(fine * fine)), float(np.mean(mid * mid))


@cache
def _noise_gains() -> tuple[float, float]:
    """The energy white noise of unit variance leaves in each band: the sum of the squared impulse response."""
    impulse = np.zeros((41, 41), np.float32)
    impulse[20, 20] = 1.0
    fine, mid = _band_energies(impulse)
    return fine * impulse.size, mid * impulse.size


def noise_variance(image: np.ndarray) -> float:
    """The variance of the sensor's white noise in a float32 image (Immerkær, 1996): the mask's mean absolute
    response, which is 6 sqrt(2 / pi) noise standard deviations. Texture left by the mask counts as noise,
    so on busy surfaces it errs high."""
    response = cv2.filter2D(image, cv2.CV_32F, _NOISE_MASK)[1:-1, 1:-1]
    return (math.sqrt(math.pi / 2) * float(np.mean(np.abs(response))) / 6) ** 2


def image_statistics(gray: np.ndarray) -> dict[str, float]:
    """Brightness (mean gray level), contrast (its standard deviation), sharpness (fine-scale detail energy
    over mid-scale, sensor noise discounted: 0.3 to 1.5 in focus on the simulated surfaces, falling towards 0
    with blur; 0 for an image with no detail above its noise) and the noise's standard deviation, of one
    grayscale image."""
    image = gray.astype(np.float32)
    mean, std = cv2.meanStdDev(image)
    fine, mid = _band_energies(image)
    noise = noise_variance(image)
    fine_gain, mid_gain = _noise_gains()
    scene_mid = mid - mid_gain * noise
    sharpness = max(fine - fine_gain * noise, 0.0) / scene_mid if scene_mid > 0 else 0.0
    return {"brightness": float(mean[0, 0]), "contrast": float(std[0, 0]), "sharpness": sharpness,
            "noise": math.sqrt(noise)}


def correct_stuck_pixels(gray: np.ndarray, stuck: np.ndarray) -> np.ndarray:
    """``gray`` with the ``stuck`` pixels replaced by their 3×3 median, as a camera's defect correction does.

    Without it a dozen hot or dead pixels (a jump of ~120 gray levels each, against a few for texture) fill
    the fine-detail band of a 128-pixel image: a dying sensor would be reported twice, once as a sharper image.
    """
    corrected = gray.copy()
    corrected[stuck] = cv2.medianBlur(gray, 3)[stuck]
    return corrected


@dataclass(frozen=True)
class CameraDay:
    """What one camera saw on one day: per-image statistics; the pixels that kept one value in every image
    (None with fewer than two images, or images of different sizes); and how many of those chance alone
    would explain."""

    images: list[dict]
    stuck_pixels: int | None
    stuck_by_chance: float | None


def camera_day_statistics(images: Iterable[tuple[dict, Callable[[], np.ndarray]]]) -> CameraDay:
    """Statistics of one camera's images of one day; ``images`` pairs each image's row (kept in the output)
    with a function that decodes its pixels.

    Stuck pixels are found over time, as a real sensor's are: pixels whose running minimum equals their
    running maximum over all the day's images, whatever value they stick at. A live pixel can do so by
    chance: two images agree at a pixel at the rate measured between consecutive images (the highest of
    those rates, so a run of look-alike parts errs towards caution), and all of n images at about that rate
    to the n-1; the expected count is kept for the comparison to judge. Only when some pixels are
    constant are the images decoded a second time, to measure them with those pixels corrected; the usual
    day costs one decode per image.
    """
    images = list(images)
    rows, lowest, highest, shape, previous = [], None, None, None, None
    agreeing: list[int] = []  # pixels equal between each image and the one before
    for row, decode in images:
        gray = decode()
        rows.append(row | image_statistics(gray) | {"corrected_pixels": 0})
        if shape is None:
            shape, lowest, highest = gray.shape, gray.copy(), gray.copy()
        elif gray.shape == shape:
            np.minimum(lowest, gray, out=lowest)
            np.maximum(highest, gray, out=highest)
            agreeing.append(int(np.count_nonzero(gray == previous)))
        else:
            shape = ()  # sizes differ: no pixel-by-pixel comparison over the day
        previous = gray
    if not shape or len(images) < 2:
        return CameraDay(rows, None, None)
    stuck = lowest == highest
    count = int(np.count_nonzero(stuck))
    # Stuck pixels agree in every pair too, so the rate errs high, towards caution; with two images it
    # explains every constant pixel, as it should: two images cannot tell a stuck pixel from a steady one.
    agreement = max(agreeing) / stuck.size
    by_chance = stuck.size * agreement ** (len(images) - 1)
    if count:
        rows = [row | image_statistics(correct_stuck_pixels(decode(), stuck)) | {"corrected_pixels": count}
                for row, (_, decode) in zip(rows, images, strict=True)]
    return CameraDay(rows, count, by_chance)


# -- measuring a day from the catalog, with the lake as cache ----------------------------------------------


@dataclass(frozen=True)
class DayMeasurement:
    """Every camera's statistics for one day: the per-image table, the stuck-pixel count per camera and, for
    a day measured now (not read back from the lake: a reference day needs only its count), how many of
    those chance would explain."""

    day: date
    images: pa.Table  # IMAGE_SCHEMA
    stuck_pixels: dict[Camera, int | None]
    stuck_by_chance: dict[Camera, float | None] = field(default_factory=dict)

    def cameras(self) -> list[Camera]:
        return sorted(self.stuck_pixels)

    @cached_property
    def _rows_by_camera(self) -> dict[Camera, list[dict]]:
        rows: dict[Camera, list[dict]] = defaultdict(list)
        for row in self.images.to_pylist():
            rows[(row["line"], row["station"], row["camera"])].append(row)
        return rows

    def values(self, camera: Camera, statistic: str) -> list[float]:
        """The per-image values of ``statistic`` for ``camera``, in capture order."""
        return [row[statistic] for row in self._rows_by_camera.get(camera, [])]


def images_path(day: date) -> str:
    return f"drift/images/day={day.isoformat()}/stats.parquet"


def _decoder(cat: Catalog, sha256: str) -> Callable[[], np.ndarray]:
    def decode() -> np.ndarray:
        try:
            return decode_gray8(cat.blobs.read(sha256))
        except ValueError as exc:
            raise ValueError(f"blob {sha256} does not decode as an image: the blob store is damaged; restore "
                             "it from backup or re-ingest the file") from exc
    return decode


def measure_day(cat: Catalog, day: date, *, log: Log = lambda _: None) -> DayMeasurement:
    """Decode every image captured on the factory ``day`` and measure it, camera by camera."""
    by_camera: dict[Camera, list[dict]] = defaultdict(list)
    for row in images_of_day(cat, day):
        by_camera[(row["line"], row["station"], row["camera"])].append(row)
    rows, stuck, by_chance = [], {}, {}
    for camera, images in sorted(by_camera.items()):
        measured = camera_day_statistics((row, _decoder(cat, row["sha256"])) for row in images)
        rows.extend(measured.images)
        stuck[camera], by_chance[camera] = measured.stuck_pixels, measured.stuck_by_chance
        log(f"{day} {'/'.join(camera)}: {len(images)} images measured, stuck pixels {measured.stuck_pixels}")
    return DayMeasurement(day, pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA), stuck, by_chance)


def _cached_measurement(cat: Catalog, lake: Lake, day: date) -> DayMeasurement | None:
    """The day's measurement as its own partition wrote it, if both files exist, were measured the way this
    module measures (same columns) and the catalog still holds exactly the images they measured
    (late-arriving images make them stale)."""
    image_file, camera_file = lake.root / images_path(day), lake.root / cameras_path(day)
    if not (image_file.exists() and camera_file.exists()):
        return None
    images = pq.read_table(image_file)
    if not images.schema.equals(IMAGE_SCHEMA):
        return None
    if sorted(images["sha256"].to_pylist()) != sorted(row["sha256"] for row in images_of_day(cat, day)):
        return None
    stuck = {(r["line"], r["station"], r["camera"]): None if r["value"] is None else int(r["value"])
             for r in pq.read_table(camera_file).to_pylist() if r["statistic"] == "stuck_pixels"}
    return DayMeasurement(day, images, stuck)


def reference_window(cat: Catalog, config: DriftConfig) -> dict[Camera, list[date]]:
    """The reference days of each camera: its first ``reference_days`` days with images (a camera installed
    later gets its own reference), or the explicit ``reference_dates``."""
    if config.reference_dates:
        explicit = sorted(date.fromisoformat(d) for d in config.reference_dates)
        return {camera: explicit for camera in camera_days(cat)}
    if config.reference_days < 1:
        raise ValueError(f"reference_days must be at least 1, got {config.reference_days}")
    return {camera: days[:config.reference_days] for camera, days in camera_days(cat).items()}


# -- comparing a day with its reference --------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One statistic over a set of images: mean, standard deviation (None for a single image) and count."""

    mean: float
    sd: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Sample | None":
        if not values:
            return None
        return cls(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None, len(values))


@dataclass(frozen=True)
class Reference:
    days: list[date]
    images: int
    samples: dict[str, Sample | None]  # per image statistic, over the reference days' images
    stuck_pixels: int  # the most seen on a reference day: those pixels were already stuck, and are accepted


def _reference(camera: Camera, days: list[date], measured: dict[date, DayMeasurement]) -> Reference:
    samples = {statistic: Sample.of([v for day in days for v in measured[day].values(camera, statistic)])
               for statistic in IMAGE_STATISTICS}
    # Unknown (too few images) reads as a clean sensor.
    counts = [c for day in days if (c := measured[day].stuck_pixels.get(camera)) is not None]
    images = samples["brightness"].n if samples["brightness"] else 0
    return Reference(days, images, samples, max(counts, default=0))


def difference_error(a: Sample, b: Sample) -> tuple[float, float] | None:
    """The standard error of the difference of the two means and its degrees of freedom (Welch); a side
    with a single image borrows the other's spread. None when neither side has two images."""
    if a.sd is None and b.sd is None:
        return None
    var_a = (a.sd if a.sd is not None else b.sd) ** 2 / a.n
    var_b = (b.sd if b.sd is not None else a.sd) ** 2 / b.n
    if a.sd is None or b.sd is None or var_a + var_b == 0:
        df = float(max(a.n + b.n - 2, 1))
    else:
        df = (var_a + var_b) ** 2 / (var_a ** 2 / (a.n - 1) + var_b ** 2 / (b.n - 1))
    return math.sqrt(var_a + var_b), df


def band(statistic: str, reference: Sample, today: Sample, config: DriftConfig, significance: float
         ) -> tuple[float, float] | None:
    """[low, high] for the day's mean of an image ``statistic``: the relative tolerance around the reference
    mean, widened to what chance allows at ``significance`` (two-sided) given both days' images."""
    error = difference_error(reference, today)
    if error is None:
        return None
    standard_error, df = error
    half = max(config.tolerance(statistic) * abs(reference.mean),
               float(stats.t.isf(significance / 2, df)) * standard_error)
    return reference.mean - half, reference.mean + half


def stuck_pixel_band(reference_count: int, by_chance: float | None, config: DriftConfig) -> tuple[float, float]:
    """[0, high] for the day's count of constant pixels: the reference's stuck pixels, plus as many more as
    chance makes constant with probability above ``significance`` (Poisson, expecting ``by_chance``; none
    when chance makes almost none, so the first stuck pixel is reported)."""
    allowed = float(stats.poisson.isf(config.significance, by_chance)) if by_chance else 0.0
    return 0.0, reference_count + allowed


def line_significance(cameras: int, significance: float) -> float:
    """The two-sided level at which each of a line's ``cameras`` cameras must leave its band, all on the same
    side, for the line to have moved: clean cameras, independent of each other, all do so with probability
    2 (level / 2) ** cameras, which this makes ``significance``."""
    return 2 * (significance / 2) ** (1 / cameras)


def _lamp_bands(samples: dict[tuple[Camera, str], Sample | None], references: dict[Camera, Reference],
                config: DriftConfig) -> dict[Camera, tuple[float, float]]:
    """The brightness bands of the cameras whose whole line moved the same way that day, each at the line's
    level: one lamp lights every camera of a line, so their agreement is evidence no camera holds alone.
    Only brightness: contrast and sharpness also follow each camera's lens, and one dusty lens must not
    carry the other cameras of its line along."""
    by_line: dict[str, list[Camera]] = defaultdict(list)
    for camera in references:
        if samples.get((camera, "brightness")) and references[camera].samples["brightness"]:
            by_line[camera[0]].append(camera)
    lamp: dict[Camera, tuple[float, float]] = {}
    for cameras in by_line.values():
        if len(cameras) < 2:
            continue
        level = line_significance(len(cameras), config.significance)
        bands = {c: band("brightness", references[c].samples["brightness"], samples[(c, "brightness")], config,
                         level) for c in cameras}
        if None in bands.values():
            continue
        sides = {(samples[(c, "brightness")].mean > high) - (samples[(c, "brightness")].mean < low)
                 for c, (low, high) in bands.items()}
        if len(sides) == 1 and sides != {0}:
            lamp |= bands
    return lamp


def compare_with_reference(today: DayMeasurement, references: dict[Camera, Reference],
                           config: DriftConfig) -> pa.Table:
    """One row per camera and statistic: the day's value, the reference, its band and whether it stays in.

    An image statistic's band is at ``significance``; a camera's brightness band narrows to its line's level
    when every camera of the line left that band on the same side (``line_wide``)."""
    samples = {(camera, s): Sample.of(today.values(camera, s)) for camera in today.cameras() for s in IMAGE_STATISTICS}
    lamp = _lamp_bands(samples, references, config)
    rows = []
    for camera in today.cameras():
        reference = references.get(camera)
        n = len(today.values(camera, "brightness"))
        for statistic in STATISTICS:
            together = statistic == "brightness" and camera in lamp
            if statistic == "stuck_pixels":
                count = today.stuck_pixels[camera]
                value = None if count is None else float(count)
                ref_value = float(reference.stuck_pixels) if reference else None
                limits = stuck_pixel_band(reference.stuck_pixels, today.stuck_by_chance.get(camera), config) \
                    if reference else None
            else:
                sample = samples[(camera, statistic)]
                ref_sample = reference.samples[statistic] if reference else None
                value = sample.mean if sample else None
                ref_value = ref_sample.mean if ref_sample else None
                if together:
                    limits = lamp[camera]
                elif sample and ref_sample:
                    limits = band(statistic, ref_sample, sample, config, config.significance)
                else:
                    limits = None
            rows.append({
                "day": today.day, "line": camera[0], "station": camera[1], "camera": camera[2], "images": n,
                "statistic": statistic, "value": value, "reference": ref_value,
                "low": limits[0] if limits else None, "high": limits[1] if limits else None,
                "in_band": None if value is None or limits is None else limits[0] <= value <= limits[1],
                "reference_days": ",".join(d.isoformat() for d in reference.days) if reference else None,
                "reference_images": reference.images if reference else None,
                "line_wide": together,
            })
    return pa.Table.from_pylist(rows, schema=DRIFT_SCHEMA)


def drift_for_day(cat: Catalog, lake: Lake, day: date, config: DriftConfig, *,
                  log: Log = lambda _: None) -> tuple[DayMeasurement, pa.Table]:
    """Measure ``day`` and compare every camera with its reference window. Reference days are read from the
    lake where their partition left fresh files, and measured on the fly otherwise (without writing them:
    another day's files are that partition's to write, and a backfill may be writing them right now)."""
    today = measure_day(cat, day, log=log)
    window = {camera: days for camera, days in reference_window(cat, config).items() if camera in today.stuck_pixels}
    measured = {day: today}
    for ref_day in sorted({d for days in window.values() for d in days} - {day}):
        cached = _cached_measurement(cat, lake, ref_day)
        if cached is None:
            log(f"reference day {ref_day} not in the lake (or stale): measuring it")
            cached = measure_day(cat, ref_day, log=log)
        measured[ref_day] = cached
    references = {camera: _reference(camera, days, measured) for camera, days in window.items() if days}
    return today, compare_with_reference(today, references, config)


# -- the report's chart ------------------------------------------------------------------------------------


def write_drift_chart(lake: Lake) -> tuple[Path, Path]:
    """Each statistic of each camera over every day written so far, its band shaded, out-of-band days in red;
    saved as ``drift/drift.html`` and ``drift/drift.png`` under the lake root."""
    import altair as alt  # noqa: PLC0415 - only the report draws; the statistics do not need Altair

    states = {True: "in band", False: "out of band", None: "unknown"}
    history = alt.Data(values=[
        row | {"camera": f"{row['line']}/{row['station']}/{row['camera']}", "day": row["day"].isoformat(),
               "state": states[row["in_band"]]}
        for row in read_drift_history(lake).to_pylist()])
    x = alt.X("day:T", title=None, axis=alt.Axis(format="%m-%d"))
    shaded = alt.Chart().mark_area(opacity=0.25, color="#4c78a8").encode(x, alt.Y("low:Q", title=None),
                                                                          alt.Y2("high:Q"))
    trace = alt.Chart().mark_line(color="#333").encode(x, alt.Y("value:Q", scale=alt.Scale(zero=False)))
    points = alt.Chart().mark_point(filled=True, size=50).encode(
        x, alt.Y("value:Q"), alt.Color("state:N", scale=alt.Scale(domain=["in band", "out of band", "unknown"],
                                                                  range=["#333", "#d62728", "#999"])),
        tooltip=["camera:N", "day:T", "statistic:N", "value:Q", "low:Q", "high:Q"])
    chart = (alt.layer(shaded, trace, points, data=history)
             .properties(width=160, height=110)
             .facet(row=alt.Row("statistic:N", sort=list(STATISTICS), title=None),
                    column=alt.Column("camera:N", title=None))
             .resolve_scale(y="independent")
             .properties(title="Drift per camera against the reference band"))
    folder = lake.root / "drift"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("html", "png"):
        # Written aside, then renamed: a backfill runs days in parallel, and a reader never sees half a chart.
        path, tmp = folder / f"drift.{kind}", folder / f".drift.{kind}.{os.getpid()}.tmp"
        chart.save(str(tmp), format=kind, **({"scale_factor": 1.5} if kind == "png" else {}))
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]
