"""A simulated inspection line that writes DAGM-2007-style images, labels and corrections, deterministic by seed.

Drift (day 0 is `start`; the numbers live in `DRIFT`): from day 1 the lamp of line1 dims by 3 % of its
brightness per day; from day 2 camera line2/st1/cam1 has stuck pixels (12, then 12 more each day); from day 3
dust blurs camera line2/st1/cam2 (Gaussian sigma 1.5 px, growing 0.25 px a day). `truth.csv` and
`bad_files.csv` are for tests and evaluation: curators do not receive them.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import cast

from catalog.ontology import OK_CLASS
from ingestion.simulator.defects import Ellipse
from ingestion.simulator.drift import DRIFT, NO_DRIFT, CameraRef, DriftSchedule
from ingestion.simulator.photos import check_surfaces
from ingestion.simulator.plan import (
    BROKEN_KINDS,
    CLASSES,
    DEFAULT_CLOCK,
    SIZE_PRESETS,
    FactoryClock,
    PlannedImage,
    SizePreset,
    Stream,
    choose_bad_files,
    decide_label,
    plan_images,
    rng_for,
)
from ingestion.simulator.render import RenderJob, RenderResult, init_worker, render_batch
from ingestion.simulator.textures import line_texture
from ingestion.simulator.writer import (
    BAD_FILE_COLUMNS,
    CORRECTION_COLUMNS,
    LABEL_COLUMNS,
    MANIFEST_COLUMNS,
    TRUTH_COLUMNS,
    damage,
    duplicate_path,
    manifest_row,
    write_csv,
    write_ontology,
)

__all__ = [
    "CLASSES",
    "DRIFT",
    "NO_DRIFT",
    "SIZE_PRESETS",
    "CameraRef",
    "DriftSchedule",
    "FactorySummary",
    "SizePreset",
    "simulate_factory",
]

_WRITTEN = ("manifest.csv", "labels.csv", "corrections.csv", "ontology.yaml", "truth.csv", "bad_files.csv")

# Below this many pixels in all, starting worker processes costs more than it saves.
_INLINE_PIXELS = 4_000_000


@dataclass(frozen=True)
class FactorySummary:
    """What one run wrote. `images` counts captured images; the manifest also lists the duplicates."""

    out: Path
    images: int
    parts: int
    labels: int
    wrong_labels: int
    corrections: int
    bad_files: int
    duplicates: int
    per_class: dict[str, int]  # images per true label, every class present (possibly 0)
    manifest_path: Path
    labels_path: Path
    corrections_path: Path
    ontology_path: Path
    truth_path: Path
    bad_files_path: Path


def simulate_factory(
    out: Path,
    *,
    days: int,
    seed: int,
    size: str = "small",
    start: date = date(2026, 3, 2),
    image_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    surfaces: tuple[str, ...] | None = None,
    drift: DriftSchedule = DRIFT,
    clock: FactoryClock = DEFAULT_CLOCK,
) -> FactorySummary:
    """Write `days` days of production of a `size` factory under `out`, which must be empty or absent.

    Images and their defect masks go to `<line>/<YYYY-MM-DD>/<station>/`; manifest.csv, labels.csv,
    corrections.csv and ontology.yaml are what a curator receives; truth.csv and bad_files.csv say what is really
    there. Every image the labelers could open has one label; broken files have none. `progress(done, total)`
    is called as images are written. `surfaces` names real photographs (`ingestion.simulator.photos`), one a
    line in line order, in place of the procedural textures. `workers` is the number of rendering processes, 1 meaning none; by default every core the process may
    use, except that runs too small to repay starting processes render inline. `drift` is the schedule of the
    line's drift; with `NO_DRIFT` the same seed renders the same scenes, defects and sensor noise as a plant
    whose lamps, sensors and lenses stay as installed: the twin that shows what drift alone costs a model.
    `clock` sets the zone the timestamps are written in and when the shifts start (a real zone such as
    Europe/Berlin crosses its DST switches; a late start runs a shift past midnight).
    """
    if size not in SIZE_PRESETS:
        raise ValueError(f"size must be one of {sorted(SIZE_PRESETS)}, not {size!r}")
    if days < 1 or seed < 0 or image_size < 64:
        raise ValueError("need days >= 1, seed >= 0 and image_size >= 64")
    if surfaces is not None:
        check_surfaces(tuple(surfaces))
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; the simulator never mixes two runs")
    out.mkdir(parents=True, exist_ok=True)

    images = plan_images(seed, SIZE_PRESETS[size], days, start, clock)
    bad, duplicates = choose_bad_files(seed, images)
    results = _render_all(_jobs(out, seed, images, image_size, surfaces, drift), workers, progress)
    for index, kind in bad.items():
        damage(out / images[index].path, kind)
    for index in duplicates:
        copy = out / duplicate_path(images[index])
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes((out / images[index].path).read_bytes())

    manifest = [manifest_row(im, naive=bad.get(i) == "naive_timestamp") for i, im in enumerate(images)]
    manifest += [manifest_row(images[i], path=duplicate_path(images[i])) for i in duplicates]
    # Nobody could open a broken file, so nobody labeled it.
    labeled = [i for i in range(len(images)) if bad.get(i) not in BROKEN_KINDS]
    labels, corrections, wrong = _labels(seed, images, results, labeled, image_size)
    truth = [
        {
            "path": im.path,
            "part_id": im.part_id,
            "true_label": im.true_label,
            "defect_area_px": results[i].defect_area,
            "part_label": im.part_label,
        }
        for i, im in enumerate(images)
    ]
    bad_rows = [{"path": images[i].path, "kind": kind} for i, kind in sorted(bad.items())]
    bad_rows += [{"path": duplicate_path(images[i]), "kind": "duplicate"} for i in duplicates]

    paths = {name: out / name for name in _WRITTEN}
    write_csv(paths["manifest.csv"], MANIFEST_COLUMNS, manifest)
    write_csv(paths["labels.csv"], LABEL_COLUMNS, labels)
    write_csv(paths["corrections.csv"], CORRECTION_COLUMNS, corrections)
    write_csv(paths["truth.csv"], TRUTH_COLUMNS, truth)
    write_csv(paths["bad_files.csv"], BAD_FILE_COLUMNS, bad_rows)
    write_ontology(paths["ontology.yaml"])

    per_class = Counter(im.true_label for im in images)
    return FactorySummary(
        out=out,
        images=len(images),
        parts=len({im.part_id for im in images}),
        labels=len(labels),
        wrong_labels=wrong,
        corrections=len(corrections),
        bad_files=len(bad),
        duplicates=len(duplicates),
        per_class={c: per_class.get(c, 0) for c in CLASSES},
        manifest_path=paths["manifest.csv"],
        labels_path=paths["labels.csv"],
        corrections_path=paths["corrections.csv"],
        ontology_path=paths["ontology.yaml"],
        truth_path=paths["truth.csv"],
        bad_files_path=paths["bad_files.csv"],
    )


def _jobs(out: Path, seed: int, images: list[PlannedImage], image_size: int,
          surfaces: tuple[str, ...] | None, drift: DriftSchedule) -> list[RenderJob]:
    textures = {i: line_texture(rng_for(seed, Stream.LINE, i), i, surfaces) for i in {im.line_idx for im in images}}
    jobs = []
    for index, im in enumerate(images):
        camera = CameraRef(im.line, im.station, im.camera)
        defective = im.true_label != OK_CLASS
        jobs.append(
            RenderJob(
                index=index,
                seed=seed,
                key=im.key,
                sensor=(im.line_idx, im.station_idx, im.cam_idx),
                size=image_size,
                texture=textures[im.line_idx],
                defect=im.true_label if defective else None,
                brightness=drift.brightness(im.line, im.day),
                blur_sigma=drift.blur_sigma(camera, im.day),
                stuck_pixels=drift.stuck_pixels(camera, im.day),
                image_path=out / im.path,
                mask_path=out / im.mask_path if defective else None,
            )
        )
    return jobs


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects CPU pinning and cgroup-assigned sets
    except AttributeError:
        return os.cpu_count() or 1


def _render_all(
    jobs: list[RenderJob], workers: int | None, progress: Callable[[int, int], None] | None
) -> list[RenderResult]:
    total = len(jobs)
    if workers is None:
        workers = 1 if total * jobs[0].size ** 2 < _INLINE_PIXELS else _available_cores()
    workers = max(1, workers)
    # Several batches per worker keep the cores busy to the end and the progress bar moving.
    per_batch = max(1, min(32, total // (workers * 8)))
    batches = [jobs[i : i + per_batch] for i in range(0, total, per_batch)]
    results: list[RenderResult | None] = [None] * total
    done = 0
    if progress:
        progress(0, total)

    def collect(batch_results: list[RenderResult]) -> None:
        nonlocal done
        for r in batch_results:
            results[r.index] = r
        done += len(batch_results)
        if progress:
            progress(done, total)

    if workers == 1:
        for batch in batches:
            collect(render_batch(batch))
    else:
        # Spawned, not forked: a fork taken while OpenCV's thread pool is alive in this process deadlocks.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker) as pool:
            for future in as_completed([pool.submit(render_batch, b) for b in batches]):
                collect(future.result())
    if any(r is None for r in results):
        raise RuntimeError("a render batch went missing")
    return cast(list[RenderResult], results)


def _labels(
    seed: int, images: list[PlannedImage], results: list[RenderResult], labeled: list[int], image_size: int
) -> tuple[list[dict[str, str]], list[dict[str, str]], int]:
    """The rows of labels.csv and corrections.csv, and how many labels are wrong."""
    labels, corrections, wrong = [], [], 0
    for index in labeled:
        im, result = images[index], results[index]
        decision = decide_label(seed, im, image_size)
        wrong += decision.wrong
        region: Ellipse | None = None
        if decision.label != OK_CLASS:
            if result.ellipse is None:
                region = decision.false_alarm
            else:
                e = result.ellipse
                dx, dy = decision.centre_shift
                region = Ellipse(
                    e.cx + dx, e.cy + dy, e.rx * decision.growth, e.ry * decision.growth, e.angle
                )
        labels.append(
            {
                "label_id": im.label_id,
                "path": im.path,
                "part_id": im.part_id,
                "label": decision.label,
                "labeler": decision.labeler,
                "labeled_at": decision.labeled_at.isoformat(timespec="seconds"),
                "region": region.to_json() if region else "",
                # A mask exists only where there truly is a defect, whatever class the labeler gave it.
                "mask_path": im.mask_path if region and result.ellipse is not None else "",
            }
        )
        if decision.correction:
            c = decision.correction
            corrections.append(
                {
                    "correction_id": f"cor-{im.part_id}-{im.camera}",
                    "label_id": im.label_id,
                    "path": im.path,
                    "part_id": im.part_id,
                    "old_label": decision.label,
                    "new_label": im.true_label,
                    "corrected_by": c.corrected_by,
                    "corrected_at": c.corrected_at.isoformat(timespec="seconds"),
                    "reason": c.reason,
                }
            )
    corrections.sort(key=lambda row: (row["corrected_at"], row["correction_id"]))
    return labels, corrections, wrong
