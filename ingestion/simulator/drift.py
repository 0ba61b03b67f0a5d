"""Slow changes of the line over the days: a dimming lamp, a sensor growing stuck pixels, dust on a lens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraRef:
    """One physical camera: cameras are named per station, stations per line."""

    line: str
    station: str
    camera: str


@dataclass(frozen=True)
class DriftSchedule:
    """Which line or camera each drift hits and from which day on; day 0 is the first simulated day.

    The targets exist in every size preset, so even a tiny run shows every effect.
    """

    dimming_line: str = "line1"
    dimming_from_day: int = 1
    dimming_per_day: float = 0.03  # fraction of the original brightness lost per day, cumulative

    stuck_camera: CameraRef = CameraRef("line2", "st1", "cam1")
    stuck_from_day: int = 2
    stuck_first_day: int = 12  # stuck pixels on the first affected day
    stuck_per_day: int = 12  # newly stuck pixels each further day

    dust_camera: CameraRef = CameraRef("line2", "st1", "cam2")
    dust_from_day: int = 3
    dust_sigma: float = 1.5  # Gaussian blur sigma in pixels on the first dusty day
    dust_sigma_per_day: float = 0.25

    def brightness(self, line: str, day: int) -> float:
        """Factor on the light reaching `line`'s cameras on `day` (1.0 = as installed)."""
        if line != self.dimming_line or day < self.dimming_from_day:
            return 1.0
        return max(0.5, 1.0 - self.dimming_per_day * (day - self.dimming_from_day + 1))

    def stuck_pixels(self, camera: CameraRef, day: int) -> int:
        """How many pixels of `camera`'s sensor are stuck on `day`."""
        if camera != self.stuck_camera or day < self.stuck_from_day:
            return 0
        return min(STUCK_MAX, self.stuck_first_day + self.stuck_per_day * (day - self.stuck_from_day))

    def blur_sigma(self, camera: CameraRef, day: int) -> float:
        """Sigma of the blur dust puts on `camera`'s images on `day` (0 = sharp)."""
        if camera != self.dust_camera or day < self.dust_from_day:
            return 0.0
        return self.dust_sigma + self.dust_sigma_per_day * (day - self.dust_from_day)

    def touching(self, camera: CameraRef, day: int) -> set[str]:
        """The drifts ("dimming", "stuck pixels", "dust") that touch `camera`'s images on `day`."""
        return {name for name, touches in (("dimming", self.brightness(camera.line, day) != 1.0),
                                           ("stuck pixels", self.stuck_pixels(camera, day) > 0),
                                           ("dust", self.blur_sigma(camera, day) > 0)) if touches}


DRIFT = DriftSchedule()
# Lamps, sensors and lenses as installed, every day.
NO_DRIFT = DriftSchedule(dimming_per_day=0.0, stuck_first_day=0, stuck_per_day=0, dust_sigma=0.0,
                         dust_sigma_per_day=0.0)

STUCK_MAX = 4096


def stuck_pixel_map(
    rng: np.random.Generator, size: int, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and stuck values (0 dead, 255 hot) of the first `count` stuck pixels of a sensor.

    Always drawing STUCK_MAX candidates keeps the same pixels stuck from one day to the next, only more of them.
    """
    rows = rng.integers(0, size, STUCK_MAX)
    cols = rng.integers(0, size, STUCK_MAX)
    values = np.where(rng.random(STUCK_MAX) < 0.5, 0, 255).astype(np.uint8)
    return rows[:count], cols[:count], values[:count]
