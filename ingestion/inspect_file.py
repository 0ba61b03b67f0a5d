"""One delivered file, checked in a worker process: inside the delivery, an image, not too large; then
decoded, hashed, staged as a blob and given a thumbnail. Returns facts or a reject reason, never raises."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from catalog.blobs import LocalBlobStore, sha256_of
from catalog.events import RejectReason

THUMBNAIL_SIDE = 128
# Magic bytes -> (format, trailer a complete file ends with, or None when the format has none to check).
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": ("png", b"IEND\xaeB`\x82"),
    b"\xff\xd8\xff": ("jpeg", b"\xff\xd9"),
    b"II*\x00": ("tiff", None),
    b"MM\x00*": ("tiff", None),
    b"BM": ("bmp", None),
}


@dataclass(frozen=True)
class Limits:
    """Refuse files that would cost too much to decode (decompression bombs) or store."""

    max_pixels: int = 64_000_000
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class Inspected:
    sha256: str
    width: int
    height: int
    channels: int
    bit_depth: int
    format: str
    byte_size: int
    already_stored: bool  # the same bytes were in the blob store before this delivery
    thumbnail: str  # path relative to the thumbnail root


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    detail: str
    sha256: str | None = None


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


def describe(sha: str, fmt: str, pixels: np.ndarray, byte_size: int, *, already_stored: bool,
             thumbnail: str) -> Inspected:
    """The facts an ImageIngested records about decoded, accepted bytes."""
    height, width = pixels.shape[:2]
    return Inspected(
        sha256=sha, width=width, height=height, channels=1 if pixels.ndim == 2 else pixels.shape[2],
        bit_depth=16 if pixels.dtype == np.uint16 else 8, format=fmt, byte_size=byte_size,
        already_stored=already_stored, thumbnail=thumbnail,
    )


def check_image_bytes(data: bytes, limits: Limits) -> tuple[str, str, np.ndarray] | Rejected:
    """(sha256, format, decoded pixels) of bytes that claim to be an image, or why they are refused: the checks
    every way in (a delivered file, an image posted to the server) applies before anything is stored."""
    size = len(data)
    if size == 0:
        return Rejected(RejectReason.EMPTY, "the image is empty (0 bytes)")
    if size > limits.max_bytes:
        return Rejected(RejectReason.TOO_LARGE, f"{size:,} bytes, above the limit of {limits.max_bytes:,}")
    sha = sha256_of(data)
    kind = next(((fmt, trailer) for magic, (fmt, trailer) in SIGNATURES.items() if data.startswith(magic)), None)
    if kind is None:
        return Rejected(RejectReason.NOT_AN_IMAGE, f"starts with {data[:8]!r}, not a PNG, JPEG, TIFF or BMP signature", sha)
    fmt, trailer = kind
    if trailer is not None and trailer not in data[-64:]:
        return Rejected(RejectReason.TRUNCATED, f"{fmt.upper()} data ends before its end marker ({size:,} bytes)", sha)
    dimensions = _header_dimensions(fmt, data)
    if dimensions and dimensions[0] * dimensions[1] > limits.max_pixels:
        w, h = dimensions
        return Rejected(RejectReason.TOO_LARGE, f"{w}x{h} = {w * h:,} pixels, above the limit of {limits.max_pixels:,}", sha)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        return Rejected(RejectReason.UNREADABLE, f"the {fmt.upper()} data is corrupt and cannot be decoded", sha)
    height, width = pixels.shape[:2]
    if width * height > limits.max_pixels:  # formats whose header we do not parse are checked here
        return Rejected(RejectReason.TOO_LARGE, f"{width}x{height} pixels, above the limit of {limits.max_pixels:,}", sha)
    if pixels.dtype not in (np.uint8, np.uint16):
        return Rejected(RejectReason.UNREADABLE, f"unsupported sample type {pixels.dtype}", sha)
    return sha, fmt, pixels


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


def _header_dimensions(fmt: str, data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, so a decompression bomb is refused before decoding."""
    if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "jpeg":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + length
    return None


def write_thumbnail(pixels: np.ndarray, sha: str, thumbnail_root: Path) -> str:
    """A JPEG of at most THUMBNAIL_SIDE pixels a side; derived data, rewritten identically if lost."""
    relative = f"{sha[:2]}/{sha}.jpg"
    target = thumbnail_root / relative
    if target.exists():
        return relative
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    height, width = pixels.shape[:2]
    scale = THUMBNAIL_SIDE / max(height, width)
    if scale < 1:
        pixels = cv2.resize(pixels, (max(1, round(width * scale)), max(1, round(height * scale))),
                            interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 85])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(encoded.tobytes())
    os.replace(tmp, target)
    return relative
