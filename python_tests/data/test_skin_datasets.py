"""ISIC-2016 and PH2 loaders on generated trees: counts, dtypes, ranges, ordering, the nested
ISIC layout, resizing, and errors that name the offending file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dale_ext.data.datasets import ISIC2016Dataset, PH2Dataset
from dale_ext.data.factory import load_dataset
from python_tests.data.trees import corrupt, lesion_pair, save_mask, save_rgb, truncate, write_pairs

ISIC_TRAIN = ("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth")
ISIC_TEST = ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth")
STEMS = ["ISIC_0000013", "ISIC_0000000", "ISIC_0000007"]  # deliberately unsorted


def isic_tree(root: Path, dirs=ISIC_TRAIN, nested: bool = False, stems=STEMS) -> dict[str, np.ndarray]:
    data, gt = (root / d / d if nested else root / d for d in dirs)
    return write_pairs(data, gt, list(stems), mask_name="{stem}_Segmentation.png")


def check_item(image: torch.Tensor, mask: torch.Tensor, channels: int, size: tuple[int, int]) -> None:
    assert image.dtype == torch.float32 and mask.dtype == torch.int64
    assert image.shape == (channels, *size) and mask.shape == size
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(mask.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("nested", [False, True])
def test_isic_train_reads_flat_and_nested_layouts(tmp_path, nested):
    truth = isic_tree(tmp_path, nested=nested)
    ds = ISIC2016Dataset(tmp_path, "train", size=None)
    assert len(ds) == 3
    assert ds.ids == sorted(STEMS)  # deterministic, sorted order
    assert [p.name for p, _ in ds.files] == [f"{s}.jpg" for s in sorted(STEMS)]
    for i, stem in enumerate(ds.ids):
        image, mask = ds[i]
        check_item(image, mask, 3, (40, 52))
        assert torch.equal(mask, torch.from_numpy(truth[stem].astype(np.int64)))
        # The lesion is the dark part of the image: the mask and image agree.
        assert float(image[:, mask == 1].mean()) < 0.4 < float(image[:, mask == 0].mean())


def test_isic_test_split_and_resize(tmp_path):
    isic_tree(tmp_path, ISIC_TEST, stems=["ISIC_0000003", "ISIC_0000001"])
    ds = ISIC2016Dataset(tmp_path, "test")  # default size 224 x 224
    assert ds.ids == ["ISIC_0000001", "ISIC_0000003"]
    check_item(*ds[0], 3, (224, 224))
    small = ISIC2016Dataset(tmp_path, "test", size=(20, 26))
    image, mask = small[1]
    check_item(image, mask, 3, (20, 26))
    assert 0 < int(mask.sum()) < 20 * 26


def test_isic_ignores_non_jpeg_files_beside_the_images(tmp_path):
    isic_tree(tmp_path)
    save_mask(tmp_path / ISIC_TRAIN[0] / "ISIC_0000000_superpixels.png", np.zeros((40, 52), bool))
    (tmp_path / ISIC_TRAIN[0] / "ATTRIBUTION.txt").write_text("notes")
    assert len(ISIC2016Dataset(tmp_path, "train")) == 3


def test_isic_missing_mask_names_the_image(tmp_path):
    isic_tree(tmp_path)
    (tmp_path / ISIC_TRAIN[1] / "ISIC_0000007_Segmentation.png").unlink()
    with pytest.raises(FileNotFoundError, match="ISIC_0000007.jpg"):
        ISIC2016Dataset(tmp_path, "train")


def test_isic_mask_without_image_names_the_mask(tmp_path):
    isic_tree(tmp_path)
    (tmp_path / ISIC_TRAIN[0] / "ISIC_0000013.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="ISIC_0000013_Segmentation.png"):
        ISIC2016Dataset(tmp_path, "train")


def test_isic_missing_directory_names_it(tmp_path):
    isic_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="ISBI2016_ISIC_Part1_Test_Data"):
        ISIC2016Dataset(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="no_such_root"):
        ISIC2016Dataset(tmp_path / "no_such_root", "train")


@pytest.mark.parametrize("damage", [corrupt, truncate])
def test_isic_corrupt_file_names_it(tmp_path, damage):
    isic_tree(tmp_path)
    bad = damage(tmp_path / ISIC_TRAIN[0] / "ISIC_0000007.jpg")
    ds = ISIC2016Dataset(tmp_path, "train")
    ds[0]  # the intact samples still load
    with pytest.raises(ValueError, match=str(bad.name)):
        ds[ds.ids.index("ISIC_0000007")]


def test_isic_size_mismatch_names_both_files(tmp_path):
    isic_tree(tmp_path)
    save_mask(tmp_path / ISIC_TRAIN[1] / "ISIC_0000000_Segmentation.png", np.zeros((41, 52), bool))
    ds = ISIC2016Dataset(tmp_path, "train")
    with pytest.raises(ValueError, match=r"ISIC_0000000\.jpg.*ISIC_0000000_Segmentation\.png"):
        ds[0]


def test_isic_bad_split(tmp_path):
    isic_tree(tmp_path)
    with pytest.raises(ValueError, match="split"):
        ISIC2016Dataset(tmp_path, "val")


# ------------------------------------------------------------------------------------ PH2
def ph2_tree(base: Path, cases=("IMD003", "IMD002", "IMD010")) -> dict[str, np.ndarray]:
    truth = {}
    for i, case in enumerate(cases):
        img, mask = lesion_pair(30, 36, 100 + i)
        save_rgb(base / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp", img)
        save_mask(base / case / f"{case}_lesion" / f"{case}_lesion.bmp", mask)
        (base / case / f"{case}_roi").mkdir()  # present in the real data, unused
        truth[case] = mask
    return truth


@pytest.mark.parametrize("give_inner_folder", [False, True])
def test_ph2_reads_either_root(tmp_path, give_inner_folder):
    base = tmp_path / "PH2Dataset" / "PH2 Dataset images"
    truth = ph2_tree(base)
    root = base if give_inner_folder else tmp_path / "PH2Dataset"
    ds = PH2Dataset(root, size=None)
    assert ds.ids == ["IMD002", "IMD003", "IMD010"]
    for i, case in enumerate(ds.ids):
        image, mask = ds[i]
        check_item(image, mask, 3, (30, 36))
        assert torch.equal(mask, torch.from_numpy(truth[case].astype(np.int64)))  # BMP is lossless


def test_ph2_missing_lesion_mask_names_the_file(tmp_path):
    base = tmp_path / "PH2 Dataset images"
    ph2_tree(base)
    (base / "IMD003" / "IMD003_lesion" / "IMD003_lesion.bmp").unlink()
    with pytest.raises(FileNotFoundError, match="IMD003_lesion.bmp"):
        PH2Dataset(tmp_path)


def test_ph2_through_the_factory(tmp_path):
    ph2_tree(tmp_path / "PH2 Dataset images")
    ds = load_dataset("PH2", tmp_path, size=(16, 16))
    assert len(ds) == 3 and ds[2][0].shape == (3, 16, 16)
