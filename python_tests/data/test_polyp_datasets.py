"""Kvasir-SEG and the PraNet polyp split: JPEG masks thresholded correctly, train/test subsets,
the helper listing subsets, and errors naming files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dale_ext.data.datasets import KvasirDataset, PolypDataset
from dale_ext.data.layouts import POLYP_TEST_SUBSETS, polyp_test_subsets
from dale_ext.data.factory import load_dataset
from python_tests.data.trees import write_pairs


def kvasir_tree(root: Path, stems=("cju0qkwl35piu0993l0dewei2", "cju0roawvklrq0799vmjorwfv")) -> dict[str, np.ndarray]:
    truth = write_pairs(root / "images", root / "masks", list(stems), mask_name="{stem}.jpg", size=(48, 56))
    for stem in stems:  # re-save the masks as low-quality JPEGs: ringing around the edges
        path = root / "masks" / f"{stem}.jpg"
        Image.open(path).save(path, quality=40)
    return truth


def test_kvasir_jpeg_masks_are_binarised(tmp_path):
    truth = kvasir_tree(tmp_path)
    raw = np.asarray(Image.open(tmp_path / "masks" / f"{sorted(truth)[0]}.jpg"))
    assert len(np.unique(raw)) > 2  # the file really holds compression artefacts
    ds = KvasirDataset(tmp_path, size=None)
    assert ds.ids == sorted(truth)
    for i, stem in enumerate(ds.ids):
        image, mask = ds[i]
        assert image.shape == (3, 48, 56) and image.dtype == torch.float32
        assert mask.dtype == torch.int64 and set(mask.unique().tolist()) == {0, 1}
        assert (mask.numpy() == truth[stem]).mean() > 0.995  # at most a few edge pixels differ


def test_kvasir_rejects_a_split_it_does_not_have(tmp_path):
    kvasir_tree(tmp_path)
    with pytest.raises(ValueError, match="unsplit"):
        KvasirDataset(tmp_path, "train")


def pranet_tree(root: Path) -> None:
    write_pairs(root / "TrainDataset" / "images", root / "TrainDataset" / "masks", ["b", "a", "c"], image_ext=".png")
    for k, subset in enumerate(POLYP_TEST_SUBSETS):
        stems = [f"{j}" for j in range(k + 1)]
        write_pairs(root / "TestDataset" / subset / "images", root / "TestDataset" / subset / "masks", stems,
                    image_ext=".png", mask_name="{stem}.jpg" if subset == "Kvasir" else "{stem}.png", seed=k)


def test_pranet_train_and_every_test_subset(tmp_path):
    pranet_tree(tmp_path)
    train = PolypDataset(tmp_path, "train", size=(32, 32))
    assert train.ids == ["a", "b", "c"]
    image, mask = train[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    assert polyp_test_subsets(tmp_path) == sorted(POLYP_TEST_SUBSETS)
    for k, subset in enumerate(POLYP_TEST_SUBSETS):
        test = PolypDataset(tmp_path, "test", subset)
        assert len(test) == k + 1, subset
        assert set(test[0][1].unique().tolist()) == {0, 1}


def test_pranet_accepts_singular_folder_names(tmp_path):
    # Polyp-PVT redistributes the training set as TrainDataset/{image,mask}.
    write_pairs(tmp_path / "TrainDataset" / "image", tmp_path / "TrainDataset" / "mask", ["x", "y"])
    assert PolypDataset(tmp_path, "train").ids == ["x", "y"]


def test_pranet_errors(tmp_path):
    pranet_tree(tmp_path)
    with pytest.raises(ValueError, match="subset"):
        PolypDataset(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="EndoScene"):
        PolypDataset(tmp_path, "test", "EndoScene")
    (tmp_path / "TestDataset" / "CVC-300" / "masks" / "0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"CVC-300.images.0\.png"):
        PolypDataset(tmp_path, "test", "CVC-300")


def test_polyp_through_the_factory(tmp_path):
    pranet_tree(tmp_path)
    ds = load_dataset("polyp", tmp_path, split="test", subset="ETIS-LaribPolypDB", size=None)
    assert len(ds) == 4 and ds[3][0].shape == (3, 40, 52)
