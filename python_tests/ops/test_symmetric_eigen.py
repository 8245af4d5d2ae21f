"""The CPU eigensolver of gaussian_w2's Cholesky route (csrc/cpu/symmetric_eigen.cpp: Householder
tridiagonalisation + implicit QL), through its test op _symmetric_eigen, against scipy's LAPACK
eigh in float64: eigenvalues, residuals, orthogonality, order, on the matrices the loss meets
(covariance products, rank-deficient with a ridge, graded, clustered) and on edge cases; then
the loss with it against the loss with LAPACK's dsyevd (DALE_EXT_EIGENSOLVER=lapack)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import dale_ext  # noqa: F401  (registers the ops)
from python_tests.conftest import results_under_each_cpu_isa

eigen = torch.ops.dale_ext._symmetric_eigen.default


def check_decomposition(A: torch.Tensor, tol: float = 1e-13):
    """The op's eigenpairs of A: ascending, orthonormal, A V = V diag(w), and the eigenvalues
    equal scipy's (LAPACK dsyevr) to tol |A| (the norm-wise accuracy a backward-stable solver has)."""
    w, V, ok = eigen(A, 60)
    assert bool(ok)
    D = A.shape[0]
    norm = max(float(A.abs().max()) * D, np.finfo(float).tiny)
    expected = scipy.linalg.eigh(A.numpy(), eigvals_only=True)
    assert torch.all(w[1:] >= w[:-1])
    np.testing.assert_allclose(w.numpy(), expected, rtol=0, atol=tol * norm)
    assert float((A @ V - V * w).abs().max()) <= tol * norm
    assert float((V.T @ V - torch.eye(D, dtype=A.dtype)).abs().max()) <= 1e-13 * max(D, 8)
    return w, V


def random_symmetric(g, D):
    a = torch.randn(D, D, generator=g, dtype=torch.float64)
    return (a + a.T) / 2


def covariance_product(g, D, samples, ridge=1e-5):
    """L^T S2 L with S1 = L L^T: the matrix the loss decomposes, from two sample covariances."""
    x1, x2 = torch.randn(samples, D, generator=g, dtype=torch.float64), torch.randn(samples, D, generator=g,
                                                                                  dtype=torch.float64)
    s1 = x1.T @ x1 / samples + ridge * torch.eye(D, dtype=torch.float64)
    s2 = x2.T @ x2 / samples + ridge * torch.eye(D, dtype=torch.float64)
    L = torch.linalg.cholesky(s1)
    M = L.T @ s2 @ L
    return (M + M.T) / 2


@pytest.mark.parametrize("D", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 64, 100, 128, 130])
def test_random_symmetric(gen, D):
    check_decomposition(random_symmetric(gen, D))


@pytest.mark.parametrize("D, samples", [(128, 455), (128, 64), (128, 3), (64, 1), (37, 200), (200, 150)])
def test_covariance_products(gen, D, samples):
    """Full rank (455 pixels a class, the benchmark's), rank-deficient (64, 3 or 1 samples: a
    cluster of eigenvalues at the ridge's level, far below |M|), D = 200 (past one padded block)."""
    check_decomposition(covariance_product(gen, D, samples))


def test_graded_and_scaled(gen):
    """Eigenvalues over 12 decades; and the same matrix at 1e+-200 (where squares would overflow
    or underflow without the power-of-two scaling): eigenvalues scale exactly with it."""
    D = 96
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
    lam = torch.logspace(-6, 6, D, dtype=torch.float64)
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2
    w, _ = check_decomposition(A)
    for s in (1e200, 1e-200, 2.0**-1060 * 2**60):
        ws, _ = check_decomposition(A * s)
        np.testing.assert_allclose(ws.numpy(), (w * s).numpy(), rtol=0, atol=1e-13 * float(A.abs().max()) * D * s)


@pytest.mark.parametrize("kind", ["zero", "identity", "diagonal", "tridiagonal", "repeated", "wilkinson", "ones"])
def test_structured(gen, kind):
    """Already reduced (zero, diagonal, tridiagonal: reflectors with nothing to zero), all or
    many eigenvalues equal (identity, repeated, the rank-one 11^T), and Wilkinson's W21+ with its
    pairs of eigenvalues equal to ~1e-14."""
    D = 48
    if kind == "zero":
        A = torch.zeros(D, D, dtype=torch.float64)
    elif kind == "identity":
        A = 3.0 * torch.eye(D, dtype=torch.float64)
    elif kind == "diagonal":
        A = torch.diag(torch.randn(D, generator=gen, dtype=torch.float64))
    elif kind == "tridiagonal":
        off = torch.randn(D - 1, generator=gen, dtype=torch.float64)
        A = torch.diag(torch.randn(D, generator=gen, dtype=torch.float64)) + torch.diag(off, 1) + torch.diag(off, -1)
    elif kind == "repeated":
        Q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
        lam = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64).repeat_interleave(D // 3)
        A = (Q * lam) @ Q.T
        A = (A + A.T) / 2
    elif kind == "wilkinson":
        D = 21
        A = torch.diag(torch.arange(10, -11, -1, dtype=torch.float64).abs()) + torch.diag(
            torch.ones(D - 1, dtype=torch.float64), 1) + torch.diag(torch.ones(D - 1, dtype=torch.float64), -1)
    else:
        A = torch.ones(D, D, dtype=torch.float64)
    w, V = check_decomposition(A)
    if kind == "zero":
        assert torch.equal(w, torch.zeros(D, dtype=torch.float64))


def test_not_finite_and_not_converged(gen):
    """inf or NaN in the matrix, or too few sweeps allowed: converged is false (gaussian_w2 then
    runs LAPACK); with enough sweeps the same matrix converges."""
    A = random_symmetric(gen, 40)
    for bad in (float("inf"), float("nan")):
        B = A.clone()
        B[3, 5] = B[5, 3] = bad
        assert not bool(eigen(B, 60)[2])
    assert not bool(eigen(A, 1)[2])
    assert bool(eigen(A, 60)[2])


def test_bad_input():
    with pytest.raises(ValueError, match="`matrix` must be square"):
        eigen(torch.zeros(3, 4, dtype=torch.float64), 60)
    with pytest.raises(ValueError, match="`matrix` must be float64"):
        eigen(torch.zeros(3, 3), 60)
    with pytest.raises(ValueError, match="`max_sweeps` must be >= 1"):
        eigen(torch.zeros(3, 3, dtype=torch.float64), 0)


def test_isa_variants_agree():
    """The eigensolver is compiled per instruction set (with the micro-kernels): the portable,
    AVX2 and AVX-512 builds give the same eigenvalues and (up to sign) eigenvectors."""
    code = """
import sys, torch, dale_ext
g = torch.Generator().manual_seed(5)
x = torch.randn(300, 128, generator=g, dtype=torch.float64)
A = x.T @ x / 300
out = torch.ops.dale_ext._symmetric_eigen.default(A, 60)
torch.save((out, dale_ext.build_info()["cpu_kernels"]), sys.argv[1])
"""
    outs = results_under_each_cpu_isa(code)
    assert outs[0][1] == "baseline"
    (w0, V0, ok0), _ = outs[0]
    for (w, V, ok), isa in outs[1:]:
        assert bool(ok) and bool(ok0)
        torch.testing.assert_close(w, w0, rtol=0, atol=1e-12, msg=isa)
        torch.testing.assert_close((V * V0).sum(0).abs(), torch.ones(128, dtype=torch.float64), rtol=0, atol=1e-9,
                                   msg=isa)


def test_loss_same_with_lapack_eigensolver():
    """wasserstein_loss and its gradients with the package's eigensolver equal those with LAPACK's
    dsyevd (DALE_EXT_EIGENSOLVER=lapack, read once per process: subprocesses), at the benchmark's
    (4, 128, 32, 32, 9) scale and with rank-deficient classes."""
    code = """
import os, sys, torch, dale_ext
g = torch.Generator().manual_seed(11)
out = []
for B, D, H, C in ((4, 128, 32, 9), (1, 64, 8, 3)):
    x = torch.randn(B, D, H, H, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randn(B, D, H, H, generator=g, dtype=torch.float64).requires_grad_()
    lx = torch.randint(0, C, (B, H, H), generator=g)
    lt = torch.randint(0, C, (B, H, H), generator=g)
    loss = dale_ext.wasserstein_loss(x, lx, t, lt, C, perturbation=0.01)
    loss.backward()
    out.append((loss.detach(), x.grad, t.grad))
torch.save(out, sys.argv[1])
"""
    import os
    import subprocess
    import sys
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for solver in ("package", "lapack"):
            path = os.path.join(tmp, f"{solver}.pt")
            env = dict(os.environ)
            env.pop("DALE_EXT_EIGENSOLVER", None)
            if solver == "lapack":
                env["DALE_EXT_EIGENSOLVER"] = "lapack"
            subprocess.run([sys.executable, "-c", code, path], check=True, env=env)
            results.append(torch.load(path))
    # the rank-deficient classes' gradients go through M^{-1/2} on eigenvalues at the ridge's
    # level (~1e-5 |M|): rounding differences between the solvers grow to ~1e-10 of the largest
    for (la, xa, ta), (lb, xb, tb) in zip(*results):
        torch.testing.assert_close(la, lb, rtol=1e-10, atol=0)
        torch.testing.assert_close(xa, xb, rtol=1e-6, atol=1e-8 * float(xb.abs().max()))
        torch.testing.assert_close(ta, tb, rtol=1e-6, atol=1e-8 * float(tb.abs().max()))


def test_tiny_entries_under_unit_scale(gen):
    """Regressions from review: (1) a row whose entries are ~1e-160 under |A|max ~ 1 (their
    squares subnormal) once gave a non-orthogonal reflector (|V^T V - I| ~ 1e-5) reported as
    converged; (2) a divide-and-conquer half at 1e-150 / 1e-162 ran its QL at its own scale
    (non-orthogonal rotations, or no convergence). Both now decompose to full accuracy."""
    A = torch.tensor([[1, 3e-160, 4e-160], [3e-160, 1, 0.5], [4e-160, 0.5, 2]], dtype=torch.float64)
    check_decomposition(A)
    D, k = 64, 32
    for s in (1e-150, 1e-162):
        d = torch.randn(D, generator=gen, dtype=torch.float64)
        e = torch.randn(D - 1, generator=gen, dtype=torch.float64)
        d[:k] *= s
        e[:k - 1] *= s
        e[k - 1] = s
        check_decomposition(torch.diag(d) + torch.diag(e, 1) + torch.diag(e, -1))


@pytest.mark.parametrize("D", [51, 72, 132, 200])
def test_constant_matrix_converges_or_says_so(D):
    """c 11^T: the solver may give up (gaussian_w2 then runs LAPACK) but never returns a wrong
    decomposition as converged (review: |V^T V - I| = 0.44 at D = 132 before the reflector fix)."""
    A = torch.full((D, D), 0.3, dtype=torch.float64)
    w, V, ok = eigen(A, 60)
    if bool(ok):
        check_decomposition(A)
