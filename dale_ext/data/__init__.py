"""Data for DALE: loaders for the paper's datasets, augmentation, splits and a synthetic
noisy-label benchmark.

Every dataset yields ``(image, mask)``: image float32 ``(C, H, W)`` in [0, 1] (C = 3 for RGB,
1 for CT), mask int64 ``(H, W)`` of class indices, and lists its samples in ``ids`` (sorted,
deterministic order). Errors about missing, unmatched, corrupt or mis-sized files name the file.

* :func:`load_dataset` -- by name: "isic2016", "ph2", "kvasir", "polyp", "mosmed", "synapse",
  "folder", "synthetic".
* :class:`Augment` -- paired flips / rotations / scaling with an explicit torch generator.
* :func:`split_indices`, :func:`split_dataset` -- deterministic disjoint splits.
* :func:`make_synthetic`, :class:`SyntheticDataset` -- the built-in benchmark whose label noise
  concentrates on fuzzy (blurred, low-contrast) boundary parts (see ``docs/figures/
  synthetic_benchmark.png``).
"""
from __future__ import annotations

from dale_ext.data.base import PairedImageDataset
from dale_ext.data.datasets import (
    FolderDataset,
    ISIC2016Dataset,
    KvasirDataset,
    MosMedDataset,
    PH2Dataset,
    PolypDataset,
)
from dale_ext.data.factory import DATASET_NAMES, load_dataset
from dale_ext.data.layouts import POLYP_TEST_SUBSETS, Sample, pair_by_stem, polyp_test_subsets
from dale_ext.data.splits import split_dataset, split_indices
from dale_ext.data.synapse import SYNAPSE_CLASSES, SynapseDataset
from dale_ext.data.synthetic import (
    SyntheticData,
    SyntheticDataset,
    make_synthetic,
    noise_statistics,
    plot_examples,
)
from dale_ext.data.transforms import Augment

__all__ = [
    "Augment",
    "DATASET_NAMES",
    "FolderDataset",
    "ISIC2016Dataset",
    "KvasirDataset",
    "MosMedDataset",
    "PH2Dataset",
    "POLYP_TEST_SUBSETS",
    "PairedImageDataset",
    "PolypDataset",
    "SYNAPSE_CLASSES",
    "Sample",
    "SynapseDataset",
    "SyntheticData",
    "SyntheticDataset",
    "load_dataset",
    "make_synthetic",
    "noise_statistics",
    "pair_by_stem",
    "plot_examples",
    "polyp_test_subsets",
    "split_dataset",
    "split_indices",
]
