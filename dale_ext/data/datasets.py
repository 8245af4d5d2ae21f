"""Loaders for the paper's 2-D datasets (Sec. 4.1), one class per on-disk layout.

All yield ``(image, mask)`` with image float32 ``(C, H, W)`` in [0, 1] and mask int64 ``(H, W)``
in {0, 1}, resized to ``size`` (default 224 x 224, ``None`` keeps the files' size), then passed
through ``transform(image, mask)``. ``ids`` / ``files`` list the samples in (sorted) order.
Paths are relative to the ``root`` you pass; see :mod:`dale_ext.data.layouts` for the rules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dale_ext.data import layouts
from dale_ext.data.base import PairedImageDataset, PairTransform
from dale_ext.data.resize import SizeArg



class ISIC2016Dataset(PairedImageDataset):
    """ISIC-2016 Task 1 (900 train / 379 test). Flat or nested
    (``root/X/X/*.jpg``) copies both work. Masks are 0/255 PNGs, binarised at > 127."""

    def __init__(self, root: str | Path, split: str = "train", *, size: SizeArg = (224, 224),
                 transform: PairTransform | None = None) -> None:
        super().__init__(layouts.isic2016_samples(root, split), channels=3, mask_threshold=127,
                         size=size, transform=transform)
        self.split = split


class PH2Dataset(PairedImageDataset):
    """PH2 (200 dermoscopic images, the paper's test set for ISIC-trained models)."""

    def __init__(self, root: str | Path, split: str = "test", *, size: SizeArg = (224, 224),
                 transform: PairTransform | None = None) -> None:
        # PH2 has no official split; the paper uses all of it for testing.
        if split not in ("test", "all"):
            raise ValueError(f"PH2 has a single split: use split='test' (or 'all'), got {split!r}")
        super().__init__(layouts.ph2_samples(root), channels=3, mask_threshold=127, size=size,
                         transform=transform)
        self.split = split


class KvasirDataset(PairedImageDataset):
    """Kvasir-SEG: ``images/*.jpg`` + ``masks/*.jpg``. The masks are JPEGs, so compression
    ringing around 0/255 is removed by thresholding the grey level at > 127."""

    def __init__(self, root: str | Path, split: str = "all", *, size: SizeArg = (224, 224),
                 transform: PairTransform | None = None) -> None:
        # Kvasir-SEG ships unsplit; use PolypDataset for the paper's split or split_indices.
        if split != "all":
            raise ValueError(f"Kvasir-SEG ships unsplit: use split='all' and split_indices, got {split!r}")
        super().__init__(layouts.folder_samples(root, "images", "masks"), channels=3,
                         mask_threshold=127, size=size, transform=transform)
        self.split = split


class PolypDataset(PairedImageDataset):
    """PraNet's polyp benchmark: ``split="train"`` (1450 images) or ``split="test",
    subset=<one of POLYP_TEST_SUBSETS>`` (798 images over five subsets). Masks binarised at > 127."""

    def __init__(self, root: str | Path, split: str = "train", subset: str | None = None, *,
                 size: SizeArg = (224, 224), transform: PairTransform | None = None) -> None:
        super().__init__(layouts.polyp_samples(root, split, subset), channels=3, mask_threshold=127,
                         size=size, transform=transform)
        self.split, self.subset = split, subset


class MosMedDataset(PairedImageDataset):
    """MosMedData+ in LViT's layout (2183 / 273 / 273 CT slices); 1-channel images, masks
    binarised at > 0 (LViT's rule, so 0/1 and 0/255 masks both work)."""

    def __init__(self, root: str | Path, split: str = "train", *, size: SizeArg = (224, 224),
                 transform: PairTransform | None = None) -> None:
        super().__init__(layouts.mosmed_samples(root, split), channels=1, mask_threshold=0,
                         size=size, transform=transform)
        self.split = split


class FolderDataset(PairedImageDataset):
    """Any ``root/images/`` + ``root/masks/`` pair of folders, matched by file stem.

    A mask matches image ``<stem>.*`` when its stem is ``<stem>`` plus one of ``mask_suffixes``
    (default ``""``, ``_mask``, ``_segmentation``, ``_seg``, ``_label``, ``_gt``, ``_lesion``;
    case-insensitive) or ``mask_`` plus ``<stem>``; every image needs exactly one mask and every
    mask an image. ``mask_threshold=127`` binarises (grey > threshold); ``None`` keeps the stored
    integer labels (palette indices / grey levels) for multi-class masks.
    """

    def __init__(self, root: str | Path, split: str = "all", *, images: str = "images",
                 masks: str = "masks", channels: int = 3, mask_threshold: float | None = 127,
                 mask_suffixes: Sequence[str] = layouts.DEFAULT_MASK_SUFFIXES,
                 mask_prefixes: Sequence[str] = layouts.DEFAULT_MASK_PREFIXES,
                 size: SizeArg = (224, 224), transform: PairTransform | None = None) -> None:
        root = Path(root)
        # A split name selects root/<split>/{images,masks}; "all" uses root itself.
        base = root if split == "all" else layouts.require_dir(root / split)
        samples = layouts.folder_samples(base, images, masks, mask_suffixes, mask_prefixes)
        super().__init__(samples, channels=channels, mask_threshold=mask_threshold, size=size,
                         transform=transform)
        self.split = split
