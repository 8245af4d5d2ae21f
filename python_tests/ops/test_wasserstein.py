"""class_gaussians / gaussian_w2 / wasserstein_loss: against float64 numpy/scipy/POT oracles and
float64 autograd through an independent eigh-based implementation; gradcheck; opcheck;
torch.compile; hypothesis fuzzing; degenerate inputs; bad inputs; CUDA vs CPU."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dale_ext
from dale_ext import reference
from python_tests.conftest import cpu_and_cuda, results_under_each_cpu_isa


# ---------------------------------------------------------------- oracles (float64, independent)
def oracle_stats(features, labels, C, weights=None, ignore_index=-100):
    """numpy weighted, biased per-class mean/covariance (np.cov with aweights, bias=True)."""
    x = features.detach().double().cpu().numpy()
    x = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]) if x.ndim == 4 else x
    lab = labels.cpu().numpy().reshape(-1)
    w = np.ones(lab.shape) if weights is None else weights.detach().double().cpu().numpy().reshape(-1)
    D = x.shape[1]
    counts, means, covs = np.zeros(C), np.zeros((C, D)), np.zeros((C, D, D))
    for c in range(C):
        sel = (lab == c) & (lab != ignore_index)
        wc = w[sel]
        counts[c] = wc.sum()
        if counts[c] > 0:
            means[c] = np.average(x[sel], axis=0, weights=wc)
            z = x[sel] - means[c]
            covs[c] = (z * wc[:, None]).T @ z / counts[c]
            if (wc > 0).sum() > 1:  # np.cov needs two observations; it must agree
                np.testing.assert_allclose(covs[c], np.cov(x[sel].T, aweights=wc, bias=True).reshape(D, D),
                                           rtol=1e-9, atol=1e-12)
    return counts, means, covs


def _psd_sqrt(S):
    lam, V = np.linalg.eigh(0.5 * (S + S.T))
    return (V * np.sqrt(np.clip(lam, 0, None))) @ V.T


def oracle_w2(m1, S1, m2, S2):
    """Squared Bures-Wasserstein distance in numpy float64; for full-rank inputs also checked
    against POT's ot.gaussian.bures_wasserstein_distance and scipy's sqrtm."""
    r = _psd_sqrt(S1)
    w = float(((m1 - m2) ** 2).sum() + np.trace(S1 + S2) - 2 * np.trace(_psd_sqrt(r @ S2 @ r)))
    if min(np.linalg.eigvalsh(S1).min(), np.linalg.eigvalsh(S2).min()) > 1e-8:
        import ot
        import scipy.linalg

        pot = float(ot.gaussian.bures_wasserstein_distance(m1, m2, S1, S2)) ** 2
        rs = np.real(scipy.linalg.sqrtm(S1))
        sp = float(((m1 - m2) ** 2).sum() + np.trace(S1 + S2 - 2 * np.real(scipy.linalg.sqrtm(rs @ S2 @ rs))))
        assert abs(w - pot) <= 1e-6 * max(1.0, abs(pot)) and abs(w - sp) <= 1e-6 * max(1.0, abs(sp))
    return w


def oracle_loss(x, lx, t, lt, C, wx=None, wt=None, perturbation=0.0, eps=1e-5, min_count=2.0, reduction="sum"):
    nx, mx, Sx = oracle_stats(x, lx, C, wx)
    nt, mt, St = oracle_stats(t, lt, C, wt)
    D = mx.shape[1]
    per = np.zeros(C)
    for c in range(C):
        if nx[c] >= min_count and nt[c] >= min_count:
            per[c] = oracle_w2(mt[c], St[c] + perturbation + eps * np.eye(D), mx[c], Sx[c] + eps * np.eye(D))
    if reduction == "none":
        return per
    valid = (nx >= min_count) & (nt >= min_count)
    return per.sum() if reduction == "sum" else per.sum() / max(1, valid.sum())


def autograd_loss(x, lx, t, lt, C, wx=None, wt=None, perturbation=0.0, eps=1e-5, min_count=2.0):
    """float64 plain autograd (one-hot statistics + torch.linalg.eigh's own backward): an
    implementation independent of the package's closed-form gradients."""
    def stats(f, lab, w):
        f = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) if f.dim() == 4 else f
        lab = lab.reshape(-1)
        w = torch.ones(lab.shape, dtype=f.dtype) if w is None else w.reshape(-1).to(f.dtype)
        valid = (lab >= 0) & (lab < C)
        oh = torch.nn.functional.one_hot(torch.where(valid, lab, 0), C).to(f.dtype) * (w * valid)[:, None]
        n = oh.sum(0)
        mu = (oh.t() @ f) / n.clamp(min=1e-300)[:, None]
        z = f[:, None, :] - mu[None]
        cov = torch.einsum("nc,ncd,nce->cde", oh, z, z) / n.clamp(min=1e-300)[:, None, None]
        return n, mu, cov

    def sqrtm(S):
        lam, V = torch.linalg.eigh(S)
        return (V * lam.clamp(min=0).sqrt()[..., None, :]) @ V.transpose(-1, -2)

    nx, mx, Sx = stats(x, lx, wx)
    nt, mt, St = stats(t, lt, wt)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    A, B = St + perturbation + eps * eye, Sx + eps * eye
    ra = sqrtm(A)
    w2 = ((mt - mx) ** 2).sum(-1) + torch.diagonal(A + B, dim1=-2, dim2=-1).sum(-1) - 2 * torch.diagonal(
        sqrtm(ra @ B @ ra), dim1=-2, dim2=-1).sum(-1)
    valid = (nx >= min_count) & (nt >= min_count)
    return torch.where(valid, w2, 0.0).sum()


# ---------------------------------------------------------------- inputs
def blob_labels(gen, B, H, W, C):
    lab = torch.randint(0, C, (B, -(-H // 4), -(-W // 4)), generator=gen)
    return lab.repeat_interleave(4, 1)[:, :H].repeat_interleave(4, 2)[:, :, :W]


def make_case(gen, B=2, D=6, H=9, W=13, C=3, dtype=torch.float64, ignore=True):
    x = torch.randn(B, D, H, W, generator=gen, dtype=torch.float64)
    x = (x + torch.randn(1, D, 1, 1, generator=gen, dtype=torch.float64)).to(dtype)   # non-zero means
    lab = blob_labels(gen, B, H, W, C)
    if ignore:
        lab[:, 0, :3] = -100
        lab[:, -1, -2:] = C + 3   # out of range: must not count
    w = torch.rand(B, H, W, generator=gen, dtype=torch.float64).to(dtype)
    return x, lab, w


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


# ---------------------------------------------------------------- class_gaussians
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(2, 6, 9, 13, 3), (1, 3, 40, 37, 2), (3, 17, 5, 7, 4)])
def test_class_gaussians_matches_numpy(gen, dtype, weighted, shape):
    B, D, H, W, C = shape
    x, lab, w = make_case(gen, B, D, H, W, C, dtype)
    w = w if weighted else None
    got = dale_ext.class_gaussians(x, lab, C, weights=w)
    n, mu, cov = oracle_stats(x, lab, C, w)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert rel(got.counts, n) < tol and rel(got.means, mu) < tol and rel(got.covs, cov) < tol
    assert torch.equal(got.covs, got.covs.transpose(1, 2))  # symmetric by construction


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_class_gaussians_nd_layout_and_empty_class(gen, device):
    x = (torch.randn(500, 9, generator=gen, dtype=torch.float64) * 3 + 1).to(device)
    lab = torch.randint(0, 3, (500,), generator=gen).to(device)   # class 3 of 4 is empty
    got = dale_ext.class_gaussians(x, lab, 4)
    n, mu, cov = oracle_stats(x, lab, 4)
    assert rel(got.covs.cpu(), cov) < 1e-10 and rel(got.means.cpu(), mu) < 1e-10
    assert got.counts[3] == 0 and torch.all(got.means[3] == 0) and torch.all(got.covs[3] == 0)
    # non-contiguous (N, D) input is read through its strides, forward and backward
    xt = torch.randn(9, 500, generator=gen, dtype=torch.float64).to(device).t().requires_grad_()
    xc = xt.detach().contiguous().requires_grad_()
    a, b = dale_ext.class_gaussians(xt, lab, 4), dale_ext.class_gaussians(xc, lab, 4)
    torch.testing.assert_close(a.covs, b.covs, rtol=1e-12, atol=1e-12)
    (a.covs.sum() + a.means.sum()).backward()
    (b.covs.sum() + b.means.sum()).backward()
    torch.testing.assert_close(xt.grad, xc.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_class_gaussians_size_one_spatial_dims_with_any_stride(gen, device):
    """A size-1 H or W may carry any stride in a contiguous tensor (e.g. after a transpose)."""
    for x in (torch.randn(2, 4, 5, 1, generator=gen, dtype=torch.float64).transpose(2, 3),
              torch.randn(2, 4, 1, 5, generator=gen, dtype=torch.float64).transpose(2, 3)):
        x = x.to(device)
        lab = torch.randint(0, 2, (x.shape[0], *x.shape[2:]), generator=gen).to(device)
        got = dale_ext.class_gaussians(x, lab, 2)
        want = dale_ext.class_gaussians(x.clone(memory_format=torch.contiguous_format).reshape(x.shape), lab, 2)
        torch.testing.assert_close(got.covs, want.covs)
        torch.testing.assert_close(got.means, want.means)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_class_gaussians_no_pixels_forward_and_backward(device):
    """No pixels at all: zero statistics, and empty gradients for features and weights."""
    for shape, lshape in (((0, 4), (0,)), ((0, 4, 3, 3), (0, 3, 3))):
        x = torch.empty(shape, device=device, dtype=torch.float64, requires_grad=True)
        w = torch.empty(lshape, device=device, dtype=torch.float64, requires_grad=True)
        out = dale_ext.class_gaussians(x, torch.empty(lshape, dtype=torch.long, device=device), 3, weights=w)
        assert torch.all(out.counts == 0) and torch.all(out.covs == 0)
        (out.counts.sum() + out.means.sum() + out.covs.sum()).backward()
        assert x.grad.shape == x.shape and w.grad.shape == w.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_class_gaussians_half_inputs(gen, dtype):
    x, lab, w = make_case(gen, dtype=dtype)
    got = dale_ext.class_gaussians(x, lab, 3, weights=w)
    n, mu, cov = oracle_stats(x, lab, 3, w)   # oracle on the same (rounded) values
    assert got.covs.dtype == torch.float32
    assert rel(got.covs, cov) < 1e-4 and rel(got.means, mu) < 1e-4


def test_class_gaussians_large_mean_is_numerically_sound(gen):
    """Centred accumulation: a mean of 1e4 on unit variance keeps the covariance in float32."""
    x = torch.randn(2, 4, 32, 32, generator=gen) + 1e4
    lab = torch.zeros(2, 32, 32, dtype=torch.long)
    got = dale_ext.class_gaussians(x, lab, 1).covs[0]
    _, _, cov = oracle_stats(x, lab, 1)
    assert rel(got, cov[0]) < 1e-3


@pytest.mark.parametrize("threads", [1, 2])
def test_class_gaussians_merges_many_strips(gen, threads):
    """Many strips per thread (D = 64: ~640 pixels a strip), each class's columns collected across
    strips, per-thread sums merged in thread order: a common offset of 1e3, a drift of the mean
    down the image and strips whose weights are all zero must not cost accuracy."""
    B, D, H, W, C = 2, 64, 96, 80, 3
    x = torch.randn(B, D, H, W, generator=gen, dtype=torch.float64)
    x = x * torch.rand(1, D, 1, 1, generator=gen, dtype=torch.float64) + 1e3
    x = x + torch.linspace(0, 5, H, dtype=torch.float64)[None, None, :, None]
    lab = blob_labels(gen, B, H, W, C)
    w = torch.rand(B, H, W, generator=gen, dtype=torch.float64)
    w[:, 10:30] = 0
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
            xd, wd = x.to(dtype), w.to(dtype)
            got = dale_ext.class_gaussians(xd, lab, C, weights=wd)
            n, mu, cov = oracle_stats(xd, lab, C, wd)  # on the same (rounded) values
            assert rel(got.counts, n) < tol and rel(got.means, mu) < tol and rel(got.covs, cov) < tol, dtype
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_class_gaussians_small_spread_on_large_offset(gen, threads):
    """float32 features 1e3 + 0.01 noise: each block of columns is centred by a first estimate of
    its mean from float sums (off by ~1e-4 here, a hundredth of the spread), and the rest of the
    mean must be taken from the centred values, or the covariance is off by ~1e-4 relative."""
    B, D, H, W, C = 2, 64, 96, 80, 2
    x = (torch.randn(B, D, H, W, generator=gen, dtype=torch.float64) * 0.01 + 1e3).float()
    lab = blob_labels(gen, B, H, W, C)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = dale_ext.class_gaussians(x, lab, C)
    finally:
        torch.set_num_threads(before)
    n, mu, cov = oracle_stats(x, lab, C)  # on the same (rounded) values
    assert rel(got.means, mu) < 1e-6 and rel(got.covs, cov) < 1e-6  # 4e-8 (two-pass float32: 3e-5)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    D=st.sampled_from([1, 4, 5, 17, 64]), H=st.integers(1, 40), W=st.sampled_from([3, 31, 300, 2600]),
    C=st.integers(1, 4), log_offset=st.floats(0, 5), log_spread=st.floats(-3, 3), weighted=st.booleans(),
    threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_class_gaussians_offset_against_spread(D, H, W, C, log_offset, log_spread, weighted, threads, seed):
    """float32 features whose class means lie up to 1e5 spreads from 0, in strips of every length
    (W up to past one strip's row, so classes' blocks are collected across strips and flushed):
    the one-pass moments (block centred by its float mean, the rest of the mean from the centred
    values, Chan merges) against float64 numpy on the same rounded values. CPU only: the CUDA
    kernel is two-pass (fuzzed for scale, not for this ratio, in the tests above)."""
    g = torch.Generator().manual_seed(seed)
    spread = 10.0 ** log_spread
    centres = torch.randn(C, D, generator=g, dtype=torch.float64) * spread * 10.0 ** log_offset
    lab = torch.randint(0, C, (2, -(-H // 3), -(-W // 7)), generator=g)
    lab = lab.repeat_interleave(3, 1)[:, :H].repeat_interleave(7, 2)[:, :, :W]
    x = torch.randn(2, D, H, W, generator=g, dtype=torch.float64) * spread + centres[lab].permute(0, 3, 1, 2)
    x = x.float()
    w = torch.rand(2, H, W, generator=g).float() if weighted else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = dale_ext.class_gaussians(x, lab, C, weights=w)
    finally:
        torch.set_num_threads(before)
    n, mu, cov = oracle_stats(x, lab, C, w)
    assert np.abs(got.counts.double().numpy() - n).max() <= 1e-5 * max(n.max(), 1.0)
    assert rel(got.means, mu) < 1e-6
    # covariance error against the spread's scale (a class's covariance may be all but zero)
    assert np.abs(got.covs.double().numpy() - cov).max() <= 2e-6 * spread * spread


def test_class_gaussians_gradcheck(gen):
    x, lab, w = make_case(gen, 2, 4, 5, 6, 3)
    x.requires_grad_()
    w.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: dale_ext.class_gaussians(a, lab, 3, weights=b), (x, w))
    xn = torch.randn(40, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ln = torch.randint(0, 2, (40,), generator=gen)
    assert torch.autograd.gradcheck(lambda a: dale_ext.class_gaussians(a, ln, 2), (xn,))


@pytest.mark.parametrize("D, classes", [(33, 3), (36, 3), (128, 9)])
def test_isa_variants_agree(gen, D, classes):
    """The AVX-512, AVX2 and portable micro-kernels give the same statistics and feature
    gradients (subprocesses: the set is chosen once per process). D = 33 pads to 36 rows; D = 36
    fills the AVX-512 syrk's 4-row tail and its partial last vector with data; D = 128: whole
    8 x 2 tiles. float32 and float64."""
    code = f"""
import sys, torch, dale_ext
g = torch.Generator().manual_seed(3)
x = torch.randn(2, {D}, 21, 19, generator=g) + 3
l = torch.randint(0, {classes}, (2, 21, 19), generator=g)
w = torch.rand(2, 21, 19, generator=g)
out = []
for dt in (torch.float32, torch.float64):
    xx = x.to(dt).requires_grad_()
    s = dale_ext.class_gaussians(xx, l, {classes}, weights=w.to(dt))
    (s.covs.square().sum() + s.means.sum()).backward()
    out.append((s.covs.detach(), xx.grad))
torch.save((out, dale_ext.build_info()["cpu_kernels"]), sys.argv[1])
"""
    outs = results_under_each_cpu_isa(code)
    assert outs[0][1] == "baseline"
    for other, isa in outs[1:]:
        for (cov_a, grad_a), (cov_b, grad_b) in zip(outs[0][0], other):
            torch.testing.assert_close(cov_b, cov_a, rtol=1e-5, atol=1e-6, msg=isa)
            torch.testing.assert_close(grad_b, grad_a, rtol=1e-5, atol=1e-6, msg=isa)


def test_runs_of_every_length_under_each_isa():
    """A class's pixels are gathered run by run with the block's weighted sum taken on the way
    (masked vector tails on AVX-512, sums cut every 1024 terms): runs of 1..40 pixels and one of
    3000 (a whole row of one class), float32 at an offset of 100, against float64 numpy."""
    code = """
import sys, torch, dale_ext
g = torch.Generator().manual_seed(5)
lengths = list(range(1, 41)) + [3000]
row = torch.cat([torch.full((n,), i % 2) for i, n in enumerate(lengths)])
l = torch.stack([row, row.roll(7)])[None].repeat(2, 1, 1)   # (2, 2, 3820)
x = (torch.randn(2, 16, 2, row.numel(), generator=g) + 100).float()
w = torch.rand(2, 2, row.numel(), generator=g)
s = dale_ext.class_gaussians(x, l, 2, weights=w)
torch.save(((x, l, w), (s.counts, s.means, s.covs), dale_ext.build_info()["cpu_kernels"]), sys.argv[1])
"""
    outs = results_under_each_cpu_isa(code)
    for (x, lab, w), got, isa in outs:
        n, mu, cov = oracle_stats(x, lab, 2, w)
        assert rel(got[0], n) < 1e-6 and rel(got[1], mu) < 1e-7, isa
        assert rel(got[2], cov) < 1e-5, isa


# ---------------------------------------------------------------- gaussian_w2
def random_spd(gen, n, D, rank=None, scale=1.0):
    a = torch.randn(n, D, rank or D, generator=gen, dtype=torch.float64)
    return scale * (a @ a.transpose(1, 2)) / D


@pytest.mark.parametrize("D", [1, 3, 16, 64])
def test_gaussian_w2_matches_pot(gen, D):
    m1, m2 = torch.randn(4, D, generator=gen, dtype=torch.float64), torch.randn(4, D, generator=gen, dtype=torch.float64)
    S1, S2 = random_spd(gen, 4, D) + 0.01 * torch.eye(D), random_spd(gen, 4, D)
    got = dale_ext.gaussian_w2(m1, S1, m2, S2)
    want = [oracle_w2(m1[i].numpy(), S1[i].numpy(), m2[i].numpy(), S2[i].numpy()) for i in range(4)]
    assert rel(got, want) < 1e-8


def test_gaussian_w2_gradcheck_and_singular_inputs(gen):
    D = 4
    m1, m2 = (torch.randn(3, D, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    S1 = (random_spd(gen, 3, D) + 0.1 * torch.eye(D)).requires_grad_()
    S2 = (random_spd(gen, 3, D) + 0.1 * torch.eye(D)).requires_grad_()
    assert torch.autograd.gradcheck(dale_ext.gaussian_w2, (m1, S1, m2, S2))
    # rank-deficient on both sides (eigh path with pseudo-inverses): finite value and gradients
    R1 = random_spd(gen, 3, D, rank=2).requires_grad_()
    R2 = random_spd(gen, 3, D, rank=1).requires_grad_()
    w = dale_ext.gaussian_w2(m1, R1, m2, R2)
    w.sum().backward()
    assert torch.isfinite(w).all() and torch.isfinite(R1.grad).all() and torch.isfinite(R2.grad).all()
    want = [oracle_w2(*(t[i].detach().numpy() for t in (m1, R1, m2, R2))) for i in range(3)]
    assert rel(w.detach(), want) < 1e-6
    # without gradients the matrix part takes eigenvalues only (both the Cholesky and the eigh path)
    with torch.no_grad():
        assert rel(dale_ext.gaussian_w2(m1, R1, m2, R2), want) < 1e-6
        S_want = [oracle_w2(*(t[i].detach().numpy() for t in (m1, S1, m2, S2))) for i in range(3)]
        assert rel(dale_ext.gaussian_w2(m1, S1, m2, S2), S_want) < 1e-8


def test_gaussian_w2_batch_mixes_cholesky_and_eigh_classes(gen):
    """The CPU op decides per class between the Cholesky route and the two-eigh route (S1 rank-
    deficient) and runs the classes in parallel: each class of a mixed batch equals the oracle and,
    bit for bit, its own single-class result (a batch-wide choice would move the well-conditioned
    classes to the eigh route and change their last bits), and the result does not depend on the
    thread count."""
    D = 12
    m1, m2 = torch.randn(4, D, generator=gen, dtype=torch.float64), torch.randn(4, D, generator=gen, dtype=torch.float64)
    S1 = random_spd(gen, 4, D) + 0.05 * torch.eye(D, dtype=torch.float64)
    # rank-deficient S1 = A A^T: Cholesky fails or is refused, the eigh route runs
    factors = {1: torch.randn(D, 5, generator=gen, dtype=torch.float64),
               2: torch.randn(D, D - 1, generator=gen, dtype=torch.float64)}
    for i, A in factors.items():
        S1[i] = A @ A.T
    S2 = random_spd(gen, 4, D) + 0.05 * torch.eye(D, dtype=torch.float64)

    def run(*args):
        a, b = args[1].clone().requires_grad_(), args[3].clone().requires_grad_()
        w = dale_ext.gaussian_w2(args[0], a, args[2], b)
        ga, gb = torch.autograd.grad(w.sum(), (a, b))
        return w.detach(), ga, gb

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)   # classes on two threads even on a one-core machine
        batched = run(m1, S1, m2, S2)
        torch.set_num_threads(1)
        serial = run(m1, S1, m2, S2)
    finally:
        torch.set_num_threads(threads)
    for x, y in zip(batched, serial):
        assert torch.equal(x, y)
    want = [oracle_w2(m1[i].numpy(), S1[i].numpy(), m2[i].numpy(), S2[i].numpy()) for i in range(4)]
    assert rel(batched[0], want) < 1e-8
    for i in range(4):
        single = run(m1[i:i + 1], S1[i:i + 1], m2[i:i + 1], S2[i:i + 1])
        for x, y in zip(batched, single):
            assert torch.equal(x[i:i + 1], y)
    # the full-rank classes' covariance gradients against float64 autograd through eigh
    for i in (0, 3):
        a, b = S1[i].clone().requires_grad_(), S2[i].clone().requires_grad_()
        ga, gb = torch.autograd.grad(reference.gaussian_w2(m1[i], a, m2[i], b), (a, b))
        torch.testing.assert_close(batched[1][i], ga, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(batched[2][i], gb, rtol=1e-7, atol=1e-9)
    # the rank-deficient classes: the nonzero eigenvalues of S1^{1/2} S2 S1^{1/2} are those of the
    # full-rank A^T S2 A, so dW2/dS2 = I - A (A^T S2 A)^{-1/2} A^T exactly (numpy, float64)
    for i, A in factors.items():
        lam, V = np.linalg.eigh((A.T @ S2[i] @ A).numpy())
        want_g2 = np.eye(D) - A.numpy() @ (V / np.sqrt(lam)) @ V.T @ A.numpy().T
        np.testing.assert_allclose(batched[2][i].numpy(), want_g2, rtol=1e-7, atol=1e-8)


def test_gaussian_w2_classes_scheduled_in_windows(gen):
    """The CPU op takes each class's decomposition and its gradient products as separate tasks,
    in windows of at most 32 MiB of factors (13 classes at D = 400): 15 classes with a rank-
    deficient S1 in each window equal the oracle, and each class's result does not depend on
    which worker took it when (the batch reversed gives the same bits). Against one thread only
    to rounding: at this D, MKL inside a parallel region and MKL alone differ in the last bits
    (2e-13; 2e-10 relative on the two-eigh route; the static split did the same)."""
    D, n = 400, 15
    m1, m2 = torch.randn(n, D, generator=gen, dtype=torch.float64), torch.randn(n, D, generator=gen, dtype=torch.float64)
    S1 = random_spd(gen, n, D) + 0.05 * torch.eye(D, dtype=torch.float64)
    S2 = random_spd(gen, n, D) + 0.05 * torch.eye(D, dtype=torch.float64)
    for i in (2, 14):  # the two-eigh route, once per window
        A = torch.randn(D, 30, generator=gen, dtype=torch.float64)
        S1[i] = A @ A.T
    op = torch.ops.dale_ext._gaussian_w2.default
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        scheduled = op(m1, S1, m2, S2, True, True)
        reversed_ = op(m1.flip(0), S1.flip(0), m2.flip(0), S2.flip(0), True, True)
        torch.set_num_threads(1)
        serial = op(m1, S1, m2, S2, True, True)
    finally:
        torch.set_num_threads(threads)
    for x, y, z in zip(scheduled, reversed_, serial):
        assert torch.equal(x, y.flip(0))
        torch.testing.assert_close(x, z, rtol=1e-8, atol=1e-8)
    checked = (0, 2, 13, 14)  # both routes, both windows (the oracle's sqrtm takes ~0.5 s a class)
    want = [oracle_w2(m1[i].numpy(), S1[i].numpy(), m2[i].numpy(), S2[i].numpy()) for i in checked]
    assert rel(scheduled[0][list(checked)], want) < 1e-8
    for i in checked:  # the gradients against float64 autograd
        a, b = S1[i].clone().requires_grad_(), S2[i].clone().requires_grad_()
        ga, gb = torch.autograd.grad(reference.gaussian_w2(m1[i], a, m2[i], b), (a, b))
        if i not in (2, 14):  # dW2/dS1 of a singular S1 is a pseudo-inverse choice, not autograd's
            torch.testing.assert_close(scheduled[1][i], ga, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(scheduled[2][i], gb, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("threads", [1, 2])
def test_gaussian_w2_failing_class_raises_without_hanging(gen, threads):
    """A class whose decomposition throws (NaN through the unchecked op: LAPACK fails to
    converge) raises from the op while the other worker waits for that class's products."""
    D, n = 16, 9
    m = torch.randn(n, D, generator=gen, dtype=torch.float64)
    S = random_spd(gen, n, D) + 0.1 * torch.eye(D, dtype=torch.float64)
    bad = S.clone()
    bad[4, 0, 0] = float("nan")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(RuntimeError, match="eigh"):
            torch.ops.dale_ext._gaussian_w2.default(m, bad, m.flip(0), S.flip(0), True, True)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_gaussian_w2_call_after_a_failed_call_is_exact(gen, threads):
    """The CPU op keeps its per-class buffers between calls. A call that raised leaves classes
    decomposed but never finished; the next call's classes at those places, here ones that take
    the two-eigh route (rank-deficient S1), must not be finished from those stale buffers."""
    D, n = 16, 9
    m = torch.randn(n, D, generator=gen, dtype=torch.float64)
    S = random_spd(gen, n, D) + 0.1 * torch.eye(D, dtype=torch.float64)
    bad = S.clone()
    bad[8, 0, 0] = float("nan")
    A = torch.randn(n, D, 4, generator=gen, dtype=torch.float64)
    low_rank = A @ A.transpose(1, 2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(RuntimeError):
            torch.ops.dale_ext._gaussian_w2.default(m, bad, m.flip(0), S.flip(0), True, True)
        got, g1, g2 = torch.ops.dale_ext._gaussian_w2.default(m, low_rank, m.flip(0), S.flip(0), True, True)
    finally:
        torch.set_num_threads(before)
    want = [oracle_w2(m[i].numpy(), low_rank[i].numpy(), m.flip(0)[i].numpy(), S.flip(0)[i].numpy()) for i in range(n)]
    assert rel(got, want) < 1e-8
    fresh = [torch.ops.dale_ext._gaussian_w2.default(m[i:i + 1], low_rank[i:i + 1], m.flip(0)[i:i + 1],
                                                     S.flip(0)[i:i + 1], True, True) for i in range(n)]
    for i in range(n):
        assert torch.equal(g1[i], fresh[i][1][0]) and torch.equal(g2[i], fresh[i][2][0])


def test_gaussian_w2_op_checks_mean_shapes():
    """The op itself (not only the Python wrapper) requires the means' leading dims to be the
    covariances': the CPU kernel indexes them per class (a (1, 1, D) mean against 20000
    covariances read past its end before)."""
    D = 8
    cov = torch.eye(D, dtype=torch.float64).expand(20000, 1, D, D)
    op = torch.ops.dale_ext._gaussian_w2.default
    for mean in (torch.zeros(1, 1, D, dtype=torch.float64), torch.zeros(20000, 2, D, dtype=torch.float64),
                 torch.zeros(20000, D, dtype=torch.float64)):
        with pytest.raises(ValueError, match="`mean1`/`mean2` must have shape"):
            op(mean, cov, mean, cov, False, True)


@pytest.mark.needs_cuda
def test_gaussian_w2_op_checks_devices():
    """A mean on another device than the covariances is an error of the op, not a read of device
    memory by the CPU kernel."""
    D = 4
    cov = torch.eye(D, dtype=torch.float64).expand(3, D, D)
    mean = torch.zeros(3, D, dtype=torch.float64)
    op = torch.ops.dale_ext._gaussian_w2.default
    with pytest.raises(ValueError, match="must be on the device of `cov1`"):
        op(mean.cuda(), cov, mean, cov, False, True)


def test_gaussian_w2_under_inference_mode(gen):
    """Classes run on worker threads, which are not in the caller's inference mode: the two-eigh
    route's results must not be written by an in-place op there (it raised before)."""
    D = 10
    m1, m2 = torch.randn(4, D, generator=gen, dtype=torch.float64), torch.randn(4, D, generator=gen, dtype=torch.float64)
    S1 = random_spd(gen, 4, D, rank=4)
    S2 = random_spd(gen, 4, D) + 0.1 * torch.eye(D, dtype=torch.float64)
    op = torch.ops.dale_ext._gaussian_w2.default
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        want = op(m1, S1, m2, S2, True, True)
        with torch.inference_mode():
            got = op(m1, S1, m2, S2, True, True)
    finally:
        torch.set_num_threads(threads)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_gaussian_w2_empty_batch():
    m = torch.zeros(0, 5, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(0, 5, 5, dtype=torch.float64, requires_grad=True)
    w = dale_ext.gaussian_w2(m, c, m, c)
    w.sum().backward()
    assert w.shape == (0,) and c.grad.shape == (0, 5, 5)


def test_gaussian_w2_identical_gaussians_is_zero_not_negative(gen):
    S = random_spd(gen, 2, 8) + torch.eye(8)
    m = torch.randn(2, 8, generator=gen, dtype=torch.float64)
    w = dale_ext.gaussian_w2(m, S, m, S)
    assert torch.all(w >= 0) and torch.all(w < 1e-10)


def test_gaussian_w2_reference_agrees(gen):
    m1, m2 = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    S1, S2 = (random_spd(gen, 5, 7).float() + 0.05 * torch.eye(7) for _ in range(2))
    torch.testing.assert_close(dale_ext.gaussian_w2(m1, S1, m2, S2), reference.gaussian_w2(m1, S1, m2, S2),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- wasserstein_loss
def finite_difference(f, x, gen, entries, h=1e-6):
    """{flat index: central difference of f at x} for a few random entries (float64)."""
    x = x.detach().double()
    out = {}
    for i in torch.randperm(x.numel(), generator=gen)[:entries].tolist():
        e = torch.zeros_like(x).flatten()
        e[i] = h
        e = e.view_as(x)
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


EIGH_SAFE = ("plain", "weighted", "perturbed")
LOSS_CASES = {
    "plain": dict(),
    "weighted": dict(weighted=True),
    "perturbed": dict(perturbation=0.3),
    "skipped": dict(min_count=60.0, shape=(2, 6, 11, 13, 5)),
    "rank_deficient": dict(shape=(1, 24, 4, 5, 3)),   # ~7 pixels per class, D = 24
    "mean": dict(reduction="mean", weighted=True),
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_loss_matches_oracle_and_autograd(gen, case):
    cfg = dict(LOSS_CASES[case])
    B, D, H, W, C = cfg.pop("shape", (2, 6, 11, 13, 3))
    weighted = cfg.pop("weighted", False)
    x, lx, wx = make_case(gen, B, D, H, W, C)
    t, lt, wt = make_case(gen, B, D, H, W, C)
    t = t * 1.5 + 0.3
    wx, wt = (wx, wt) if weighted else (None, None)
    kw = dict(perturbation=cfg.get("perturbation", 0.0), min_count=cfg.get("min_count", 2.0))
    reduction = cfg.get("reduction", "sum")
    for dtype in (torch.float64, torch.float32):
        xi = x.detach().clone().to(dtype).requires_grad_()
        ti = t.detach().clone().to(dtype).requires_grad_()
        loss = dale_ext.wasserstein_loss(xi, lx, ti, lt, C, input_weights=wx, target_weights=wt,
                                         reduction=reduction, **kw)
        want = oracle_loss(xi, lx, ti, lt, C, wx, wt, reduction=reduction, **kw)
        assert rel(loss.item(), want) < 1e-4, (case, dtype)
        if reduction != "sum":
            continue
        loss.backward()
        if case in EIGH_SAFE:  # plain eigh autograd is NaN on repeated eigenvalues (rank-deficient)
            xa = x.detach().clone().requires_grad_()
            ta = t.detach().clone().requires_grad_()
            autograd_loss(xa, lx, ta, lt, C, wx, wt, **kw).backward()
            assert rel(xi.grad, xa.grad) < 1e-3, (case, dtype)
            assert rel(ti.grad, ta.grad) < 1e-3, (case, dtype)
        # every case: central finite differences of the numpy oracle at random entries
        f_x = lambda v: oracle_loss(v, lx, t, lt, C, wx, wt, **kw)  # noqa: E731
        f_t = lambda v: oracle_loss(x, lx, v, lt, C, wx, wt, **kw)  # noqa: E731
        for f, base, grad in ((f_x, x, xi.grad), (f_t, t, ti.grad)):
            fd = finite_difference(f, base, gen, entries=12)
            got = np.array([grad.flatten()[i].item() for i in fd])
            want = np.array(list(fd.values()))
            assert np.abs(got - want).max() <= 1e-3 * max(grad.abs().max().item(), 1e-8), (case, dtype)
    if case == "skipped":
        per = dale_ext.wasserstein_loss(x, lx, t, lt, C, min_count=60.0, reduction="none")
        n_in = dale_ext.class_gaussians(x, lx, C).counts
        n_t = dale_ext.class_gaussians(t, lt, C).counts
        skipped = (n_in < 60) | (n_t < 60)
        assert skipped.any() and not skipped.all() and torch.all(per[skipped] == 0) and torch.all(per[~skipped] > 0)


def test_loss_gradcheck(gen):
    x, lx, wx = make_case(gen, 2, 3, 5, 6, 2)
    t, lt, _ = make_case(gen, 2, 3, 5, 6, 2)
    args = (x.requires_grad_(), wx.requires_grad_(), t.requires_grad_())
    f = lambda a, w, b: dale_ext.wasserstein_loss(a, lx, b, lt, 2, input_weights=w, perturbation=0.2)  # noqa: E731
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("sides", ["both", "input", "target"])
def test_loss_gradcheck_reductions_and_sides(gen, reduction, sides):
    """The loss's one autograd node scales its precomputed gradients per reduction (one incoming
    gradient per class for "none") and prepares only the sides that need one; min_count skips
    some classes."""
    x, lx, _ = make_case(gen, 2, 3, 5, 6, 3)
    t, lt, _ = make_case(gen, 2, 3, 5, 6, 3)
    x.requires_grad_(sides in ("both", "input"))
    t.requires_grad_(sides in ("both", "target"))
    n = torch.minimum(dale_ext.class_gaussians(x, lx, 3).counts, dale_ext.class_gaussians(t, lt, 3).counts).detach()
    min_count = float(n.sort().values[1])  # two classes count ("mean" divides by 2), one is skipped
    assert (n < min_count).sum() == 1
    f = lambda a, b: dale_ext.wasserstein_loss(a, lx, b, lt, 3, perturbation=0.2, min_count=min_count,  # noqa: E731
                                               reduction=reduction)
    assert torch.autograd.gradcheck(f, (x, t))
    if reduction == "none" and sides == "both":
        # a skipped class contributes no gradient, even when its incoming gradient is not finite
        up = torch.ones(3, dtype=torch.float64)
        up[n < min_count] = float("nan")
        gx, gt = torch.autograd.grad(f(x, t), (x, t), up)
        assert torch.isfinite(gx).all() and torch.isfinite(gt).all()


def test_reference_loss_agrees_with_kernel(gen):
    x, lx, wx = make_case(gen, 2, 5, 12, 10, 3, torch.float32)
    t, lt, _ = make_case(gen, 2, 5, 12, 10, 3, torch.float32)
    for method in ("gather", "onehot"):
        ref = reference.wasserstein_loss(x, lx, t, lt, 3, input_weights=wx, perturbation=0.1, method=method)
        got = dale_ext.wasserstein_loss(x, lx, t, lt, 3, input_weights=wx, perturbation=0.1)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


def test_double_backward_raises_instead_of_silent_zeros(gen):
    """Second derivatives are not implemented: create_graph=True works for the first derivative,
    and differentiating it again raises (it used to give silent zeros or a missing term)."""
    x = torch.randn(1, 3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    lab = torch.randint(0, 2, (1, 4, 5), generator=gen)
    loss = dale_ext.wasserstein_loss(x, lab, torch.randn(1, 3, 4, 5, generator=gen, dtype=torch.float64), lab, 2,
                                     min_count=1)
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad((g * torch.randn(g.shape, generator=gen, dtype=g.dtype)).sum(), x)
    # gaussian_w2 directly: the covariance gradient depends on the covariance
    S = (2 * torch.eye(3, dtype=torch.float64)).repeat(2, 1, 1).requires_grad_()
    m = torch.zeros(2, 3, dtype=torch.float64)
    w2 = dale_ext.gaussian_w2(m, S, m, torch.eye(3, dtype=torch.float64).repeat(2, 1, 1))
    (gS,) = torch.autograd.grad((w2 ** 2).sum(), S, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(gS.sum(), S)
    # the reference's closed-form W^2 backward raises too
    (gR,) = torch.autograd.grad((reference.gaussian_w2(m, S, m, torch.eye(3, dtype=torch.float64).repeat(2, 1, 1))
                                 ** 2).sum(), S, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(gR.sum(), S)
    # the means' part has its second derivative: d2/dm1^2 of |m1 - m2|^2 = 2 I
    m1 = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    (gm,) = torch.autograd.grad(dale_ext.gaussian_w2(m1, S.detach(), m, S.detach()).sum(), m1, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(gm.sum(), m1)[0], torch.full((2, 3), 2.0, dtype=torch.float64))


@pytest.mark.parametrize("name", ["mean1", "cov1", "mean2", "cov2"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_gaussian_w2_non_finite_input_raises(name, bad):
    args = dict(mean1=torch.zeros(2, 3), cov1=torch.eye(3).repeat(2, 1, 1), mean2=torch.ones(2, 3),
                cov2=torch.eye(3).repeat(2, 1, 1))
    args[name] = args[name].clone()
    args[name].view(-1)[1] = bad
    with pytest.raises(ValueError, match=f"`{name}` contains NaN or infinity"):
        dale_ext.gaussian_w2(**args)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("impl", [dale_ext.class_gaussians, reference.class_gaussians])
def test_non_finite_features_at_pixels_that_do_not_count_are_ignored(gen, impl, device):
    """Ignored and out-of-range pixels do not count, whatever their features hold (NaN, inf)."""
    x = torch.randn(2, 4, 40, 37, generator=gen, dtype=torch.float64).to(device)
    lab = torch.randint(0, 3, (2, 40, 37), generator=gen).to(device)
    lab[0, 5, :9] = -100
    lab[1, 30, 3:7] = 7
    want = impl(x, lab, 3)
    xb = x.clone()
    xb[0, :, 5, :9] = float("nan")
    xb[1, :, 30, 3:7] = float("inf")
    got = impl(xb, lab, 3)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # and a later call with clean features is not affected by the earlier one's buffers
    torch.testing.assert_close(impl(x, lab, 3).covs, want.covs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_feature_gradient_is_zero_where_pixels_do_not_count(gen, dtype):
    """The CPU backward writes NCHW gradients where they lie, into a reused block (the output
    cache): ignored and out-of-range pixels must get 0, not a previous call's values, and the
    rest must match float64 autograd of the reference."""
    x = (torch.randn(2, 8, 40, 37, generator=gen, dtype=torch.float64) + 2).to(dtype)
    lab = torch.randint(0, 3, (2, 40, 37), generator=gen)
    xx = x.clone().requires_grad_()  # a first call fills the cached block with non-zero gradients
    s = dale_ext.class_gaussians(xx, lab, 3)
    (s.covs.square().sum() + s.means.sum()).backward()
    assert torch.all(xx.grad != 0)
    del xx, s
    lab[0, 5:9] = -100
    lab[1, 30, 3:7] = 7
    lab[1, :, 36] = -1
    xr = x.double().clone().requires_grad_()
    s = reference.class_gaussians(xr, lab, 3)
    (s.covs.square().sum() + s.means.sum()).backward()
    xx = x.clone().requires_grad_()
    s = dale_ext.class_gaussians(xx, lab, 3)
    (s.covs.square().sum() + s.means.sum()).backward()
    off = ((lab < 0) | (lab >= 3))[:, None].expand_as(x)
    assert torch.all(xx.grad[off] == 0) and torch.all(xr.grad[off] == 0)
    assert rel(xx.grad, xr.grad) < (1e-10 if dtype == torch.float64 else 1e-4)


def test_reference_fallback_agrees_and_checks_weights_where_they_count(gen, monkeypatch):
    """Where no kernel serves a device (or D > 256 on CUDA) the wrapper runs the reference and
    makes the kernel's checks: the same statistics, NaN or negative weights accepted at pixels
    that do not count and rejected at pixels that do."""
    import dale_ext.ops.wasserstein as ops

    x, lab, w = make_case(gen, 2, 5, 9, 13, 3, torch.float64)   # with ignored and out-of-range pixels
    want = dale_ext.class_gaussians(x, lab, 3, weights=w)
    monkeypatch.setattr(ops, "use_reference", lambda op, device: True)
    wb = w.clone()
    wb[lab == -100] = float("nan")
    wb[lab == 3 + 3] = -1.0
    got = dale_ext.class_gaussians(x, lab, 3, weights=wb)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    wb[lab == 1] = -1.0
    with pytest.raises(ValueError, match="`weights` must be >= 0"):
        dale_ext.class_gaussians(x, lab, 3, weights=wb)


def test_empty_batch_with_any_strides():
    for x in (torch.randn(0, 4, 3, 5).contiguous(memory_format=torch.channels_last),
              torch.randn(0, 3, 5, 4).permute(0, 3, 1, 2)):
        out = dale_ext.class_gaussians(x, torch.zeros(0, 3, 5, dtype=torch.long), 2)
        assert torch.all(out.counts == 0)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("label_dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_labels_kernel_and_reference(gen, label_dtype, device):
    x = torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64).to(device)
    lab = torch.randint(0, 3, (2, 6, 7), generator=gen).to(device)
    want = reference.class_gaussians(x, lab, 3)
    for impl in (dale_ext.class_gaussians, reference.class_gaussians):
        got = impl(x, lab.to(label_dtype), 3)
        torch.testing.assert_close(got.covs, want.covs)


def test_integer_arguments_beyond_int64_raise_clearly():
    x, lab = torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="`ignore_index` must fit in a signed 64-bit integer"):
        dale_ext.class_gaussians(x, lab, 2, ignore_index=2**64 - 1)
    with pytest.raises(ValueError, match="`num_classes` must fit"):
        dale_ext.wasserstein_loss(x, lab, x, lab, 2**63)
    with pytest.raises(ValueError, match="`bins` must fit"):
        dale_ext.fuzzy_split(torch.rand(1, 1, 4, 4), lab[:, :1, :1].expand(1, 4, 4), bins=2**63)


DEGENERATE = {
    "one_pixel_class": lambda x, l: (x, torch.where(torch.arange(l.numel()).view(l.shape) == 5, 1, 0)),
    "identical_pixels": lambda x, l: (x[:, :, :1, :1].expand_as(x).contiguous(), l),
    "empty_class": lambda x, l: (x, l.clamp(max=1)),
    "huge_scale": lambda x, l: (x * 1e6, l),
    "tiny_scale": lambda x, l: (x * 1e-6, l),
    "zero_weights": lambda x, l: (x, l),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
@pytest.mark.parametrize("min_count", [0.0, 2.0])
def test_degenerate_inputs_give_finite_loss_and_gradients(gen, case, min_count):
    x, lab, w = make_case(gen, 2, 8, 6, 7, 3, torch.float32, ignore=False)
    x, lab = DEGENERATE[case](x, lab)
    t, lt, _ = make_case(gen, 2, 8, 6, 7, 3, torch.float32, ignore=False)
    weights = torch.zeros_like(w) if case == "zero_weights" else None
    xi = x.clone().requires_grad_()
    ti = t.clone().requires_grad_()
    loss = dale_ext.wasserstein_loss(xi, lab, ti, lt, 3, input_weights=weights, min_count=min_count)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(xi.grad).all() and torch.isfinite(ti.grad).all()
    if case == "zero_weights":
        assert torch.all(xi.grad == 0)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("skipped", ["all_ignored", "zero_weights", "below_min_count"])
def test_a_loss_with_every_class_skipped_still_backpropagates(gen, impl, reduction, skipped):
    """A batch without fuzzy pixels skips every class: the loss is 0 and ``loss.backward()`` must
    work (zero gradients), as for any drop-in loss; the reference is the fallback on devices
    without a kernel, so it must too."""
    loss_fn = dale_ext.wasserstein_loss if impl == "kernel" else reference.wasserstein_loss
    x, lx, _ = make_case(gen, 2, 4, 5, 6, 2, torch.float32, ignore=False)
    t, lt, _ = make_case(gen, 2, 4, 5, 6, 2, torch.float32, ignore=False)
    weights = torch.zeros(lx.shape) if skipped == "zero_weights" else None
    if skipped == "all_ignored":
        lx = torch.full_like(lx, -100)
    min_count = 1e9 if skipped == "below_min_count" else 2.0
    xi = x.clone().requires_grad_()
    loss = loss_fn(xi, lx, t, lt, 2, input_weights=weights, min_count=min_count, reduction=reduction)
    assert torch.all(loss == 0) and loss.requires_grad
    loss.sum().backward()
    assert torch.equal(xi.grad, torch.zeros_like(x))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    B=st.integers(1, 2), D=st.integers(1, 9), H=st.integers(1, 9), W=st.integers(1, 11), C=st.integers(1, 4),
    log_scale=st.floats(-4, 4), weighted=st.booleans(), perturbation=st.sampled_from([0.0, 0.05, 1.0]),
    ignore_frac=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_loss_finite_and_matches_reference(B, D, H, W, C, log_scale, weighted, perturbation, ignore_frac, seed):
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** log_scale
    x = torch.randn(B, D, H, W, generator=g, dtype=torch.float64) * scale
    t = torch.randn(B, D, H, W, generator=g, dtype=torch.float64) * scale + scale
    lx = torch.randint(0, C, (B, H, W), generator=g)
    lt = torch.randint(0, C, (B, H, W), generator=g)
    lx[torch.rand(B, H, W, generator=g) < ignore_frac] = -100
    wx = torch.rand(B, H, W, generator=g, dtype=torch.float64) if weighted else None
    eps = 1e-5 * scale * scale
    xi = x.clone().requires_grad_()
    loss = dale_ext.wasserstein_loss(xi, lx, t, lt, C, input_weights=wx, perturbation=perturbation * scale**2, eps=eps)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(xi.grad).all()
    ref = reference.wasserstein_loss(x, lx, t, lt, C, input_weights=wx, perturbation=perturbation * scale**2, eps=eps)
    assert abs(loss.item() - ref.item()) <= 1e-6 * max(1.0, abs(ref.item())) + 1e-9 * scale * scale


_FUZZ_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    D=st.sampled_from([1, 3, 8, 17, 33, 64, 65, 129]), W=st.sampled_from([1, 5, 33, 257, 700]),
    H=st.integers(1, 12), C=st.integers(1, 9), dtype=st.sampled_from(_FUZZ_DTYPES),
    layout=st.sampled_from(["contiguous", "channels_last", "strided", "rows"]),
    log_scale=st.floats(-3, 3), weighted=st.booleans(), ignore=st.sampled_from([None, -100, -1, 99]),
    seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fuzz_wide_shapes_dtypes_and_gradients(device, D, W, H, C, dtype, layout, log_scale, weighted, ignore, seed):
    """The kernels' block edges (D around the register tiles, rows longer than a strip), every
    feature dtype and memory layout, and (N, D) rows: statistics, loss and the feature gradient
    against the float64 reference on the same (rounded) values. Half-precision gradients must
    equal the float64 gradient rounded to their dtype up to one rounding step (tiny gradients
    underflow in float16, for both)."""
    g = torch.Generator().manual_seed(seed)
    B, scale = 2, 10.0 ** log_scale
    x = (torch.randn(B, D, H, W, generator=g, dtype=torch.float64) + torch.randn(1, D, 1, 1, generator=g,
                                                                             dtype=torch.float64)) * scale
    t = torch.randn(B, D, H, W, generator=g, dtype=torch.float64) * scale
    lx = torch.randint(0, C, (B, 1, W), generator=g).expand(B, H, W).clone()  # column blobs: long runs
    lx[:, : H // 2] = torch.randint(0, C, (B, 1, 1), generator=g)
    lt = torch.randint(0, C, (B, H, W), generator=g)
    if ignore is not None:
        lx[torch.rand(B, H, W, generator=g) < 0.3] = ignore
    x, t = x.to(dtype), t.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.cat([x, x], 1)[:, ::2]
    w = torch.rand(B, H, W, generator=g, dtype=torch.float64).to(dtype if dtype == torch.float64 else torch.float32)
    w = w if weighted else None
    if layout == "rows":
        x, t = (v.permute(0, 2, 3, 1).reshape(-1, D) for v in (x, t))
        lx, lt = lx.reshape(-1), lt.reshape(-1)
        w = None if w is None else w.reshape(-1)
    w64 = None if w is None else w.double()
    exact = dtype == torch.float64
    x, lx, t, lt = (v.to(device) for v in (x, lx, t, lt))
    w, w64 = (None if v is None else v.to(device) for v in (w, w64))

    got = dale_ext.class_gaussians(x, lx, C, weights=w)
    want = reference.class_gaussians(x.double(), lx, C, weights=w64)
    for a, b, unit in zip(got, want, (1.0, scale, scale * scale)):
        torch.testing.assert_close(a.double(), b, rtol=1e-9 if exact else 2e-4, atol=(1e-12 if exact else 2e-5) * unit)

    opts = dict(perturbation=0.01 * scale**2, eps=1e-5 * scale**2)
    xi, xr = x.detach().clone().requires_grad_(), x.detach().double().requires_grad_()
    loss = dale_ext.wasserstein_loss(xi, lx, t, lt, C, input_weights=w, **opts)
    ref = reference.wasserstein_loss(xr, lx, t.double(), lt, C, input_weights=w64, **opts)
    loss.backward()
    ref.backward()
    assert torch.isfinite(loss) and torch.isfinite(xi.grad).all()
    base = max(abs(ref.item()), 1e-3 * D * scale**2)  # W^2 can cancel to ~0: relative to its scale
    assert abs(loss.item() - ref.item()) <= (1e-7 if exact else 1e-4) * base
    top = xr.grad.abs().max().item()
    if dtype in (torch.float32, torch.float64):
        assert (xi.grad.double() - xr.grad).abs().max().item() <= (1e-6 if exact else 1e-3) * top
    else:  # one rounding step of the dtype at the gradient's largest magnitude, or its smallest subnormal
        step = max(top * torch.finfo(dtype).eps, torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps)
        assert (xi.grad.double() - xr.grad.to(dtype).double()).abs().max().item() <= step


# ---------------------------------------------------------------- library integration
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_opcheck(gen, device):
    x, lab, w = make_case(gen, 2, 5, 6, 7, 3, torch.float32)
    x, lab, w = x.to(device), lab.to(device), w.to(device)
    torch.library.opcheck(torch.ops.dale_ext.class_gaussians.default, (x.requires_grad_(), lab, 3, w, -100))
    torch.library.opcheck(torch.ops.dale_ext.class_gaussians.default, (x, lab, 3, None, -100))
    torch.library.opcheck(torch.ops.dale_ext._class_gaussians_with_status.default,
                          (x.detach().requires_grad_(), lab, 3, w, -100))
    S1 = (random_spd(gen, 3, 5) + 0.1 * torch.eye(5)).float().to(device).requires_grad_()
    S2 = (random_spd(gen, 3, 5) + 0.1 * torch.eye(5)).float().to(device).requires_grad_()
    m = torch.randn(3, 5, generator=gen).to(device)
    torch.library.opcheck(torch.ops.dale_ext._gaussian_w2.default, (m, S1, m.flip(0), S2, True, True))


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_w2_loss_host_matches_the_composed_ops(gen, reduction):
    """The loss's host part (_w2_loss_host: regularisation, W^2 of the classes that count, the
    reduction, the gradients for an incoming gradient of 1) against gaussian_w2 and float64
    autograd on the regularised covariances. Class 1 is skipped (count below min_count), class 2's
    target is rank-deficient (the two-eigh route, with the regularisation applied there too)."""
    C, D, pert, eps, min_count = 4, 6, 0.05, 1e-13, 2.0
    mu_in, mu_t = torch.randn(C, D, generator=gen, dtype=torch.float64), torch.randn(C, D, generator=gen, dtype=torch.float64)
    cov_in, cov_t = random_spd(gen, C, D), random_spd(gen, C, D)
    low = torch.randn(D, 2, generator=gen, dtype=torch.float64)
    cov_t[2] = low @ low.T
    n_in = torch.tensor([5.0, 1.0, 7.0, 2.0], dtype=torch.float64)
    n_t = torch.tensor([3.0, 9.0, 4.0, 6.0], dtype=torch.float64)
    loss, valid, g_mu, g_in, g_t = torch.ops.dale_ext._w2_loss_host.default(
        n_in, mu_in, cov_in, n_t, mu_t, cov_t, pert, eps, min_count, reduction, True, True)
    assert valid.tolist() == [True, False, True, True]

    leaves = [t.clone().requires_grad_() for t in (mu_in, cov_in, mu_t, cov_t)]
    mi, ci, mt, ct = leaves
    eye = torch.eye(D, dtype=torch.float64)
    w2 = dale_ext.gaussian_w2(mt, ct + pert + eps * eye, mi, ci + eps * eye)
    want = torch.where(valid, w2, torch.zeros_like(w2))
    if reduction != "none":
        want = want.sum() / (valid.sum() if reduction == "mean" else 1)
    torch.testing.assert_close(loss, want.detach(), rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(want.sum(), leaves)
    for got, ref in zip((-g_mu, g_in, g_mu, g_t), grads):
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)
    assert torch.equal(g_in[1], torch.zeros(D, D, dtype=torch.float64)) and torch.equal(g_mu[1], torch.zeros(D, dtype=torch.float64))
    torch.library.opcheck(torch.ops.dale_ext._w2_loss_host.default,
                          (n_in, mu_in, cov_in, n_t, mu_t, cov_t, pert, eps, min_count, reduction, True, False))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_loss_and_statistics_under_inference_mode(gen, device):
    """Evaluation code often runs under torch.inference_mode(): the ops' worker threads are not in
    that mode, and nothing they do may need it. Same values as without it, on two threads."""
    x, lx, wx = make_case(gen, 2, 24, 9, 11, 3, torch.float32)
    t, lt, _ = make_case(gen, 2, 24, 9, 11, 3, torch.float32)
    x, lx, wx, t, lt = (v.to(device) for v in (x, lx, wx, t, lt))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for reduction in ("sum", "none"):
            want = dale_ext.wasserstein_loss(x, lx, t, lt, 3, input_weights=wx, perturbation=0.1, reduction=reduction)
            with torch.inference_mode():
                got = dale_ext.wasserstein_loss(x, lx, t, lt, 3, input_weights=wx, perturbation=0.1,
                                                reduction=reduction)
            assert torch.equal(got, want)
        want = dale_ext.class_gaussians(x, lx, 3, weights=wx)
        with torch.inference_mode():
            got = dale_ext.class_gaussians(x, lx, 3, weights=wx)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    finally:
        torch.set_num_threads(threads)


def test_torch_compile_fullgraph(gen):
    x, lx, wx = make_case(gen, 2, 5, 8, 8, 2, torch.float32)
    t, lt, _ = make_case(gen, 2, 5, 8, 8, 2, torch.float32)

    def f(a):
        return dale_ext.wasserstein_loss(a, lx, t, lt, 2, input_weights=wx, perturbation=0.1) * 2

    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    la, lb = compiled(xa), f(xb)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(xa.grad, xb.grad)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("shape", [(2, 6, 9, 13, 3), (4, 64, 32, 32, 2), (2, 128, 16, 16, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cuda_matches_cpu(gen, shape, dtype):
    B, D, H, W, C = shape
    x, lab, w = make_case(gen, B, D, H, W, C, dtype)
    t, lt, _ = make_case(gen, B, D, H, W, C, dtype)
    outs = []
    for device in ("cpu", "cuda"):
        xi = x.detach().to(device).requires_grad_()
        s = dale_ext.class_gaussians(xi, lab.to(device), C, weights=w.to(device))
        loss = dale_ext.wasserstein_loss(xi, lab.to(device), t.to(device), lt.to(device), C,
                                         input_weights=w.to(device), perturbation=0.1)
        loss.backward()
        outs.append([v.detach().double().cpu() for v in (*s, loss, xi.grad)])
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    for name, a, b in zip(("counts", "means", "covs", "loss", "grad"), *outs):
        # a bfloat16 gradient is rounded to 8 bits on each device: within 2 ulps of its largest entry
        t = 2 * 2.0**-8 if (name == "grad" and dtype == torch.bfloat16) else tol
        assert rel(b, a) < t, (name, rel(b, a))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_loss_matrix_part_on_the_host(gen, device):
    """matrix_device="cpu" moves only the D x D matrix part: the same loss and gradients (also for
    the default, the host on CUDA), and the gradient reaches the features on their own device."""
    x, lx, w = make_case(gen, 2, 7, 9, 11, 3, torch.float64)
    t, lt, _ = make_case(gen, 2, 7, 9, 11, 3, torch.float64)
    x, lx, w, t, lt = (v.to(device) for v in (x, lx, w, t, lt))
    grads = []
    for md in (device, "cpu", None):
        xi = x.detach().clone().requires_grad_()
        loss = dale_ext.wasserstein_loss(xi, lx, t, lt, 3, input_weights=w, perturbation=0.1, matrix_device=md)
        loss.backward()
        assert loss.device == x.device and xi.grad.device == x.device
        grads.append((loss.detach().cpu(), xi.grad.cpu()))
    (l0, g0), *rest = grads
    for l1, g1 in rest:
        assert rel(l1, l0) < 1e-12 and rel(g1, g0) < 1e-10


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_loss_none_reduction_drops_a_skipped_class_gradient(gen, device):
    """reduction="none": a skipped class's incoming gradient (here NaN) reaches no pixel, on the
    host-matrix node of either device, and the other classes' gradients equal the composed
    loss's (matrix part on the device: no host node)."""
    x, lx, w = make_case(gen, 2, 5, 9, 11, 3, torch.float64)
    t, lt, _ = make_case(gen, 2, 5, 9, 11, 3, torch.float64)
    lx[lx == 2] = 0
    lx[0, 0, 0] = 2                       # class 2: one input pixel, below min_count
    x, lx, w, t, lt = (v.to(device) for v in (x, lx, w, t, lt))
    up = torch.tensor([1.0, -0.5, float("nan")], dtype=torch.float64, device=device)
    grads = []
    for md in (None, device):
        xi, ti = x.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
        loss = dale_ext.wasserstein_loss(xi, lx, ti, lt, 3, input_weights=w, perturbation=0.1, reduction="none",
                                         matrix_device=md)
        assert loss[2] == 0
        grads.append(torch.autograd.grad(loss, (xi, ti), up))
    for g in grads[0]:
        assert torch.isfinite(g).all()
    for a, b in zip(*grads):
        assert rel(a, b) < 1e-10


def _loss_bad_input_cases(gen, device):
    x, lx, w = make_case(gen, 2, 5, 9, 11, 3, torch.float64)
    t, lt, wt = make_case(gen, 2, 5, 9, 11, 3, torch.float64)
    x, lx, w, t, lt, wt = (v.to(device) for v in (x, lx, w, t, lt, wt))
    nan_x = x.clone()
    nan_x[0, 2, lx[0] == 1] = float("nan")   # at pixels that count
    neg_wt = wt.clone()
    neg_wt[lt == 2] = -0.5
    return [((nan_x, lx, t, lt), {}, "input", "`features` (or `weights`) contain NaN"),
            ((x, lx, t, lt), {"target_weights": neg_wt}, "target", "`weights` must be >= 0"),
            ((x, lx, t, lt), {"input_weights": w * float("nan")}, "input", "`weights` must be >= 0")]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("matrix_device", [None, "cpu"])
def test_loss_rejects_bad_statistics_inputs(gen, device, matrix_device):
    """The statistics' checks hold for the loss on every path: on a GPU they are read once, with
    the matrix part's copy (or by one sync where it stays on the device), and name the side."""
    for args, kw, side, message in _loss_bad_input_cases(gen, device):
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            dale_ext.wasserstein_loss(*args, 3, matrix_device=matrix_device, **kw)
        if device == "cuda":
            assert f"wasserstein_loss ({side})" in str(err.value)


def test_loss_rejects_bad_statistics_inputs_on_the_reference_path(gen, monkeypatch):
    """Where the reference computes the statistics (no kernel for the device), the loss reads
    their status as on a GPU, and the error names the side."""
    import dale_ext.ops.wasserstein as ops

    monkeypatch.setattr(ops, "use_reference", lambda op, device: True)
    for args, kw, side, message in _loss_bad_input_cases(gen, "cpu"):
        with pytest.raises(ValueError, match=re.escape(f"wasserstein_loss ({side}): {message}")):
            dale_ext.wasserstein_loss(*args, 3, **kw)
    x, lx, t, lt = _loss_bad_input_cases(gen, "cpu")[1][0]
    monkeypatch.undo()
    want = dale_ext.wasserstein_loss(x, lx, t, lt, 3, perturbation=0.1)
    monkeypatch.setattr(ops, "use_reference", lambda op, device: True)
    got = dale_ext.wasserstein_loss(x, lx, t, lt, 3, perturbation=0.1)
    assert rel(got, want) < 1e-10


def test_matrix_part_copy_keeps_each_parts_gradient_need():
    """The packed copy to the matrix device gives gradients only to parts whose source needs one
    (else a detached target's covariance gradient is computed on the host and dropped)."""
    from dale_ext.ops.wasserstein import _moved

    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 2, dtype=torch.float64)
    pa, pb = _moved((a, b), torch.device("meta"))
    assert pa.device.type == "meta" and pb.shape == (2, 2)
    assert pa.requires_grad and not pb.requires_grad


def _cuda_case(gen, case):
    """(features, labels, weights, C) for one layout or edge case of the CUDA statistics kernels."""
    if case == "channels_last":
        x, lab, w = make_case(gen, 2, 16, 24, 20, 3, torch.float32)
        return x, lab, w, 3, lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
    if case == "strided":               # sliced on the device: a view with gaps between its elements
        x, lab, w = make_case(gen, 2, 24, 30, 31, 3, torch.float32)
        return x, lab, w, 3, lambda t: t[:, ::2, 1:-1, 2:] if t.dim() == 4 else t[:, 1:-1, 2:]
    if case == "uint8_labels_outside_with_nan":
        x, lab, w = make_case(gen, 2, 12, 33, 35, 4, torch.float64, ignore=False)
        lab[0, 4:9, 2:20] = 200          # outside [0, C): does not count, nor do its NaN features
        lab[1, 20:, :3] = 4
        lab = lab.to(torch.uint8)
        x[0, :, 4:9, 2:20] = float("nan")
        x[1, :, 20:, :3] = float("inf")
        return x, lab, w, 4, None
    if case == "many_classes_wide":       # C x D^2 partial sums beyond the 256 MiB cap per launch
        x, lab, w = make_case(gen, 2, 256, 24, 24, 19, torch.float32)
        return x, lab, w, 19, None
    if case == "many_classes_sums_cap":  # C x (D + 1) partial sums beyond the cap (on GPUs of >= 130 SMs: H100,
        # H200): fewer blocks in the sums pass
        x, _, w = make_case(gen, 2, 128, 160, 160, 3, torch.float32)
        lab = torch.randint(-1, 1000, (2, 160, 160), generator=gen)
        return x, lab, w, 1000, None
    if case == "many_classes":           # more than 32 classes: the chunks are sorted without warp votes
        x, lab, w = make_case(gen, 2, 12, 40, 44, 40, torch.float32)
        return x, lab, w, 40, None
    if case == "many_pixels":
        x, lab, w = make_case(gen, 3, 8, 256, 256, 4, torch.float32)
        return x, lab, w, 4, None
    if case == "sparse_classes":         # classes with 0, 1 and 2 pixels
        x, lab, w = make_case(gen, 2, 5, 17, 19, 2, torch.float64)
        lab[0, 3, 4] = 2
        lab[1, 7, 8] = lab[1, 9, 1] = 3
        return x, lab, w, 6, None
    raise AssertionError(case)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("case", ["channels_last", "strided", "uint8_labels_outside_with_nan", "many_classes_wide",
                                  "many_classes_sums_cap", "many_classes", "many_pixels", "sparse_classes"])
def test_cuda_matches_cpu_layouts_and_edge_cases(gen, case):
    """Forward and backward (random upstream gradients for every output) agree between devices,
    and two CUDA runs agree bit for bit (the kernels reduce in a fixed order)."""
    x, lab, w, C, view = _cuda_case(gen, case)
    view = view or (lambda t: t)
    D = view(x).shape[1]
    gm = torch.randn(C, D, generator=gen, dtype=torch.float64)
    gS = torch.randn(C, D, D, generator=gen, dtype=torch.float64)
    gn = torch.randn(C, generator=gen, dtype=torch.float64)
    outs = []
    for device in ("cpu", "cuda", "cuda"):
        xi = x.detach().to(device).requires_grad_()
        wi = w.detach().to(device).requires_grad_()
        s = dale_ext.class_gaussians(view(xi), view(lab.to(device)), C, weights=view(wi))
        dt = s.means.dtype
        torch.autograd.backward([s.means, s.covs, s.counts],
                                [gm.to(device, dt), gS.to(device, dt), gn.to(device, dt)])
        outs.append([v.detach().double().cpu() for v in (*s, xi.grad, wi.grad)])
    tol = 1e-9 if x.dtype == torch.float64 else 2e-4
    for name, a, b, again in zip(("counts", "means", "covs", "grad_features", "grad_weights"), *outs):
        assert torch.isfinite(b).all(), name
        assert rel(b, a) < tol, (name, rel(b, a))
        assert torch.equal(b, again), f"{name}: two CUDA runs differ"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda x, l, w: dale_ext.class_gaussians(x[0], l, 3), ValueError, "`features` must be"),
        (lambda x, l, w: dale_ext.class_gaussians(x.int(), l, 3), TypeError, "`features` must be float"),
        (lambda x, l, w: dale_ext.class_gaussians(x, l.float(), 3), TypeError, "`labels` must be an integer"),
        (lambda x, l, w: dale_ext.class_gaussians(x, l[:, :4], 3), ValueError, "`labels` must have shape"),
        (lambda x, l, w: dale_ext.class_gaussians(x, l, 0), ValueError, "`num_classes`"),
        (lambda x, l, w: dale_ext.class_gaussians(x, l, 3, weights=w[:1]), ValueError, "`weights` must have"),
        (lambda x, l, w: dale_ext.class_gaussians(x, l, 3, weights=-w), ValueError, "`weights` must be >= 0"),
        (lambda x, l, w: dale_ext.class_gaussians(x, l, 3, weights=w * float("nan")), ValueError, "`weights`"),
        (lambda x, l, w: dale_ext.class_gaussians(x * float("nan"), l, 3), ValueError, "NaN"),
        (lambda x, l, w: dale_ext.wasserstein_loss(x, l, x[:, :2], l, 3), ValueError, "same D"),
        (lambda x, l, w: dale_ext.wasserstein_loss(x, l, x, l, 3, reduction="max"), ValueError, "`reduction`"),
        (lambda x, l, w: dale_ext.wasserstein_loss(x, l, x, l, 3, eps=-1.0), ValueError, "`eps`"),
        (lambda x, l, w: dale_ext.wasserstein_loss(x, l, x, l, 3, perturbation=float("nan")), ValueError,
         "`perturbation`"),
        (lambda x, l, w: dale_ext.wasserstein_loss(x, l, x, l, 3, matrix_device=0), TypeError, "`matrix_device`"),
        (lambda x, l, w: dale_ext.wasserstein_loss(x, l, x, l, 3, matrix_device="gpu0"), ValueError,
         "`matrix_device`"),
        (lambda x, l, w: dale_ext.gaussian_w2(x[0, 0], x[0], x[0, 0], x[0]), ValueError, "`cov1` must be"),
        (lambda x, l, w: dale_ext.gaussian_w2(x[0, :, 0], x[0, :, :6, :6], x[0, :, 0], x[0, :, :6, :6]),
         ValueError, "`mean1` must have"),
    ],
)
def test_bad_input_raises_clear_error(gen, call, exc, match):
    x, lab, w = make_case(gen, 2, 6, 6, 7, 3, torch.float32)
    with pytest.raises(exc, match=match):
        call(x, lab, w)
