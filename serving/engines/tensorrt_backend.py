"""The TensorRT engine: the exported ONNX file compiled for one NVIDIA GPU in fp32, fp16 or int8 (calibrated
on images of the model's own dataset version), run through torch CUDA tensors. Written against TensorRT 10;
`tensorrt` is imported only when such an engine is built or loaded.

TensorRT has no float64: its ONNX parser runs the classifier's float64 standardisation
(models.data.Standardise) in float32, one reason an engine's outputs are compared with the ONNX file's
rather than assumed equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.data import to_input
from models.export import INPUT_NAME
from serving.engines.artifact import BuildInputs, EngineArtifact
from serving.engines.base import BackendUnavailable, Engine, EngineError, EngineOutput, EngineRecord
from serving.engines.torch_cuda_backend import require_cuda

# The optimisation profile of the dynamic batch axis: tuned for OPT_BATCH tiles, valid up to MAX_BATCH.
OPT_BATCH = 8
MAX_BATCH = 64
CALIBRATION_BATCH = 8
WORKSPACE_BYTES = 1 << 30


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(
            "TensorRT is not installed here (`pip install tensorrt` on a machine with an NVIDIA GPU): use "
            "--backend torch_cuda on a GPU, or --backend onnxruntime anywhere") from None
    return tensorrt


def _entropy_calibrator(trt: Any, images: np.ndarray, device: torch.device) -> Any:
    """An `IInt8EntropyCalibrator2` feeding ``images`` (uint8 N x H x W) in full batches, normalised as
    served."""
    batch = min(CALIBRATION_BATCH, len(images))
    if batch == 0:
        raise EngineError("int8 calibration needs images, and none were given")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT's bindings require the explicit call
            self._batches = iter([images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)])
            self._current: torch.Tensor | None = None  # held: the memory TensorRT reads stays allocated

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            chunk = next(self._batches, None)
            if chunk is None:
                return None  # no more batches: calibration ends
            self._current = to_input(chunk).to(device).contiguous()
            torch.cuda.synchronize(device)  # TensorRT reads it on its own stream
            return [self._current.data_ptr()]

        def read_calibration_cache(self) -> bytes | None:
            return None  # always calibrate: the images come from the model's own dataset version

        def write_calibration_cache(self, cache: Any) -> None:
            return None  # nothing kept: a cache could outlive the dataset version it was drawn from

    return EntropyCalibrator()


class TensorRTEngine(Engine):
    """A deserialized TensorRT plan with its execution context and CUDA stream on one GPU."""

    def __init__(self, record: EngineRecord, artifact: EngineArtifact, *, threads: int | None = None) -> None:
        super().__init__(record, **artifact.network())
        trt = _tensorrt()
        self._device = require_cuda(record.device, "tensorrt")
        with torch.cuda.device(self._device):
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._runtime.deserialize_cuda_engine(artifact.payload)
            if self._engine is None:
                raise BackendUnavailable(
                    f"TensorRT {trt.__version__} cannot load engine {record.engine_id[:12]}: a plan runs "
                    "only with the TensorRT version and GPU model it was built for (it records "
                    f"{record.library_versions}); build one here with `visionledger engines build "
                    "--backend tensorrt`")
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(self._device)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        for name in names:  # fp16 and int8 engines keep the network's float32 inputs and outputs
            if self._engine.get_tensor_dtype(name) != trt.float32:
                raise EngineError(f"engine {record.engine_id[:12]}: tensor {name} is not float32")
        self._max_batch = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0]

    def infer(self, tiles: np.ndarray) -> EngineOutput:
        tiles = self.check_tiles(tiles)
        parts = [self._run(tiles[i:i + self._max_batch]) for i in range(0, len(tiles), self._max_batch)]
        return EngineOutput(probabilities=np.concatenate([p for p, _ in parts]),
                            defect_cells=np.concatenate([c for _, c in parts]))

    def _run(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            x = to_input(tiles).to(self._device).contiguous()
            self._context.set_input_shape(INPUT_NAME, tuple(x.shape))
            self._context.set_tensor_address(INPUT_NAME, x.data_ptr())
            outputs = {}
            for name in self._outputs:  # every output needs an address, the embedding too
                shape = tuple(self._context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=torch.float32, device=self._device)
                self._context.set_tensor_address(name, outputs[name].data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise EngineError(f"TensorRT failed to run engine {self.engine_id[:12]}; its log says why")
            self._stream.synchronize()
            return outputs["probabilities"].cpu().numpy(), outputs["defect_cells"][:, 0].cpu().numpy()

    def close(self) -> None:
        # The context before the engine, the engine before the runtime: each depends on the next.
        self._context = None
        self._engine = None
        self._runtime = None

    @staticmethod
    def build_payload(inputs: BuildInputs) -> bytes:
        """The serialized plan (`build_serialized_network`) for the GPU ``inputs.device``."""
        trt = _tensorrt()
        device = require_cuda(inputs.device, "tensorrt")
        h, w = inputs.input_size
        logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(device):
            builder = trt.Builder(logger)
            network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch axis
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(inputs.onnx):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise EngineError(f"TensorRT cannot parse the classifier's ONNX file: {errors}")
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
            profile = builder.create_optimization_profile()
            profile.set_shape(INPUT_NAME, (1, 1, h, w), (OPT_BATCH, 1, h, w), (MAX_BATCH, 1, h, w))
            config.add_optimization_profile(profile)
            if inputs.precision in ("fp16", "int8"):
                # For int8 too: layers without an int8 kernel then fall back to fp16 rather than fp32.
                config.set_flag(trt.BuilderFlag.FP16)
            calibrator = None
            if inputs.precision == "int8":
                config.set_flag(trt.BuilderFlag.INT8)
                calibrator = _entropy_calibrator(trt, inputs.calibration_images(), device)
                config.int8_calibrator = calibrator
                # Calibration runs at one fixed shape, so it gets a profile of its own.
                batch = calibrator.get_batch_size()
                calibration = builder.create_optimization_profile()
                calibration.set_shape(INPUT_NAME, (batch, 1, h, w), (batch, 1, h, w), (batch, 1, h, w))
                config.set_calibration_profile(calibration)
            plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError("TensorRT could not build the engine; its log above says why")
        return bytes(plan)

    @staticmethod
    def library_versions() -> dict[str, str]:
        return {"tensorrt": _tensorrt().__version__, "torch": torch.__version__,
                "cuda": torch.version.cuda or "none"}
