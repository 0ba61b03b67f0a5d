"""Saving and loading trained networks in a file whose bytes depend only on the weights and settings.

`torch.save` writes a zip archive with a per-save serialization id, so the same weights would hash
differently each time; this format is a JSON header (sorted keys) followed by the raw little-endian tensors
in state-dict order, and its SHA-256 identifies the trained model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classifier import DefectClassifier
from models.segmenter import DefectSegmenter
from models.training import ClassifierParams, SegmenterParams, TrainParams

MAGIC = b"VLMODEL1"
_KINDS: dict[str, tuple[type, type[TrainParams]]] = {
    "classifier": (DefectClassifier, ClassifierParams),
    "segmenter": (DefectSegmenter, SegmenterParams),
}


class CheckpointError(ValueError):
    """The file is not a model checkpoint this code can read."""


@dataclass(frozen=True)
class Checkpoint:
    model: DefectClassifier | DefectSegmenter
    params: TrainParams
    sha256: str  # of the file's bytes


def kind_of(model: torch.nn.Module) -> str:
    for kind, (cls, _) in _KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(
        f"cannot save a {type(model).__name__}; expected one of {[c.__name__ for c, _ in _KINDS.values()]}"
    )


def model_bytes(model: DefectClassifier | DefectSegmenter, params: TrainParams) -> bytes:
    """The checkpoint's bytes: the same weights and settings give the same bytes."""
    kind = kind_of(model)
    tensors, blobs, offset = [], [], 0
    for name, tensor in model.state_dict().items():
        array = tensor.detach().cpu().contiguous().numpy()
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        data = array.tobytes()
        tensors.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})
        blobs.append(data)
        offset += len(data)
    header = {
        "format": 1,
        "kind": kind,
        "config": model.config(),
        "params": params.to_dict(),
        "tensors": tensors,
    }
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + len(head).to_bytes(8, "little") + head + b"".join(blobs)


def save_model(path: Path | str, model: DefectClassifier | DefectSegmenter, params: TrainParams) -> str:
    """Write the checkpoint to `path`; returns its SHA-256."""
    data = model_bytes(model, params)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_model(path: Path | str) -> Checkpoint:
    """The network (in eval mode), its hyper-parameters and the file's SHA-256."""
    return model_from_bytes(Path(path).read_bytes(), name=str(path))


def model_from_bytes(data: bytes, *, name: str = "the checkpoint") -> Checkpoint:
    """As `load_model`, from the checkpoint's bytes (``name`` says which in errors)."""
    if not data.startswith(MAGIC):
        raise CheckpointError(
            f"{name} is not a visionledger model checkpoint (it lacks the {MAGIC!r} header)"
        )
    size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    header: dict[str, Any] = json.loads(data[start : start + size])
    if header.get("format") != 1 or header.get("kind") not in _KINDS:
        raise CheckpointError(
            f"{name}: unsupported format {header.get('format')} / kind {header.get('kind')!r}"
        )
    cls, params_cls = _KINDS[header["kind"]]
    config = dict(header["config"])
    if cls is DefectClassifier:
        config.setdefault("arch", "standard")  # classifiers saved before `arch` existed were all "standard"
    model = cls(**config)
    body = memoryview(data)[start + size :]
    state = {}
    for t in header["tensors"]:
        dtype = np.dtype(t["dtype"])
        count = int(np.prod(t["shape"], dtype=np.int64))
        array = np.frombuffer(body, dtype, count, t["offset"]).reshape(t["shape"])
        state[t["name"]] = torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))
    model.load_state_dict(state)
    model.eval()
    params = dict(header["params"])
    if cls is DefectClassifier:
        params.setdefault("arch", config["arch"])
    return Checkpoint(model, params_cls.from_dict(params), hashlib.sha256(data).hexdigest())
