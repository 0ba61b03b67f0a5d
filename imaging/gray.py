"""Stored pixels as every reader sees them: one decoder, one rule for 16-bit samples, so that an image
ingested, trained on, served and shown has the same 8-bit pixels everywhere."""

from __future__ import annotations

import cv2
import numpy as np


def decode(data: bytes) -> np.ndarray:
    """The pixels of image bytes as stored: 8 or 16 bits a sample, gray, BGR or BGRA."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f"{len(data):,} bytes that do not decode as an image")
    return pixels


def to_8bit(pixels: np.ndarray) -> np.ndarray:
    """8-bit samples: a 16-bit sample keeps its high byte. A fixed rule rather than a stretch of each image's
    range, so that the same scene gives the same gray levels whatever else is in the frame."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype != np.uint16:
        raise ValueError(f"unsupported sample type {pixels.dtype}")
    return (pixels >> 8).astype(np.uint8)


def gray8(pixels: np.ndarray) -> np.ndarray:
    """The 8-bit gray image the networks take, from whatever the camera sent (colour, alpha, 16 bits)."""
    pixels = to_8bit(pixels)
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code)
    return np.ascontiguousarray(pixels)


def decode_gray8(data: bytes) -> np.ndarray:
    """Image bytes as the 8-bit gray image every reader uses."""
    return gray8(decode(data))


def bgr8(pixels: np.ndarray) -> np.ndarray:
    """8-bit BGR for display: the same gray levels as `gray8`, colour kept where the camera had it."""
    pixels = to_8bit(pixels)
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR) if pixels.shape[2] == 4 else pixels
