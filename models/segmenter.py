"""A small U-Net that outlines defects pixel by pixel, for the decision logic on defect size, count and place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.data import Standardise, to_input


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DefectSegmenter(nn.Module):
    """U-Net: `depth` halvings below half resolution, `width` channels there, doubling per level; one logit
    per pixel (defect versus background). Height and width must be multiples of `multiple`.

    It works at half resolution throughout: a 2 x 2 space-to-depth step in front and a depth-to-space step
    behind keep every pixel (a one-pixel scratch is still outlined pixel by pixel) while sparing the
    full-resolution layers that would cost most of the CPU time.
    """

    def __init__(self, *, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.width = width
        self.depth = depth
        channels = [width * 2**i for i in range(depth + 1)]
        self.stem = nn.Sequential(Standardise(), nn.PixelUnshuffle(2))
        self.down = nn.ModuleList([_double_conv(4, channels[0])])
        self.down.extend(_double_conv(channels[i], channels[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.merge = nn.ModuleList(_double_conv(2 * channels[i], channels[i]) for i in reversed(range(depth)))
        self.out = nn.Sequential(nn.Conv2d(channels[0], 4, 1), nn.PixelShuffle(2))

    @property
    def multiple(self) -> int:
        return 2 ** (self.depth + 1)

    def config(self) -> dict[str, Any]:
        """What rebuilds this network (before its weights are loaded)."""
        return {"width": self.width, "depth": self.depth}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Defect logits, N x 1 x H x W."""
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.out(x)


@torch.no_grad()
def segment(
    model: DefectSegmenter, images: Sequence[np.ndarray] | np.ndarray, *, batch_size: int = 4
) -> np.ndarray:
    """Per-pixel defect probabilities (float32, N x H x W) of uint8 gray images of one size.

    Sizes that are not a multiple of the U-Net's `multiple` are reflect-padded and cropped back, so any image
    size works here; the ONNX export fixes one size instead.
    """
    model.eval()
    array = np.asarray(images)
    if array.ndim == 2:
        array = array[None]
    h, w = array.shape[1:]
    m = model.multiple
    pad_h, pad_w = -h % m, -w % m
    out = []
    device = next(model.parameters()).device
    for start in range(0, len(array), batch_size):
        x = to_input(array[start : start + batch_size]).to(device)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        out.append(torch.sigmoid(model(x))[:, 0, :h, :w].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, h, w), np.float32)
