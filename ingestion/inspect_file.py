"""One delivered file, checked in a worker process: inside the delivery, an image, not too large; then
decoded, hashed, staged as a blob and given a thumbnail. Returns facts or a reject reason, never raises."""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from catalog.blobs import LocalBlobStore
from catalog.events import RejectReason
from imaging.intake import Inspected, Limits, Rejected, check_image_bytes, describe, write_thumbnail


def init_worker() -> None:
    cv2.setNumThreads(1)  # parallelism comes from the process pool; threads inside would oversubscribe


def inspect(root: Path, relative: str, blob_root: Path, thumbnail_root: Path, limits: Limits) -> Inspected | Rejected:
    """Check and stage one file named ``relative`` (as written in the manifest) under the delivery ``root``."""
    located = _locate(root, relative)
    if isinstance(located, Rejected):
        return located
    try:
        size = located.stat().st_size
        if size == 0:
            return Rejected(RejectReason.EMPTY, "the file is empty (0 bytes)")
        if size > limits.max_bytes:
            return Rejected(RejectReason.TOO_LARGE, f"{size:,} bytes, above the limit of {limits.max_bytes:,}")
        data = located.read_bytes()
    except OSError as exc:
        return Rejected(RejectReason.UNREADABLE, f"cannot read the file: {exc.strerror}")
    checked = check_image_bytes(data, limits)
    if isinstance(checked, Rejected):
        return checked
    sha, fmt, pixels = checked
    blobs = LocalBlobStore(blob_root)
    already = blobs.exists(sha)
    if not already:
        blobs.stage(data, sha, durable=False)  # the caller syncs once per batch before appending events
    thumbnail = write_thumbnail(pixels, sha, thumbnail_root)
    return describe(sha, fmt, pixels, size, already_stored=already, thumbnail=thumbnail)


def _locate(root: Path, relative: str) -> Path | Rejected:
    """The file, if it is inside the delivery (no absolute path, no ``..``, no symlink leading out)."""
    if not relative:
        return Rejected(RejectReason.MISSING_FIELD, "the path is empty")
    if os.path.isabs(relative):
        return Rejected(RejectReason.OUTSIDE_ROOT, f"{relative!r} is absolute; manifest paths are relative to it")
    base = root.resolve()
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base):
        return Rejected(RejectReason.OUTSIDE_ROOT, f"{relative!r} leads outside the delivery {base}")
    if not candidate.exists():
        return Rejected(RejectReason.MISSING_FILE, f"no file at {relative!r}")
    if not candidate.is_file():
        return Rejected(RejectReason.UNREADABLE, f"{relative!r} is not a regular file")
    return candidate


