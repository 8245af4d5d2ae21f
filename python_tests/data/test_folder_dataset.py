"""The generic images/ + masks/ loader (matching rule, integer labels, ambiguity) and the
``load_dataset`` factory."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dale_ext.data.datasets import FolderDataset
from dale_ext.data.factory import DATASET_NAMES, load_dataset
from python_tests.data.trees import lesion_pair, save_mask, save_rgb, write_pairs


def test_suffix_and_prefix_variants_match(tmp_path):
    names = {"a": "a.png", "b": "b_mask.png", "c": "c_Segmentation.bmp", "d": "mask_d.png", "e": "e_GT.png"}
    for i, (stem, mask_name) in enumerate(names.items()):
        img, mask = lesion_pair(20, 24, i)
        save_rgb(tmp_path / "images" / f"{stem}.jpg", img)
        save_mask(tmp_path / "masks" / mask_name, mask)
    ds = FolderDataset(tmp_path, size=None)
    assert ds.ids == list("abcde")
    assert [m.name for _, m in ds.files] == list(names.values())


def test_integer_labels_are_kept_without_threshold(tmp_path):
    img, _ = lesion_pair(16, 16, 0)
    labels = np.zeros((16, 16), np.uint8)
    labels[2:6, 2:6], labels[8:12, 8:14] = 1, 3
    save_rgb(tmp_path / "images" / "x.png", img)
    pal = Image.fromarray(labels, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 - 4) * 3)
    (tmp_path / "masks").mkdir()
    pal.save(tmp_path / "masks" / "x.png")
    ds = FolderDataset(tmp_path, mask_threshold=None, size=(32, 32))
    image, mask = ds[0]
    assert sorted(mask.unique().tolist()) == [0, 1, 3]  # palette indices, nearest resize
    assert int((mask == 3).sum()) == (2 * 4) * (2 * 6)  # the 4 x 6 block, doubled each way


def test_grey_channel_option_and_split_folder(tmp_path):
    write_pairs(tmp_path / "train" / "images", tmp_path / "train" / "masks", ["p", "q"])
    ds = FolderDataset(tmp_path, "train", channels=1, size=(10, 12))
    image, mask = ds[1]
    assert image.shape == (1, 10, 12) and mask.shape == (10, 12)
    with pytest.raises(FileNotFoundError, match="val"):
        FolderDataset(tmp_path, "val")


def test_ambiguous_and_orphan_masks_are_errors(tmp_path):
    write_pairs(tmp_path / "images", tmp_path / "masks", ["k"])
    save_mask(tmp_path / "masks" / "k_mask.png", np.zeros((40, 52), bool))
    with pytest.raises(ValueError, match="several masks match image .*k.jpg"):
        FolderDataset(tmp_path)
    (tmp_path / "masks" / "k_mask.png").rename(tmp_path / "masks" / "zz.png")
    with pytest.raises(FileNotFoundError, match="zz.png"):
        FolderDataset(tmp_path)


def test_duplicate_image_stems_are_errors(tmp_path):
    write_pairs(tmp_path / "images", tmp_path / "masks", ["k"])
    save_rgb(tmp_path / "images" / "k.png", lesion_pair(40, 52, 0)[0])
    with pytest.raises(ValueError, match="same name"):
        FolderDataset(tmp_path)


def test_unreadable_mask_names_the_file(tmp_path):
    write_pairs(tmp_path / "images", tmp_path / "masks", ["k"])
    (tmp_path / "masks" / "k.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=r"masks.k\.png"):
        FolderDataset(tmp_path)[0]


def test_empty_image_folder_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        FolderDataset(tmp_path)


# ---------------------------------------------------------------------------------- factory
def test_factory_names_and_unknown_name():
    assert set(DATASET_NAMES) == {"isic2016", "ph2", "kvasir", "polyp", "mosmed", "synapse", "folder", "synthetic"}
    with pytest.raises(ValueError, match="isic2016.*synthetic"):
        load_dataset("brats", "/nowhere")


def test_factory_folder_and_synthetic(tmp_path):
    write_pairs(tmp_path / "images", tmp_path / "masks", ["a", "b"])
    ds = load_dataset("folder", tmp_path, size=(8, 8))
    assert len(ds) == 2 and ds[0][1].shape == (8, 8)
    syn = load_dataset("synthetic", split="val", n=3, size=32)
    image, mask = syn[0]
    assert image.shape == (3, 32, 32) and mask.dtype == torch.int64
    with pytest.raises(ValueError, match="root"):
        load_dataset("folder")
    with pytest.raises(ValueError, match="root=None"):
        load_dataset("synthetic", tmp_path)


def test_package_exports():
    """Every name in ``dale_ext.data.__all__`` exists. The package ``__init__`` is executed from
    its file, so the check also works where an older editable install maps ``dale_ext.data`` as
    a namespace package."""
    import dale_ext.data.base  # noqa: F401  (the submodules the __init__ re-exports)

    init = Path(dale_ext.data.base.__file__).with_name("__init__.py")
    spec = importlib.util.spec_from_file_location("dale_ext.data", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__all__
    for name in module.__all__:
        assert hasattr(module, name), name
