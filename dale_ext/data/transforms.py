"""Paired data augmentation as torch tensor ops, reproducible through an explicit generator.

:class:`Augment` applies the same random geometry to an image ``(C, H, W)`` and its mask
``(H, W)``: flips, 90-degree rotations (exact index permutations), then one resampling for a
small-angle rotation and the paper's random scaling (10% probability, after LViT). The image is
resampled bilinearly and the mask by nearest neighbour on the same grid, so they stay aligned.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import get_worker_info


def _mix_seeds(*seeds: int) -> int:
    """A 63-bit seed from several integers (so worker streams do not overlap)."""
    state = np.random.SeedSequence([int(s) % 2**64 for s in seeds]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def affine_theta(angle_deg: float, scale: float, height: int, width: int) -> torch.Tensor:
    """``(1, 2, 3)`` matrix for ``affine_grid`` that rotates by ``angle_deg`` (counter-clockwise
    on screen) and zooms by ``scale`` (> 1 enlarges) about the centre, in pixel units so that
    non-square images are rotated, not sheared."""
    a = math.radians(angle_deg)
    # Output->input map in pixels: R(-a) / scale; conjugated by the normalised->pixel scaling.
    c, s = math.cos(a) / scale, math.sin(a) / scale
    sx, sy = width / 2.0, height / 2.0
    theta = torch.tensor([[c, s * sy / sx, 0.0], [-s * sx / sy, c, 0.0]], dtype=torch.float32)
    return theta[None]


def warp(image: torch.Tensor, mask: torch.Tensor, theta: torch.Tensor,
         padding_mode: str = "reflection") -> tuple[torch.Tensor, torch.Tensor]:
    """Resample image (bilinear) and mask (nearest) on the grid of ``theta``."""
    h, w = image.shape[-2:]
    grid = F.affine_grid(theta.to(image.dtype), [1, 1, h, w], align_corners=False)
    out_img = F.grid_sample(image[None], grid, mode="bilinear", padding_mode=padding_mode,
                            align_corners=False)[0]
    out_mask = F.grid_sample(mask[None, None].to(image.dtype), grid, mode="nearest",
                             padding_mode=padding_mode, align_corners=False)[0, 0]
    return out_img, out_mask.round().to(mask.dtype)


class Augment:
    """Random flips, rotations and scaling applied identically to ``(image, mask)``.

    Args:
        flip: horizontal and vertical flips, each with probability 0.5.
        rotate: a random multiple of 90 degrees (0/180 only for non-square images), plus,
            with probability ``p_rotate``, a small rotation uniform in ``[-max_angle, max_angle]``.
        max_angle: largest small-angle rotation in degrees (0 disables it).
        p_rotate: probability of the small-angle rotation.
        scale: ``(low, high)`` zoom range, or ``None`` for no scaling.
        p_scale: probability of scaling (the paper: 10%).
        seed: seed of the internal ``torch.Generator``; ``None`` draws one from torch's global
            generator (so ``torch.manual_seed`` still makes runs repeatable).
        padding_mode: ``grid_sample`` padding for pixels rotated in from outside the image;
            ``"reflection"`` avoids black corners, ``"zeros"`` pads with background.

    Every call draws the same count of random numbers whatever the options, so two ``Augment``
    objects with one seed produce the same sequence. Inside ``DataLoader`` workers the generator
    is re-seeded from ``(seed, the worker's torch seed)``: workers and epochs then differ, and a
    seeded ``DataLoader(generator=...)`` keeps the whole run reproducible.
    """

    def __init__(self, flip: bool = True, rotate: bool = True, max_angle: float = 15.0,
                 p_rotate: float = 0.5, scale: tuple[float, float] | None = (0.9, 1.1),
                 p_scale: float = 0.1, seed: int | None = None, padding_mode: str = "reflection") -> None:
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        for name, p in (("p_rotate", p_rotate), ("p_scale", p_scale)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        self.flip, self.rotate, self.max_angle, self.p_rotate = flip, rotate, float(max_angle), p_rotate
        self.scale, self.p_scale, self.padding_mode = scale, p_scale, padding_mode
        self.seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._worker_seed: int | None = None

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed``."""
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def _gen(self) -> torch.Generator:
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            self.generator.manual_seed(_mix_seeds(self.seed, info.seed))
        return self.generator

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 3 or mask.ndim != 2 or image.shape[-2:] != mask.shape:
            raise ValueError(f"expected image (C, H, W) and mask (H, W) of one size, got "
                             f"{tuple(image.shape)} and {tuple(mask.shape)}")
        u = torch.rand(7, generator=self._gen()).tolist()  # fixed draw count per call
        h, w = mask.shape
        if self.flip and u[0] < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.flip and u[1] < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        if self.rotate:
            k = int(u[2] * 4) if h == w else 2 * int(u[2] * 2)
            if k:
                image, mask = image.rot90(k, (-2, -1)), mask.rot90(k, (-2, -1))
        angle = 0.0
        if self.rotate and self.max_angle > 0 and u[3] < self.p_rotate:
            angle = (2.0 * u[4] - 1.0) * self.max_angle
        zoom = 1.0
        if self.scale is not None and u[5] < self.p_scale:
            zoom = self.scale[0] + u[6] * (self.scale[1] - self.scale[0])
        if angle != 0.0 or zoom != 1.0:
            image, mask = warp(image, mask, affine_theta(angle, zoom, h, w), self.padding_mode)
        return image.contiguous(), mask.contiguous()

    def __repr__(self) -> str:
        return (f"Augment(flip={self.flip}, rotate={self.rotate}, max_angle={self.max_angle}, "
                f"p_rotate={self.p_rotate}, scale={self.scale}, p_scale={self.p_scale}, seed={self.seed})")
