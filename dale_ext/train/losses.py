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
    """Eq. 7's ``M * Y``: (B, H, W) for binary (num_classes == 2, one logit channel), else
    (B, C, H, W). For a head with two logit channels use ``head_targets(labels, mask, 2)``."""
    return head_targets(labels, mask, 1 if num_classes == 2 else num_classes)


def head_targets(labels: torch.Tensor, mask: torch.Tensor | None, channels: int) -> torch.Tensor:
    """Eq. 7's ``M * Y`` for a head with ``channels`` logit channels: (B, H, W) for one (binary,
    BCE-with-logits), else the masked one-hot (B, channels, H, W) (softmax cross-entropy; two
    channels for a binary task are the usual smp / MONAI head). ``labels`` must lie in
    [0, 2) for one channel and in [0, channels) otherwise (see ``check_labels``)."""
    m = 1.0 if mask is None else mask.reshape(labels.shape).float()
    if channels == 1:
        return labels.float() * m
    onehot = F.one_hot(labels.long(), channels).permute(0, 3, 1, 2).float()
    return onehot * (m.unsqueeze(1) if torch.is_tensor(m) else m)


def check_labels(labels: torch.Tensor, num_classes: int, what: str = "labels") -> torch.Tensor:
    """``labels`` as an integer class map, with a clear error where the losses would misread it:
    values outside [0, num_classes) (e.g. a 0/255 mask, or 255 / -1 as an ignore value, which the
    trainers do not support), or a float map with fractional values (a float map of whole
    numbers, e.g. a {0., 1.} mask from ``ToTensor``, is converted to int64). Reads a few values
    back from the device."""
    if labels.dtype.is_complex:
        raise TypeError(f"{what} must be an integer, bool or whole-number float class map; got {labels.dtype}")
    if labels.is_floating_point():
        if not bool(torch.all(labels == labels.round())):
            raise TypeError(f"{what} must be an integer class map; got {labels.dtype} values that are not whole "
                            "numbers (soft labels are not supported)")
        labels = labels.long()
    if labels.numel() == 0:
        return labels
    lo, hi = (int(v) for v in torch.stack([labels.min(), labels.max()]).long().tolist())
    if lo < 0 or hi >= num_classes:
        hint = " (a 0/255 mask? divide it by 255)" if hi == 255 and num_classes == 2 else ""
        raise ValueError(f"{what} must hold class indices in [0, {num_classes}) (TrainConfig.num_classes = "
                         f"{num_classes}); found values in [{lo}, {hi}]{hint}")
    return labels


def check_head(channels: int, num_classes: int) -> None:
    """The model's logit channels must be ``num_classes`` (softmax), or 1 for a binary task."""
    if not (channels == num_classes or (channels == 1 and num_classes == 2)):
        raise ValueError(f"the model returns {channels} logit channels, but TrainConfig.num_classes is "
                         f"{num_classes}: expected {num_classes} channels (or 1 for a binary task)")


class PixelLoss:
    """Per-pixel loss for binary (1 logit channel) or multi-class (C channels) logits."""

    def __init__(self, kind: str = "ce", gce_q: float = 0.7):
        if kind not in ("ce", "gce"):
            raise ValueError(f"PixelLoss: `kind` must be 'ce' or 'gce'; got {kind!r}")
        if not 0 < gce_q <= 1:
            raise ValueError(f"PixelLoss: `gce_q` must be in (0, 1]; got {gce_q}")
        self.kind, self.q = kind, gce_q

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # without this check a (B, H, W) target against (B, 2, H, W) logits broadcasts silently
        # when B is 1 or 2
        want = (logits.shape[0],) + tuple(logits.shape[2:]) if logits.shape[1] == 1 else tuple(logits.shape)
        if tuple(target.shape) != want:
            raise ValueError(f"PixelLoss: `target` must have shape {want} for logits of shape "
                             f"{tuple(logits.shape)} (see head_targets); got {tuple(target.shape)}")
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
