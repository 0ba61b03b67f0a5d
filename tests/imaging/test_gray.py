"""One rule for stored pixels: a 16-bit image gives the same 8-bit gray to training, serving, drift and the app."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from apps.ui.overlays import draw_regions
from imaging.gray import decode_gray8, gray8, to_8bit
from learning.drift import _decoder
from learning.registry import load_image
from serving.api import create_app
from serving.service import InspectionService, ServeConfig
from tests.builders import FORM_CAPTURED_AT, bearer, station_token


def test_sixteen_bits_keep_their_high_byte_in_gray_and_colour() -> None:
    deep = np.array([[0, 255, 256, 40_000, 65_535]], np.uint16)
    assert to_8bit(deep).tolist() == [[0, 0, 1, 156, 255]]
    colour = np.dstack([deep, deep, deep, np.full_like(deep, 65_535)])  # BGRA, as a camera may send it
    assert gray8(colour).tolist() == [[0, 0, 1, 156, 255]]
    with pytest.raises(ValueError, match="float32"):
        to_8bit(deep.astype(np.float32))
    with pytest.raises(ValueError, match="do not decode"):
        decode_gray8(b"\x89PNG but not really")


def test_a_sixteen_bit_image_is_the_same_gray_everywhere(built_engine, tmp_path: Path) -> None:
    cat, _ = built_engine
    rng = np.random.default_rng(7)
    deep = rng.integers(0, 65_536, (128, 128), dtype=np.uint16)  # the tiny engine's input size
    expected = (deep >> 8).astype(np.uint8)
    sent = {"deep": cv2.imencode(".png", deep)[1].tobytes(), "shallow": cv2.imencode(".png", expected)[1].tobytes()}
    token = station_token(cat)
    service = InspectionService(cat, ServeConfig(spool=tmp_path / "spool", max_wait_ms=2, retry_seconds=0.2))
    served = {}
    with TestClient(create_app(service), headers=bearer(token)) as client:
        for n, (name, data) in enumerate(sent.items()):
            reply = client.post("/v1/inspect", files={"image": (f"{name}.png", data)},
                                data={"part_id": f"P-{name}", "station": "st1", "camera": "cam1",
                                      "captured_at": (FORM_CAPTURED_AT + timedelta(minutes=n)).isoformat()})
            assert reply.status_code == 200, reply.text
            served[name] = reply.json()
    stored = served["deep"]["sha256"]
    assert cat.blobs.read(stored) == sent["deep"]  # kept as sent, 16 bits
    # Served: the 16-bit image scores exactly as its 8-bit twin, so the engine saw the same pixels.
    assert served["deep"]["scores"] == served["shallow"]["scores"]
    # Trained on, measured for drift, shown in the app: the same 8-bit pixels.
    assert np.array_equal(load_image(cat, stored), expected)
    assert np.array_equal(_decoder(cat, stored)(), expected)
    shown = cv2.imdecode(np.frombuffer(draw_regions(cat.blobs.read(stored), min_side=1), np.uint8), cv2.IMREAD_COLOR)
    assert all(np.array_equal(shown[:, :, c], expected) for c in range(3))
