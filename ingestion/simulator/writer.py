"""The text files of the import format, and the damage done to files on their way from the line."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path

import yaml

from ingestion.simulator.plan import CLASSES, PlannedImage

MANIFEST_COLUMNS = ("path", "part_id", "line", "station", "camera", "captured_at")
LABEL_COLUMNS = ("label_id", "path", "part_id", "label", "labeler", "labeled_at", "region", "mask_path")
CORRECTION_COLUMNS = (
    "correction_id",
    "label_id",
    "path",
    "part_id",
    "old_label",
    "new_label",
    "corrected_by",
    "corrected_at",
    "reason",
)
TRUTH_COLUMNS = ("path", "part_id", "true_label", "defect_area_px", "part_label")
BAD_FILE_COLUMNS = ("path", "kind")

NOT_PNG_TEXT = b"HTTP/1.1 503 Service Unavailable\r\n\r\nimage server busy, try again later\n"


def write_csv(path: Path, columns: tuple[str, ...], rows: Iterable[Mapping[str, object]]) -> None:
    # "\n" line ends whatever the platform, so the bytes are the same everywhere.
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_ontology(path: Path) -> None:
    path.write_text(
        yaml.safe_dump({"version": 1, "classes": list(CLASSES)}, sort_keys=False), encoding="utf-8"
    )


def manifest_row(image: PlannedImage, path: str | None = None, naive: bool = False) -> dict[str, str]:
    captured = image.captured_at.replace(tzinfo=None) if naive else image.captured_at
    return {
        "path": path or image.path,
        "part_id": image.part_id,
        "line": image.line,
        "station": image.station,
        "camera": image.camera,
        "captured_at": captured.isoformat(timespec="seconds"),
    }


def duplicate_path(image: PlannedImage) -> str:
    """Where a re-delivered copy lands: the same file name in the next day's folder."""
    next_day = (image.captured_at + timedelta(days=1)).date().isoformat()
    return f"{image.line}/{next_day}/{image.station}/{image.part_id}_{image.camera}.png"


def damage(file: Path, kind: str) -> None:
    """Break an already written image the way `kind` says; naive_timestamp leaves the file alone."""
    if kind == "truncated_png":
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])  # the transfer died half way
    elif kind == "zero_byte":
        file.write_bytes(b"")
    elif kind == "not_png":
        file.write_bytes(NOT_PNG_TEXT)  # an error page saved under the image's name
    elif kind == "missing_file":
        file.unlink()
    elif kind != "naive_timestamp":
        raise ValueError(f"unknown bad file kind {kind!r}")
