"""The classifier judges whole images by their worst cell, exposes its embedding and explains itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.classifier import DefectClassifier, box_mean, classify, grad_cam
from models.data import to_input
from models.segmenter import DefectSegmenter, segment


@pytest.fixture(scope="module")
def model() -> DefectClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return DefectClassifier(("crack", "ok", "spot"), width=4).eval()


def test_image_probabilities_come_from_the_worst_cell(
    model: DefectClassifier, tiny_images: np.ndarray
) -> None:
    x = to_input(tiny_images)
    with torch.no_grad():
        cells, types, embedding = model.heads(model.features(x))
        probabilities, forward_embedding = model(x)
    assert cells.shape == (3, 1, 8, 8)  # one cell per 16 x 16 pixels
    defect = torch.sigmoid(cells.flatten(1).amax(dim=1))
    q = types.softmax(dim=1)  # crack, spot
    expected = torch.stack(
        [defect * q[:, 0], 1 - defect, defect * q[:, 1]], dim=1
    )  # classes order: ok in the middle
    torch.testing.assert_close(probabilities, expected)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(forward_embedding, embedding)
    torch.testing.assert_close(model.embed(x), embedding)
    assert embedding.shape == (3, model.embedding_size)


def test_classify_batches_images_of_any_size(model: DefectClassifier, tiny_images: np.ndarray) -> None:
    result = classify(model, [*tiny_images, tiny_images[0, :96, :112]])
    assert result.probabilities.shape == (4, 3) and result.embeddings.shape == (4, model.embedding_size)
    np.testing.assert_allclose(result.defect_scores, 1 - result.probabilities[:, 1])
    assert len(result.predicted) == 4 and set(result.predicted) <= {"crack", "ok", "spot"}


def test_a_brighter_lamp_changes_nothing(model: DefectClassifier, tiny_images: np.ndarray) -> None:
    # Inputs are standardised per image, so a uniform gain (a lamp dimming) leaves the decision alone.
    dim = (tiny_images.astype(np.float32) * 0.8).round().astype(np.uint8)
    np.testing.assert_allclose(
        classify(model, dim).probabilities, classify(model, tiny_images).probabilities, atol=0.02
    )


@pytest.mark.parametrize("arch", ["fast", "multiscale"])
def test_the_fused_stem_computes_its_layers_function(tiny_images: np.ndarray, arch: str) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = DefectClassifier(("ok", "spot"), width=4, arch=arch)
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # not the identity
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    x = to_input(tiny_images).requires_grad_(True)
    for mode in (model.eval, model.train):
        mode()
        fused = model.features(x)
        (fused_grad,) = torch.autograd.grad(fused.square().sum(), x)
        layerwise = model.features.layerwise(x)
        (layerwise_grad,) = torch.autograd.grad(layerwise.square().sum(), x)
        torch.testing.assert_close(fused, layerwise, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fused_grad, layerwise_grad, atol=1e-3, rtol=1e-3)
    # No texture at all: both forms divide float32 rounding by the deviations' floor (and Standardise's 1e-3),
    # so they only agree to a few thousandths there, which no decision notices.
    flat = to_input(np.full((128, 128), 120, np.uint8))
    with torch.no_grad():
        torch.testing.assert_close(model.eval().features(flat), model.features.layerwise(flat), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("size", [5, 15])
def test_the_box_mean_is_the_average_pooling_it_replaces(size: int) -> None:
    x = torch.randn(2, 2, 40, 24)
    expected = torch.nn.functional.avg_pool2d(x, size, 1, size // 2, count_include_pad=False)
    torch.testing.assert_close(box_mean(x, size), expected)


def test_grad_cam_is_a_normalised_heatmap(model: DefectClassifier, tiny_images: np.ndarray) -> None:
    for name in model.classes:
        cam = grad_cam(model, tiny_images[0], name)
        assert cam.shape == (128, 128) and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() <= 1
    with pytest.raises(ValueError, match="unknown class"):
        grad_cam(model, tiny_images[0], "dent")


def test_classes_must_include_ok() -> None:
    with pytest.raises(ValueError, match="'ok'"):
        DefectClassifier(("scratch", "spot"))


def test_segment_pads_odd_sizes(tiny_images: np.ndarray) -> None:
    unet = DefectSegmenter(width=4, depth=3).eval()
    out = segment(unet, tiny_images[:2, :100, :120])
    assert out.shape == (2, 100, 120) and ((out >= 0) & (out <= 1)).all()
