"""ONNX files pass onnx.checker, take any batch size and agree with torch through ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.classifier import DefectClassifier, classify
from models.data import to_input
from models.export import (
    PARITY_TOLERANCE,
    ExportParityError,
    check_parity,
    export_classifier,
    export_segmenter,
    read_metadata,
)
from models.segmenter import DefectSegmenter, segment

CLASSES = ("ok", "crack", "scratch", "spot")


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    # Untrained batch-norm statistics are 0 / 1; give them values so the test exercises real arithmetic.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _run(path: str, images: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": to_input(images).numpy()})


def test_classifier_export(tmp_path, tiny_images: np.ndarray) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _randomised(DefectClassifier(CLASSES, width=4))
    path = tmp_path / "classifier.onnx"
    report = export_classifier(
        model, path, input_size=(128, 128), check_images=tiny_images, metadata={"model_sha256": "ab" * 32}
    )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert report.batch_sizes == (1, 3)
    assert max(report.max_abs_diff.values()) <= PARITY_TOLERANCE

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "embedding", "defect_cells"]
    assert set(report.max_abs_diff) == {"probabilities", "embedding", "defect_cells"}  # parity checks all
    for n in (1, 3):  # the batch axis is dynamic
        probabilities, embedding, cells = _run(str(path), tiny_images[:n])
        assert probabilities.shape == (n, 4) and embedding.shape == (n, model.embedding_size)
        assert cells.shape == (n, 1, 128 // 16, 128 // 16) and cells.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(probabilities, classify(model, tiny_images[:n]).probabilities, atol=1e-4)
        # the image's defect probability is its worst cell's
        np.testing.assert_allclose(1 - probabilities[:, 0], cells.reshape(n, -1).max(axis=1), atol=1e-5)

    meta = read_metadata(path)
    assert json.loads(meta["classes"]) == list(CLASSES)
    assert json.loads(meta["input_size"]) == [128, 128]
    assert json.loads(meta["normalisation"]) == {
        "formula": "(gray / 255 - mean) / std", "mean": 0.5, "std": 0.25, "dtype": "float32",
    }  # fmt: skip
    assert meta["kind"] == "classifier" and meta["ok_class"] == "ok" and meta["cell_size"] == "16"
    assert meta["model_sha256"] == "ab" * 32


def test_segmenter_export(tmp_path, tiny_images: np.ndarray) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _randomised(DefectSegmenter(width=4, depth=3))
    path = tmp_path / "segmenter.onnx"
    report = export_segmenter(model, path, input_size=(128, 128), check_images=tiny_images)
    assert report.max_abs_diff["defect_probability"] <= PARITY_TOLERANCE
    for n in (1, 3):
        (probability,) = _run(str(path), tiny_images[:n])
        assert probability.shape == (n, 1, 128, 128)
        np.testing.assert_allclose(probability[:, 0], segment(model, tiny_images[:n]), atol=1e-4)
    meta = read_metadata(path)
    assert meta["kind"] == "segmenter" and json.loads(meta["input_size"]) == [128, 128]

    # A file that no longer matches its network is refused with a clear error.
    with torch.no_grad():
        model.out[0].bias += 0.1
    with pytest.raises(ExportParityError, match="differs from torch"):
        check_parity(model, path, tiny_images)


def test_segmenter_export_needs_a_size_the_unet_can_halve(tmp_path) -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        export_segmenter(DefectSegmenter(width=4, depth=3), tmp_path / "s.onnx", input_size=(100, 128))
