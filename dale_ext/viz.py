"""Figures (matplotlib, Agg): the fuzzy split of an image (paper Fig. 2 part B), training curves,
qualitative overlays (ground truth / prediction / overlap, Fig. 4) and omega maps.

Figures are drawn on their own Agg canvas, without pyplot: the caller's matplotlib backend and
pyplot's figure list (e.g. inline plots in a notebook) are left alone."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch


def _subplots(nrows: int, ncols: int, figsize, **kw):
    """A figure on its own Agg canvas and its axes (as pyplot.subplots, without pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def _image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> displayable (H, W, 3) or (H, W) in [0, 1]."""
    x = x.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x[:3].permute(1, 2, 0).numpy()


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def overlap_rgb(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """True positives white, false positives red, false negatives blue (binary masks)."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    out = np.zeros(pred.shape + (3,))
    out[pred & ref] = (1, 1, 1)
    out[pred & ~ref] = (0.9, 0.15, 0.15)
    out[~pred & ref] = (0.2, 0.4, 1.0)
    return out


def plot_split(image: torch.Tensor, label: torch.Tensor, split, path: str, tau: float) -> str:
    """One image's fuzzy split: image, label, entropy map, edge-ratio map, score, masks."""
    panels = [
        ("image", _image(image), None),
        ("label", label.cpu().numpy(), "gray"),
        ("patch entropy (AE)", split.entropy[0].cpu().numpy(), "magma"),
        ("edge ratio (ER)", split.edge_ratio[0].cpu().numpy(), "magma"),
        (f"score m = max(AE, ER); tau = {tau:g}", split.score[0].cpu().numpy(), "viridis"),
        ("fuzzy mask M^f", split.fuzzy_mask[0, 0].cpu().numpy(), "viridis"),
        ("non-fuzzy mask M^n", split.nonfuzzy_mask[0, 0].cpu().numpy(), "viridis"),
        ("fuzzy image M^f * X", _image(split.fuzzy_image[0]), None),
    ]
    fig, axes = _subplots(2, 4, figsize=(13, 6.6))
    for ax, (title, data, cmap) in zip(axes.flat, panels):
        im = ax.imshow(data, cmap=cmap, interpolation="nearest")
        if cmap not in (None, "gray"):
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("DALE fuzzy / non-fuzzy split (paper Eqs. 3-7)")
    return _save(fig, path)


def plot_curves(histories: dict[str, list[dict]], path: str, keys: Sequence[str] = ("loss", "val_dice")) -> str:
    """Per-epoch curves of several runs (one line per run, one panel per key)."""
    keys = [k for k in keys if any(k in r for h in histories.values() for r in h)]
    fig, axes = _subplots(1, max(1, len(keys)), figsize=(5 * max(1, len(keys)), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, hist in histories.items():
            pts = [(r["epoch"], r[key]) for r in hist if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_overlays(images, labels, predictions: dict[str, torch.Tensor], path: str, n: int = 4) -> str:
    """Rows: test images; columns: image, ground truth, then each method's prediction overlap."""
    n = min(n, len(images))
    cols = 2 + len(predictions)
    fig, axes = _subplots(n, cols, figsize=(2.6 * cols, 2.6 * n), squeeze=False)
    for i in range(n):
        ref = labels[i].cpu().numpy() > 0
        row = [("image", _image(images[i])), ("ground truth", ref.astype(float))]
        row += [(name, overlap_rgb(pred[i].cpu().numpy() > 0, ref)) for name, pred in predictions.items()]
        for ax, (title, data) in zip(axes[i], row):
            ax.imshow(data, cmap="gray" if data.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title if i == 0 else "", fontsize=9)
            ax.axis("off")
    fig.suptitle("white: true positive, red: false positive, blue: false negative", fontsize=9)
    return _save(fig, path)


def plot_omega(images, noisy, clean, fuzzy_mask, omega, path: str, n: int = 4) -> str:
    """Rows: training images; columns: image, noisy label, injected noise (where known), fuzzy
    mask M^f, omega* (confidence after the update; < 1 = distrusted)."""
    n = min(n, len(images))
    fig, axes = _subplots(n, 5, figsize=(13, 2.7 * n), squeeze=False)
    for i in range(n):
        noise = (noisy[i] != clean[i]).cpu().numpy() if clean is not None else np.zeros(noisy[i].shape)
        panels = [("image", _image(images[i]), None), ("training (noisy) label", noisy[i].cpu().numpy(), "gray"),
                  ("injected label noise", noise.astype(float), "Reds"),
                  ("fuzzy mask M^f", fuzzy_mask[i].cpu().numpy(), "viridis"),
                  ("omega* (confidence)", omega[i].cpu().numpy(), "coolwarm_r")]
        for ax, (title, data, cmap) in zip(axes[i], panels):
            kw = dict(vmin=0.8, vmax=1.2) if title.startswith("omega") else {}
            im = ax.imshow(data, cmap=cmap, interpolation="nearest", **kw)
            if title.startswith("omega"):
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            ax.set_title(title if i == 0 else "", fontsize=9)
            ax.axis("off")
    return _save(fig, path)
