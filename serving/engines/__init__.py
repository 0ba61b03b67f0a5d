"""Inference engines: built from an exported classifier, recorded with their lineage (`EngineBuilt`), and
loaded only when that lineage still holds. ONNX Runtime anywhere; TensorRT or PyTorch on an NVIDIA GPU.

Building and loading pull in torch and the backends; they load on first use, so that the command line, which
imports this package for its errors and choices, starts without them.
"""

import importlib
from typing import Any

from serving.engines.base import (
    BACKENDS,
    PRECISIONS,
    BackendUnavailable,
    Engine,
    EngineError,
    EngineOutput,
    EngineRecord,
    LineageError,
)

_LAZY = {
    "BuiltEngine": "serving.engines.build", "build_engine": "serving.engines.build",
    "default_model_id": "serving.engines.build", "engine_to_serve": "serving.engines.registry",
    "engine_record": "serving.engines.registry", "list_engines": "serving.engines.registry",
    "load_engine": "serving.engines.registry",
}

__all__ = [
    "BACKENDS", "PRECISIONS", "BackendUnavailable", "BuiltEngine", "Engine", "EngineError", "EngineOutput",
    "EngineRecord", "LineageError", "build_engine", "default_model_id", "engine_record", "engine_to_serve",
    "list_engines", "load_engine",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
