"""torch.distributed helpers for the trainer and the CLI (DDP launched by torchrun).

The DALE-specific parts of data parallelism live where they belong: the alignment loss's
statistics are merged across ranks by ``wasserstein_loss(process_group=...)``, and the
confidence step averages its virtual-step and validation gradients over ranks
(``DaleTrainer.confidence_step``), so every rank computes the exact global-batch quantities.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def average_(tensors) -> None:
    """In-place mean over ranks: one all-reduce per dtype over the flattened tensors (one per
    parameter would be ~100 collectives per training step for a U-Net)."""
    if not active():
        return
    w = world_size()
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(w)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))


def init_from_env(device: str | None = None) -> str | None:
    """Initialise the default process group from torchrun's environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR/PORT) when WORLD_SIZE > 1: NCCL on CUDA, gloo on the CPU. Returns the
    device this rank should use (None when not distributed)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return None
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def shutdown() -> None:
    """Destroys the default process group if there is one: left to the interpreter's exit, gloo's
    background threads were sometimes torn down joinable (std::terminate, SIGABRT: a rare failure
    of the torchrun test)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
