"""The production plan: which parts ran when, what each camera saw, and what the labelers said about it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from enum import IntEnum

import numpy as np

from catalog.ontology import OK_CLASS
from ingestion.simulator.defects import DEFECT_CLASSES, Ellipse

CLASSES = (OK_CLASS, *DEFECT_CLASSES)
OK_RATE = 0.83
DEFECT_WEIGHTS = (0.45, 0.35, 0.20)  # scratch, spot, crack among defective parts

# chen labels fewer parts but makes about half of all mistakes (overall about 5 %).
LABELERS = ("ana", "ben", "chen")
LABELER_SHARE = (0.40, 0.35, 0.25)
LABELER_ERROR = (0.035, 0.035, 0.10)
REVIEWERS = ("ana", "ben", "chen", "dana")  # dana is QA and only corrects
CORRECTED_SHARE = 0.5

FACTORY_TZ = timezone(timedelta(hours=1))  # the factory clock, fixed at UTC+01:00 (no DST switch)
SHIFT_START = time(6, 0)
SHIFT_SECONDS = 16 * 3600  # two shifts, 06:00 to 22:00


@dataclass(frozen=True)
class FactoryClock:
    """Where and when the simulated plant works: the zone its timestamps are written in, and the local time
    its two shifts (16 hours) start each day. A start after 08:00 runs the late shift past midnight."""

    time_zone: tzinfo = FACTORY_TZ
    shift_start: time = SHIFT_START


DEFAULT_CLOCK = FactoryClock()


class Stream(IntEnum):
    """Tags that keep the random streams apart; every stream is seeded from (seed, tag, position)."""

    LINE = 1
    PARTS = 2
    RENDER = 3
    LABELER = 4
    LABEL = 5
    SENSOR = 6
    BAD = 7


def rng_for(seed: int, stream: Stream, *key: int) -> np.random.Generator:
    """A generator that depends only on its key, so day 3 comes out the same whatever day 2 held."""
    return np.random.default_rng([seed, int(stream), *key])


@dataclass(frozen=True)
class SizePreset:
    """How big a factory is; `parts_per_day` is per line and varies by about 20 % from day to day."""

    lines: int
    stations: int
    cameras: int
    parts_per_day: int


SIZE_PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(lines=2, stations=1, cameras=2, parts_per_day=6),
    "small": SizePreset(lines=3, stations=2, cameras=2, parts_per_day=20),
    "medium": SizePreset(lines=4, stations=3, cameras=2, parts_per_day=60),
    # The model-quality benchmark's plant: about 200 images a day, so 10 days hold 2,000.
    "bench": SizePreset(lines=3, stations=2, cameras=2, parts_per_day=34),
}


@dataclass(frozen=True)
class PlannedImage:
    """One camera image of one part, with what it truly shows."""

    day: int
    line_idx: int
    station_idx: int
    part_idx: int
    cam_idx: int
    part_id: str
    captured_at: datetime
    part_label: str  # the part's defect class, or ok
    true_label: str  # part_label if this camera sees the defect, else ok

    @property
    def line(self) -> str:
        return f"line{self.line_idx + 1}"

    @property
    def station(self) -> str:
        return f"st{self.station_idx + 1}"

    @property
    def camera(self) -> str:
        return f"cam{self.cam_idx + 1}"

    @property
    def folder(self) -> str:
        return f"{self.line}/{self.captured_at.date().isoformat()}/{self.station}"

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.part_id}_{self.camera}.png"

    @property
    def mask_path(self) -> str:
        return f"{self.folder}/{self.part_id}_{self.camera}_mask.png"

    @property
    def label_id(self) -> str:
        return f"lbl-{self.part_id}-{self.camera}"

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.day, self.line_idx, self.part_idx, self.cam_idx)


def plan_images(seed: int, preset: SizePreset, days: int, start: date,
                clock: FactoryClock = DEFAULT_CLOCK) -> list[PlannedImage]:
    """Every image of the run, ordered by day, line, capture time and camera."""
    images: list[PlannedImage] = []
    spread = max(1, preset.parts_per_day // 5)
    for day in range(days):
        today = start + timedelta(days=day)
        # Elapsed time is counted in UTC: adding to a local time would add wall-clock hours across a DST switch.
        shift_start = datetime.combine(today, clock.shift_start, tzinfo=clock.time_zone).astimezone(UTC)
        for line_idx in range(preset.lines):
            rng = rng_for(seed, Stream.PARTS, day, line_idx)
            n_parts = preset.parts_per_day + int(rng.integers(-spread, spread + 1))
            offsets = np.sort(rng.integers(0, SHIFT_SECONDS, n_parts))
            for part_idx, offset in enumerate(offsets):
                part_id = f"line{line_idx + 1}-{today:%Y%m%d}-{part_idx + 1:04d}"
                station_idx = int(rng.integers(preset.stations))
                if rng.random() < OK_RATE:
                    part_label, seen = OK_CLASS, [False] * preset.cameras
                else:
                    part_label = str(rng.choice(DEFECT_CLASSES, p=DEFECT_WEIGHTS))
                    # One camera surely sees the defect; the others only if it faces them.
                    first = int(rng.integers(preset.cameras))
                    seen = [c == first or rng.random() < 0.5 for c in range(preset.cameras)]
                for cam_idx in range(preset.cameras):
                    images.append(
                        PlannedImage(
                            day=day,
                            line_idx=line_idx,
                            station_idx=station_idx,
                            part_idx=part_idx,
                            cam_idx=cam_idx,
                            part_id=part_id,
                            # The cameras fire one after the other, a second apart.
                            captured_at=(shift_start + timedelta(seconds=int(offset) + cam_idx)).astimezone(
                                clock.time_zone),
                            part_label=part_label,
                            true_label=part_label if seen[cam_idx] else OK_CLASS,
                        )
                    )
    return images


@dataclass(frozen=True)
class Correction:
    corrected_by: str
    corrected_at: datetime
    reason: str


@dataclass(frozen=True)
class LabelDecision:
    """What the labeler did with one image; the region around a real defect comes from its drawn mask."""

    labeler: str
    label: str
    labeled_at: datetime
    centre_shift: tuple[float, float]  # labelers click a pixel or two off
    growth: float  # and draw the ellipse a bit generously
    false_alarm: Ellipse | None  # the region drawn on an ok image taken for a defect
    wrong: bool  # label differs from the truth
    correction: Correction | None


def decide_label(seed: int, image: PlannedImage, image_size: int) -> LabelDecision:
    """Who labeled the image, when, what they chose, and whether a reviewer fixed it later."""
    who = rng_for(seed, Stream.LABELER, image.day, image.line_idx, image.part_idx)
    labeler_idx = int(who.choice(len(LABELERS), p=LABELER_SHARE))  # one labeler per part
    rng = rng_for(seed, Stream.LABEL, *image.key)
    labeled_at = image.captured_at + timedelta(seconds=int(rng.integers(5 * 60, 8 * 3600)))
    wrong = rng.random() < LABELER_ERROR[labeler_idx]
    label = image.true_label
    if wrong:
        label = str(rng.choice([c for c in CLASSES if c != image.true_label]))
    false_alarm = None
    if label != OK_CLASS and image.true_label == OK_CLASS:
        s = image_size
        false_alarm = Ellipse(
            float(rng.uniform(0.15, 0.85) * s),
            float(rng.uniform(0.15, 0.85) * s),
            float(rng.uniform(0.03, 0.08) * s),
            float(rng.uniform(0.02, 0.05) * s),
            float(rng.uniform(0, 180)),
        )
    correction = None
    if wrong and rng.random() < CORRECTED_SHARE:
        reviewer = str(rng.choice([r for r in REVIEWERS if r != LABELERS[labeler_idx]]))
        if image.true_label == OK_CLASS:
            reason = "false alarm: surface texture, no defect"
        elif label == OK_CLASS:
            reason = f"missed {image.true_label}"
        else:
            reason = f"{image.true_label}, not {label}"
        corrected_at = labeled_at + timedelta(seconds=int(rng.integers(86400, 5 * 86400)))
        correction = Correction(reviewer, corrected_at, reason)
    return LabelDecision(
        labeler=LABELERS[labeler_idx],
        label=label,
        labeled_at=labeled_at,
        centre_shift=(float(np.clip(rng.normal(0, 1), -2, 2)), float(np.clip(rng.normal(0, 1), -2, 2))),
        growth=float(rng.uniform(1.05, 1.2)),
        false_alarm=false_alarm,
        wrong=wrong,
        correction=correction,
    )


BROKEN_KINDS = ("truncated_png", "zero_byte", "not_png", "missing_file")
BAD_KINDS = (*BROKEN_KINDS, "naive_timestamp")


def choose_bad_files(seed: int, images: list[PlannedImage]) -> tuple[dict[int, str], list[int]]:
    """Which images arrive damaged (index -> kind) and which are delivered a second time.

    About 2 % of the images, at least one of each kind, drawn among ok images so that no defect or
    mask is lost with them; plus about 0.5 % duplicates, at least one.
    """
    candidates = [i for i, im in enumerate(images) if im.true_label == OK_CLASS and im.part_label == OK_CLASS]
    n_bad = max(len(BAD_KINDS), round(0.02 * len(images)))
    n_dup = max(1, round(0.005 * len(images)))
    if len(candidates) < n_bad + n_dup:
        raise ValueError("run too small to plant bad files; use more days or a bigger size")
    picked = rng_for(seed, Stream.BAD).choice(len(candidates), n_bad + n_dup, replace=False)
    chosen = [candidates[int(i)] for i in picked]
    bad = {index: BAD_KINDS[k % len(BAD_KINDS)] for k, index in enumerate(chosen[:n_bad])}
    return bad, sorted(chosen[n_bad:])
