"""Per-pixel segmentation losses with soft targets, as DALE needs them (Eq. 7: Y^f = M^f * Y).

Targets are float maps: (B, H, W) in [0, 1] for binary models (one logit channel, BCE-with-
logits) and (B, C, H, W) for multi-class models (cross-entropy with soft targets; for
``M * onehot(Y)`` this is ``M * CE(Y)``). The losses return (B, H, W) with no reduction, as the
confidence gradient needs; the optional soft-Dice term is a batch-level add-on.
``kind="gce"`` is the generalized cross-entropy of Zhang & Sabuncu (NeurIPS 2018), a noise-robust
baseline: ``(1 - p^q) / q`` per class, weighted by the targets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_targets(labels: torch.Tensor, mask: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Eq. 7's ``M * Y``: (B, H, W) for binary (num_classes == 2), else (B, C, H, W)."""
    m = 1.0 if mask is None else mask.reshape(labels.shape).float()
    if num_classes == 2:
        return labels.float() * m
    onehot = F.one_hot(labels.long().clamp(min=0), num_classes).permute(0, 3, 1, 2).float()
    return onehot * (m.unsqueeze(1) if torch.is_tensor(m) else m)


class PixelLoss:
    """Per-pixel loss for binary (1 logit channel) or multi-class (C channels) logits."""

    def __init__(self, kind: str = "ce", gce_q: float = 0.7):
        if kind not in ("ce", "gce"):
            raise ValueError(f"PixelLoss: `kind` must be 'ce' or 'gce'; got {kind!r}")
        if not 0 < gce_q <= 1:
            raise ValueError(f"PixelLoss: `gce_q` must be in (0, 1]; got {gce_q}")
        self.kind, self.q = kind, gce_q

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            z, t = logits[:, 0], target.to(logits.dtype)
            if self.kind == "ce":
                return F.binary_cross_entropy_with_logits(z, t, reduction="none")
            p1, p0 = torch.sigmoid(z), torch.sigmoid(-z)
            return (t * (1 - p1.pow(self.q)) + (1 - t) * (1 - p0.pow(self.q))) / self.q
        t = target.to(logits.dtype)
        if self.kind == "ce":
            return -(t * F.log_softmax(logits, dim=1)).sum(1)
        return (t * (1 - F.softmax(logits, dim=1).pow(self.q))).sum(1) / self.q


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the foreground (the lesion channel, or classes 1..C-1)."""
    if logits.shape[1] == 1:
        p, t = torch.sigmoid(logits[:, 0]), target.to(logits.dtype)
    else:
        p, t = F.softmax(logits, dim=1)[:, 1:], target.to(logits.dtype)[:, 1:]
    inter = (p * t).sum()
    return 1 - (2 * inter + eps) / (p.sum() + t.sum() + eps)
