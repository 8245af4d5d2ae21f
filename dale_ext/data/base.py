"""The dataset class shared by every file-based loader: a sorted list of image/mask file pairs.

Each item is ``(image, mask)``: image float32 ``(C, H, W)`` in [0, 1], mask int64 ``(H, W)`` of
class indices. Files are read lazily in ``__getitem__``; errors there name the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from dale_ext.data.layouts import Sample
from dale_ext.data.readers import read_binary_mask, read_image, read_mask
from dale_ext.data.resize import SizeArg, as_size, resize_image, resize_mask

PairTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class PairedImageDataset(Dataset):
    """Image/mask file pairs as tensors.

    Args:
        samples: the pairs, in the order the dataset yields them.
        channels: 3 (RGB) or 1 (grey / CT).
        mask_threshold: binarise masks as ``grey > mask_threshold``; ``None`` keeps the stored
            integer labels (palette indices or grey levels).
        size: ``(H, W)`` or an int for square output; ``None`` keeps each file's size.
        transform: called as ``transform(image, mask)`` after resizing (e.g. :class:`Augment`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        channels: int = 3,
        mask_threshold: float | None = 127,
        size: SizeArg = (224, 224),
        transform: PairTransform | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.samples = list(samples)
        self.channels = channels
        self.mask_threshold = mask_threshold
        self.size = as_size(size)
        self.transform = transform

    @property
    def ids(self) -> list[str]:
        """Sample names (image file stems) in dataset order."""
        return [s.id for s in self.samples]

    @property
    def files(self) -> list[tuple[Path, Path]]:
        """``(image_path, mask_path)`` per sample, in dataset order."""
        return [(s.image, s.mask) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The sample's arrays at file resolution: image ``(C, H, W)`` float32, mask ``(H, W)``."""
        sample = self.samples[index]
        image = read_image(sample.image, self.channels)
        if self.mask_threshold is None:
            mask = read_mask(sample.mask)
        else:
            mask = read_binary_mask(sample.mask, self.mask_threshold)
        if image.shape[1:] != mask.shape:
            raise ValueError(
                f"image {sample.image} is {image.shape[1]}x{image.shape[2]} but its mask "
                f"{sample.mask} is {mask.shape[0]}x{mask.shape[1]}"
            )
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_np, mask_np = self.load_arrays(index)
        image = torch.from_numpy(image_np)
        mask = torch.from_numpy(mask_np.astype(np.int64, copy=False))
        if self.size is not None:
            image, mask = resize_image(image, self.size), resize_mask(mask, self.size)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, channels={self.channels}, size={self.size})"
