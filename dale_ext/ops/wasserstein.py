"""The Gaussian Wasserstein alignment loss of DALE (paper Eqs. 12-14) and its two building
blocks, with autograd through every argument that can carry a gradient.

* :func:`class_gaussians` -- weighted per-class count, mean and biased covariance of pixel
  features, read in place from NCHW (or (N, D)) without one-hot or permute copies; float64
  accumulation; a class with zero count gets zero mean and covariance.
* :func:`gaussian_w2` -- squared 2-Wasserstein (Bures) distance between Gaussians, batched, in
  float64, with closed-form matrix gradients (no eigenvector derivatives, so no NaN on repeated
  eigenvalues). W^2, not W: the square root's gradient is infinite at 0.
* :func:`wasserstein_loss` -- Eq. 14: per class W^2(N(mu_t, Sigma_t + perturbation 11^T + eps I),
  N(mu_in, Sigma_in + eps I)), summed over classes whose count is at least ``min_count`` on both
  sides (others give exactly 0 and no gradient).

Design notes (why, for successors):
* The statistics op returns float64; the public ``class_gaussians`` casts to float32 (float64 for
  float64 features), while ``wasserstein_loss`` keeps float64 into the matrix functions: the
  trace terms cancel, and float32 covariances lose digits there.
* The backward of the statistics is a single pass over the features,
  dL/dx = w (2/n Gs (x - mu) + g_mu / n), shared by ``class_gaussians`` and the loss.
* The matrix part (``_gaussian_w2``) uses one Cholesky + one eigh when Sigma_1 is well conditioned
  (M = L^T Sigma_2 L has the eigenvalues of Sigma_1^{1/2} Sigma_2 Sigma_1^{1/2}), and eigh twice
  with pseudo-inverse square roots otherwise; on the CPU one class per task, the choice per class.
* On CUDA, ``wasserstein_loss`` runs the matrix part on the host by default (cuSOLVER's eigh takes
  one small matrix at a time; measured slower on an H200, see ``matrix_device``), and reads the
  statistics' checks (weights, finiteness) in the same single copy to the host, so a forward waits
  for the device once and the backward not at all. With the matrix part on the host (CPU features
  too) the loss is one autograd node, ``_LossWithHostMatrix``: a step was bound by the host
  thread's launches on an H200 machine (~128 a step before, 19 now; docs/design.md).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from dale_ext import _extension  # noqa: F401  (registers torch.ops.dale_ext)
from dale_ext.ops._common import device, integer, real, tensor, use_reference

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_REDUCTIONS = ("sum", "mean", "none")
_CUDA_MAX_D = 256  # csrc/cuda/wasserstein_kernel.cu: kMaxD
# wasserstein_loss on CUDA features runs the per-class D x D part on the host up to this D: there
# it was faster on an H200 (16 host cores) at D = 64 (2 classes) and D = 128 (9 classes), where
# cuSOLVER's eigh works one small matrix at a time (benchmarks/results/gpu/, 097852f); larger D
# was not measured.
_HOST_MATRIX_MAX_D = 128


class ClassGaussians(NamedTuple):
    """Per-class statistics: ``counts`` (C,), ``means`` (C, D), ``covs`` (C, D, D)."""

    counts: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor


# ---------------------------------------------------------------- checks (shared with the reference)
def _check_statistics_inputs(features, labels, num_classes, weights, ignore_index, op):
    tensor(features, "features", op)
    tensor(labels, "labels", op)
    if features.dim() not in (2, 4):
        raise ValueError(f"{op}: `features` must be (B, D, H, W) or (N, D); got shape {list(features.shape)}")
    if features.dtype not in _FLOATS:
        raise TypeError(f"{op}: `features` must be float32, float64, float16 or bfloat16; got {features.dtype}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise TypeError(f"{op}: `labels` must be an integer class map; got {labels.dtype}")
    want = (features.shape[0], *features.shape[2:]) if features.dim() == 4 else (features.shape[0],)
    if tuple(labels.shape) != tuple(want):
        raise ValueError(f"{op}: `labels` must have shape {list(want)} for features of shape "
                         f"{list(features.shape)}; got {list(labels.shape)}")
    if labels.device != features.device:
        raise ValueError(f"{op}: `labels` must be on the device of `features` ({features.device}); got {labels.device}")
    if integer(num_classes, "num_classes", op) < 1:
        raise ValueError(f"{op}: `num_classes` must be >= 1; got {num_classes}")
    integer(ignore_index, "ignore_index", op)
    if weights is not None:
        tensor(weights, "weights", op)
        if weights.dtype not in _FLOATS:
            raise TypeError(f"{op}: `weights` must be a floating tensor; got {weights.dtype}")
        if weights.shape != labels.shape:
            raise ValueError(f"{op}: `weights` must have the shape of `labels` {list(labels.shape)}; "
                             f"got {list(weights.shape)}")
        if weights.device != features.device:
            raise ValueError(f"{op}: `weights` must be on the device of `features` ({features.device}); "
                             f"got {weights.device}")


def _check_w2_inputs(mean1, cov1, mean2, cov2):
    op = "gaussian_w2"
    for name, t in (("mean1", mean1), ("cov1", cov1), ("mean2", mean2), ("cov2", cov2)):
        tensor(t, name, op)
        if t.dtype not in _FLOATS:
            raise TypeError(f"{op}: `{name}` must be a floating tensor; got {t.dtype}")
        if t.device != cov1.device:
            raise ValueError(f"{op}: `{name}` must be on the device of `cov1` ({cov1.device}); got {t.device}")
    if cov1.dim() < 2 or cov1.shape[-1] != cov1.shape[-2]:
        raise ValueError(f"{op}: `cov1` must be (..., D, D); got shape {list(cov1.shape)}")
    if cov2.shape != cov1.shape:
        raise ValueError(f"{op}: `cov2` must have the shape of `cov1` {list(cov1.shape)}; got {list(cov2.shape)}")
    want = tuple(cov1.shape[:-1])
    for name, t in (("mean1", mean1), ("mean2", mean2)):
        if tuple(t.shape) != want:
            raise ValueError(f"{op}: `{name}` must have shape {list(want)}; got {list(t.shape)}")


def _check_loss_args(input, target, num_classes, perturbation, eps, min_count, reduction):
    op = "wasserstein_loss"
    tensor(input, "input", op)
    tensor(target, "target", op)
    if input.dim() != target.dim() or (input.dim() >= 2 and input.shape[1] != target.shape[1]):
        raise ValueError(f"{op}: `input` {list(input.shape)} and `target` {list(target.shape)} must both be "
                         "(B, D, H, W) or (N, D) with the same D")
    if input.device != target.device:
        raise ValueError(f"{op}: `input` and `target` must be on one device; got {input.device} and {target.device}")
    for name, v, lo in (("perturbation", perturbation, 0.0), ("eps", eps, 0.0), ("min_count", min_count, 0.0)):
        v = real(v, name, op)
        if not v >= lo or v != v or v == float("inf"):
            raise ValueError(f"{op}: `{name}` must be a finite number >= {lo}; got {v}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: `reduction` must be one of {_REDUCTIONS}; got {reduction!r}")


# ---------------------------------------------------------------- distributed statistics
class _SumGradAcrossRanks(torch.autograd.Function):
    """Identity forward; backward sums the incoming gradient over the ranks of ``group``, as
    SyncBatchNorm does: every rank's loss may use the global statistics, so the gradient reaching
    a rank's features is that of the sum of all ranks' losses (DDP then averages over ranks)."""

    @staticmethod
    def forward(ctx, group, *tensors):
        ctx.group = group
        out = tuple(t.view_as(t) for t in tensors)
        return out if len(out) > 1 else out[0]

    @staticmethod
    def backward(ctx, *grads):  # grads are materialised (zeros where unused): every rank reduces all
        return (None, *_all_reduce_sum([g.contiguous() for g in grads], ctx.group))


def _all_reduce_sum(tensors, group):
    """The sums over ranks of same-dtype ``tensors``, in one all-reduce (fresh tensors)."""
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def _global_statistics(local: ClassGaussians, group) -> ClassGaussians:
    """Merge per-rank (count, mean, covariance) into the statistics of all ranks' pixels
    (float64, two all-reduces forward, one backward): n = sum n_r, mu = sum n_r mu_r / n,
    Sigma = sum n_r (Sigma_r + (mu_r - mu)(mu_r - mu)^T) / n (Chan's merge, no cancellation).
    Differentiable w.r.t. the local statistics; other ranks' contributions are constants here and
    the dependence of their terms on mu vanishes (sum n_r (mu_r - mu) = 0), so mu is detached in
    the second moment."""
    n, mu, cov = local

    def all_sum(*ts):  # values: the sums over ranks; gradients: to the local tensors
        return [t + (total - t.detach()) for t, total in zip(ts, _all_reduce_sum(ts, group))]

    n_g, nmu_g = all_sum(n, n[:, None] * mu)
    pos = n_g > 0
    safe = torch.where(pos, n_g, torch.ones_like(n_g))
    mu_g = torch.where(pos[:, None], nmu_g / safe[:, None], torch.zeros_like(mu))
    d = mu - mu_g.detach()
    (m2,) = all_sum(n[:, None, None] * (cov + d[:, :, None] * d[:, None, :]))
    cov_g = torch.where(pos[:, None, None], m2 / safe[:, None, None], torch.zeros_like(cov))
    return ClassGaussians(*_SumGradAcrossRanks.apply(group, n_g, mu_g, cov_g))


def _check_group(process_group, op):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"{op}: `process_group` was given but torch.distributed is not initialised")
    return None if process_group is True else process_group


# ---------------------------------------------------------------- class_gaussians
# what each flag of the statistics' status (csrc/wasserstein.cpp: _class_gaussians_with_status) means
_STATUS_ERRORS = ("`weights` must be >= 0 and not NaN", "`features` (or `weights`) contain NaN or infinity")


def _raise_for_status(flags, op):
    for bad, message in zip(flags, _STATUS_ERRORS):
        if bad:
            raise ValueError(f"{op}: {message}")


def _raise_for_loss_status(flags):
    """The loss's (4,) flags: the input side's two, then the target side's."""
    _raise_for_status(flags[:2], "wasserstein_loss (input)")
    _raise_for_status(flags[2:], "wasserstein_loss (target)")


def _class_gaussians64(features, labels, num_classes, weights, ignore_index, deferred=False):
    """float64 statistics from the compiled op (or the reference where no kernel exists).
    ``deferred``: return ``(statistics, status)`` without reading the status (on a GPU that read
    waits for the device); the caller must pass it to ``_raise_for_status``."""
    if use_reference("class_gaussians", features.device) or (features.is_cuda and features.shape[1] > _CUDA_MAX_D):
        from dale_ext.reference.wasserstein import class_gaussians as reference

        out = reference(features, labels, num_classes, weights=weights, ignore_index=ignore_index,
                        dtype=torch.float64)
        # the checks the compiled op makes; like it, only at the pixels that count
        counted = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
        bad_weight = (~((weights >= 0) | ~counted).all() if weights is not None
                      else torch.zeros((), dtype=torch.bool, device=features.device))
        status = torch.stack([bad_weight, ~(torch.isfinite(out.means).all() & torch.isfinite(out.covs).all())])
    elif deferred:
        *out, status = torch.ops.dale_ext._class_gaussians_with_status.default(
            features, labels, int(num_classes), weights, int(ignore_index))
        out = ClassGaussians(*out)
    else:
        return ClassGaussians(*torch.ops.dale_ext.class_gaussians.default(
            features, labels, int(num_classes), weights, int(ignore_index)))
    if deferred:
        return out, status
    _raise_for_status(status.tolist(), "class_gaussians")
    return out


def class_gaussians(features, labels, num_classes, *, weights=None, ignore_index=-100,
                    process_group=None) -> ClassGaussians:
    """Weighted per-class count, mean and biased covariance of pixel features.

    Args:
        features: (B, D, H, W) or (N, D), float32/float64/float16/bfloat16.
        labels: (B, H, W) or (N,) integer class map. Pixels whose label is ``ignore_index`` or
            outside [0, num_classes) do not count.
        num_classes: C.
        weights: optional, shape of ``labels``, >= 0 (e.g. the clean-pixel mask of Eq. 12, or a
            soft mask).
    Returns:
        ``ClassGaussians(counts, means, covs)``: ``counts_c = sum w``, ``means_c = sum w x / counts_c``,
        ``covs_c = sum w (x - mu_c)(x - mu_c)^T / counts_c`` (weighted, biased, as POT's empirical
        estimator); zeros for a class with zero count. float32 (float64 for float64 features).
        Differentiable w.r.t. ``features`` and ``weights``.

    With ``process_group`` (a torch.distributed group, or ``True`` for the default group) the
    statistics are those of all ranks' pixels together; the backward gives each rank the
    gradient of the sum of all ranks' losses w.r.t. its own features (as SyncBatchNorm).
    """
    _check_statistics_inputs(features, labels, num_classes, weights, ignore_index, "class_gaussians")
    out = _class_gaussians64(features, labels, num_classes, weights, ignore_index)
    if process_group is not None:
        out = _global_statistics(out, _check_group(process_group, "class_gaussians"))
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    return ClassGaussians(*(t.to(dtype) for t in out))


@torch.library.register_fake("dale_ext::class_gaussians")
def _class_gaussians_fake(features, labels, num_classes, weights, ignore_index):
    D = features.shape[1]
    f64 = dict(dtype=torch.float64, device=features.device)
    return (features.new_empty((num_classes,), **f64), features.new_empty((num_classes, D), **f64),
            features.new_empty((num_classes, D, D), **f64))


@torch.library.register_fake("dale_ext::_class_gaussians_backward")
def _class_gaussians_backward_fake(grad_counts, grad_means, grad_covs, features, labels, weights, counts, means,
                                   covs, num_classes, ignore_index, features_grad, weights_grad):
    gx = features.new_empty(features.shape) if features_grad else features.new_empty((0,))  # contiguous, as the kernels
    gw = torch.empty_like(weights) if weights_grad and weights is not None else features.new_empty((0,))
    return gx, gw


def _class_gaussians_setup(ctx, inputs, output):
    features, labels, num_classes, weights, ignore_index = inputs
    ctx.num_classes, ctx.ignore_index = num_classes, ignore_index
    ctx.has_weights = weights is not None
    ctx.save_for_backward(features, labels, weights, *output)


def _class_gaussians_backward(ctx, grad_counts, grad_means, grad_covs, grad_status=None):
    features, labels, weights, counts, means, covs = ctx.saved_tensors
    fx = ctx.needs_input_grad[0]
    fw = ctx.has_weights and ctx.needs_input_grad[3]
    if not (fx or fw):
        return None, None, None, None, None
    zeros = lambda g, ref: torch.zeros_like(ref) if g is None else g  # noqa: E731
    gx, gw = torch.ops.dale_ext._class_gaussians_backward.default(
        zeros(grad_counts, counts), zeros(grad_means, means), zeros(grad_covs, covs), features, labels, weights,
        counts, means, covs, ctx.num_classes, ctx.ignore_index, fx, fw)
    return (gx if fx else None), None, None, (gw if fw else None), None


torch.library.register_autograd("dale_ext::class_gaussians", _class_gaussians_backward,
                                setup_context=_class_gaussians_setup)


@torch.library.register_fake("dale_ext::_class_gaussians_with_status")
def _class_gaussians_with_status_fake(features, labels, num_classes, weights, ignore_index):
    status = features.new_empty((2,), dtype=torch.bool)
    return (*_class_gaussians_fake(features, labels, num_classes, weights, ignore_index), status)


def _class_gaussians_with_status_setup(ctx, inputs, output):
    _class_gaussians_setup(ctx, inputs, output[:3])
    ctx.mark_non_differentiable(output[3])


torch.library.register_autograd("dale_ext::_class_gaussians_with_status", _class_gaussians_backward,
                                setup_context=_class_gaussians_with_status_setup)

_NO_DOUBLE_BACKWARD = ("dale_ext: second derivatives through class_gaussians, gaussian_w2 and wasserstein_loss are "
                       "not implemented (their backward is a fused kernel and closed-form matrix gradients); "
                       "dale_ext.reference.class_gaussians is plain PyTorch and differentiable twice, the W^2 "
                       "matrix functions are not")


def _no_double_backward(ctx, *grads):
    raise RuntimeError(_NO_DOUBLE_BACKWARD)


# A backward taken with create_graph=True records this op; differentiating it again must fail
# loudly, not give silent zeros.
torch.library.register_autograd("dale_ext::_class_gaussians_backward", _no_double_backward,
                                setup_context=lambda ctx, inputs, output: None)


# ---------------------------------------------------------------- gaussian_w2
def gaussian_w2(mean1, cov1, mean2, cov2) -> torch.Tensor:
    """Squared 2-Wasserstein (Bures) distance between N(mean1, cov1) and N(mean2, cov2):
    ``|mean1 - mean2|^2 + tr(cov1 + cov2 - 2 (cov1^{1/2} cov2 cov1^{1/2})^{1/2})``.

    Batched over leading dims (means (..., D), covariances (..., D, D), symmetric positive
    semi-definite); computed in float64 and returned in ``cov1``'s dtype. Differentiable w.r.t.
    all four, with closed-form gradients; on singular covariances the inverse square roots are
    pseudo-inverses (the distance is not differentiable there), so results stay finite.
    NaN or infinite inputs raise ``ValueError`` (checked outside ``torch.compile`` tracing; on
    CUDA the check waits for the inputs).
    """
    _check_w2_inputs(mean1, cov1, mean2, cov2)
    if not torch.compiler.is_compiling():
        named = (("mean1", mean1), ("cov1", cov1), ("mean2", mean2), ("cov2", cov2))
        finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()  # one device sync
        for (name, _), ok in zip(named, finite):
            if not ok:
                raise ValueError(f"gaussian_w2: `{name}` contains NaN or infinity")
    return _gaussian_w2(mean1, cov1, mean2, cov2)


def _gaussian_w2(mean1, cov1, mean2, cov2) -> torch.Tensor:
    """gaussian_w2 without the checks (the loss's statistics are checked finite by their op)."""
    grad = torch.is_grad_enabled()
    w2, _, _ = torch.ops.dale_ext._gaussian_w2.default(mean1, cov1, mean2, cov2, grad and cov1.requires_grad,
                                                        grad and cov2.requires_grad)
    return w2


@torch.library.register_fake("dale_ext::_w2_loss_host")
def _w2_loss_host_fake(n_in, mu_in, cov_in, n_t, mu_t, cov_t, perturbation, eps, min_count, reduction, need_in,
                       need_t):
    C, D = mu_in.shape
    f64 = dict(dtype=torch.float64, device=cov_in.device)
    loss = cov_in.new_empty((C,) if reduction == "none" else (), **f64)
    g = lambda flag: cov_in.new_empty((C, D, D) if flag else (0, D, D), **f64)  # noqa: E731
    return (loss, cov_in.new_empty((C,), dtype=torch.bool), cov_in.new_empty((C if need_in or need_t else 0, D), **f64),
            g(need_in), g(need_t))


@torch.library.register_fake("dale_ext::_gaussian_w2")
def _gaussian_w2_fake(mean1, cov1, mean2, cov2, cov1_grad, cov2_grad):
    g = lambda flag: torch.empty_like(cov1) if flag else cov1.new_empty((0,))  # noqa: E731
    return cov1.new_empty(cov1.shape[:-2]), g(cov1_grad), g(cov2_grad)


class _FirstOrderOnly(torch.autograd.Function):
    """``g`` (the closed-form covariance gradient of gaussian_w2), tied to the covariance ``cov``
    it was computed from: with create_graph=True it would otherwise enter the graph as a
    constant, and a second derivative would silently miss its dependence on ``cov``. Any
    gradient reaching it raises."""

    @staticmethod
    def forward(ctx, g, cov):
        return g.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)


def _w2_setup(ctx, inputs, output):
    mean1, cov1, mean2, cov2, _, _ = inputs
    _, g1, g2 = output
    ctx.mark_non_differentiable(g1, g2)
    ctx.save_for_backward(mean1, mean2, g1, g2, cov1, cov2)


def _w2_backward(ctx, grad, _g1, _g2):
    mean1, mean2, g1, g2, cov1, cov2 = ctx.saved_tensors
    need = ctx.needs_input_grad
    gm = (2 * grad)[..., None] * (mean1 - mean2).to(grad.dtype)
    out = [None] * 6
    if need[0]:
        out[0] = gm.to(mean1.dtype)
    if need[2]:
        out[2] = (-gm).to(mean2.dtype)
    for i, g, cov in ((1, g1, cov1), (3, g2, cov2)):
        if need[i]:
            if g.dim() < 2:  # the (0,) placeholder, not an empty batch's (0, D, D)
                raise RuntimeError("gaussian_w2: the covariance gradient was not prepared in the forward pass; "
                                   "call the op through dale_ext.gaussian_w2")
            if torch.is_grad_enabled():  # create_graph=True: the covariances' second derivative is missing
                g = _FirstOrderOnly.apply(g, cov)
            out[i] = grad[..., None, None].to(g.dtype) * g
    return tuple(out)


torch.library.register_autograd("dale_ext::_gaussian_w2", _w2_backward, setup_context=_w2_setup)


# ---------------------------------------------------------------- wasserstein_loss
def _regularised(cov_target, cov_input, perturbation, eps):
    """Eq. 13 and the ridge: Sigma_t + perturbation 11^T + eps I, Sigma_in + eps I."""
    # one new tensor per side, the ridge added to its diagonal in place (the same values as adding
    # eps I: off the diagonal that adds exact zeros); C x D x D temporaries cost ~0.1 ms each
    t = cov_target + perturbation
    t.diagonal(dim1=-2, dim2=-1).add_(eps)
    i = cov_input.clone()
    i.diagonal(dim1=-2, dim2=-1).add_(eps)
    return t, i


def _reduce(w2, valid, reduction):
    per_class = torch.where(valid, w2, torch.zeros_like(w2))
    if reduction == "none":
        return per_class
    if reduction == "sum":
        return per_class.sum()
    return per_class.sum() / valid.sum().clamp(min=1).to(per_class.dtype)


def _moved(tensors, device):
    """``tensors`` (one dtype) on ``device`` through one copy, so one host sync from a GPU rather
    than one per tensor; differentiable (cat, copy and split all are). A part whose source needs no
    gradient is detached: after the cat every part would otherwise require one, and the matrix
    part would compute a covariance gradient (for a detached target, say) only to drop it."""
    if all(t.device == device or (device.index is None and t.device.type == device.type) for t in tensors):
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(device)
    parts = [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
    return [p if t.requires_grad else p.detach() for p, t in zip(parts, tensors)]


def _to_host(tensors):
    """``tensors`` (on one CUDA device) on the host through one packed copy into pinned memory and
    one wait for the device; the parts are views of one float64 buffer (a bool part is promoted)."""
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(torch.float64)
    host = torch.empty(flat.shape, dtype=torch.float64, pin_memory=True)
    host.copy_(flat, non_blocking=True)
    torch.cuda.current_stream(flat.device).synchronize()
    return [part.view(t.shape) for part, t in zip(host.split([t.numel() for t in tensors]), tensors)]


def _to_device(tensor, dev):
    """A host tensor on ``dev`` without waiting: pinned, then an asynchronous copy on the stream."""
    if dev.type == "cpu":
        return tensor
    return tensor.pin_memory().to(dev, non_blocking=True)


class _LossWithHostMatrix(torch.autograd.Function):
    """``wasserstein_loss`` from both sides' statistics with the matrix part on the host, as one
    autograd node (the default for CUDA features with D <= 128, and for CPU features). Forward:
    the statistics and their status flags come to the host in one copy (one wait for the device);
    there the flags are read, the covariances regularised, W^2 computed with its closed-form
    covariance gradients, the classes masked and reduced; the loss goes back to the device
    without a wait. The gradients w.r.t. the means and covariances are those of the loss for an
    incoming gradient of 1, computed in the forward (host work is cheap; device launches and
    waits were what cost, ~130 launches a step on an H200 machine at 0003555); the backward sends
    them in one copy and scales them there by the incoming gradient, without a wait.

    Inputs: the input side's counts, means, covs, the target side's, the (4,) status of both, and
    ``opts`` = (perturbation, eps, min_count, reduction, out_dtype)."""

    @staticmethod
    def forward(ctx, n_in, mu_in, cov_in, n_t, mu_t, cov_t, status, opts):
        perturbation, eps, min_count, reduction, out_dtype = opts
        dev = cov_in.device
        parts = (n_in, mu_in, cov_in, n_t, mu_t, cov_t, status)
        if dev.type == "cpu":
            n_in, mu_in, cov_in, n_t, mu_t, cov_t, status = parts
        else:
            n_in, mu_in, cov_in, n_t, mu_t, cov_t, status = _to_host(parts)
        flags = status.tolist()
        _raise_for_loss_status(flags)
        need = ctx.needs_input_grad
        need_in, need_t = need[1] or need[2], need[4] or need[5]
        # regularisation, W^2 of the classes that count, the reduction and the gradients for an
        # incoming gradient of 1: one compiled call (csrc/cpu/gaussian_w2_kernel.cpp); its Python
        # form (_regularised, _gaussian_w2, _reduce, masks) cost ~0.7 ms a loss at 9 classes of 128
        out, valid, gm, g_in, g_t = torch.ops.dale_ext._w2_loss_host.default(
            n_in, mu_in, cov_in, n_t, mu_t, cov_t, perturbation, eps, min_count, reduction, need_in, need_t)
        out = out.to(out_dtype)
        ctx.reduction, ctx.need_in, ctx.need_t = reduction, need_in, need_t
        if need_in or need_t:
            grads = ([-gm, g_in] if need_in else []) + ([gm, g_t] if need_t else [])
            if reduction == "none":  # the backward zeroes the skipped classes' incoming gradients
                grads.insert(0, valid.to(torch.float64))
            ctx.grads = grads  # host tensors; the backward sends them to a device in one copy
            ctx.dev = dev
            ctx.save_for_backward(parts[1], parts[2], parts[4], parts[5])  # for the first-order-only ties
        return _to_device(out, dev)

    @staticmethod
    def backward(ctx, grad):
        out = [None] * 8
        if not (ctx.need_in or ctx.need_t):
            return tuple(out)
        grads = ctx.grads
        if ctx.dev.type != "cpu":
            flat = _to_device(torch.cat([g.reshape(-1) for g in grads]), ctx.dev)
            grads = [part.view(g.shape) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]
        if ctx.reduction == "none":  # one incoming gradient per class; a skipped class's is dropped
            valid, *grads = grads     # (as in the composed loss), so a NaN there cannot reach its pixels
            grad = torch.where(valid > 0, grad.to(valid.dtype), 0.0)
            grads = [g * grad.reshape((-1,) + (1,) * (g.dim() - 1)) for g in grads]
        else:
            grads = [g * grad.to(g.dtype) for g in grads]
        slots = ([1, 2] if ctx.need_in else []) + ([4, 5] if ctx.need_t else [])
        refs = dict(zip((1, 2, 4, 5), ctx.saved_tensors))
        for slot, g in zip(slots, grads):
            # create_graph=True: these gradients depend on the statistics, a dependence this node
            # does not record; differentiating them again must raise, not miss a term
            out[slot] = _FirstOrderOnly.apply(g, refs[slot]) if torch.is_grad_enabled() else g
        return tuple(out)


def wasserstein_loss(input, input_labels, target, target_labels, num_classes, *, input_weights=None,
                     target_weights=None, perturbation=0.0, eps=1e-5, min_count=2.0, ignore_index=-100,
                     reduction="sum", process_group=None, matrix_device=None) -> torch.Tensor:
    """DALE's distribution alignment loss L_W (paper Eq. 14) between per-class Gaussians.

    For every class c: ``W^2(N(mu_t, Sigma_t + perturbation * 11^T + eps I), N(mu_in, Sigma_in + eps I))``
    where (mu_t, Sigma_t) are the weighted statistics of ``target`` (the non-fuzzy features F_n,
    Eq. 13's perturbed covariance) and (mu_in, Sigma_in) those of ``input`` (the clean fuzzy
    features F_f', Eq. 12). Classes whose count is below ``min_count`` on either side contribute
    exactly 0 and no gradient.

    Args:
        input, target: (B, D, H, W) or (N, D) features (same D and device; B, H, W may differ).
        input_labels, target_labels: integer class maps of their features' pixels.
        num_classes: C.
        input_weights, target_weights: optional per-pixel weights >= 0 (e.g. the clean mask).
        perturbation: epsilon of Eq. 13 (>= 0; the trainer draws it from U(0, eps_max)).
        eps: ridge added to both covariances (numerical stability).
        min_count: classes with fewer (weighted) pixels on either side are skipped.
        reduction: "sum" (Eq. 14), "mean" over contributing classes, or "none" -> (C,).
        process_group: a torch.distributed group (or ``True`` for the default group): both sides'
            statistics are then those of all ranks' pixels, and the backward gives each rank the
            gradient of the sum of all ranks' losses w.r.t. its own features (as SyncBatchNorm;
            under DDP, whose gradient averaging then yields the global-batch gradient).
        matrix_device: where the per-class D x D matrix part (Cholesky, eigh, their gradients)
            runs; the statistics always stay on the features' device, and the copies (one each
            way) are part of the autograd graph. None: the host for CUDA features with
            D <= 128, else the features' device. On an H200 with 16 host cores the host was
            faster at every shape measured: W^2 for nine 128 x 128 classes 3.2-3.4 ms (copies
            included) against cuSOLVER's 15-18 ms, for two 64 x 64 classes 0.8-1.2 against
            2.3-2.7 ms (``benchmarks/results/gpu/``). The host runs the classes in parallel over
            torch's intra-op threads; with one thread (torchrun's default OMP_NUM_THREADS=1)
            they run one after another: about 1.4 ms per 128 x 128 class on one core of a
            2-core CPU VM, against cuSOLVER's 1.7-2 ms per class (the one-thread case itself was
            not timed on a GPU machine). Pass the features' device to keep the matrix part there.
    Returns:
        The loss in ``input``'s dtype (float32 for half/bfloat16). Gradients flow into ``input``
        and ``target`` (and the weights); detach ``target`` when it is a fixed reference.
    """
    _check_loss_args(input, target, num_classes, perturbation, eps, min_count, reduction)
    md = None if matrix_device is None else device(matrix_device, "matrix_device", "wasserstein_loss")
    _check_statistics_inputs(input, input_labels, num_classes, input_weights, ignore_index, "wasserstein_loss (input)")
    _check_statistics_inputs(target, target_labels, num_classes, target_weights, ignore_index,
                             "wasserstein_loss (target)")
    # The statistics' checks are read once, with the copy of the matrix part to its device (one
    # host sync a loss on a GPU, not three). Not under torch.compile (the read would break the
    # graph) nor across ranks (a rank must raise before the all-reduce that spreads a NaN).
    deferred = process_group is None and not torch.compiler.is_compiling()
    si = _class_gaussians64(input, input_labels, num_classes, input_weights, ignore_index, deferred)
    st = _class_gaussians64(target, target_labels, num_classes, target_weights, ignore_index, deferred)
    status = None
    if deferred:
        (si, status_in), (st, status_t) = si, st
        status = torch.cat([status_in, status_t])
    if md is None:
        host = input.is_cuda and input.shape[1] <= _HOST_MATRIX_MAX_D
        md = torch.device("cpu") if host else input.device
    out_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    if deferred and md.type == "cpu":  # the default path: one autograd node, one wait for the device
        opts = (float(perturbation), float(eps), float(min_count), reduction, out_dtype)
        return _LossWithHostMatrix.apply(*si, *st, status, opts)
    if process_group is not None:
        group = _check_group(process_group, "wasserstein_loss")
        si, st = _global_statistics(si, group), _global_statistics(st, group)
    cov_t, cov_in = _regularised(st.covs, si.covs, float(perturbation), float(eps))
    moved = _moved((st.means, cov_t, si.means, cov_in) + ((status.to(torch.float64),) if deferred else ()), md)
    if deferred:
        flags = moved.pop().tolist()  # on the host now, or one sync where the matrix part stays on the GPU
        _raise_for_loss_status(flags)
    w2 = _gaussian_w2(*moved).to(cov_t.device)
    valid = (si.counts >= min_count) & (st.counts >= min_count)
    return _reduce(w2, valid, reduction).to(out_dtype)


__all__ = ["ClassGaussians", "class_gaussians", "gaussian_w2", "wasserstein_loss"]
