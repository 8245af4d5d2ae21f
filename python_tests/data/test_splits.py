"""split_indices / split_dataset: disjoint, covering, deterministic, seed-dependent."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from dale_ext.data.splits import split_dataset, split_indices


@pytest.mark.parametrize("n", [0, 1, 7, 10, 2183])
def test_parts_are_disjoint_and_cover_everything(n):
    parts = split_indices(n, (0.8, 0.1, 0.1), seed=0)
    joined = np.concatenate(parts)
    assert len(parts) == 3 and len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))  # disjoint and covering
    assert all(p.dtype == np.int64 and np.array_equal(p, np.sort(p)) for p in parts)


def test_sizes_follow_the_fractions():
    assert [len(p) for p in split_indices(10, (0.8, 0.1, 0.1))] == [8, 1, 1]
    assert [len(p) for p in split_indices(2729, (0.8, 0.1, 0.1))] == [2183, 273, 273]  # MosMedData+
    assert sum(len(p) for p in split_indices(5, (0.5, 0.5))) == 5  # rounding never loses a sample


def test_deterministic_per_seed_and_different_across_seeds():
    a, b = split_indices(100, seed=3), split_indices(100, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = split_indices(100, seed=4)
    assert not np.array_equal(a[0], c[0])


def test_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, (0.5, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        split_indices(10, (1.2, -0.2))
    with pytest.raises(ValueError, match="n must"):
        split_indices(-1)


def test_split_dataset_returns_subsets():
    ds = TensorDataset(torch.arange(20))
    train, val, test = split_dataset(ds, (0.6, 0.2, 0.2), seed=1)
    values = sorted(int(s[0]) for part in (train, val, test) for s in part)
    assert values == list(range(20)) and (len(train), len(val), len(test)) == (12, 4, 4)
