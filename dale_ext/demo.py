"""``dale demo``: the main job. On the built-in synthetic noisy-label benchmark (lesions whose
fuzzy boundary parts carry the label noise; clean test masks), train the built-in U-Net with
standard training and with DALE from the same initialisation, data and seed; evaluate both on the
clean test set; write ``metrics.json``, ``report.md`` and figures.

Sized for a 2-core CPU (about 13 minutes): 64 x 64 images, 8 x 8 patches (the paper's 16 x 16
patches are for 224 x 224 images: both give a grid of 8-14 patches per side), batch 8, a U-Net of
width 16 and depth 3. Other hyper-parameters are the paper's (Adam 3e-4, tau 0.9, alpha 0.05, K 1).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time

import torch

from dale_ext.runs import RunConfig, evaluate_run, save_yaml, train_run
from dale_ext.train import TrainConfig

METRICS = ("dice", "iou", "hd95", "asd")
HIGHER_IS_BETTER = {"dice": True, "iou": True, "hd95": False, "asd": False}


def demo_config(*, epochs: int = 30, n_train: int = 240, size: int = 64, noise_level: float = 1.0, seed: int = 0,
                device: str | None = None) -> RunConfig:
    return RunConfig(
        dataset="synthetic", image_size=size, val_fraction=0.1, model="unet", base_channels=16, depth=3,
        synthetic={"n": n_train, "noise_level": noise_level, "seed": seed}, device=device,
        train=TrainConfig(epochs=epochs, batch_size=8, patch_size=8, seed=seed),
    )


def growth_rate(standard: dict, dale: dict) -> dict:
    """Relative improvement of DALE over standard training in percent (positive = better;
    lower is better for HD95 and ASD), as the paper's growth rate."""
    out = {}
    for k in METRICS:
        s, d = standard[k], dale[k]
        out[k] = 100.0 * ((d - s) if HIGHER_IS_BETTER[k] else (s - d)) / abs(s) if s else float("nan")
    return out


def run_demo(out_dir: str = "runs/demo", *, epochs: int = 30, n_train: int = 240, size: int = 64,
             noise_level: float = 1.0, seed: int = 0, device: str | None = None, progress: bool = True) -> dict:
    start = time.time()
    base = demo_config(epochs=epochs, n_train=n_train, size=size, noise_level=noise_level, seed=seed, device=device)
    results, histories, models = {}, {}, {}
    for method in ("standard", "dale"):
        cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, method=method))
        if progress:
            print(f"[dale demo] training {method} ({epochs} epochs on {n_train} noisy 64x64 images)", flush=True)
        trainer, history = train_run(cfg, os.path.join(out_dir, method), progress=progress)
        results[method] = evaluate_run(cfg, trainer.model, os.path.join(out_dir, method))["test"]
        histories[method] = history
        models[method] = trainer.model
    seconds = time.time() - start
    figures = _figures(base, models, histories, out_dir)
    summary = {
        "standard": results["standard"], "dale": results["dale"],
        "growth_rate_percent": growth_rate(results["standard"], results["dale"]),
        "seconds": seconds, "figures": figures, "environment": _environment(),
        "config": base.to_dict(),
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    save_yaml(base.to_dict(), os.path.join(out_dir, "config.yaml"))
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report(summary, histories))
    return summary


def _figures(cfg: RunConfig, models: dict, histories: dict, out_dir: str) -> list[str]:
    from dale_ext import fuzzy_split, viz
    from dale_ext.runs import test_data, training_data
    from dale_ext.train import DaleTrainer, predict

    test = test_data(cfg)["test"]
    images = torch.stack([test[i][0] for i in range(4)])
    labels = torch.stack([test[i][1] for i in range(4)])
    preds = {}
    for name, m in models.items():
        m.eval()
        with torch.no_grad():
            preds[f"{name} prediction"] = predict(m, images.to(next(m.parameters()).device)).cpu()
    paths = [viz.plot_curves(histories, os.path.join(out_dir, "curves.png")),
             viz.plot_overlays(images, labels, preds, os.path.join(out_dir, "overlays.png"))]
    # omega* of the trained DALE model on training images, next to the injected noise
    train, _ = training_data(cfg)
    idx = list(range(8))
    x = torch.stack([train[i][0] for i in idx])
    y = torch.stack([train[i][1] for i in idx])
    clean = train.data.clean_masks[idx]
    dale_cfg = dataclasses.replace(cfg.train, method="dale")
    trainer = DaleTrainer(models["dale"], dale_cfg, device=next(models["dale"].parameters()).device)
    try:
        trainer.model.train()
        s = trainer.split(x.to(trainer.device), y.to(trainer.device), 1)
        logits, _ = trainer.forward(s.x_fuzzy)
        conf = trainer.confidence_step(s, trainer.pixel_loss(logits.float(), s.y_fuzzy))
    finally:
        trainer.close()
    paths.append(viz.plot_omega(x, y, clean, s.fuzzy_mask.cpu(), conf.omega.cpu(), os.path.join(out_dir, "omega.png")))
    fs = fuzzy_split(x[:1], y[:1], patch_size=cfg.train.patch_size, tau=cfg.train.tau)
    paths.append(viz.plot_split(x[0], y[0], fs, os.path.join(out_dir, "split.png"), cfg.train.tau))
    return [os.path.basename(p) for p in paths]


def _environment() -> dict:
    import dale_ext

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except OSError:
        commit = None
    return {"torch": torch.__version__, "dale_ext": dale_ext.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "commit": commit, "build": dale_ext.build_info()}


def report(summary: dict, histories: dict) -> str:
    s, d, g = summary["standard"], summary["dale"], summary["growth_rate_percent"]
    cfg = summary["config"]
    syn = cfg["synthetic"]
    lines = [
        "# DALE demo: standard training vs DALE on the synthetic noisy-label benchmark",
        "",
        f"{syn['n']} training images ({cfg['image_size']}x{cfg['image_size']}) with label noise level "
        f"{syn['noise_level']} concentrated on fuzzy lesion boundaries; clean test masks. U-Net "
        f"(width {cfg['base_channels']}, depth {cfg['depth']}), {cfg['train']['epochs']} epochs, batch "
        f"{cfg['train']['batch_size']}, same initialisation, data order and seed for both. Numbers are "
        "the ones measured in this run.",
        "",
        "| method | Dice (%) | mIoU (%) | HD95 (px) | ASD (px) |",
        "|---|---:|---:|---:|---:|",
        f"| standard | {100 * s['dice']:.2f} | {100 * s['iou']:.2f} | {s['hd95']:.2f} | {s['asd']:.2f} |",
        f"| DALE | {100 * d['dice']:.2f} | {100 * d['iou']:.2f} | {d['hd95']:.2f} | {d['asd']:.2f} |",
        f"| growth rate (%) | {g['dice']:+.2f} | {g['iou']:+.2f} | {g['hd95']:+.2f} | {g['asd']:+.2f} |",
        "",
        "Growth rate: relative improvement of DALE over standard training (positive = better; for HD95",
        "and ASD a reduction). One seed: this is a demonstration, not a statistical result",
        "(see benchmarks/results/noisy_label_study.md for seeds and tests).",
        "",
        f"Wall time: {summary['seconds']:.0f} s ({summary['environment']['threads']} threads, "
        f"torch {summary['environment']['torch']}).",
        "",
        "## Figures",
        "",
        "- `curves.png`: training loss and validation Dice (clean validation masks) per epoch.",
        "- `overlays.png`: test images, ground truth, and each method's prediction (white: true",
        "  positive, red: false positive, blue: false negative), as the paper's Fig. 4.",
        "- `omega.png`: training images with their noisy labels, the injected noise, the fuzzy mask",
        "  and omega* from the trained DALE model (below 1: the label is distrusted).",
        "- `split.png`: the fuzzy / non-fuzzy split of one image (the paper's Fig. 2 part B).",
        "",
        "## Validation Dice per epoch",
        "",
        "| epoch | " + " | ".join(histories) + " |",
        "|---:|" + "---:|" * len(histories),
    ]
    n = max(len(h) for h in histories.values())
    for e in range(n):
        row = [f"{100 * h[e]['val_dice']:.2f}" if e < len(h) and "val_dice" in h[e] else "" for h in histories.values()]
        lines.append(f"| {e + 1} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
