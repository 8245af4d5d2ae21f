"""Resizing image / mask tensors to a fixed size (the paper uses 224 x 224).

Images use antialiased bilinear interpolation (a triangle filter: plain bilinear when
enlarging, area-like averaging when shrinking); masks use exact nearest neighbour so that labels
stay class indices and are never blended.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# An int means a square size; None keeps the original size.
SizeArg = int | tuple[int, int] | None


def as_size(size: SizeArg) -> tuple[int, int] | None:
    """Normalise ``size`` (int -> square) and validate it."""
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, H, W)`` float image -> ``(C, *size)``, values kept in [0, 1]."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` integer mask -> ``size`` by nearest neighbour (``nearest-exact`` samples pixel
    centres, unlike legacy ``nearest`` which shifts the mask by half a pixel)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    out = F.interpolate(mask[None, None].to(torch.float32), size=size, mode="nearest-exact")[0, 0]
    return out.round_().to(mask.dtype)
