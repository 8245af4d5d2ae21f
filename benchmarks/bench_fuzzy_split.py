"""fuzzy_split: compiled kernel vs the vectorised plain-PyTorch reference at B=24, 3x224x224.

The ``floor`` entry allocates the op's outputs with torch and fills them (7 tensors, ~38.5 MB
for float32) and does nothing else: the cost of writing the outputs the plain way. The kernel
can come close to it or below it (non-temporal stores, reused output blocks).
``kernel_nocache`` is the kernel with the CPU output cache off (``dale_ext.output_cache``), so
its outputs are allocated like the reference's: on glibc they may be mapped afresh on every call,
and the page faults then cost more than the kernel (whether they occur varies from process to
process).
``test_fuzzy_split_paired`` times the kernel and the reference in turn, call by call, so both
sides of its ratio see the same host (``conftest.run_paired``)."""
from __future__ import annotations

import pytest
import torch

import dale_ext
from benchmarks.conftest import devices, run, run_paired
from dale_ext.reference import fuzzy_split as reference

B, C, H, W = 24, 3, 224, 224


def make_inputs(gen, dtype, device):
    image = torch.rand(B, C, H, W, generator=gen)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    lesion = ((yy / 0.5) ** 2 + (xx / 0.6) ** 2 < 1 + 0.2 * torch.rand(B, H, W, generator=gen)).long()
    image = image * (0.4 + 0.6 * lesion[:, None])
    if dtype == torch.uint8:
        image = (image * 255).to(torch.uint8)
    else:
        image = image.to(dtype)
    return image.to(device), lesion.to(device)


def floor(image):
    out_dtype = torch.float32 if image.dtype == torch.uint8 else image.dtype
    small = [torch.empty(B, H // 16, W // 16, device=image.device).fill_(1) for _ in range(3)]
    masks = [torch.empty(B, 1, H, W, device=image.device).fill_(1) for _ in range(2)]
    images = [torch.empty(B, C, H, W, dtype=out_dtype, device=image.device).fill_(1) for _ in range(2)]
    return small, masks, images


def kernel_nocache(x, y):
    limit = dale_ext.output_cache_info()["limit_bytes"]
    dale_ext.set_output_cache_limit(0)
    try:
        out = dale_ext.fuzzy_split(x, y)
        del out  # freed while the cache is off
    finally:
        dale_ext.set_output_cache_limit(limit)


IMPLS = {
    "kernel": lambda x, y: dale_ext.fuzzy_split(x, y),
    "kernel_nocache": kernel_nocache,
    "reference": lambda x, y: reference(x, y),
    "floor": lambda x, y: floor(x),
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bfloat16], ids=["float32", "uint8", "bfloat16"])
@pytest.mark.parametrize("device", devices())
def test_fuzzy_split(benchmark, gen, device, dtype, impl):
    image, label = make_inputs(gen, dtype, device)
    benchmark.group = f"fuzzy_split {device} {str(dtype).replace('torch.', '')} B={B} {C}x{H}x{W}"
    benchmark.extra_info.update(op="fuzzy_split", impl=impl, device=device)
    fn = IMPLS[impl]
    run(benchmark, lambda: fn(image, label), device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8], ids=["float32", "uint8"])
@pytest.mark.parametrize("device", devices())
def test_fuzzy_split_paired(benchmark, gen, device, dtype):
    image, label = make_inputs(gen, dtype, device)
    benchmark.group = f"fuzzy_split {device} {str(dtype).replace('torch.', '')} B={B} {C}x{H}x{W} paired"
    benchmark.extra_info.update(op="fuzzy_split", device=device)
    run_paired(benchmark, {impl: (lambda f=IMPLS[impl]: f(image, label)) for impl in ("kernel", "reference")}, device)
