"""An engine's artifact: the backend's payload (ONNX file, TensorRT plan or torch checkpoint) behind a header
naming its backend, precision, device, lineage and network, so that its SHA-256, the engine id, covers all.

Without the header an fp16 and an fp32 engine of one checkpoint, or a CPU and a GPU engine of one ONNX file,
would be the same bytes and share an id. The layout is that of the model checkpoints: magic, header length,
JSON header with sorted keys, payload; the same inputs give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from serving.engines.base import LineageError

MAGIC = b"VLENGINE1"
FORMAT = 1


@dataclass(frozen=True)
class EngineArtifact:
    backend: str
    precision: str
    device: str
    model_id: str
    onnx_sha256: str
    dataset_version_id: str
    manifest_hash: str
    classes: tuple[str, ...]
    ok_class: str
    input_size: tuple[int, int]
    cell_size: int
    payload: bytes
    threshold: float | None = None  # the model's operating threshold: a new operating point, a new engine id

    def network(self) -> dict[str, Any]:
        """What `Engine.__init__` takes besides the record."""
        return {"classes": self.classes, "ok_class": self.ok_class, "input_size": self.input_size,
                "cell_size": self.cell_size}

    def to_bytes(self) -> bytes:
        header = asdict(self) | {"format": FORMAT}
        del header["payload"]
        head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return MAGIC + len(head).to_bytes(8, "little") + head + self.payload

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str) -> EngineArtifact:
        """Parse an artifact; ``name`` says which in the error when the bytes are not one."""
        start = len(MAGIC) + 8
        if not data.startswith(MAGIC) or len(data) < start:
            raise LineageError(f"{name} is not a visionledger engine artifact (it lacks the {MAGIC!r} "
                               "header): rebuild the engine with `visionledger engines build`")
        size = int.from_bytes(data[len(MAGIC):start], "little")
        header = json.loads(data[start:start + size])
        if header.pop("format", None) != FORMAT:
            raise LineageError(f"{name} is an engine artifact of another format: rebuild it with this code")
        header["classes"] = tuple(header["classes"])
        header["input_size"] = tuple(header["input_size"])
        header.setdefault("threshold", None)  # artifacts built before engines carried a threshold
        return cls(**header, payload=data[start + size:])


@dataclass(frozen=True)
class BuildInputs:
    """What a backend may compile an engine from: ONNX Runtime and TensorRT use the ONNX file, the torch
    backend the checkpoint; calibration images (uint8 N x H x W) are drawn only when asked for."""

    onnx: bytes
    checkpoint: bytes
    precision: str
    device: str
    input_size: tuple[int, int]
    calibration_images: Callable[[], np.ndarray]
