"""Pure-PyTorch ``fuzzy_split`` (paper Eqs. 3-7), vectorised: bincount histograms, shifted
comparisons for edges, reshape-sums for patch counts. Same definitions as
:mod:`dale_ext.ops.fuzzy_split`; patch statistics and the normalisation run in float64."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dale_ext.ops._common import integer, pair, real, tensor
from dale_ext.ops.fuzzy_split import FuzzySplit

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check(image: torch.Tensor, label: torch.Tensor, ph: int, pw: int, tau: float, bins: int):
    op = "fuzzy_split"
    if image.dim() != 4:
        raise ValueError(f"{op}: `image` must be 4-D (B, C, H, W); got shape {list(image.shape)}")
    if image.dtype not in _FLOAT_DTYPES + (torch.uint8,):
        raise TypeError(f"{op}: `image` must be float32, float64, float16, bfloat16 or uint8; got {image.dtype}")
    B, C, H, W = image.shape
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"{op}: `image` needs at least one channel, row and column; got {list(image.shape)}")
    if not (label.dim() == 3 or (label.dim() == 4 and label.shape[1] == 1)):
        raise ValueError(f"{op}: `label` must be (B, H, W) or (B, 1, H, W); got shape {list(label.shape)}")
    if (label.shape[0], label.shape[-2], label.shape[-1]) != (B, H, W):
        raise ValueError(f"{op}: `label` shape {list(label.shape)} does not match `image` (B, H, W) = {(B, H, W)}")
    if label.dtype.is_floating_point or label.dtype.is_complex:
        raise TypeError(f"{op}: `label` must be an integer or bool class map; got {label.dtype}")
    if image.device != label.device:
        raise ValueError(f"{op}: `image` and `label` must be on the same device; got {image.device} and {label.device}")
    if not (1 <= ph <= H and 1 <= pw <= W):
        raise ValueError(f"{op}: `patch_size` must be within [1, (H, W)] = [1, {(H, W)}]; got {(ph, pw)}")
    if not 2 <= bins <= 65536:
        raise ValueError(f"{op}: `bins` must be in [2, 65536]; got {bins}")
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"{op}: `tau` must be in [0, 1]; got {tau}")


def grey_bins(image: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, H, W) int64 grey-level bins, exactly as the kernels compute them."""
    C = image.shape[1]
    if image.dtype == torch.uint8:
        s = image.sum(dim=1, dtype=torch.int64)
        return torch.div(s * bins, 255 * C, rounding_mode="floor").clamp_(max=bins - 1)
    x = image.float()
    s = x[:, 0].clone()
    for c in range(1, C):  # channel order fixes the float32 rounding (a loop over C, not pixels)
        s += x[:, c]
    t = (s / C) * bins
    if torch.isnan(t).any():
        raise ValueError("fuzzy_split: `image` contains NaN")
    return t.clamp_(0, bins - 1).floor_().long()


def edge_map(label: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: a 4-neighbour inside the image has another label."""
    edge = torch.zeros(label.shape, dtype=torch.bool, device=label.device)
    dy = label[:, 1:, :] != label[:, :-1, :]
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    dx = label[:, :, 1:] != label[:, :, :-1]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    return edge


def _patch_sums(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """(B, H, W) -> (B, Lh, Lw) sums over (possibly partial) patches."""
    B, H, W = x.shape
    Lh, Lw = -(-H // ph), -(-W // pw)
    x = F.pad(x, (0, Lw * pw - W, 0, Lh * ph - H))
    return x.view(B, Lh, ph, Lw, pw).sum(dim=(2, 4))


def _patch_index(B: int, H: int, W: int, ph: int, pw: int, device) -> torch.Tensor:
    Lh, Lw = -(-H // ph), -(-W // pw)
    rows = torch.arange(H, device=device) // ph
    cols = torch.arange(W, device=device) // pw
    pid = rows[:, None] * Lw + cols[None, :]
    return pid[None] + torch.arange(B, device=device)[:, None, None] * (Lh * Lw)


# Entropies / edge ratios closer than this are one value (csrc/fuzzy_split.h, kTieTolerance): a
# constant patch's ln n - (n ln n) / n may leave +4e-16, which Eq. 5 must not stretch to 1.
TIE_TOLERANCE = 1e-12


def patch_entropy(q: torch.Tensor, ph: int, pw: int, bins: int, counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (float64) of each patch's histogram of the bins ``q`` (B, H, W)."""
    B, H, W = q.shape
    npatch = counts.numel()
    key = _patch_index(B, H, W, ph, pw, q.device) * bins + q
    if npatch * bins <= max(1 << 24, 4 * q.numel()):
        hist = torch.bincount(key.flatten(), minlength=npatch * bins).view(npatch, bins).double()
        clogc = torch.special.xlogy(hist, hist).sum(dim=1)
    else:  # large bins: count only the values present
        uniq, c = torch.unique(key.flatten(), return_counts=True)
        c = c.double()
        clogc = torch.zeros(npatch, dtype=torch.float64, device=q.device)
        clogc.index_add_(0, torch.div(uniq, bins, rounding_mode="floor"), c * c.log())
    n = counts.flatten()
    e = n.log() - clogc / n
    return torch.where(e > TIE_TOLERANCE, e, 0.0).view(counts.shape)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    tie = span <= TIE_TOLERANCE
    out = torch.where(tie, 0.0, (flat - lo) / torch.where(tie, 1.0, span))
    return out.view_as(x)


def _to_pixels(p: torch.Tensor, ph: int, pw: int, H: int, W: int) -> torch.Tensor:
    return p.repeat_interleave(ph, dim=1)[:, :H].repeat_interleave(pw, dim=2)[:, :, :W].unsqueeze(1)


def fuzzy_split(image, label, *, patch_size=16, tau=0.9, bins=256) -> FuzzySplit:
    """Pure-PyTorch ``dale_ext.fuzzy_split`` with the same arguments and result."""
    op = "fuzzy_split"
    image, label = tensor(image, "image", op), tensor(label, "label", op)
    ph, pw = pair(patch_size, "patch_size", op)
    tau, bins = real(tau, "tau", op), integer(bins, "bins", op)
    _check(image, label, ph, pw, tau, bins)
    if label.dim() == 4:
        label = label[:, 0]
    B, C, H, W = image.shape
    with torch.no_grad():
        q = grey_bins(image, bins)
        counts = _patch_sums(torch.ones(B, H, W, dtype=torch.float64, device=image.device), ph, pw)
        entropy = patch_entropy(q, ph, pw, bins, counts)
        edge_ratio = _patch_sums(edge_map(label).double(), ph, pw) / counts
        score = torch.maximum(_normalise(entropy), _normalise(edge_ratio))
        fuzzy = torch.where(score > tau, 1.0, score).float()
        nonfuzzy = torch.where(score < tau, 1.0, 1.0 - score).float()
        fuzzy_mask = _to_pixels(fuzzy, ph, pw, H, W)
        nonfuzzy_mask = _to_pixels(nonfuzzy, ph, pw, H, W)
        if image.dtype == torch.uint8:
            x, out_dtype = image.float() / 255.0, torch.float32
        elif image.dtype == torch.float64:
            x, out_dtype = image, torch.float64
        else:
            x, out_dtype = image.float(), image.dtype
        fuzzy_image = (fuzzy_mask.to(x.dtype) * x).to(out_dtype)
        nonfuzzy_image = (nonfuzzy_mask.to(x.dtype) * x).to(out_dtype)
    return FuzzySplit(
        entropy.float(), edge_ratio.float(), score.float(),
        fuzzy_mask, nonfuzzy_mask, fuzzy_image, nonfuzzy_image,
    )
