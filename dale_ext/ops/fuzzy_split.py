"""``fuzzy_split``: the AE&ER soft-threshold split of an image batch into fuzzy and non-fuzzy
regions (paper Eqs. 3-7), as one fused CPU/CUDA op.

Definitions (also those of :func:`dale_ext.reference.fuzzy_split`):

* grey level ``g`` = mean over channels, computed in float32 with the channels summed in order;
  uint8 images are read as ``x / 255``. Bin ``q = min(floor(g * bins), bins - 1)``; for uint8 the
  bin is computed exactly in integer arithmetic (``floor(sum_c x_c * bins / (255 C))``), which
  is what the float formula approximates. Float grey levels below 0 fall into the first bin,
  above 1 into the last; NaN pixels raise ``ValueError``.
* patches of ``patch_size`` tile the image from the top-left corner; when H or W is not a
  multiple, the last row/column of patches is smaller and uses its own pixel count ``n``.
* ``entropy`` (Eq. 3): Shannon entropy ``-sum_v p_v ln p_v`` of the patch's histogram of ``q``
  (DESIGN.md departure 1: equal to the mean self-information of the patch's pixels).
* ``edge_ratio`` (Eq. 4): share of the patch's pixels whose label differs from one of their
  4-neighbours inside the image (``skimage.segmentation.find_boundaries(connectivity=1,
  mode="thick")``).
* Eq. 5 per image over its patches: ``(x - min) / (max - min)``, 0 for all when ``max == min``;
  ``score = max(entropy_std, edge_std)`` (computed in float64). "Equal" means within 1e-12, and
  an entropy below 1e-12 is 0: a constant patch's entropy may otherwise round to +4e-16 (and the
  CUDA histogram's summation order varies), which Eq. 5 would stretch to a score of 1. Real
  differences are far larger (a non-constant patch of up to 2^31 pixels has entropy > 1e-8).
* ``label`` may be any integer or bool dtype, unsigned 16/32/64-bit included.
* Eq. 6: ``fuzzy_mask = 1 if score > tau else score``; ``nonfuzzy_mask = 1 if score < tau else
  1 - score`` (DESIGN.md departure 2: the printed ``tau - score`` would be negative).
* ``fuzzy_image = fuzzy_mask * image`` and ``nonfuzzy_image = nonfuzzy_mask * image`` in the
  image's dtype (float32 for uint8 images, scaled to [0, 1]), computed in float32 (float64 for
  float64 images) and rounded once.

The op has no gradient (the masks are data); it works under ``torch.no_grad`` and inside
``torch.compile`` (a fake kernel is registered).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from dale_ext import _extension  # noqa: F401  (registers torch.ops.dale_ext)
from dale_ext.ops._common import integer, pair, real, tensor, use_reference


class FuzzySplit(NamedTuple):
    """Result of :func:`fuzzy_split`. Patch maps are (B, Lh, Lw) float32 with
    ``Lh = ceil(H / ph)``, ``Lw = ceil(W / pw)``; masks (B, 1, H, W) float32; images (B, C, H, W)."""

    entropy: torch.Tensor
    edge_ratio: torch.Tensor
    score: torch.Tensor
    fuzzy_mask: torch.Tensor
    nonfuzzy_mask: torch.Tensor
    fuzzy_image: torch.Tensor
    nonfuzzy_image: torch.Tensor


def fuzzy_split(
    image: torch.Tensor,
    label: torch.Tensor,
    *,
    patch_size: int | tuple[int, int] = 16,
    tau: float = 0.9,
    bins: int = 256,
) -> FuzzySplit:
    """Split a batch into fuzzy and non-fuzzy regions (paper Eqs. 3-7); see the module docstring.

    Args:
        image: (B, C, H, W) float32/float64/float16/bfloat16 in [0, 1], or uint8 in [0, 255].
        label: (B, H, W) or (B, 1, H, W) integer or bool class map, on ``image``'s device.
        patch_size: patch height and width (an int for square patches), at most (H, W).
        tau: soft threshold in [0, 1] (paper: 0.9).
        bins: number of grey-level histogram bins, in [2, 65536].
    """
    op = "fuzzy_split"
    image = tensor(image, "image", op).detach()  # the masks are data: no gradient
    label = tensor(label, "label", op)
    ph, pw = pair(patch_size, "patch_size", op)
    tau = real(tau, "tau", op)
    bins = integer(bins, "bins", op)
    if use_reference(op, image.device):
        from dale_ext.reference.fuzzy_split import fuzzy_split as reference

        return reference(image, label, patch_size=(ph, pw), tau=tau, bins=bins)
    return FuzzySplit(*torch.ops.dale_ext.fuzzy_split.default(image, label, [ph, pw], tau, bins))


@torch.library.register_fake("dale_ext::fuzzy_split")
def _fuzzy_split_fake(image, label, patch_size, tau, bins):
    torch._check(image.dim() == 4, lambda: "fuzzy_split: `image` must be 4-D (B, C, H, W)")
    B, C, H, W = image.shape
    ph, pw = patch_size
    Lh, Lw = (H + ph - 1) // ph, (W + pw - 1) // pw
    f32 = dict(dtype=torch.float32, device=image.device)
    img_dtype = torch.float32 if image.dtype == torch.uint8 else image.dtype
    patch = lambda: image.new_empty((B, Lh, Lw), **f32)  # noqa: E731
    mask = lambda: image.new_empty((B, 1, H, W), **f32)  # noqa: E731
    img = lambda: image.new_empty((B, C, H, W), dtype=img_dtype)  # noqa: E731
    return patch(), patch(), patch(), mask(), mask(), img(), img()
