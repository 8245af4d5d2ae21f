"""The CPU output cache (dale_ext.output_cache): freed large outputs are kept and reused, reused
blocks never leak stale values, the limit is honoured, bad arguments are refused."""
from __future__ import annotations

import pytest
import torch

import dale_ext
from dale_ext.reference import fuzzy_split as reference_fuzzy_split


@pytest.fixture
def fresh_cache():
    limit = dale_ext.output_cache_info()["limit_bytes"]
    dale_ext.empty_output_cache()
    yield
    dale_ext.set_output_cache_limit(limit)
    dale_ext.empty_output_cache()


def big_inputs(gen, seed_shift=0.0):
    image = torch.rand(4, 3, 256, 192, generator=gen) * 0.5 + seed_shift
    label = (torch.rand(4, 256, 192, generator=gen) < 0.3).long()
    return image, label


def test_freed_outputs_are_kept_and_reused(gen, fresh_cache):
    image, label = big_inputs(gen)
    out = dale_ext.fuzzy_split(image, label)
    ptrs = {out.fuzzy_image.data_ptr(), out.nonfuzzy_image.data_ptr(), out.fuzzy_mask.data_ptr(),
            out.nonfuzzy_mask.data_ptr()}
    big = 2 * out.fuzzy_image.nbytes + 2 * out.fuzzy_mask.nbytes
    assert dale_ext.output_cache_info()["held_bytes"] == 0
    del out
    assert dale_ext.output_cache_info()["held_bytes"] == big
    again = dale_ext.fuzzy_split(image, label)
    assert {again.fuzzy_image.data_ptr(), again.nonfuzzy_image.data_ptr(), again.fuzzy_mask.data_ptr(),
            again.nonfuzzy_mask.data_ptr()} == ptrs
    assert dale_ext.output_cache_info()["held_bytes"] == 0


def test_reused_blocks_hold_no_stale_values(gen, fresh_cache):
    first, label = big_inputs(gen)
    dale_ext.fuzzy_split(first * 0 + 1, label * 0)  # freed at once; constant: masks all 0 or 1
    image, label = big_inputs(gen, seed_shift=0.25)
    out = dale_ext.fuzzy_split(image, label, patch_size=(16, 12))
    ref = reference_fuzzy_split(image, label, patch_size=(16, 12))
    for name in dale_ext.FuzzySplit._fields:
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=0, atol=1e-6, msg=name)


def test_feature_gradient_uses_the_cache(gen, fresh_cache):
    x = torch.randn(2, 16, 64, 64, generator=gen, requires_grad=True)
    labels = torch.randint(0, 3, (2, 64, 64), generator=gen)
    dale_ext.class_gaussians(x, labels, 3).covs.sum().backward()
    grad = x.grad
    x.grad = None
    del grad
    assert dale_ext.output_cache_info()["held_bytes"] == x.nbytes


def test_limit_is_honoured(gen, fresh_cache):
    image, label = big_inputs(gen)
    dale_ext.set_output_cache_limit(0)
    dale_ext.fuzzy_split(image, label)  # freed at once
    assert dale_ext.output_cache_info() == {"held_bytes": 0, "limit_bytes": 0}
    dale_ext.set_output_cache_limit(1 << 30)
    out = dale_ext.fuzzy_split(image, label)
    one_image = out.fuzzy_image.nbytes
    del out
    assert dale_ext.output_cache_info()["held_bytes"] > one_image
    dale_ext.set_output_cache_limit(one_image)  # lowering frees blocks beyond the new limit
    assert dale_ext.output_cache_info()["held_bytes"] <= one_image
    dale_ext.empty_output_cache()
    assert dale_ext.output_cache_info()["held_bytes"] == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True, None])
def test_bad_limit_raises(bad):
    with pytest.raises(ValueError, match="nbytes"):
        dale_ext.set_output_cache_limit(bad)


def test_oldest_blocks_are_evicted_for_new_ones(gen, fresh_cache):
    def freed_gradient(w):
        x = torch.randn(2, 16, 64, w, generator=gen, requires_grad=True)
        dale_ext.class_gaussians(x, torch.randint(0, 2, (2, 64, w), generator=gen), 2).covs.sum().backward()
        return x.nbytes  # x.grad is freed with x on return

    dale_ext.set_output_cache_limit(800 << 10)
    first = freed_gradient(64)    # 512 KiB
    assert dale_ext.output_cache_info()["held_bytes"] == first
    second = freed_gradient(96)   # 768 KiB: only fits once the first block is evicted
    assert dale_ext.output_cache_info()["held_bytes"] == second


@pytest.mark.parametrize("value,mib", [("12", 12), ("0", 0), ("-1", 256), ("abc", 256), ("", 256)])
def test_limit_from_environment(value, mib):
    import os
    import subprocess
    import sys

    code = "import dale_ext; print(dale_ext.output_cache_info()['limit_bytes'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, DALE_EXT_CPU_CACHE_MB=value))
    assert int(out.stdout) == mib << 20


def test_outputs_are_plain_cpu_storage(gen, fresh_cache):
    image, label = big_inputs(gen)
    out = dale_ext.fuzzy_split(image, label)
    # a simple data pointer: copy-on-write clones, numpy views and pickling work as for torch's own
    clone = out.fuzzy_image._lazy_clone()
    torch.testing.assert_close(clone, out.fuzzy_image, rtol=0, atol=0)
    assert out.fuzzy_mask.numpy().shape == (4, 1, 256, 192)
    import io
    buf = io.BytesIO()
    torch.save(out.nonfuzzy_image, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf), out.nonfuzzy_image, rtol=0, atol=0)


def test_usable_in_a_forked_child(gen, fresh_cache):
    import multiprocessing as mp

    image, label = big_inputs(gen)
    dale_ext.fuzzy_split(image, label)  # blocks held by the parent when it forks
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_split_in_child, args=(image, label))
    p.start()
    p.join(60)
    assert p.exitcode == 0


def _split_in_child(image, label):
    torch.set_num_threads(1)  # as DataLoader workers do: libgomp's thread pool does not survive fork
    out = dale_ext.fuzzy_split(image, label)
    ref = reference_fuzzy_split(image, label)
    torch.testing.assert_close(out.fuzzy_image, ref.fuzzy_image, rtol=0, atol=1e-6)
