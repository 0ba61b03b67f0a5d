"""The PyTorch CUDA engine: the registered checkpoint itself on a GPU, in fp32 or fp16 (autocast), for a GPU
machine where TensorRT is not installed."""

from __future__ import annotations

import numpy as np
import torch

from models.checkpoint import model_from_bytes
from models.classifier import DefectClassifier
from models.data import to_input
from models.export import ClassifierOutputs
from serving.engines.artifact import BuildInputs, EngineArtifact
from serving.engines.base import (
    BackendUnavailable,
    Engine,
    EngineError,
    EngineOutput,
    EngineRecord,
    cuda_index,
)


def require_cuda(device: str, backend: str) -> torch.device:
    """The CUDA device named ``device``, or a clear error when it is not one or this machine has none."""
    index = cuda_index(device)
    if index is None:
        raise EngineError(f"the {backend} backend runs on a CUDA GPU: give --device cuda:0 (or cuda:N)")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        raise BackendUnavailable(
            f"the {backend} backend needs a CUDA GPU, and torch {torch.__version__} ({build}) sees none "
            "here: use --backend onnxruntime --device cpu")
    if index >= torch.cuda.device_count():
        raise BackendUnavailable(f"{device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device("cuda", index)


def _classifier(checkpoint: bytes, name: str) -> DefectClassifier:
    model = model_from_bytes(checkpoint, name=name).model
    if not isinstance(model, DefectClassifier):
        raise EngineError(f"{name} holds a {type(model).__name__}; engines run the classifier")
    return model


class TorchCudaEngine(Engine):
    """The classifier's network with its served outputs (`models.export.ClassifierOutputs`) on one GPU."""

    def __init__(self, record: EngineRecord, artifact: EngineArtifact, *, threads: int | None = None) -> None:
        super().__init__(record, **artifact.network())
        self._device = require_cuda(record.device, "torch_cuda")
        model = _classifier(artifact.payload, f"engine {record.engine_id[:12]}")
        self._module = ClassifierOutputs(model).to(self._device).eval()
        # Autocast rather than .half(): convolutions run in fp16 while batch-norm statistics and the
        # standardisation (float64 on purpose, see models.data.Standardise) keep their precision.
        self._fp16 = record.precision == "fp16"

    @torch.no_grad()
    def infer(self, tiles: np.ndarray) -> EngineOutput:
        x = to_input(self.check_tiles(tiles)).to(self._device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self._fp16):
            probabilities, _, cells = self._module(x)
        return EngineOutput(probabilities=probabilities.float().cpu().numpy(),
                            defect_cells=cells[:, 0].float().cpu().numpy())

    def close(self) -> None:
        self._module.cpu()
        torch.cuda.empty_cache()

    @staticmethod
    def build_payload(inputs: BuildInputs) -> bytes:
        """The checkpoint's bytes, once it is known to be a classifier and the GPU to be there."""
        if inputs.precision not in ("fp32", "fp16"):
            raise EngineError(f"the torch_cuda backend runs fp32 or fp16, not {inputs.precision}: "
                              "int8 needs calibration, use --backend tensorrt --precision int8")
        require_cuda(inputs.device, "torch_cuda")
        _classifier(inputs.checkpoint, "the model's checkpoint")
        return inputs.checkpoint

    @staticmethod
    def library_versions() -> dict[str, str]:
        return {"torch": torch.__version__, "cuda": torch.version.cuda or "none"}
