"""ONNX export of the classifier and the U-Net, checked by onnx.checker and against torch through ONNX Runtime.

We use the dynamo exporter (`torch.onnx.export(dynamo=True)`): in torch 2.13 it is the default and the
maintained path, the TorchScript exporter only warns that it is deprecated, and here it exports both
networks with a dynamic batch axis at opset 20 with parity to within 1e-6. The file carries in its
metadata_props everything a server needs: the input size, the normalisation, the class names.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from models.classifier import STRIDE, DefectClassifier
from models.data import GRAY_MEAN, GRAY_STD, to_input
from models.segmenter import DefectSegmenter

INPUT_NAME = "image"
CLASSIFIER_OUTPUTS = ("probabilities", "embedding", "defect_cells")
SEGMENTER_OUTPUTS = ("defect_probability",)
# Probabilities are in [0, 1]; 1e-4 is far above float32 rounding between two backends (~1e-6) and far
# below anything that could move a decision.
PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 3)

NORMALISATION = json.dumps(
    {"formula": "(gray / 255 - mean) / std", "mean": GRAY_MEAN, "std": GRAY_STD, "dtype": "float32"},
    sort_keys=True,
)


class ExportParityError(RuntimeError):
    """ONNX Runtime and torch disagree on the exported network by more than the tolerance."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: dict[str, float]  # per output, over every batch size checked (relative where |x| > 1)
    batch_sizes: tuple[int, ...]
    metadata: dict[str, str]


class ClassifierOutputs(nn.Module):
    """The classifier as served: its image probabilities and embedding, and each cell's defect probability
    (N x 1 x H/16 x W/16), which the server needs for the size, count and position of defects."""

    def __init__(self, model: DefectClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cells, types, embedding = self.model.heads(self.model.features(x))
        return self.model.image_probabilities(cells, types), embedding, torch.sigmoid(cells)


class _SegmenterProbabilities(nn.Module):
    # A server wants probabilities, not logits; the sigmoid rides along in the graph.
    def __init__(self, model: DefectSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


def export_classifier(
    model: DefectClassifier,
    path: Path | str,
    *,
    input_size: tuple[int, int] = (512, 512),
    metadata: Mapping[str, str] | None = None,
    check_images: np.ndarray | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export to ONNX: input `image` float32 N x 1 x H x W (normalised as `NORMALISATION` says), outputs
    `probabilities` N x classes (from the most defective 16 px cell), `embedding` N x C and `defect_cells`
    N x 1 x H/16 x W/16 (each cell's defect probability)."""
    props = {
        "kind": "classifier",
        "classes": json.dumps(list(model.classes)),
        "ok_class": model.classes[model.ok_index],
        "cell_size": str(STRIDE),
        "defect_score": "1 - probabilities[:, classes.index(ok_class)]",
    }
    return _export(model, path, input_size, CLASSIFIER_OUTPUTS, props, metadata, check_images, tolerance)


def export_segmenter(
    model: DefectSegmenter,
    path: Path | str,
    *,
    input_size: tuple[int, int] = (512, 512),
    metadata: Mapping[str, str] | None = None,
    check_images: np.ndarray | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export to ONNX: input `image` as for the classifier, output `defect_probability` N x 1 x H x W."""
    if input_size[0] % model.multiple or input_size[1] % model.multiple:
        raise ValueError(f"input_size {input_size} must be multiples of {model.multiple} for this U-Net")
    props = {"kind": "segmenter", "classes": json.dumps(["defect"]), "threshold": "0.5"}
    return _export(model, path, input_size, SEGMENTER_OUTPUTS, props, metadata, check_images, tolerance)


def _as_exported(model: DefectClassifier | DefectSegmenter) -> nn.Module:
    return ClassifierOutputs(model) if isinstance(model, DefectClassifier) else _SegmenterProbabilities(model)


def _export(
    model: DefectClassifier | DefectSegmenter,
    path: Path | str,
    input_size: tuple[int, int],
    outputs: tuple[str, ...],
    props: dict[str, str],
    extra: Mapping[str, str] | None,
    check_images: np.ndarray | None,
    tolerance: float,
) -> ExportReport:
    path = Path(path)
    h, w = input_size
    module = _as_exported(model).eval()
    example = to_input(_parity_images(None, max(PARITY_BATCHES), input_size))
    batch = torch.export.Dim("batch", min=1, max=1024)
    # The exporter narrates each stage on stdout and logs warnings about optional torchvision ops; neither
    # helps a caller, and errors still raise.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # torch.export's own use of a deprecated pytree API; nothing the caller can act on.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(
                module,
                (example,),
                input_names=[INPUT_NAME],
                output_names=list(outputs),
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=False,
            )
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    metadata = {
        **props,
        "input_name": INPUT_NAME,
        "input_size": json.dumps([h, w]),
        "input_layout": "N x 1 x H x W",
        "normalisation": NORMALISATION,
        "outputs": json.dumps(list(outputs)),
        **(extra or {}),
    }
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    diffs = check_parity(
        model, path, _parity_images(check_images, max(PARITY_BATCHES), input_size), tolerance
    )
    return ExportReport(path, diffs, PARITY_BATCHES, metadata)


def _parity_images(images: np.ndarray | None, n: int, size: tuple[int, int]) -> np.ndarray:
    """`n` uint8 images of `size`: the given ones repeated, or a fixed synthetic surface."""
    if images is not None:
        images = np.asarray(images, np.uint8)
        if images.shape[1:] != tuple(size):
            raise ValueError(f"check_images are {images.shape[1:]}, the export input size is {tuple(size)}")
        return images[np.arange(n) % len(images)]
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(128, 20, (n, *size)), 0, 255).astype(np.uint8)


def check_parity(
    model: DefectClassifier | DefectSegmenter,
    path: Path | str,
    images: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, float]:
    """Max |onnxruntime - torch| per output (divided by the output's largest magnitude where that exceeds 1) at
    every batch size in PARITY_BATCHES; raises ExportParityError beyond `tolerance`."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst = dict.fromkeys(names, 0.0)
    module = _as_exported(model).eval()
    for n in PARITY_BATCHES:
        x = to_input(images[:n])
        with torch.no_grad():
            expected = module(x)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(names, {INPUT_NAME: x.numpy()})
        for name, e, g in zip(names, expected, got, strict=True):
            if g.shape != tuple(e.shape):
                raise ExportParityError(
                    f"{path}: output {name} has shape {g.shape}, torch gives {tuple(e.shape)}"
                )
            scale = max(1.0, float(np.abs(e.numpy()).max()))
            # Relative beyond 1, so an unbounded output (the embedding) is held to the same digits.
            worst[name] = max(worst[name], float(np.abs(g - e.numpy()).max()) / scale)
    bad = {k: v for k, v in worst.items() if v > tolerance}
    if bad:
        raise ExportParityError(
            f"{path}: ONNX Runtime differs from torch by {bad} (tolerance {tolerance}); do not deploy this file. "
            "Check for ops the exporter approximates, or re-export with another opset."
        )
    return worst


def read_metadata(source: Path | str | bytes) -> dict[str, str]:
    """The metadata_props of an ONNX file, given by its path or its bytes."""
    proto = (onnx.load_model_from_string(source) if isinstance(source, bytes)
             else onnx.load(str(source), load_external_data=False))
    return {p.key: p.value for p in proto.metadata_props}
