"""The CPU ops called from several Python threads at once (threaded data pipelines, serving): each
thread's results equal the single-threaded ones bit for bit. The kernels keep per-thread strip
buffers and a shared output cache; a race there would show as a wrong or torn result."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

import dale_ext


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    B, D, H, W, C = 2, 24 + seed % 3, 33 + seed % 5, 40 + seed % 7, 3
    image = torch.rand(B, 3, H, W, generator=g)
    label = torch.randint(0, C, (B, H, W), generator=g)
    x = torch.randn(B, D, H, W, generator=g)
    t = torch.randn(B, D, H, W, generator=g)
    w = torch.rand(B, H, W, generator=g)
    return image, label, x, t, w, C


def _work(seed: int):
    image, label, x, t, w, C = _inputs(seed)
    split = dale_ext.fuzzy_split(image, label, patch_size=8)
    xi = x.clone().requires_grad_()
    loss = dale_ext.wasserstein_loss(xi, label, t, label, C, input_weights=w, perturbation=0.01)
    loss.backward()
    return [*split, loss.detach(), xi.grad]


def test_ops_from_many_threads_match_one_thread():
    seeds = list(range(24))
    want = [_work(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(_work, seeds))
    for s, g, w in zip(seeds, got, want):
        for i, (a, b) in enumerate(zip(g, w)):
            assert torch.equal(a, b), f"seed {s}, output {i} differs when run from several threads"
