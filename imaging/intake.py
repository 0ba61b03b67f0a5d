"""Image bytes as they arrive, from a delivered file or an image posted to the server: the checks every way
in applies before anything is stored, the facts an ImageIngested records, and the thumbnail."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from catalog.blobs import sha256_of, uri_of
from catalog.events import ImageIngested, RejectReason
from catalog.settings import Settings
from catalog.store import NewEvent, event_id_for
from imaging.gray import decode, to_8bit

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


def describe(sha: str, fmt: str, pixels: np.ndarray, byte_size: int, *, already_stored: bool,
             thumbnail: str) -> Inspected:
    """The facts an ImageIngested records about decoded, accepted bytes."""
    height, width = pixels.shape[:2]
    return Inspected(
        sha256=sha, width=width, height=height, channels=1 if pixels.ndim == 2 else pixels.shape[2],
        bit_depth=16 if pixels.dtype == np.uint16 else 8, format=fmt, byte_size=byte_size,
        already_stored=already_stored, thumbnail=thumbnail,
    )


def ingested_event(found: Inspected, settings: Settings, *, part_id: str, line: str, station: str, camera: str,
                   captured_at: datetime, source_path: str, metadata: Mapping[str, str],
                   extra: Mapping[str, str] | None = None) -> NewEvent:
    """The ImageIngested of accepted bytes, by every way in (a delivery, the server). Its event id is the
    sighting's natural key, so the same file re-delivered, or the same request retried, appends nothing."""
    # The thumbnail is named relative to the catalog's home, wherever the settings put the thumbnail folder.
    thumbnail_uri = str((settings.thumbnail_root / found.thumbnail).relative_to(settings.home))
    return NewEvent(
        data=ImageIngested(
            sha256=found.sha256, part_id=part_id, line=line, station=station, camera=camera,
            captured_at=captured_at, width=found.width, height=found.height, channels=found.channels,
            bit_depth=found.bit_depth, byte_size=found.byte_size, format=found.format,
            blob_uri=uri_of(found.sha256), thumbnail_uri=thumbnail_uri, source_path=source_path,
            metadata=dict(extra or {}),
        ),
        occurred_at=captured_at,
        event_id=sighting_event_id(found.sha256, source_path, part_id, camera, captured_at),
        metadata=dict(metadata),
    )


def sighting_event_id(sha256: str, source_path: str, part_id: str, camera: str, captured_at: datetime) -> uuid.UUID:
    """The id of an ImageIngested: the sighting's natural key, however the image came in."""
    return event_id_for("ingested", sha256, source_path, part_id, camera, captured_at.isoformat())


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
    # Every format's width and height are read from its header, so a decompression bomb is never decoded.
    dimensions = _header_dimensions(fmt, data)
    if dimensions is None:
        return Rejected(RejectReason.UNREADABLE, f"the {fmt.upper()} header does not say the image's size", sha)
    w, h = dimensions
    if w * h > limits.max_pixels:
        return Rejected(RejectReason.TOO_LARGE, f"{w}x{h} = {w * h:,} pixels, above the limit of {limits.max_pixels:,}", sha)
    try:
        pixels = decode(data)
    except ValueError:
        return Rejected(RejectReason.UNREADABLE, f"the {fmt.upper()} data is corrupt and cannot be decoded", sha)
    if pixels.dtype not in (np.uint8, np.uint16):
        return Rejected(RejectReason.UNREADABLE, f"unsupported sample type {pixels.dtype}", sha)
    return sha, fmt, pixels


def _header_dimensions(fmt: str, data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone (None when it does not say), so that a decompression bomb is
    refused before decoding. For a TIFF, its first image: the one the decoder reads."""
    if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "jpeg":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            if data[i + 1] == 0xFF:  # a fill byte before the marker
                i += 1
                continue
            marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + length
        return None
    if fmt == "bmp" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # the old OS/2 header: 16-bit sizes
            return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)  # negative: rows stored top-down
        return abs(width), abs(height)
    if fmt == "tiff":
        return _tiff_dimensions(data)
    return None


def _tiff_dimensions(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (tag 256) and ImageLength (257) of the first image file directory."""
    order = "little" if data[:2] == b"II" else "big"
    start = int.from_bytes(data[4:8], order)
    if start + 2 > len(data):
        return None
    entries = int.from_bytes(data[start:start + 2], order)
    found: dict[int, int] = {}
    for n in range(entries):
        entry = data[start + 2 + 12 * n:start + 14 + 12 * n]
        if len(entry) < 12:
            return None
        tag, kind = int.from_bytes(entry[0:2], order), int.from_bytes(entry[2:4], order)
        if tag in (256, 257):
            # SHORT (3) sits in the first two bytes of the value field, LONG (4) fills it.
            found[tag] = int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order)
    return (found[256], found[257]) if 256 in found and 257 in found else None


def write_thumbnail(pixels: np.ndarray, sha: str, thumbnail_root: Path) -> str:
    """A JPEG of at most THUMBNAIL_SIDE pixels a side; derived data, rewritten identically if lost."""
    relative = f"{sha[:2]}/{sha}.jpg"
    target = thumbnail_root / relative
    if target.exists():
        return relative
    pixels = to_8bit(pixels)
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
