"""Building blocks shared by the built-in U-Net family: the 3x3 double convolution of
Ronneberger et al. (MICCAI 2015) and the 2x upsampler used on every decoder step."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Upsampling = Literal["transpose", "bilinear"]
UPSAMPLING_MODES: tuple[str, ...] = ("transpose", "bilinear")


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> BatchNorm -> ReLU) x 2, the basic U-Net block.

    The convolutions carry no bias: the BatchNorm right after them would cancel it (and its
    gradient), leaving an unused parameter behind.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def check_upsampling(mode: str) -> None:
    if mode not in UPSAMPLING_MODES:
        raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}; got {mode!r}")


def make_upsampler(in_channels: int, out_channels: int, mode: Upsampling) -> nn.Module:
    """Double the resolution and map ``in_channels`` to ``out_channels``.

    ``"transpose"``: a learned 2x2 stride-2 transposed convolution (the original U-Net
    "up-convolution"). ``"bilinear"``: fixed bilinear interpolation, then a 1x1 convolution to
    change the width (fewer parameters, no checkerboard artefacts).
    """
    check_upsampling(mode)
    if mode == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


def level_channels(base_channels: int, depth: int) -> list[int]:
    """Widths of the encoder levels 0..depth: the width doubles after every downsampling."""
    return [base_channels * 2**level for level in range(depth + 1)]


def build_encoder(in_channels: int, widths: list[int]) -> tuple[nn.Module, nn.Module, nn.ModuleList]:
    """The U-Net contracting path shared by UNet and AttentionUNet: (stem, pool, encoder)."""
    stem = DoubleConv(in_channels, widths[0])
    encoder = nn.ModuleList(DoubleConv(widths[i - 1], widths[i]) for i in range(1, len(widths)))
    return stem, nn.MaxPool2d(2), encoder


def encode(stem: nn.Module, pool: nn.Module, encoder: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Feature maps of every level, finest first (the last one is the bottleneck)."""
    skips = [stem(x)]
    for block in encoder:
        skips.append(block(pool(skips[-1])))
    return skips
