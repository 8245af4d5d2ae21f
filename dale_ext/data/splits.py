"""Deterministic random splits of a dataset's indices (train / val / test)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from torch.utils.data import Dataset, Subset


def split_indices(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[np.ndarray, ...]:
    """Split ``range(n)`` into ``len(fractions)`` disjoint parts covering all indices.

    Part sizes are the rounded cumulative fractions (so they always add up to ``n``); the indices
    are drawn by a seeded permutation and each part is returned sorted (int64). The same
    ``(n, fractions, seed)`` always gives the same split, on any machine.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or (fr < 0).any() or not np.isclose(fr.sum(), 1.0, atol=1e-6):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    bounds = np.rint(np.cumsum(fr) * n).astype(np.int64)
    bounds[-1] = n
    perm = np.random.default_rng(seed).permutation(n)
    return tuple(np.sort(part) for part in np.split(perm, bounds[:-1]))


def split_dataset(dataset: Dataset, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[Subset, ...]:
    """:func:`split_indices` applied to ``dataset``, as ``torch.utils.data.Subset`` objects."""
    return tuple(Subset(dataset, part.tolist()) for part in split_indices(len(dataset), fractions, seed))
