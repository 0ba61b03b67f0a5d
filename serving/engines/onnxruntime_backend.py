"""The ONNX Runtime engine: the exported classifier's ONNX file run as it is, on the CPU or, where
onnxruntime-gpu is installed, on a CUDA GPU."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from models.data import to_input
from models.export import INPUT_NAME
from serving.engines.artifact import BuildInputs, EngineArtifact
from serving.engines.base import (
    BackendUnavailable,
    Engine,
    EngineError,
    EngineOutput,
    EngineRecord,
    cuda_index,
)

OUTPUTS = ["probabilities", "defect_cells"]


def _providers(device: str) -> list[str | tuple[str, dict[str, int]]]:
    index = cuda_index(device)
    if index is None:
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BackendUnavailable(
            f"device {device}: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu), or "
            "build for --device cpu, or use --backend tensorrt on a GPU")
    return [("CUDAExecutionProvider", {"device_id": index})]


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session over the engine's ONNX file, fed as `models.data.to_input` normalises."""

    def __init__(self, record: EngineRecord, artifact: EngineArtifact, *, threads: int | None = None) -> None:
        super().__init__(record, **artifact.network())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per physical core
        options.inter_op_num_threads = 1  # a chain of convolutions: nothing runs side by side
        self._session = ort.InferenceSession(artifact.payload, options, providers=_providers(record.device))

    def infer(self, tiles: np.ndarray) -> EngineOutput:
        x = to_input(self.check_tiles(tiles)).numpy()
        probabilities, cells = self._session.run(OUTPUTS, {INPUT_NAME: x})
        return EngineOutput(probabilities=probabilities, defect_cells=cells[:, 0])

    @staticmethod
    def build_payload(inputs: BuildInputs) -> bytes:
        """The ONNX file itself, once ONNX Runtime has opened it on the device asked for."""
        if inputs.precision != "fp32":
            raise EngineError(
                f"the onnxruntime backend runs the exported fp32 ONNX file only, not {inputs.precision}: "
                f"use --backend tensorrt (fp16, int8) or --backend torch_cuda (fp16) on a GPU")
        ort.InferenceSession(inputs.onnx, providers=_providers(inputs.device))
        return inputs.onnx

    @staticmethod
    def library_versions() -> dict[str, str]:
        return {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
