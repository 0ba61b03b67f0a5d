"""The ONNX Runtime engine: the exported classifier's ONNX file run as it is (fp32), on the CPU or, where
onnxruntime-gpu is installed, on a CUDA GPU; or, on the CPU, with its learned convolutions in int8."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

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
        """The ONNX file itself (fp32), or its int8 form (CPU only), once ONNX Runtime has opened it on the
        device asked for."""
        on_gpu = cuda_index(inputs.device) is not None
        if inputs.precision == "fp16" or (inputs.precision == "int8" and on_gpu):
            raise EngineError(
                f"the onnxruntime backend runs the exported fp32 ONNX file, or int8 on the CPU, not "
                f"{inputs.precision} on {inputs.device}: use --backend tensorrt (fp16, int8) or --backend "
                f"torch_cuda (fp16) on a GPU")
        payload = inputs.onnx
        if inputs.precision == "int8":
            payload = quantised(inputs.onnx, inputs.calibration_images())
        ort.InferenceSession(payload, providers=_providers(inputs.device))
        return payload

    @staticmethod
    def library_versions() -> dict[str, str]:
        return {"onnxruntime": ort.__version__, "onnx": onnx.__version__}


def quantised(network: bytes, images: np.ndarray) -> bytes:
    """``network`` with its learned convolutions in int8 (weights per channel, activations per tensor over
    the calibration ``images``, uint8 N x H x W), in ONNX Runtime's QDQ form.

    Only the convolutions that take a ReLU's output: their inputs are non-negative features whose range the
    calibration sees. The stem's convolutions (models.classifier.FastFeatures) filter raw gray levels whose
    local deviation is then divided out, so eight bits there turn a smooth plain's rounding into defects
    (measured on real surfaces: average precision 0.74 -> 0.24 with them quantised, 0.74 without)."""
    with tempfile.TemporaryDirectory() as folder:
        given, prepared, out = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        given.write_bytes(network)
        quant_pre_process(given, prepared, skip_symbolic_shape=True)  # shapes inferred, graph folded first
        graph = onnx.load(prepared).graph
        made_by = {output: node.op_type for node in graph.node for output in node.output}
        learned = [node.name for node in graph.node
                   if node.op_type == "Conv" and made_by.get(node.input[0]) == "Relu"]
        quantize_static(prepared, out, _Calibration(images), quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=["Conv"], nodes_to_quantize=learned,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return out.read_bytes()


class _Calibration(CalibrationDataReader):
    """The calibration images as the engine feeds tiles, a few at a time."""

    def __init__(self, images: np.ndarray, batch: int = 8) -> None:
        if not len(images):
            raise EngineError("int8 calibration needs images, and none were given")
        self._batches = iter([to_input(images[i:i + batch]).numpy() for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {INPUT_NAME: x}
