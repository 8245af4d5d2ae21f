"""Pure-PyTorch per-class Gaussians, Gaussian 2-Wasserstein (Bures) distance and the DALE
alignment loss (paper Eqs. 12-14): the test oracle's companion, the benchmark baseline and the
fallback for devices without a compiled kernel.

Two plain-PyTorch ways of computing the statistics are offered (``method``): ``"gather"``
(per-class boolean gather + GEMM) and ``"onehot"`` (one-hot einsum); both are vectorised over
pixels (the loop in ``gather`` is over classes). ``gaussian_w2`` uses ``eigh`` with a closed-form,
stable backward (no eigenvector-derivative terms), as in :mod:`dale_ext.ops.wasserstein`.
"""
from __future__ import annotations

import torch

from dale_ext.ops.wasserstein import ClassGaussians, _check_statistics_inputs, _check_w2_inputs, _FirstOrderOnly


def _flatten(features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None):
    """(B, D, H, W)/(N, D) -> (N, D) features, (N,) labels and weights."""
    if features.dim() == 4:
        D = features.shape[1]
        x = features.permute(0, 2, 3, 1).reshape(-1, D)
    else:
        x = features
    lab = labels.reshape(-1)
    if lab.dtype in (torch.uint16, torch.uint32, torch.uint64):  # few ops exist for these
        lab = lab.long()
    w = None if weights is None else weights.reshape(-1)
    return x, lab, w


def class_gaussians(features, labels, num_classes, *, weights=None, ignore_index=-100,
                    method: str = "gather", dtype: torch.dtype | None = None) -> ClassGaussians:
    """Weighted per-class count, mean and (biased) covariance; see ``dale_ext.class_gaussians``.

    ``dtype`` sets the arithmetic precision (default: float32, or float64 for float64 input)."""
    _check_statistics_inputs(features, labels, num_classes, weights, ignore_index, "class_gaussians")
    C = int(num_classes)
    x, lab, w = _flatten(features, labels, weights)
    dtype = dtype or (torch.float64 if x.dtype == torch.float64 else torch.float32)
    x = x.to(dtype)
    valid = (lab >= 0) & (lab < C) & (lab != ignore_index)
    w = valid.to(dtype) if w is None else w.to(dtype) * valid
    # pixels that do not count get the label C: no class selects them, so their features (which
    # may be NaN) never enter a product, not even with a zero weight
    lab = torch.where(valid, lab, C)
    if method == "onehot":
        x = torch.where(valid[:, None], x, 0)
        onehot = torch.nn.functional.one_hot(lab, C + 1)[:, :C].to(dtype) * w[:, None]     # (N, C)
        counts = onehot.sum(0)
        safe = torch.where(counts > 0, counts, 1)
        means = (onehot.t() @ x) / safe[:, None] * (counts > 0)[:, None]
        xc = x - means[lab.clamp(max=C - 1)]               # own-class centring (rows of uncounted pixels are 0)
        covs = torch.einsum("nc,nd,ne->cde", onehot, xc, xc) / safe[:, None, None]
        return ClassGaussians(counts, means, covs)
    if method != "gather":
        raise ValueError(f"class_gaussians: `method` must be 'gather' or 'onehot'; got {method!r}")
    D = x.shape[1]
    counts, means, covs = [], [], []
    for c in range(C):
        sel = lab == c
        xc, wc = x[sel], w[sel]
        n = wc.sum()
        if n > 0:
            mu = (wc @ xc) / n
            z = xc - mu
            cov = (z * wc[:, None]).t() @ z / n
        else:  # zeros on the graph of the features and weights (not of their values, which may be NaN):
            empty = x[:0]  # a loss whose classes are all skipped must still backpropagate (zeros)
            mu, cov = empty.sum(0) + 0 * n, empty.t() @ empty + 0 * n
        counts.append(n)
        means.append(mu)
        covs.append(cov)
    return ClassGaussians(torch.stack(counts), torch.stack(means), torch.stack(covs))


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _eig_fn(vals: torch.Tensor, vecs: torch.Tensor, f) -> torch.Tensor:
    return (vecs * f(vals).unsqueeze(-2)) @ vecs.transpose(-1, -2)


def _pinv_sqrt(vals: torch.Tensor) -> torch.Tensor:
    """1/sqrt(v) on the numerical range, 0 on the null space (as a pseudo-inverse)."""
    tol = vals.amax(-1, keepdim=True).clamp(min=0) * vals.shape[-1] * torch.finfo(vals.dtype).eps
    ok = vals > tol
    return torch.where(ok, torch.where(ok, vals, 1.0).rsqrt(), 0.0)


class _GaussianW2(torch.autograd.Function):
    """W^2 in float64 via eigh; backward in closed form:
    dW2/dS2 = I - S1^{1/2} M^{-1/2} S1^{1/2}, dW2/dS1 = I - S1^{-1/2} M^{1/2} S1^{-1/2},
    M = S1^{1/2} S2 S1^{1/2} (pseudo-inverses on null spaces)."""

    @staticmethod
    def forward(ctx, m1, s1, m2, s2):
        out_dtype = s1.dtype
        cov1, cov2 = s1, s2  # the inputs, saved for the second-derivative guard
        m1, s1, m2, s2 = (t.double() for t in (m1, s1, m2, s2))
        s1, s2 = _sym(s1), _sym(s2)
        l1, v1 = torch.linalg.eigh(s1)
        l1 = l1.clamp(min=0)
        a_half = _eig_fn(l1, v1, torch.sqrt)
        M = _sym(a_half @ s2 @ a_half)
        lm, vm = torch.linalg.eigh(M)
        lm = lm.clamp(min=0)
        diff = m1 - m2
        w2 = (diff * diff).sum(-1) + torch.diagonal(s1 + s2, dim1=-2, dim2=-1).sum(-1) - 2 * lm.sqrt().sum(-1)
        ctx.save_for_backward(diff, l1, v1, a_half, lm, vm, cov1, cov2)
        ctx.out_dtype = out_dtype
        return w2.clamp(min=0).to(out_dtype)

    @staticmethod
    def backward(ctx, g):
        diff, l1, v1, a_half, lm, vm, s1, s2 = ctx.saved_tensors
        # closed form from saved eigendecompositions: a second derivative would miss their
        # dependence on the covariances, so differentiating these again raises
        guard = (lambda t, s: _FirstOrderOnly.apply(t, s)) if torch.is_grad_enabled() else (lambda t, s: t)  # noqa: E731
        g = g.double()
        eye = torch.eye(diff.shape[-1], dtype=torch.float64, device=diff.device)
        gm = g[..., None] * 2 * diff
        g1 = g2 = None
        if ctx.needs_input_grad[3]:
            t2 = a_half @ _eig_fn(lm, vm, _pinv_sqrt) @ a_half
            g2 = g[..., None, None] * guard(eye - _sym(t2), s2)
        if ctx.needs_input_grad[1]:
            a_ihalf = _eig_fn(l1, v1, _pinv_sqrt)
            t1 = a_ihalf @ _eig_fn(lm, vm, torch.sqrt) @ a_ihalf
            g1 = g[..., None, None] * guard(eye - _sym(t1), s1)
        cast = lambda t: None if t is None else t.to(ctx.out_dtype)  # noqa: E731
        return cast(gm), cast(g1), cast(-gm), cast(g2)


def gaussian_w2(mean1, cov1, mean2, cov2) -> torch.Tensor:
    """Squared 2-Wasserstein distance between N(mean1, cov1) and N(mean2, cov2), batched over
    leading dims; see ``dale_ext.gaussian_w2``."""
    _check_w2_inputs(mean1, cov1, mean2, cov2)
    return _GaussianW2.apply(mean1, cov1, mean2, cov2)


def wasserstein_loss(input, input_labels, target, target_labels, num_classes, *, input_weights=None,
                     target_weights=None, perturbation=0.0, eps=1e-5, min_count=2.0, ignore_index=-100,
                     reduction="sum", method: str = "gather") -> torch.Tensor:
    """Plain-PyTorch ``dale_ext.wasserstein_loss`` (same arguments and result)."""
    from dale_ext.ops.wasserstein import _check_loss_args, _reduce, _regularised

    _check_loss_args(input, target, num_classes, perturbation, eps, min_count, reduction)
    si = class_gaussians(input, input_labels, num_classes, weights=input_weights,
                         ignore_index=ignore_index, method=method)
    st = class_gaussians(target, target_labels, num_classes, weights=target_weights,
                         ignore_index=ignore_index, method=method)
    cov_t, cov_in = _regularised(st.covs, si.covs, perturbation, eps)
    w2 = gaussian_w2(st.means, cov_t, si.means, cov_in)
    valid = (si.counts >= min_count) & (st.counts >= min_count)
    return _reduce(w2, valid, reduction)
