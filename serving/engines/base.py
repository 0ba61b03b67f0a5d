"""What every inference engine offers the server: uint8 tiles in, per-class probabilities and a defect map out.

Backends (ONNX Runtime, TensorRT, PyTorch CUDA) differ only in how they run the exported classifier; the
server, the tiler, the decision rules and replay see this interface and nothing else.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from catalog.lineage import EngineRecord  # re-exported: an engine's lineage row, as the catalog keeps it

BACKENDS = ("onnxruntime", "tensorrt", "torch_cuda")
PRECISIONS = ("fp32", "fp16", "int8")


class EngineError(RuntimeError):
    """An engine cannot be built or loaded as asked; the message says what to do instead."""


class BackendUnavailable(EngineError):
    """The backend's library or hardware (TensorRT, a CUDA GPU, onnxruntime-gpu) is missing here."""


class LineageError(EngineError):
    """An engine whose record is incomplete (model, dataset version or manifest hash missing or not matching
    the catalog) or whose artifact's bytes do not hash to its id: it must not serve."""


def cuda_index(device: str) -> int | None:
    """The GPU index of a device named "cuda:N", None for "cpu"."""
    match = re.fullmatch(r"cpu|cuda:(\d+)", device)
    if match is None:
        raise EngineError(f"unknown device {device!r}: use 'cpu' or 'cuda:N' (N the GPU's index: cuda:0)")
    return None if device == "cpu" else int(match.group(1))


@dataclass(frozen=True)
class EngineOutput:
    """One batch's results, row i for tile i."""

    probabilities: np.ndarray  # N x len(classes), float32, rows sum to 1
    defect_cells: np.ndarray  # N x (H / cell_size) x (W / cell_size), float32: each cell's defect probability


class Engine(ABC):
    """A loaded, verified engine, ready to run batches of tiles of exactly `input_size`."""

    def __init__(
        self,
        record: EngineRecord,
        *,
        classes: tuple[str, ...],
        ok_class: str,
        input_size: tuple[int, int],
        cell_size: int,
    ) -> None:
        self.record = record
        self.classes = classes
        self.ok_class = ok_class
        self.input_size = input_size
        self.cell_size = cell_size

    @property
    def engine_id(self) -> str:
        return self.record.engine_id

    @property
    def ok_index(self) -> int:
        return self.classes.index(self.ok_class)

    @abstractmethod
    def infer(self, tiles: np.ndarray) -> EngineOutput:
        """Run uint8 gray tiles, N x H x W with (H, W) == input_size, through the network."""

    def check_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """``tiles`` as a uint8 N x H x W array of this engine's input size, or a ValueError saying what is
        off."""
        tiles = np.asarray(tiles)
        h, w = self.input_size
        if tiles.dtype != np.uint8 or tiles.ndim != 3 or tiles.shape[1:] != (h, w) or not len(tiles):
            raise ValueError(f"engine {self.engine_id[:12]} takes uint8 tiles N x {h} x {w} (N >= 1), "
                             f"got {tiles.dtype} {tiles.shape}")
        return tiles

    def close(self) -> None:  # noqa: B027 - an optional hook, deliberately not abstract
        """Release what the backend holds (sessions, CUDA contexts); the default holds nothing to release."""
