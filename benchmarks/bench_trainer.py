"""One DALE iteration vs one standard iteration on the same model and batch.

Algorithm 1 needs about 13 forward-equivalents (non-fuzzy forward+backward, the shared fuzzy
forward, the inner gradient, the virtual step's forward+backward, one JVP, the fuzzy backward)
against a standard step's 3: ~4.3x; the paper's Tab. 5 reports 1.5x-4.3x on GPU."""
from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import devices, run
from dale_ext.models import UNet
from dale_ext.train import DaleTrainer, TrainConfig, Trainer

SHAPES = {"cpu": (8, 64), "cuda": (24, 224)}   # batch, image size


@pytest.mark.parametrize("impl", ["standard", "dale"])
@pytest.mark.parametrize("device", devices())
def test_trainer_iteration(benchmark, gen, device, impl):
    B, S = SHAPES[device]
    x = torch.rand(B, 3, S, S, generator=gen)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    y = ((yy / 0.6) ** 2 + (xx / 0.5) ** 2 < 1 + 0.3 * torch.rand(B, S, S, generator=gen)).long()
    x = x * (0.5 + 0.5 * y[:, None])
    torch.manual_seed(0)
    model = UNet(3, 1, base_channels=32, depth=4)
    cfg = TrainConfig(method=impl, batch_size=B)
    trainer = (DaleTrainer if impl == "dale" else Trainer)(model, cfg, device=device)
    benchmark.group = f"trainer iteration {device} UNet(32, depth 4) B={B} 3x{S}x{S}"
    benchmark.extra_info.update(op="trainer", impl=impl, device=device)
    run(benchmark, lambda: trainer.train_step(x, y), device, rounds=8 if device == "cpu" else 30, warmup_rounds=2)
    if hasattr(trainer, "close"):
        trainer.close()
