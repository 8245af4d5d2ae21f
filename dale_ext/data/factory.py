"""``load_dataset(name, root, split=..., **kw)``: one entry point for every dataset by name."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

from dale_ext.data.datasets import (
    FolderDataset,
    ISIC2016Dataset,
    KvasirDataset,
    MosMedDataset,
    PH2Dataset,
    PolypDataset,
)
from dale_ext.data.synapse import SynapseDataset
from dale_ext.data.synthetic import SyntheticDataset


def _synthetic(root: str | Path | None, split: str, **kw: Any) -> SyntheticDataset:
    if root is not None:
        raise ValueError("the synthetic dataset is generated, not read: pass root=None")
    return SyntheticDataset(split, **kw)


def _with_root(cls: type) -> Callable[..., Dataset]:
    def build(root: str | Path | None, split: str, **kw: Any) -> Dataset:
        if root is None:
            raise ValueError(f"{cls.__name__} needs root=, the folder holding the dataset")
        return cls(root, split, **kw)

    return build


# name -> (builder, default split)
_REGISTRY: dict[str, tuple[Callable[..., Dataset], str]] = {
    "isic2016": (_with_root(ISIC2016Dataset), "train"),
    "ph2": (_with_root(PH2Dataset), "test"),
    "kvasir": (_with_root(KvasirDataset), "all"),
    "polyp": (_with_root(PolypDataset), "train"),
    "mosmed": (_with_root(MosMedDataset), "train"),
    "synapse": (_with_root(SynapseDataset), "train"),
    "folder": (_with_root(FolderDataset), "all"),
    "synthetic": (_synthetic, "train"),
}
DATASET_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def load_dataset(name: str, root: str | Path | None = None, split: str | None = None, **kw: Any) -> Dataset:
    """Build dataset ``name`` (one of :data:`DATASET_NAMES`, case-insensitive) from ``root``.

    ``split`` defaults to the dataset's usual one ("train"; "test" for PH2; "all" for Kvasir and
    "folder"); remaining keywords go to the dataset class (``size``, ``transform``, ``subset``
    for "polyp", generator options for "synthetic", ...). "synthetic" takes no ``root``.
    """
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    build, default_split = _REGISTRY[key]
    return build(root, split or default_split, **kw)
