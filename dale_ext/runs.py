"""A training run from one configuration: data, model, trainer, logs, checkpoint, evaluation.
Used by the ``dale`` command line and the demo.

A run directory holds ``config.yaml`` (the full configuration, re-loadable), ``checkpoint.pt``,
``log.csv`` (one row per epoch; TensorBoard events too when tensorboard is installed),
``curves.png`` and, after evaluation, ``metrics.json`` / ``metrics.csv``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field

import torch

from dale_ext.train.config import TrainConfig, dataclass_from_dict


@dataclass
class RunConfig:
    dataset: str = "synthetic"
    data_root: str | None = None
    train_split: str | None = None
    test_splits: list = field(default_factory=lambda: ["test"])   # "test", or "test:<subset>" (polyp)
    test_dataset: str | None = None   # e.g. train on isic2016, test on ph2
    test_root: str | None = None
    image_size: int = 224
    val_fraction: float = 0.0
    augment: bool = False
    synthetic: dict = field(default_factory=dict)   # make_synthetic options (n, size, noise_level, ...)
    model: str = "unet"
    base_channels: int = 32
    depth: int = 4
    device: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Strict: unknown keys and wrong types are errors (also inside ``train``)."""
        return dataclass_from_dict(cls, data, "run config", nested={"train": TrainConfig.from_dict})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_yaml(path: str) -> dict:
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    return {} if data is None else data


def save_yaml(data: dict, path: str) -> None:
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


# ---------------------------------------------------------------- data and model
def _dataset_kwargs(cfg: RunConfig, name: str) -> dict:
    if name == "synthetic":
        kw = dict(cfg.synthetic)
        kw.setdefault("size", cfg.image_size)
        kw.setdefault("num_classes", cfg.train.num_classes)
        return kw
    return {"size": (cfg.image_size, cfg.image_size)}


def training_data(cfg: RunConfig):
    """(train, val or None) datasets."""
    from dale_ext.data import Augment, load_dataset, split_dataset

    kw = _dataset_kwargs(cfg, cfg.dataset)
    if cfg.augment:
        kw["transform"] = Augment(seed=cfg.train.seed)
    root = None if cfg.dataset == "synthetic" else cfg.data_root
    train = load_dataset(cfg.dataset, root, split=cfg.train_split, **kw)
    if cfg.val_fraction > 0:
        if cfg.dataset == "synthetic":   # a clean validation split of its own
            return train, load_dataset("synthetic", None, split="val", **_dataset_kwargs(cfg, "synthetic"))
        parts = split_dataset(train, (1 - cfg.val_fraction, cfg.val_fraction), seed=cfg.train.seed)
        return parts[0], parts[1]
    return train, None


def test_data(cfg: RunConfig) -> dict:
    """{name: dataset} of the test sets."""
    from dale_ext.data import load_dataset

    name = cfg.test_dataset or cfg.dataset
    root = None if name == "synthetic" else (cfg.test_root or cfg.data_root)
    out = {}
    for split in cfg.test_splits:
        split_name, _, subset = split.partition(":")
        kw = _dataset_kwargs(cfg, name)
        if subset:
            kw["subset"] = subset
        out[split] = load_dataset(name, root, split=split_name, **kw)
    return out


def build_run_model(cfg: RunConfig, in_channels: int) -> torch.nn.Module:
    from dale_ext.models import build_model

    out = 1 if cfg.train.num_classes == 2 else cfg.train.num_classes
    kw = {} if cfg.model.startswith("smp:") else dict(base_channels=cfg.base_channels, depth=cfg.depth)
    torch.manual_seed(cfg.train.seed)
    return build_model(cfg.model, in_channels, out, **kw)


# ---------------------------------------------------------------- logging
class EpochLog:
    """Per-epoch CSV (and TensorBoard when installed)."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, "log.csv")
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))
        except Exception:  # tensorboard is optional
            self.writer = None

    def __call__(self, record: dict) -> None:
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(record))
            if new:
                w.writeheader()
            w.writerow(record)
        if self.writer is not None:
            for k, v in record.items():
                if k != "epoch":
                    self.writer.add_scalar(k, v, record["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()   # flushes: short runs would otherwise lose their events


# ---------------------------------------------------------------- train / eval
def train_run(cfg: RunConfig, out_dir: str, *, resume: bool = False, progress: bool = True):
    """Train per ``cfg`` into ``out_dir``; returns the trainer (hooks removed) and its history."""
    from dale_ext import viz
    from dale_ext.train import build_trainer
    from dale_ext.train import distributed as dist_utils

    main = dist_utils.is_main()  # under torchrun, rank 0 writes the run directory
    if main:
        os.makedirs(out_dir, exist_ok=True)
        save_yaml(cfg.to_dict(), os.path.join(out_dir, "config.yaml"))
        if not resume and os.path.exists(os.path.join(out_dir, "log.csv")):
            os.remove(os.path.join(out_dir, "log.csv"))
    dist_utils.barrier()
    train, val = training_data(cfg)
    model = build_run_model(cfg, in_channels=train[0][0].shape[0])
    trainer = build_trainer(model, cfg.train, device=cfg.device)
    ckpt = os.path.join(out_dir, "checkpoint.pt")
    log = EpochLog(out_dir) if main else None
    try:
        history = trainer.fit(train, val_dataset=val, checkpoint=ckpt, resume=resume, progress=progress,
                              on_epoch_end=log)
    finally:
        trainer.close()
        if log is not None:
            log.close()
    if history and main:
        viz.plot_curves({cfg.train.method: history}, os.path.join(out_dir, "curves.png"))
    return trainer, history


def load_run(run_dir_or_checkpoint: str):
    """(RunConfig, model with trained weights) from a run directory or its checkpoint."""
    from dale_ext.train import load_checkpoint

    path = run_dir_or_checkpoint
    run_dir = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    ckpt = os.path.join(run_dir, "checkpoint.pt") if os.path.isdir(path) else path
    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"no config.yaml beside the checkpoint: {cfg_path}")
    cfg = RunConfig.from_dict(load_yaml(cfg_path))
    state = load_checkpoint(ckpt)
    in_channels = next(v for k, v in state["model"].items() if v.dim() == 4).shape[1]
    model = build_run_model(cfg, in_channels)
    model.load_state_dict(state["model"])
    return cfg, model


def evaluate_run(cfg: RunConfig, model: torch.nn.Module, out_dir: str | None = None) -> dict:
    """Metrics per test set; written to ``metrics.json`` / ``metrics.csv`` in ``out_dir``."""
    from dale_ext.train import evaluate

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    results = {name: evaluate(model, ds, cfg.train.num_classes, device=device) for name, ds in test_data(cfg).items()}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(results, f, indent=2)
        with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["test_set", "dice", "iou", "hd95", "asd"])
            for name, m in results.items():
                w.writerow([name] + [f"{m[k]:.6f}" for k in ("dice", "iou", "hd95", "asd")])
    return results
