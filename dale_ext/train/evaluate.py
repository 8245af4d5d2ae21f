"""Evaluation on clean test data with the paper's metrics (Dice, mIoU, HD95, ASD), averaged over
images (binary) or over images and foreground classes (multi-class); see dale_ext.metrics."""
from __future__ import annotations

import numpy as np
import torch

from dale_ext.train.confidence import logits_of


def model_input(images: torch.Tensor) -> torch.Tensor:
    """What the trainers and ``predict`` feed the model: uint8 images scaled to [0, 1] (as
    fuzzy_split reads them), other dtypes as they are."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Hard label map (B, H, W): sigmoid > 0.5 for one logit channel, argmax otherwise."""
    logits = logits_of(model(model_input(images)))
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, num_classes: int, *, batch_size: int = 16, device=None,
             spacing=None) -> dict[str, float]:
    from dale_ext import metrics

    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    rows: dict[str, list[float]] = {"dice": [], "iou": [], "hd95": [], "asd": []}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    try:
        for images, labels in loader:
            pred = predict(model, images.to(device)).cpu().numpy()
            ref = labels.numpy()
            for p, r in zip(pred, ref):
                if num_classes == 2:
                    m = metrics.binary_metrics(p, r, spacing=spacing)
                else:
                    m = metrics.multiclass_metrics(p, r, num_classes, spacing=spacing)["mean"]
                for k in rows:
                    rows[k].append(float(m[k]))
    finally:
        model.train(was_training)
    return {k: float(np.mean(v)) if v else float("nan") for k, v in rows.items()}
