"""The contract every built-in model keeps, so the DALE trainer can use any of them unchanged.

* ``forward(x)`` maps (B, in_channels, H, W) to logits (B, num_classes, H, W) for any H, W: the
  input is zero-padded to a multiple of ``2**depth`` and the decoder output cropped back, so odd
  sizes work without size-matching tricks inside the decoder.
* The last module is ``segmentation_head`` (a 1x1 conv); its input is the full-resolution
  feature map (B, feature_channels, H, W). DALE captures those features with a forward pre-hook
  on the module named by ``feature_module``, or gets them from ``forward(x, return_features=True)``.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

Padding = tuple[int, int, int, int]  # F.pad order: left, right, top, bottom


def _positive_int(value: object, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive int; got {value!r}")
    return value


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, Padding]:
    """Zero-pad H and W up to a multiple of ``multiple``, split evenly so the image stays centred."""
    height, width = x.shape[-2:]
    extra_h, extra_w = -height % multiple, -width % multiple
    padding = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
    if extra_h == 0 and extra_w == 0:
        return x, padding
    return F.pad(x, padding), padding


def crop_padding(x: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on a tensor at the padded resolution."""
    left, right, top, bottom = padding
    height, width = x.shape[-2:]
    return x[..., top : height - bottom, left : width - right]


class SegmentationModel(nn.Module):
    """Base of the built-in models: checks the input, pads, decodes, crops, applies the head.

    Subclasses build ``self.segmentation_head`` and implement :meth:`decode`, which maps a padded
    input (H, W multiples of ``2**depth``) to features (B, feature_channels, H, W).
    """

    #: Dotted name of the module whose input DALE hooks (see :mod:`dale_ext.models.smp`).
    feature_module: ClassVar[str] = "segmentation_head"

    def __init__(self, in_channels: int, num_classes: int, base_channels: int, depth: int) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_channels = _positive_int(in_channels, "in_channels", owner)
        self.num_classes = _positive_int(num_classes, "num_classes", owner)
        self.base_channels = _positive_int(base_channels, "base_channels", owner)
        self.depth = _positive_int(depth, "depth", owner)
        self.feature_channels = base_channels

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__}: expected input (B, {self.in_channels}, H, W); got {shape}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution features (B, feature_channels, H, W): the segmentation head's input."""
        self.check_input(x)
        padded, padding = pad_to_multiple(x, 2**self.depth)
        # contiguous: hooks and losses downstream may .view() the features
        return crop_padding(self.decode(padded), padding).contiguous()

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, num_classes, H, W), or ``(logits, features)`` when ``return_features``."""
        features = self.features(x)
        logits = self.segmentation_head(features)
        return (logits, features) if return_features else logits
