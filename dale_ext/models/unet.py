"""U-Net: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (with BatchNorm after every convolution, as is now standard)."""
from __future__ import annotations

import torch
from torch import nn

from dale_ext.models._base import SegmentationModel
from dale_ext.models._blocks import (
    DoubleConv,
    Upsampling,
    build_encoder,
    check_upsampling,
    encode,
    level_channels,
    make_upsampler,
)


class UNet(SegmentationModel):
    """Encoder of ``depth`` max-pool downsamplings, symmetric decoder with skip concatenations.

    Widths are ``base_channels * 2**level`` for levels 0..depth. Each decoder step upsamples
    (``upsampling="transpose"`` or ``"bilinear"``), concatenates the encoder skip of the same
    level and applies a :class:`DoubleConv`. ``segmentation_head`` is a 1x1 conv on the
    ``base_channels``-wide level-0 decoder output.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        base_channels: int = 32,
        depth: int = 4,
        upsampling: Upsampling = "transpose",
    ) -> None:
        super().__init__(in_channels, num_classes, base_channels, depth)
        check_upsampling(upsampling)
        self.upsampling = upsampling
        widths = level_channels(base_channels, depth)

        self.stem, self.pool, self.encoder = build_encoder(in_channels, widths)
        # decoder[k] brings level depth-k up to level depth-k-1
        self.upsamplers = nn.ModuleList(
            make_upsampler(widths[i + 1], widths[i], upsampling) for i in reversed(range(depth))
        )
        self.decoder = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.segmentation_head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        skips = encode(self.stem, self.pool, self.encoder, x)
        x = skips.pop()  # the bottleneck
        for upsample, block in zip(self.upsamplers, self.decoder):
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        return x
