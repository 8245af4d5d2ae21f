"""The synthetic noisy-label benchmark: shapes and ranges, determinism, noise_level=0, noise that
grows with noise_level and lies mostly on the fuzzy part of the boundary, multi-class labels,
the split dataset, speed, and the figure helper."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from dale_ext.data.synthetic import (
    SyntheticDataset,
    boundary_band,
    make_synthetic,
    noise_statistics,
    plot_examples,
)


@pytest.fixture(scope="module")
def bench() -> dict[float, object]:
    """120 images at three noise levels (same seed: same images, growing noise)."""
    return {level: make_synthetic(120, size=48, seed=1, noise_level=level) for level in (0.0, 0.5, 1.0)}


def test_shapes_dtypes_and_ranges():
    data = make_synthetic(6, size=40, seed=0)
    assert len(data) == 6
    assert data.images.shape == (6, 3, 40, 40) and data.images.dtype == torch.float32
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    for masks in (data.clean_masks, data.noisy_masks):
        assert masks.shape == (6, 40, 40) and masks.dtype == torch.int64
        assert set(masks.unique().tolist()) == {0, 1}
    assert data.noise_masks.dtype == torch.bool
    assert torch.equal(data.noise_masks, data.noisy_masks != data.clean_masks)
    assert data.fuzziness.dtype == torch.float32
    assert 0.0 <= float(data.fuzziness.min()) and float(data.fuzziness.max()) <= 1.0
    assert float(data.fuzziness.max()) > 0.9  # the fuzzy arcs really are fuzzy
    grey = make_synthetic(2, size=32, channels=1)
    assert grey.images.shape == (2, 1, 32, 32)


def test_deterministic_per_seed_and_prefix_stable():
    a, b = make_synthetic(5, size=32, seed=7), make_synthetic(5, size=32, seed=7)
    for field in ("images", "clean_masks", "noisy_masks", "fuzziness"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.images, make_synthetic(5, size=32, seed=8).images)
    # Sample i depends only on (seed, i): a shorter run is a prefix of a longer one.
    assert torch.equal(make_synthetic(3, size=32, seed=7).noisy_masks, a.noisy_masks[:3])


def test_noise_level_zero_gives_clean_labels(bench):
    data = bench[0.0]
    assert torch.equal(data.noisy_masks, data.clean_masks) and not data.noise_masks.any()


def test_noise_grows_with_level_and_leaves_the_images_alone(bench):
    fractions = [noise_statistics(bench[level])["noisy_fraction"] for level in (0.0, 0.5, 1.0)]
    assert fractions[0] == 0.0 < fractions[1] < fractions[2]
    assert 0.005 < fractions[1] < 0.05 and fractions[2] < 0.1  # noisy, yet mostly right
    for field in ("images", "clean_masks", "fuzziness"):
        assert torch.equal(getattr(bench[0.5], field), getattr(bench[1.0], field))


@pytest.mark.parametrize("level", [0.5, 1.0])
def test_noise_lies_in_the_fuzzy_part_of_the_boundary(bench, level):
    stats = noise_statistics(bench[level], band_width=3.0)
    assert stats["in_band_share"] > 0.9  # annotation errors hug the true boundary
    assert stats["fuzzy_half_share"] > 0.75  # ... and mostly its fuzzy half
    assert stats["fuzzy_to_clear_rate"] > 3.0


def test_without_fuzzy_boundary_there_is_little_noise():
    sharp = make_synthetic(60, size=48, seed=2, noise_level=1.0, fuzzy_fraction=0.0)
    fuzzy = make_synthetic(60, size=48, seed=2, noise_level=1.0, fuzzy_fraction=0.5)
    assert float(sharp.fuzziness.max()) == 0.0
    assert noise_statistics(sharp)["noisy_fraction"] < 0.25 * noise_statistics(fuzzy)["noisy_fraction"]


def test_fuzzy_boundary_has_lower_contrast():
    data = make_synthetic(60, size=48, seed=3, noise_level=0.0)
    grey = data.images.mean(dim=1).numpy()
    clean = data.clean_masks.numpy()
    fuzz = data.fuzziness.numpy()
    band = boundary_band(clean, 1.0)
    inside, outside = band & (clean > 0), band & (clean == 0)

    def contrast(region: np.ndarray) -> float:  # background minus lesion grey level at the edge
        return float(grey[outside & region].mean() - grey[inside & region].mean())

    assert contrast(fuzz > 0.6) < 0.5 * contrast(fuzz < 0.1)


def test_multi_class_labels_and_appearance():
    data = make_synthetic(60, size=48, seed=4, num_classes=4, lesions=(2, 3), noise_level=0.5)
    for masks in (data.clean_masks, data.noisy_masks):
        assert set(masks.unique().tolist()) == {0, 1, 2, 3}
    means = [data.images.permute(1, 0, 2, 3)[:, data.clean_masks == c].mean(dim=1) for c in (1, 2, 3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert float((means[i] - means[j]).abs().max()) > 0.05  # each class looks different
    assert noise_statistics(data)["fuzzy_half_share"] > 0.7


def test_dataset_splits_masks_and_transform():
    train = SyntheticDataset("train", n=4, size=32, seed=0, noise_level=1.0)
    val = SyntheticDataset("val", n=4, size=32, seed=0, noise_level=1.0)
    test = SyntheticDataset("test", n=4, size=32, seed=0, noise_level=1.0)
    assert train.ids[0] == "synthetic_train_00000" and len(train) == 4
    image, mask = train[1]
    assert image.shape == (3, 32, 32) and mask.dtype == torch.int64
    assert torch.equal(mask, train.data.noisy_masks[1])  # train: noisy labels
    assert torch.equal(val[1][1], val.data.clean_masks[1])  # val / test: clean labels
    assert torch.equal(test[1][1], test.data.clean_masks[1])
    assert not torch.equal(train.data.images, val.data.images)  # distinct streams per split
    assert not torch.equal(val.data.images, test.data.images)
    assert torch.equal(SyntheticDataset("train", n=2, size=32, masks="clean")[0][1],
                       SyntheticDataset("train", n=2, size=32).data.clean_masks[0])
    flipped = SyntheticDataset("val", n=2, size=32, transform=lambda x, y: (x.flip(-1), y.flip(-1)))
    assert torch.equal(flipped[0][1], flipped.data.clean_masks[0].flip(-1))
    assert len(SyntheticDataset("val", size=16)) == 100


def test_bad_arguments():
    for kwargs, match in [(dict(noise_level=-0.1), "noise_level"), (dict(fuzzy_fraction=1.5), "fuzzy_fraction"),
                          (dict(num_classes=1), "num_classes"), (dict(lesions=(3, 1)), "lesions"),
                          (dict(channels=2), "channels"), (dict(seed=-1), "seed")]:
        with pytest.raises(ValueError, match=match):
            make_synthetic(2, **kwargs)
    with pytest.raises(ValueError, match="split"):
        SyntheticDataset("holdout")


def test_generating_400_images_is_fast():
    start = time.perf_counter()
    data = make_synthetic(400, size=64)
    assert len(data) == 400 and time.perf_counter() - start < 10.0  # ~1.5 s on 2 cores


def test_plot_examples_writes_a_png(tmp_path):
    path = plot_examples(make_synthetic(2, size=32, noise_level=1.0), tmp_path / "fig" / "examples.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100
