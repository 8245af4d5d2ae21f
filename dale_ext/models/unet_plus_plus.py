"""UNet++: Zhou, Rahman Siddiquee, Tajbakhsh & Liang, "UNet++: A Nested U-Net Architecture for
Medical Image Segmentation", DLMIA 2018."""
from __future__ import annotations

import torch
from torch import nn

from dale_ext.models._base import SegmentationModel, crop_padding, pad_to_multiple
from dale_ext.models._blocks import DoubleConv, Upsampling, check_upsampling, level_channels, make_upsampler


class UNetPlusPlus(SegmentationModel):
    """Nested U-Net: node X[i][j] (level i, column j) sees every earlier node of its level plus
    the upsampled X[i+1][j-1], so the skips are dense convolution blocks instead of plain copies.

    ``segmentation_head`` (1x1 conv) reads X[0][depth]. With ``deep_supervision=True`` the
    top-row nodes X[0][1..depth-1] get their own 1x1 heads (``auxiliary_heads``), whose logits
    ``forward(x, return_auxiliary=True)`` appends; a plain ``forward`` leaves those heads unused
    (so turn it off under DistributedDataParallel without ``find_unused_parameters``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        base_channels: int = 32,
        depth: int = 4,
        upsampling: Upsampling = "transpose",
        deep_supervision: bool = False,
    ) -> None:
        super().__init__(in_channels, num_classes, base_channels, depth)
        check_upsampling(upsampling)
        self.upsampling = upsampling
        self.deep_supervision = deep_supervision
        widths = level_channels(base_channels, depth)

        self.pool = nn.MaxPool2d(2)
        self.backbone = nn.ModuleList(  # column 0: X[i][0]
            DoubleConv(in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(depth + 1)
        )
        # nested[i][j-1] is X[i][j] (j >= 1, i + j <= depth); upsamplers[i][j-1] lifts X[i+1][j-1]
        self.upsamplers = nn.ModuleList(
            nn.ModuleList(make_upsampler(widths[i + 1], widths[i], upsampling) for _ in range(depth - i))
            for i in range(depth)
        )
        self.nested = nn.ModuleList(
            nn.ModuleList(DoubleConv((j + 1) * widths[i], widths[i]) for j in range(1, depth - i + 1))
            for i in range(depth)
        )
        self.auxiliary_heads = (
            nn.ModuleList(nn.Conv2d(widths[0], num_classes, kernel_size=1) for _ in range(depth - 1))
            if deep_supervision
            else None
        )
        self.segmentation_head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def top_row(self, x: torch.Tensor) -> list[torch.Tensor]:
        """X[0][1..depth] for a padded input, all at full resolution."""
        grid = [[self.backbone[0](x)]]
        for i in range(1, self.depth + 1):
            grid.append([self.backbone[i](self.pool(grid[i - 1][0]))])
        # Fill anti-diagonals: X[i][j] needs X[i+1][j-1], which the previous diagonal computed.
        for j in range(1, self.depth + 1):
            for i in range(self.depth - j + 1):
                lifted = self.upsamplers[i][j - 1](grid[i + 1][j - 1])
                grid[i].append(self.nested[i][j - 1](torch.cat([*grid[i], lifted], dim=1)))
        return grid[0][1:]

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.top_row(x)[-1]

    def forward(self, x: torch.Tensor, return_features: bool = False, return_auxiliary: bool = False):
        """Logits, ``(logits, features)`` with ``return_features``; ``return_auxiliary`` (needs
        ``deep_supervision``) appends the list of the ``depth - 1`` auxiliary logits, shallowest first."""
        if not return_auxiliary:
            return super().forward(x, return_features)
        if self.auxiliary_heads is None:
            raise ValueError("UNetPlusPlus: return_auxiliary=True needs deep_supervision=True")
        self.check_input(x)
        padded, padding = pad_to_multiple(x, 2**self.depth)
        row = [crop_padding(node, padding).contiguous() for node in self.top_row(padded)]
        logits = self.segmentation_head(row[-1])
        auxiliary = [head(node) for head, node in zip(self.auxiliary_heads, row[:-1])]
        return (logits, row[-1], auxiliary) if return_features else (logits, auxiliary)
