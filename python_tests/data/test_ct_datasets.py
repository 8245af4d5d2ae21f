"""MosMedData+ (LViT layout) and Synapse (TransUNet layout): 1-channel CT, mask naming variants,
npz slices, h5 volumes with per-slice and per-volume access, list files, errors naming files."""
from __future__ import annotations

import builtins
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dale_ext.data.datasets import MosMedDataset
from dale_ext.data.factory import load_dataset
from dale_ext.data.synapse import SynapseDataset
from python_tests.data.trees import save_grey


# ------------------------------------------------------------------------------ MosMedData+
def ct_slice(seed: int, h: int = 36, w: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), bool)
    y, x = rng.integers(5, h - 15), rng.integers(5, w - 15)
    mask[y:y + 10, x:x + 8] = True
    img = rng.integers(20, 90, (h, w)).astype(np.uint8)
    img[mask] = 200
    return img, mask


@pytest.mark.parametrize("mask_name,mask_scale", [
    ("{stem}.png", 1),            # LViT: same file name, 0/1 values
    ("{stem}.png", 255),          # same name, 0/255 values
    ("{stem}_mask.png", 255),     # suffix variant
    ("mask_{stem}.png", 1),       # QaTa-style prefix variant
])
def test_mosmed_same_name_and_variants(tmp_path, mask_name, mask_scale):
    truth = {}
    for split_dir, stems in (("Train_Folder", ["slice_2", "slice_10", "slice_1"]), ("Val_Folder", ["v"]),
                             ("Test_Folder", ["t1", "t2"])):
        for i, stem in enumerate(stems):
            img, mask = ct_slice(i + len(truth))
            save_grey(tmp_path / split_dir / "img" / f"{stem}.png", img)
            save_grey(tmp_path / split_dir / "labelcol" / mask_name.format(stem=stem), mask * mask_scale)
            truth[stem] = mask
    train = MosMedDataset(tmp_path, "train", size=None)
    assert train.ids == ["slice_1", "slice_10", "slice_2"]
    for i, stem in enumerate(train.ids):
        image, mask = train[i]
        assert image.shape == (1, 36, 30) and image.dtype == torch.float32
        assert torch.equal(mask, torch.from_numpy(truth[stem].astype(np.int64)))  # binarised at > 0
        assert float(image[0][mask == 1].min()) > 0.7
    assert len(MosMedDataset(tmp_path, "val")) == 1
    test = load_dataset("mosmed", tmp_path, split="test")
    assert len(test) == 2 and test[0][0].shape == (1, 224, 224)


def test_mosmed_missing_label_names_the_image(tmp_path):
    img, mask = ct_slice(0)
    save_grey(tmp_path / "Train_Folder" / "img" / "a.png", img)
    save_grey(tmp_path / "Train_Folder" / "img" / "b.png", img)
    save_grey(tmp_path / "Train_Folder" / "labelcol" / "a.png", mask)
    with pytest.raises(FileNotFoundError, match=r"img.b\.png"):
        MosMedDataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="Val_Folder"):
        MosMedDataset(tmp_path, "val")


# ---------------------------------------------------------------------------------- Synapse
def synapse_tree(root: Path, with_lists: bool = True) -> dict:
    rng = np.random.default_rng(0)
    train_names = ["case0005_slice001", "case0005_slice000", "case0031_slice010"]
    (root / "train_npz").mkdir(parents=True)
    for name in train_names:
        label = rng.integers(0, 9, (40, 40)).astype(np.float32)  # TransUNet stores labels as floats
        np.savez(root / "train_npz" / f"{name}.npz", image=rng.uniform(0, 1, (40, 40)).astype(np.float32), label=label)
    volumes = {"case0001": 3, "case0008": 2}
    (root / "test_vol_h5").mkdir()
    for name, depth in volumes.items():
        with h5py.File(root / "test_vol_h5" / f"{name}.npy.h5", "w") as f:
            f["image"] = rng.uniform(0, 1, (depth, 48, 48)).astype(np.float32)
            f["label"] = rng.integers(0, 9, (depth, 48, 48)).astype(np.float32)
    if with_lists:
        lists = root / "lists" / "lists_Synapse"
        lists.mkdir(parents=True)
        (lists / "train.txt").write_text("\n".join(train_names) + "\n")
        (lists / "test_vol.txt").write_text("case0008\ncase0001\n")
    return {"train": train_names, "volumes": volumes}


def test_synapse_train_slices_follow_the_list(tmp_path):
    info = synapse_tree(tmp_path)
    ds = SynapseDataset(tmp_path, "train", size=(32, 32))
    assert ds.ids == info["train"]  # the list's order, as TransUNet reads it
    image, mask = ds[2]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    assert 0 <= int(mask.min()) and int(mask.max()) <= 8 and ds.num_classes == 9
    raw = np.load(tmp_path / "train_npz" / "case0031_slice010.npz")
    full = SynapseDataset(tmp_path, "train", size=None)
    assert torch.equal(full[2][1], torch.from_numpy(raw["label"].astype(np.int64)))
    assert torch.allclose(full[2][0][0], torch.from_numpy(raw["image"]))


def test_synapse_without_lists_uses_sorted_files(tmp_path):
    synapse_tree(tmp_path, with_lists=False)
    assert SynapseDataset(tmp_path, "train").ids == ["case0005_slice000", "case0005_slice001", "case0031_slice010"]
    assert SynapseDataset(tmp_path, "test").volume_ids == ["case0001", "case0008"]


def test_synapse_test_slices_and_volumes(tmp_path):
    info = synapse_tree(tmp_path)
    ds = SynapseDataset(tmp_path, "test", size=None)
    assert ds.volume_ids == ["case0008", "case0001"]
    assert len(ds) == sum(info["volumes"].values()) == 5
    assert ds.ids[:3] == ["case0008_slice000", "case0008_slice001", "case0001_slice000"]
    vol_image, vol_label = ds.volume("case0001")
    assert vol_image.shape == (3, 48, 48) and vol_label.dtype == torch.int64
    image, mask = ds[3]  # case0001, slice 1
    assert torch.equal(image[0], vol_image[1]) and torch.equal(mask, vol_label[1])
    assert torch.equal(ds.volume(1)[1], vol_label)
    with pytest.raises(KeyError, match="case9999"):
        ds.volume("case9999")


def test_synapse_errors_name_the_file(tmp_path):
    synapse_tree(tmp_path)
    (tmp_path / "train_npz" / "case0005_slice000.npz").unlink()
    with pytest.raises(FileNotFoundError, match="case0005_slice000.npz"):
        SynapseDataset(tmp_path, "train")
    (tmp_path / "test_vol_h5" / "case0008.npy.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="case0008.npy.h5"):
        SynapseDataset(tmp_path, "test")


def test_synapse_bad_labels_and_corrupt_npz_name_the_file(tmp_path):
    synapse_tree(tmp_path, with_lists=False)
    np.savez(tmp_path / "train_npz" / "case0005_slice000.npz", image=np.zeros((4, 4)), label=np.full((4, 4), 12.0))
    (tmp_path / "train_npz" / "case0005_slice001.npz").write_bytes(b"garbage")
    ds = SynapseDataset(tmp_path, "train")
    with pytest.raises(ValueError, match=r"case0005_slice000\.npz.*0\.\.8"):
        ds[0]
    with pytest.raises(ValueError, match="case0005_slice001.npz"):
        ds[1]


def test_synapse_needs_h5py_only_for_volumes(tmp_path, monkeypatch):
    synapse_tree(tmp_path)
    real_import = builtins.__import__

    def no_h5py(name, *args, **kw):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    assert len(SynapseDataset(tmp_path, "train")) == 3  # npz slices need no h5py
    with pytest.raises(ImportError, match="pip install h5py"):
        SynapseDataset(tmp_path, "test")
