"""Attention U-Net: Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas",
MIDL 2018. A U-Net whose skip connections pass through additive attention gates."""
from __future__ import annotations

import torch
import torch.nn.functional as F
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


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Eq. 1-2, grid-attention form).

    The skip ``x`` is brought to the gating signal's coarser grid by a 2x2 stride-2 conv
    (W_x, no bias); the gating signal ``g`` by a 1x1 conv (W_g, bias b_g).
    ``alpha = sigmoid(psi(relu(W_x x + W_g g + b_g)) + b_psi)`` is upsampled bilinearly to the
    skip's size and scales it; a 1x1 conv + BatchNorm then mixes the gated skip.
    """

    def __init__(self, skip_channels: int, gating_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta_x = nn.Conv2d(skip_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.phi_g = nn.Conv2d(gating_channels, inter_channels, kernel_size=1)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)
        self.output = nn.Sequential(
            nn.Conv2d(skip_channels, skip_channels, kernel_size=1, bias=False), nn.BatchNorm2d(skip_channels)
        )

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients alpha in (0, 1), shape (B, 1, H_x, W_x)."""
        query = F.relu(self.theta_x(x) + self.phi_g(g))
        alpha = torch.sigmoid(self.psi(query))
        return F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.output(x * self.coefficients(x, g))


class AttentionUNet(SegmentationModel):
    """:class:`~dale_ext.models.unet.UNet` with an :class:`AttentionGate` on every skip; the
    gating signal of level i is the decoder state of level i+1 (the bottleneck for the deepest).
    ``segmentation_head`` is a 1x1 conv on the ``base_channels``-wide level-0 decoder output."""

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
        # index k of each list works on level depth-k-1, deepest first
        decoder_levels = list(reversed(range(depth)))
        self.gates = nn.ModuleList(
            AttentionGate(widths[i], widths[i + 1], max(widths[i] // 2, 1)) for i in decoder_levels
        )
        self.upsamplers = nn.ModuleList(make_upsampler(widths[i + 1], widths[i], upsampling) for i in decoder_levels)
        self.decoder = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in decoder_levels)
        self.segmentation_head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        skips = encode(self.stem, self.pool, self.encoder, x)
        x = skips.pop()  # the bottleneck
        for gate, upsample, block in zip(self.gates, self.upsamplers, self.decoder):
            skip = skips.pop()
            x = block(torch.cat([gate(skip, x), upsample(x)], dim=1))
        return x
