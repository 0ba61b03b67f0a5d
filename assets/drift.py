"""Drift of each camera, per day: brightness, contrast, sharpness and stuck pixels against a reference window.

The open world drifts (lamps dim, pixels die, dust settles); a model trained on day 0 silently degrades. The
statistics are plain functions here (the Streamlit app reuses them); ``drift_report`` is the thin daily
Dagster asset that writes them to the lake, plots them and warns through an asset check.
"""

# No `from __future__ import annotations`: Dagster reads the asset's config annotation as a live class.

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import text

from assets.partitions import daily, day_window
from assets.resources import CatalogResource, LakeResource
from catalog import Catalog
from catalog.lake import Lake

STATISTICS = ("brightness", "contrast", "sharpness", "stuck_pixels")
IMAGE_STATISTICS = STATISTICS[:3]

# A pixel is stuck when it keeps one value in all of a camera's images of the day. With very few images a
# live pixel can repeat its value by chance (about 2 % per image pair on a textured surface with sensor
# noise: ~4 of 16k pixels in 3 images, <0.1 in 4), so the count is only trusted from this many images on.
MIN_IMAGES_FOR_STUCK = 4

Camera = tuple[str, str, str]  # (line, station, camera): a camera is named per station, stations per line
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
    ("corrected_pixels", pa.int32()),  # stuck pixels replaced by their neighbours' median before measuring
])

DRIFT_SCHEMA = pa.schema([
    ("day", pa.date32()),
    ("line", pa.string()),
    ("station", pa.string()),
    ("camera", pa.string()),
    ("images", pa.int32()),
    ("statistic", pa.string()),
    ("value", pa.float64()),  # the day's mean over the camera's images; the count for stuck_pixels
    ("reference", pa.float64()),
    ("low", pa.float64()),
    ("high", pa.float64()),
    ("in_band", pa.bool_()),  # null when the value or the reference is unknown: no alert, nothing to compare
    ("reference_days", pa.string()),
    ("reference_images", pa.int32()),
])


class DriftConfig(dg.Config):
    """The reference window and how far each statistic may move from it before it matters.

    The defaults are what matters for a defect classifier trained on the reference images: a 5 % shift of
    mean gray level, 10 % of contrast (it follows the lamp too, so a tighter band would only repeat the
    brightness alert), a quarter of the edge energy (fine scratches vanish in blur long before that), and any
    stuck pixel beyond a few that chance can produce.
    """

    reference_days: int = 1  # each camera's first N days with images in the catalog...
    reference_dates: list[str] = []  # ...unless these ISO dates are given (then for every camera)
    brightness_tolerance: float = 0.05  # relative to the reference mean
    contrast_tolerance: float = 0.10
    sharpness_tolerance: float = 0.25
    # Floor on every band: z standard errors of a difference of two daily means, so that a camera with few
    # or very varied images does not alert on sampling noise alone.
    z: float = 3.0
    stuck_pixel_allowance: int = 3  # stuck pixels allowed above the reference count

    def tolerance(self, statistic: str) -> float:
        return getattr(self, f"{statistic}_tolerance")


# -- statistics of one image and one camera-day -------------------------------------------------------------


def image_statistics(gray: np.ndarray) -> dict[str, float]:
    """Brightness (mean gray level), contrast (its standard deviation) and sharpness (variance of the
    Laplacian) of one grayscale image."""
    mean, std = cv2.meanStdDev(gray)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_64F))
    return {"brightness": float(mean[0, 0]), "contrast": float(std[0, 0]), "sharpness": float(lap_std[0, 0]) ** 2}


def correct_stuck_pixels(gray: np.ndarray, stuck: np.ndarray) -> np.ndarray:
    """``gray`` with the ``stuck`` pixels replaced by their 3×3 median, as a camera's defect correction does.

    Without it a dozen hot or dead pixels (Laplacian ~500 each, against ~20 for texture) raise the sharpness
    of a 128-pixel image by half: a dying sensor would be reported twice, once as a sharper image.
    """
    corrected = gray.copy()
    corrected[stuck] = cv2.medianBlur(gray, 3)[stuck]
    return corrected


@dataclass(frozen=True)
class CameraDay:
    """What one camera saw on one day: per-image statistics, and the stuck-pixel count (None when the day
    has too few images, or images of different sizes, to tell a stuck pixel from a quiet one)."""

    images: list[dict]
    stuck_pixels: int | None


def camera_day_statistics(images: Iterable[tuple[dict, Callable[[], np.ndarray]]]) -> CameraDay:
    """Statistics of one camera's images of one day; ``images`` pairs each image's row (kept in the output)
    with a function that decodes its pixels.

    Stuck pixels are found over time, as a real sensor's are: pixels whose running minimum equals their
    running maximum over all the day's images. Only when some are found are the images decoded a second
    time, to measure them with those pixels corrected; the usual day costs one decode per image.
    """
    images = list(images)
    rows, lowest, highest, shape = [], None, None, None
    for row, decode in images:
        gray = decode()
        rows.append(row | image_statistics(gray) | {"corrected_pixels": 0})
        if shape is None:
            shape, lowest, highest = gray.shape, gray.copy(), gray.copy()
        elif gray.shape == shape:
            np.minimum(lowest, gray, out=lowest)
            np.maximum(highest, gray, out=highest)
        else:
            shape = ()  # sizes differ: no pixel-by-pixel comparison over the day
    if not shape or len(images) < MIN_IMAGES_FOR_STUCK:
        return CameraDay(rows, None)
    stuck = lowest == highest
    count = int(np.count_nonzero(stuck))
    if count:
        rows = [row | image_statistics(correct_stuck_pixels(decode(), stuck)) | {"corrected_pixels": count}
                for row, (_, decode) in zip(rows, images, strict=True)]
    return CameraDay(rows, count)


# -- measuring a day from the catalog, with the lake as cache ----------------------------------------------


@dataclass(frozen=True)
class DayMeasurement:
    """Every camera's statistics for one day: the per-image table and the stuck-pixel count per camera."""

    day: date
    images: pa.Table  # IMAGE_SCHEMA
    stuck_pixels: dict[Camera, int | None]

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


def cameras_path(day: date) -> str:
    return f"drift/cameras/day={day.isoformat()}/drift.parquet"


def _images_of_day(cat: Catalog, day: date) -> list[dict]:
    """The day's images, excluded ones included: an excluded image is still what the camera saw."""
    _, start, end = day_window(day.isoformat())
    with cat.engine.connect() as conn:
        result = conn.execute(text(
            "SELECT sha256, line, station, camera, captured_at, excluded FROM projections.images"
            " WHERE captured_at >= :start AND captured_at < :end"
            " ORDER BY line, station, camera, captured_at, sha256"), {"start": start, "end": end})
        return [dict(row._mapping) | {"day": day} for row in result]


def _decoder(cat: Catalog, sha256: str) -> Callable[[], np.ndarray]:
    def decode() -> np.ndarray:
        gray = cv2.imdecode(np.frombuffer(cat.blobs.read(sha256), np.uint8), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise ValueError(f"blob {sha256} does not decode as an image: the blob store is damaged; restore "
                             "it from backup or re-ingest the file")
        return gray
    return decode


def measure_day(cat: Catalog, day: date, *, log: Log = lambda _: None) -> DayMeasurement:
    """Decode every image captured on ``day`` (UTC) and measure it, camera by camera."""
    by_camera: dict[Camera, list[dict]] = defaultdict(list)
    for row in _images_of_day(cat, day):
        by_camera[(row["line"], row["station"], row["camera"])].append(row)
    rows, stuck = [], {}
    for camera, images in sorted(by_camera.items()):
        measured = camera_day_statistics((row, _decoder(cat, row["sha256"])) for row in images)
        rows.extend(measured.images)
        stuck[camera] = measured.stuck_pixels
        log(f"{day} {'/'.join(camera)}: {len(images)} images measured, stuck pixels {measured.stuck_pixels}")
    return DayMeasurement(day, pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA), stuck)


def _cached_measurement(cat: Catalog, lake: Lake, day: date) -> DayMeasurement | None:
    """The day's measurement as its own partition wrote it, if both files exist and the catalog still holds
    exactly the images they measured (late-arriving images make them stale)."""
    image_file, camera_file = lake.root / images_path(day), lake.root / cameras_path(day)
    if not (image_file.exists() and camera_file.exists()):
        return None
    images = pq.read_table(image_file)
    if sorted(images["sha256"].to_pylist()) != sorted(row["sha256"] for row in _images_of_day(cat, day)):
        return None
    stuck = {(r["line"], r["station"], r["camera"]): None if r["value"] is None else int(r["value"])
             for r in pq.read_table(camera_file).to_pylist() if r["statistic"] == "stuck_pixels"}
    return DayMeasurement(day, images, stuck)


def _camera_days(cat: Catalog) -> dict[Camera, list[date]]:
    """Every camera's days with images in the catalog, in order."""
    with cat.engine.connect() as conn:
        result = conn.execute(text(
            "SELECT DISTINCT line, station, camera, (captured_at AT TIME ZONE 'UTC')::date AS day"
            " FROM projections.images ORDER BY line, station, camera, day"))
        days: dict[Camera, list[date]] = defaultdict(list)
        for line, station, camera, day in result:
            days[(line, station, camera)].append(day)
    return days


def reference_window(cat: Catalog, config: DriftConfig) -> dict[Camera, list[date]]:
    """The reference days of each camera: its first ``reference_days`` days with images (a camera installed
    later gets its own reference), or the explicit ``reference_dates``."""
    if config.reference_dates:
        explicit = sorted(date.fromisoformat(d) for d in config.reference_dates)
        return {camera: explicit for camera in _camera_days(cat)}
    if config.reference_days < 1:
        raise ValueError(f"reference_days must be at least 1, got {config.reference_days}")
    return {camera: days[:config.reference_days] for camera, days in _camera_days(cat).items()}


# -- comparing a day with its reference ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    days: list[date]
    images: int
    values: dict[str, float | None]  # per statistic: the reference mean (the stuck count for stuck_pixels)
    spreads: dict[str, float | None]  # per statistic: standard deviation over the reference images


def _reference(camera: Camera, days: list[date], measured: dict[date, DayMeasurement]) -> Reference:
    pooled = {statistic: [v for day in days for v in measured[day].values(camera, statistic)]
              for statistic in IMAGE_STATISTICS}
    n = len(pooled["brightness"])
    values: dict[str, float | None] = {s: float(np.mean(v)) if n else None for s, v in pooled.items()}
    spreads: dict[str, float | None] = {s: float(np.std(v, ddof=1)) if n > 1 else None for s, v in pooled.items()}
    # Pixels already stuck in the reference are accepted; unknown (too few images) reads as a clean sensor.
    counts = [c for day in days if (c := measured[day].stuck_pixels.get(camera)) is not None]
    values["stuck_pixels"], spreads["stuck_pixels"] = float(max(counts, default=0)), None
    return Reference(days, n, values, spreads)


def band(statistic: str, reference: Reference, config: DriftConfig) -> tuple[float, float] | None:
    """[low, high] for ``statistic``: the relative tolerance around the reference mean, widened to z standard
    errors of a difference of two daily means when sampling noise alone would exceed it; stuck pixels may
    only grow by the allowance."""
    ref = reference.values[statistic]
    if ref is None:
        return None
    if statistic == "stuck_pixels":
        return 0.0, ref + config.stuck_pixel_allowance
    half = config.tolerance(statistic) * abs(ref)
    spread = reference.spreads[statistic]
    if spread is not None:  # the day's own count is not known in advance: assume it is the reference's
        half = max(half, config.z * spread * math.sqrt(2 / reference.images))
    return ref - half, ref + half


def compare_with_reference(today: DayMeasurement, references: dict[Camera, Reference],
                           config: DriftConfig) -> pa.Table:
    """One row per camera and statistic: the day's value, the reference, its band and whether it stays in."""
    rows = []
    for camera in today.cameras():
        n = len(today.values(camera, "brightness"))
        reference = references.get(camera)
        for statistic in STATISTICS:
            if statistic == "stuck_pixels":
                count = today.stuck_pixels[camera]
                value = None if count is None else float(count)
            else:
                value = float(np.mean(today.values(camera, statistic)))
            limits = band(statistic, reference, config) if reference else None
            rows.append({
                "day": today.day, "line": camera[0], "station": camera[1], "camera": camera[2], "images": n,
                "statistic": statistic, "value": value,
                "reference": reference.values[statistic] if reference else None,
                "low": limits[0] if limits else None, "high": limits[1] if limits else None,
                "in_band": None if value is None or limits is None else limits[0] <= value <= limits[1],
                "reference_days": ",".join(d.isoformat() for d in reference.days) if reference else None,
                "reference_images": reference.images if reference else None,
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


# -- the report: lake files, chart, Dagster asset ----------------------------------------------------------


def out_of_band(drift: pa.Table) -> list[dict]:
    return [row for row in drift.to_pylist() if row["in_band"] is False]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| camera | statistic | value | band |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['line']}/{r['station']}/{r['camera']} | {r['statistic']} | {r['value']:.4g} "
              f"| [{r['low']:.4g}, {r['high']:.4g}] |" for r in rows]
    return "\n".join(lines)


def read_drift_history(lake: Lake) -> pa.Table:
    """Every day's drift table written so far."""
    return _read_drift_files(sorted((lake.root / "drift" / "cameras").glob("day=*/drift.parquet")))


def read_drift_days(lake: Lake, days: Iterable[date]) -> pa.Table:
    """The drift tables of ``days`` (a day without a report adds no rows): what a page showing a few days
    reads, however long the history."""
    return _read_drift_files([path for day in days if (path := lake.root / cameras_path(day)).exists()])


def _read_drift_files(files: list[Path]) -> pa.Table:
    return pa.concat_tables([pq.read_table(f, schema=DRIFT_SCHEMA) for f in files]) if files \
        else DRIFT_SCHEMA.empty_table()


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


CHECK = "stats_within_bands"


@dg.asset(
    partitions_def=daily,
    group_name="monitoring",
    check_specs=[dg.AssetCheckSpec(CHECK, asset="drift_report",
                                   description="Every camera's statistics of the day stay inside their band.")],
    description="Per day and camera: brightness, contrast, sharpness and stuck pixels against a reference "
                "window, written to drift/ in the lake and plotted.",
)
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, catalog: CatalogResource,
                 lake: LakeResource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    day, _, _ = day_window(context.partition_key)
    store = lake.lake
    with catalog.open() as cat:
        cat.catch_up()  # measure every image ingested so far, not only those the projections had reached
        today, drift = drift_for_day(cat, store, day, config, log=context.log.info)
    image_file = store.write_parquet(images_path(day), today.images)
    camera_file = store.write_parquet(cameras_path(day), drift)
    html, png = write_drift_chart(store)
    alerts = out_of_band(drift)
    windows = sorted({r["reference_days"] for r in drift.to_pylist() if r["reference_days"]})
    yield dg.MaterializeResult(metadata={
        "cameras": len(today.cameras()),
        "images": today.images.num_rows,
        "alerts": dg.MetadataValue.md(markdown_table(alerts) if alerts else "all statistics within their bands"),
        "reference_window": "; ".join(windows) or "none",
        "images_table": dg.MetadataValue.path(str(image_file)),
        "drift_table": dg.MetadataValue.path(str(camera_file)),
        "chart_html": dg.MetadataValue.path(str(html)),
        "chart": dg.MetadataValue.path(str(png)),
    })
    yield dg.AssetCheckResult(
        check_name=CHECK, passed=not alerts, severity=dg.AssetCheckSeverity.WARN,
        metadata={"out_of_band": len(alerts),
                  "rows": dg.MetadataValue.md(markdown_table(alerts) if alerts else "none")},
    )
