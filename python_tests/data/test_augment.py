"""Augment: image and mask stay aligned, labels survive resampling, the stream is reproducible
with a seed and differs with another, the paper's 10% scaling probability, worker re-seeding."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dale_ext.data import transforms
from dale_ext.data.datasets import FolderDataset
from dale_ext.data.transforms import Augment, affine_theta, warp
from python_tests.data.trees import write_pairs


def marked_pair(h: int = 24, w: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Random image with an off-centre marker: 1.0 in channel 1 and label 2 in the mask."""
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 0.5
    mask = torch.zeros(h, w, dtype=torch.int64)
    y, x = h // 6, (2 * w) // 3
    image[1, y, x], mask[y, x] = 1.0, 2
    return image, mask


@pytest.mark.parametrize("shape", [(24, 24), (20, 28)])
def test_exact_ops_keep_the_marker_aligned(shape):
    image, mask = marked_pair(*shape)
    aug = Augment(flip=True, rotate=True, max_angle=0.0, scale=None, seed=3)
    positions = set()
    for _ in range(24):
        out_img, out_mask = aug(image, mask)
        assert out_img.shape == image.shape and out_mask.shape == mask.shape and out_mask.dtype == torch.int64
        (y, x), = (out_mask == 2).nonzero().tolist()
        assert float(out_img[1, y, x]) == 1.0 and int((out_img[1] == 1.0).sum()) == 1
        positions.add((y, x))
    assert len(positions) >= 4  # the geometry really changes (flips and 90-degree turns)


def test_rotation_and_scaling_keep_image_and_mask_aligned():
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(1)) * 0.3
    mask = torch.zeros(48, 48, dtype=torch.int64)
    mask[10:30, 14:40] = 1
    mask[32:40, 6:16] = 4
    image[0] = mask.float() / 4.0  # channel 0 encodes the label
    aug = Augment(max_angle=25.0, p_rotate=1.0, scale=(0.8, 1.25), p_scale=1.0, seed=11)
    for _ in range(10):
        out_img, out_mask = aug(image, mask)
        assert set(out_mask.unique().tolist()) <= {0, 1, 4}  # nearest: no blended labels
        agree = (torch.round(out_img[0] * 4).long() == out_mask).float().mean()
        assert agree > 0.97
        assert not torch.equal(out_mask, mask)


def test_same_seed_same_stream_other_seed_differs():
    image, mask = marked_pair()
    kwargs = dict(max_angle=15.0, p_rotate=0.5, scale=(0.9, 1.1), p_scale=0.5)
    a, b, c = Augment(seed=5, **kwargs), Augment(seed=5, **kwargs), Augment(seed=6, **kwargs)
    outs_a = [a(image, mask) for _ in range(8)]
    outs_b = [b(image, mask) for _ in range(8)]
    outs_c = [c(image, mask) for _ in range(8)]
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(outs_a, outs_b))
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(outs_a, outs_c))
    a.reseed(5)
    assert torch.equal(a(image, mask)[0], outs_a[0][0])


def test_scaling_happens_with_the_given_probability():
    image, mask = marked_pair(8, 8)
    aug = Augment(flip=False, rotate=False, scale=(0.5, 0.5), p_scale=0.1, seed=0)
    changed = sum(not torch.equal(aug(image, mask)[0], image) for _ in range(600))
    assert 0.06 < changed / 600 < 0.14


def test_affine_theta_identity_and_quarter_turn():
    image, mask = marked_pair(16, 16)
    same_img, same_mask = warp(image, mask, affine_theta(0.0, 1.0, 16, 16))
    assert torch.allclose(same_img, image, atol=1e-5) and torch.equal(same_mask, mask)
    turned_img, turned_mask = warp(image, mask, affine_theta(90.0, 1.0, 16, 16))
    # A 90-degree resampling equals an exact rot90 (in one of the two directions).
    assert torch.equal(turned_mask, mask.rot90(1)) or torch.equal(turned_mask, mask.rot90(-1))


def test_dataloader_workers_get_distinct_reproducible_streams(monkeypatch):
    image, mask = marked_pair()
    aug = Augment(max_angle=30.0, p_rotate=1.0, seed=1)

    def run_as_worker(worker_seed: int) -> torch.Tensor:
        monkeypatch.setattr(transforms, "get_worker_info", lambda: SimpleNamespace(id=0, seed=worker_seed))
        return aug(image, mask)[0]

    first, second, again = run_as_worker(100), run_as_worker(200), run_as_worker(100)
    assert not torch.equal(first, second)
    assert torch.equal(first, again)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="scale"):
        Augment(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="p_scale"):
        Augment(p_scale=1.5)
    with pytest.raises(ValueError, match="expected image"):
        Augment(seed=0)(torch.zeros(3, 8, 8), torch.zeros(8, 9, dtype=torch.int64))


def test_augment_as_dataset_transform(tmp_path):
    write_pairs(tmp_path / "images", tmp_path / "masks", ["a", "b"])
    ds = FolderDataset(tmp_path, size=(32, 32), transform=Augment(seed=0))
    image, mask = ds[1]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    assert float(image[:, mask == 1].mean()) < float(image[:, mask == 0].mean())  # still aligned
