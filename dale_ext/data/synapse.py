"""Synapse multi-organ CT in TransUNet's preprocessed layout (9 classes incl. background).

Layout under ``root``::

    train_npz/caseXXXX_sliceYYY.npz     arrays ``image`` (H, W) float in [0, 1], ``label`` (H, W) 0..8
    test_vol_h5/caseXXXX.npy.h5         datasets ``image``, ``label`` (D, H, W)
    lists/lists_Synapse/train.txt       one slice name per line (``case0031_slice000``)
    lists/lists_Synapse/test_vol.txt    one volume name per line (``case0001``)

The lists are looked for in ``list_dir`` (default ``root/lists/lists_Synapse``, then
``root/lists_Synapse``); without a list file the folder's files are used in sorted order.
``split="train"`` yields 2-D slices from the npz files; ``split="test"`` yields every slice of
every volume in order, and :meth:`SynapseDataset.volume` returns whole volumes for 3-D metrics.
``h5py`` is needed only for the test volumes and is imported on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from dale_ext.data.base import PairTransform
from dale_ext.data.layouts import require_dir
from dale_ext.data.resize import SizeArg, as_size, resize_image, resize_mask

# TransUNet's label order (BTCV organs remapped to 1..8).
SYNAPSE_CLASSES: tuple[str, ...] = (
    "background", "aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas",
    "spleen", "stomach",
)
NUM_SYNAPSE_CLASSES = len(SYNAPSE_CLASSES)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as err:  # optional dependency
        raise ImportError("reading Synapse test volumes (*.npy.h5) needs h5py: pip install h5py") from err
    return h5py


def _check_pair(image: np.ndarray, label: np.ndarray, path: Path, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and label range; image -> float32 clipped to [0, 1], label -> int64."""
    if image.ndim != ndim or image.shape != label.shape:
        raise ValueError(f"{path}: image shape {image.shape} and label shape {label.shape} "
                         f"must match and be {ndim}-D")
    label_i = np.rint(label).astype(np.int64)
    if label_i.size and (label_i.min() < 0 or label_i.max() >= NUM_SYNAPSE_CLASSES):
        raise ValueError(f"{path}: labels must lie in 0..{NUM_SYNAPSE_CLASSES - 1}, "
                         f"found {label_i.min()}..{label_i.max()}")
    # The preprocessed CT is already windowed to [0, 1]; clipping only guards rounding.
    return np.clip(image.astype(np.float32), 0.0, 1.0), label_i


def read_npz_slice(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` of one training slice; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"Synapse slice file not found: {path}")
    try:
        with np.load(path) as data:
            image, label = data["image"], data["label"]
    except KeyError as err:
        raise ValueError(f"{path}: missing array {err} (needs 'image' and 'label')") from err
    except Exception as err:  # zipfile / pickle / OS errors of a corrupt file
        raise ValueError(f"cannot read Synapse slice file {path}: {err}") from err
    return _check_pair(image, label, path, ndim=2)


def read_h5_volume(path: Path, index: int | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` of a test volume, or of the slice(s) ``index`` along depth."""
    h5py = _h5py()
    if not path.is_file():
        raise FileNotFoundError(f"Synapse volume file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            image, label = f["image"][index], f["label"][index]
    except KeyError as err:
        raise ValueError(f"{path}: missing dataset {err} (needs 'image' and 'label')") from err
    except OSError as err:
        raise ValueError(f"cannot read Synapse volume file {path}: {err}") from err
    return _check_pair(image, label, path, ndim=2 if isinstance(index, int) else 3)


def _volume_depth(path: Path) -> int:
    h5py = _h5py()
    if not path.is_file():
        raise FileNotFoundError(f"Synapse volume file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            shape, label_shape = f["image"].shape, f["label"].shape
    except KeyError as err:
        raise ValueError(f"{path}: missing dataset {err} (needs 'image' and 'label')") from err
    except OSError as err:
        raise ValueError(f"cannot read Synapse volume file {path}: {err}") from err
    if len(shape) != 3 or shape != label_shape:
        raise ValueError(f"{path}: image {shape} and label {label_shape} must be equal D x H x W")
    return shape[0]


class SliceRef(NamedTuple):
    """Where one 2-D sample lives: the file and, for volumes, the depth index."""

    id: str
    path: Path
    depth: int | None


class SynapseDataset(Dataset):
    """Synapse slices as ``(image (1, H, W) float32 in [0, 1], mask (H, W) int64 in 0..8)``.

    Args:
        root: folder holding ``train_npz`` / ``test_vol_h5`` (and usually ``lists``).
        split: ``"train"`` (npz slices) or ``"test"`` (slices of the h5 volumes).
        list_dir: folder with ``train.txt`` / ``test_vol.txt``; see the module docstring.
        size: output size of each slice (``None`` keeps 512 x 512).
        transform: ``transform(image, mask)`` applied after resizing.
    """

    num_classes = NUM_SYNAPSE_CLASSES
    class_names = SYNAPSE_CLASSES

    def __init__(self, root: str | Path, split: str = "train", *, list_dir: str | Path | None = None,
                 size: SizeArg = (224, 224), transform: PairTransform | None = None) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root = require_dir(root)
        self.split = split
        self.size = as_size(size)
        self.transform = transform
        if split == "train":
            data_dir = require_dir(self.root / "train_npz")
            names = self._names(list_dir, "train.txt", data_dir, ".npz")
            self.volume_ids: list[str] = []
            self._volume_paths: list[Path] = []
            self.slices = [SliceRef(n, data_dir / f"{n}.npz", None) for n in names]
            for ref in self.slices:
                if not ref.path.is_file():
                    raise FileNotFoundError(f"Synapse slice file not found: {ref.path}")
        else:
            data_dir = require_dir(self.root / "test_vol_h5")
            self.volume_ids = self._names(list_dir, "test_vol.txt", data_dir, ".npy.h5")
            self._volume_paths = [data_dir / f"{n}.npy.h5" for n in self.volume_ids]
            self.slices = [
                SliceRef(f"{name}_slice{z:03d}", path, z)
                for name, path in zip(self.volume_ids, self._volume_paths)
                for z in range(_volume_depth(path))
            ]

    def _names(self, list_dir: str | Path | None, list_name: str, data_dir: Path, ext: str) -> list[str]:
        """Sample names from the list file, else from the folder's ``*ext`` files (sorted)."""
        if list_dir is not None:
            list_file = Path(list_dir) / list_name
            if not list_file.is_file():
                raise FileNotFoundError(f"Synapse list file not found: {list_file}")
        else:
            found = [d / list_name for d in (self.root / "lists" / "lists_Synapse", self.root / "lists_Synapse")]
            list_file = next((f for f in found if f.is_file()), None)
        if list_file is not None:
            names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        else:
            names = sorted(p.name[: -len(ext)] for p in data_dir.iterdir() if p.name.endswith(ext))
        if not names:
            raise FileNotFoundError(f"no Synapse samples listed in {list_file or data_dir}")
        return names

    @property
    def ids(self) -> list[str]:
        """Slice names in dataset order (``caseXXXX_sliceYYY``)."""
        return [s.id for s in self.slices]

    @property
    def files(self) -> list[Path]:
        """The file each slice is read from (an npz per slice, or its volume's h5)."""
        return [s.path for s in self.slices]

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ref = self.slices[index]
        if ref.depth is None:
            image_np, label_np = read_npz_slice(ref.path)
        else:
            image_np, label_np = read_h5_volume(ref.path, ref.depth)
        image, mask = torch.from_numpy(image_np)[None], torch.from_numpy(label_np)
        if self.size is not None:
            image, mask = resize_image(image, self.size), resize_mask(mask, self.size)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask

    def volume(self, key: int | str) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole test volume at its stored resolution: image ``(D, H, W)`` float32 in [0, 1] and
        label ``(D, H, W)`` int64. ``key`` is an index into ``volume_ids`` or a volume name."""
        if self.split != "test":
            raise ValueError("volume() needs split='test' (training data are single slices)")
        if isinstance(key, str):
            if key not in self.volume_ids:
                raise KeyError(f"no Synapse volume {key!r}; volumes: {self.volume_ids}")
            index = self.volume_ids.index(key)
        else:
            index = key
        image, label = read_h5_volume(self._volume_paths[index])
        return torch.from_numpy(image), torch.from_numpy(label)

    @property
    def num_volumes(self) -> int:
        return len(self.volume_ids)

    def __repr__(self) -> str:
        return f"SynapseDataset(split={self.split!r}, n={len(self)}, volumes={self.num_volumes})"
