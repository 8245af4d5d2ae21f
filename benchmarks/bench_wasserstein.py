"""wasserstein_loss forward + backward: compiled kernels vs two plain-PyTorch implementations of
the statistics (per-class gather + GEMM, one-hot einsum), both with the package's eigh-based W^2
and its closed-form backward.

As in the DALE trainer: ``input`` (fuzzy features) requires grad and carries a clean-pixel weight
mask, ``target`` (non-fuzzy features) is detached. Two classes are lesion-shaped blobs; the
9-class shape uses blocky label maps."""
from __future__ import annotations

import pytest
import torch

import dale_ext
from benchmarks.conftest import devices, run, run_paired
from dale_ext.reference import wasserstein_loss as reference_loss

SHAPES = [(8, 64, 56, 56, 2), (24, 64, 112, 112, 2), (4, 128, 32, 32, 9)]
GPU_ONLY = [(24, 64, 224, 224, 2)]


def labels_for(gen, B, H, W, C):
    if C == 2:
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
        r = 0.5 + 0.2 * torch.rand(B, 1, 1, generator=gen)
        return ((yy / r) ** 2 + (xx / (r + 0.1)) ** 2 < 1).long()
    blocks = torch.randint(0, C, (B, -(-H // 8), -(-W // 8)), generator=gen)
    return blocks.repeat_interleave(8, 1)[:, :H].repeat_interleave(8, 2)[:, :, :W]


def make_inputs(gen, shape, device):
    B, D, H, W, C = shape
    x = torch.randn(B, D, H, W, generator=gen)
    t = torch.randn(B, D, H, W, generator=gen) * 0.8 + 0.1
    lx, lt = labels_for(gen, B, H, W, C), labels_for(gen, B, H, W, C)
    clean = (torch.rand(B, H, W, generator=gen) < 0.8).float()
    return [v.to(device) for v in (x, lx, t, lt, clean)]


def fwd_bwd(fn, x, lx, t, lt, w, C):
    """One training step's loss work: forward, and backward into a fresh leaf copy of ``x``."""
    xx = x.detach().requires_grad_()
    fn(xx, lx, t, lt, w, C).backward()
    return xx.grad


IMPLS = {
    "kernel": lambda x, lx, t, lt, w, C: dale_ext.wasserstein_loss(x, lx, t, lt, C, input_weights=w, perturbation=0.01),
    # the D x D matrix part (eigh) on the GPU (cuSOLVER) rather than the host, the default for CUDA
    # features since 097852f's measurements: a GPU-only variant (on the CPU it is "kernel")
    "kernel_matrix_device": lambda x, lx, t, lt, w, C: dale_ext.wasserstein_loss(
        x, lx, t, lt, C, input_weights=w, perturbation=0.01, matrix_device=x.device),
    "reference": lambda x, lx, t, lt, w, C: reference_loss(x, lx, t, lt, C, input_weights=w, perturbation=0.01,
                                                           method="gather"),
    "reference_onehot": lambda x, lx, t, lt, w, C: reference_loss(x, lx, t, lt, C, input_weights=w,
                                                                  perturbation=0.01, method="onehot"),
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("shape", SHAPES + GPU_ONLY, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("device", devices())
def test_wasserstein_loss_fwd_bwd(benchmark, gen, device, shape, impl):
    if (shape in GPU_ONLY or impl == "kernel_matrix_device") and device != "cuda":
        pytest.skip("benchmarked on GPU only")
    x, lx, t, lt, w = make_inputs(gen, shape, device)
    B, D, H, W, C = shape
    benchmark.group = f"wasserstein_loss fwd+bwd {device} (B,D,H,W,C)=({B},{D},{H},{W},{C})"
    benchmark.extra_info.update(op="wasserstein_loss", impl=impl, device=device)
    run(benchmark, lambda: fwd_bwd(IMPLS[impl], x, lx, t, lt, w, C), device, rounds=10 if device == "cpu" else 50)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("device", devices())
def test_wasserstein_loss_fwd_bwd_paired(benchmark, gen, device, shape):
    """The kernel and both references timed in turn, call by call (conftest.run_paired)."""
    x, lx, t, lt, w = make_inputs(gen, shape, device)
    B, D, H, W, C = shape
    benchmark.group = f"wasserstein_loss fwd+bwd {device} (B,D,H,W,C)=({B},{D},{H},{W},{C}) paired"
    benchmark.extra_info.update(op="wasserstein_loss", device=device)
    impls = ("kernel", "reference", "reference_onehot")
    run_paired(benchmark, {impl: (lambda f=IMPLS[impl]: fwd_bwd(f, x, lx, t, lt, w, C)) for impl in impls}, device,
               rounds=10 if device == "cpu" else 50)
