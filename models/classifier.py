"""The image classifier (ok or a defect class): a small fully convolutional CNN, its embedding and Grad-CAM.

Two questions, two heads on shared features. *Is there a defect, and where?* A defect score for every 16 x 16
pixel cell (seeing some 120 px around it), learnt from the defect masks cell by cell; the image's defect
probability is that of its worst cell, so the network runs unchanged over a whole 512 px image and a small
defect is never shrunk away by rescaling. *Which defect?* A linear head on the max-pooled features (the
embedding), which sees the whole defect at once where a single cell sees only a piece of a scratch or crack.
The image's class probabilities are [p(ok) = 1 - d, p(class k) = d * q_k], d the worst cell's defect
probability and q the defect-type softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.data import OK_CLASS, Standardise, to_input

STRIDE = 16  # pixels per cell
ARCHITECTURES = ("multiscale", "fast", "standard")


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _pointwise(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class LocalContrast(nn.Module):
    """8 x 8 pixel blocks as channels (N x 65 x H/8 x W/8), each put against its neighbourhood: minus the
    mean and over the deviation of the 5 x 5 blocks (40 px) around it, plus that deviation's log.

    A real surface's contrast changes from a smooth plain to a crater's rim within a few pixels, and a defect
    is faint or strong against the texture around it, not against the image: seen this way a scratch on a
    calm plain and one across a busy rim look alike, as they should. At 1/8 resolution, it costs a few
    operations a pixel.

    With `wide` (blocks across, odd), two channels more: the neighbourhood's mean and the block's own mean,
    each against the mean and deviation of the `wide` blocks around. Seen only against its 40 px, a stain
    wider than that is the neighbourhood, and vanishes; against 120 px it is a dark blob on a plain.
    """

    block = 8

    def __init__(self, wide: int = 0) -> None:
        super().__init__()
        self.wide = wide
        self.channels = self.block * self.block + 1 + (2 if wide else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = F.pixel_unshuffle(x, self.block)
        block_mean, block_square = blocks.mean(dim=1, keepdim=True), blocks.square().mean(dim=1, keepdim=True)
        mean, deviation = _neighbourhood(block_mean, block_square, 5)
        out = [(blocks - mean) / deviation, deviation.log()]
        if self.wide:
            wide_mean, wide_deviation = _neighbourhood(block_mean, block_square, self.wide)
            out += [(mean - wide_mean) / wide_deviation, (block_mean - wide_mean) / wide_deviation]
        return torch.cat(out, dim=1)


def _neighbourhood(block_mean: torch.Tensor, block_square: torch.Tensor, size: int, scale: torch.Tensor | float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and deviation of the `size` x `size` blocks around each block, from the blocks' means and mean
    squares; the deviation in units of `scale` (the image's own), floored at 0.01 of them."""
    both = box_mean(torch.cat([block_mean, block_square], dim=1), size)
    mean, square = both[:, :1], both[:, 1:]
    return mean, ((square - mean.square()) / scale**2).clamp_min(1e-4).sqrt()


def box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """The mean over the `size` x `size` window around each element, cut short by the image's edge: a column
    pass then a row pass, since both the window's sum and its count of elements inside the image factor by
    axis. ONNX Runtime's two-dimensional average pooling took longer at 15 x 15 than the rest of the network."""
    pad = size // 2
    x = F.avg_pool2d(x, (size, 1), 1, (pad, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, size), 1, (0, pad), count_include_pad=False)


class FastFeatures(nn.Sequential):
    """The line-rate network's layers, whose first three (Standardise, LocalContrast, and the 1 x 1 filter bank
    with its BatchNorm and ReLU) are computed in one go: the same function, at a fraction of the cost.

    Taken layer by layer they make eight passes over every pixel in float64 (the global standardisation) and
    then shuffle every pixel into 65 channels, to be normalised and filtered there; in ONNX Runtime those
    memory-bound passes took four fifths of the network's time. But the filter bank is linear and both
    normalisations are affine: the bank runs as an 8 x 8 convolution of stride 8 straight on the input, and
    the block means, local deviations and the image's own mean and deviation (the block means average to it
    exactly) are applied afterwards on the bank's outputs at 1/8 scale. The parameters are the layers' own,
    so a checkpoint loads the same either way; `layerwise` runs the reference path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, contrast, bank, *rest = self
        conv, norm, relu = bank
        out = relu(norm(_contrast_bank(x, conv.weight[:, :, 0, 0], contrast.block, contrast.wide)))
        for layer in rest:
            out = layer(out)
        return out

    def layerwise(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


def _contrast_bank(x: torch.Tensor, weight: torch.Tensor, block: int, wide: int) -> torch.Tensor:
    """conv1x1(weight, LocalContrast(wide)(Standardise(x))) for weight C x LocalContrast(wide).channels, from x
    directly."""
    c, pixels = weight.shape[0], block * block
    # Block means as one more filter of the bank's convolution, and block mean squares by the same filter:
    # ONNX Runtime runs a strided convolution three times faster than the average pooling it replaces.
    uniform = torch.full((1, 1, block, block), 1.0 / pixels, dtype=x.dtype, device=x.device)
    both = F.conv2d(x, torch.cat([weight[:, :pixels].reshape(c, 1, block, block), uniform]), stride=block)
    filtered, block_mean = both[:, :c], both[:, c:]
    block_square = F.conv2d(x * x, uniform, stride=block)
    # Standardise's mean and deviation of the whole image, from the block means (float64, as it does).
    image_mean = block_mean.double().mean(dim=(2, 3), keepdim=True)
    image_square = block_square.double().mean(dim=(2, 3), keepdim=True)
    scale = (image_square - image_mean.square()).add(1e-6).sqrt().to(x.dtype)
    mean, deviation = _neighbourhood(block_mean, block_square, 5, scale)  # deviation in the image's units
    # sum_k w_k (b_k - mean) / deviation, in standardised units: the image's own mean cancels out.
    centred = filtered - weight[:, :pixels].sum(dim=1).view(1, c, 1, 1) * mean
    # The one-channel maps (the deviation's log, and the wide view's two) go through the bank as one 1 x 1
    # convolution: a broadcast multiply-add per map would each pass over all C channels.
    maps = [deviation.log()]
    if wide:
        wide_mean, wide_deviation = _neighbourhood(block_mean, block_square, wide, scale)
        spread = scale * wide_deviation
        maps += [(mean - wide_mean) / spread, (block_mean - wide_mean) / spread]
    return centred / (scale * deviation) + F.conv2d(torch.cat(maps, dim=1), weight[:, pixels:, None, None])


class _separable(nn.Module):
    """A residual depthwise 3 x 3 (dilated) then pointwise block: context at a tenth of a full conv's cost."""

    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c, bias=False), nn.BatchNorm2d(c),
            nn.ReLU(inplace=True), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class DefectClassifier(nn.Module):
    """Per-cell logits, and image-level probabilities taken from the most defective cell."""

    def __init__(self, classes: Sequence[str], *, width: int = 16, arch: str = "fast") -> None:
        super().__init__()
        if OK_CLASS not in classes or len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError(f"classes must be distinct, at least two, and include {OK_CLASS!r}: {classes}")
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, not {arch!r}")
        self.classes = tuple(classes)
        self.ok_index = self.classes.index(OK_CLASS)
        self.width = width
        self.arch = arch
        w = width
        if arch == "standard":
            # A 4 x 4 space-to-depth stem: every pixel of a one-pixel scratch survives, as a channel of its
            # cell, while the costly full-resolution layers of a plain CNN are skipped. ~3,200 MAC a pixel.
            self.features = nn.Sequential(
                Standardise(), nn.PixelUnshuffle(4),
                _conv(16, 2 * w), _conv(2 * w, 2 * w),
                _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w),
                _conv(4 * w, 8 * w, 2), _conv(8 * w, 8 * w), _conv(8 * w, 8 * w),
            )
            channels = 8 * w
        else:
            # Line rate on two CPU cores (a 2048 x 2048 frame twenty times a second) leaves ~300 MAC a pixel
            # (width 16; width 24 costs ~650, the default since it measured better on real surfaces).
            # The 8 x 8 blocks of pixels are first put against their neighbourhood (LocalContrast), then a
            # 1 x 1 filter bank sees every pixel of a block at once; one full convolution at 1/8 and one at
            # 1/16 build the cell's view, and dilated depthwise convolutions at 1/16 widen it to ~200 px
            # cheaply: a crater is told from a spot, and a road from a scratch, by what surrounds it.
            # "multiscale" also sets each neighbourhood against the 120 px around it (LocalContrast's `wide`).
            contrast = LocalContrast(wide=15 if arch == "multiscale" else 0)
            self.features = FastFeatures(
                Standardise(), contrast,
                _pointwise(contrast.channels, 2 * w), _conv(2 * w, 2 * w),
                _conv(2 * w, 4 * w, 2),
                _separable(4 * w, 1), _separable(4 * w, 2), _separable(4 * w, 4),
            )
            channels = 4 * w
        self.channels = channels
        self.cell_head = nn.Conv2d(channels, 1, 1)  # defect logit of every cell
        self.type_head = nn.Linear(channels, len(self.classes) - 1)  # which defect, the defect classes in order

    @property
    def embedding_size(self) -> int:
        return self.channels

    @property
    def defect_indices(self) -> list[int]:
        return [i for i in range(len(self.classes)) if i != self.ok_index]

    def config(self) -> dict[str, Any]:
        """What rebuilds this network (before its weights are loaded)."""
        return {"classes": list(self.classes), "width": self.width, "arch": self.arch}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features, N x embedding_size. Max pooling, because a defect is a small
        local event that averaging over a mostly clean surface would dilute."""
        return self.features(x).amax(dim=(2, 3))

    def heads(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cell defect logits N x 1 x h x w, defect-type logits N x defect classes, embedding N x C)."""
        embedding = fmap.amax(dim=(2, 3))
        return self.cell_head(fmap), self.type_head(embedding), embedding

    def image_probabilities(self, cell_logits: torch.Tensor, type_logits: torch.Tensor) -> torch.Tensor:
        """N x classes, in `classes` order, from the worst cell's defect probability and the type softmax."""
        defect = torch.sigmoid(cell_logits.flatten(1).amax(dim=1, keepdim=True))
        by_type = defect * type_logits.softmax(dim=1)
        parts = [by_type[:, : self.ok_index], 1 - defect, by_type[:, self.ok_index :]]
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image probabilities N x classes, embedding N x embedding_size)."""
        cells, types, embedding = self.heads(self.features(x))
        return self.image_probabilities(cells, types), embedding


@dataclass(frozen=True)
class Classification:
    """What the classifier says about a batch of images."""

    classes: tuple[str, ...]
    probabilities: np.ndarray  # N x classes
    embeddings: np.ndarray  # N x embedding size

    @property
    def defect_scores(self) -> np.ndarray:
        """1 - p(ok) per image: the image-level defect-versus-ok score."""
        return 1.0 - self.probabilities[:, self.classes.index(OK_CLASS)]

    @property
    def predicted(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]


@torch.no_grad()
def classify(
    model: DefectClassifier, images: Sequence[np.ndarray] | np.ndarray, *, batch_size: int = 8
) -> Classification:
    """Classify whole uint8 gray images; consecutive images of one size are batched together."""
    model.eval()
    probs, embeds = [], []
    device = next(model.parameters()).device
    for batch in _batches(images, batch_size):
        p, e = model(to_input(batch).to(device))
        probs.append(p.cpu().numpy())
        embeds.append(e.cpu().numpy())
    k, c = len(model.classes), model.embedding_size
    return Classification(
        model.classes,
        np.concatenate(probs) if probs else np.zeros((0, k), np.float32),
        np.concatenate(embeds) if embeds else np.zeros((0, c), np.float32),
    )


def _batches(images: Sequence[np.ndarray] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    batches: list[list[np.ndarray]] = []
    for image in images:
        if batches and len(batches[-1]) < batch_size and batches[-1][0].shape == image.shape:
            batches[-1].append(image)
        else:
            batches.append([image])
    return [np.stack(b) for b in batches]


def grad_cam(model: DefectClassifier, image: np.ndarray, class_name: str) -> np.ndarray:
    """Grad-CAM heatmap (float32, H x W, 0..1) of where `image` looks like `class_name` to the model.

    The score explained is the log of the image's probability of the class; the map is taken at the last
    convolution (1/16 scale) and upsampled bilinearly.
    """
    if class_name not in model.classes:
        raise ValueError(f"unknown class {class_name!r}; the model knows {list(model.classes)}")
    c = model.classes.index(class_name)
    model.eval()
    with torch.enable_grad():
        fmap = model.features(to_input(image)).detach().requires_grad_(True)
        score = torch.log(model.image_probabilities(*model.heads(fmap)[:2])[0, c].clamp_min(1e-12))
        (grads,) = torch.autograd.grad(score, fmap)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * fmap.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape, mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).numpy().astype(np.float32)
