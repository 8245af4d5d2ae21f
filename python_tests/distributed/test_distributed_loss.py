"""wasserstein_loss / class_gaussians with a process group: 2 gloo ranks each holding half a
batch give the single-process loss on the whole batch, and each rank's feature gradient is its
slice of the whole-batch gradient."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import dale_ext


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_batch():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 6, 9, 11, generator=g, dtype=torch.float64)
    t = torch.randn(4, 6, 9, 11, generator=g, dtype=torch.float64) * 1.3 + 0.2
    lx = torch.randint(0, 3, (4, 9, 11), generator=g)
    lt = torch.randint(0, 3, (4, 9, 11), generator=g)
    lx[0, :2] = -100
    w = torch.rand(4, 9, 11, generator=g, dtype=torch.float64)
    return x, lx, t, lt, w


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        x, lx, t, lt, w = make_batch()
        part = slice(2 * rank, 2 * rank + 2)
        xi = x[part].clone().requires_grad_()
        ti = t[part].clone().requires_grad_()
        # every rank computes the same global loss; dividing by the world size makes the sum of
        # the ranks' losses the whole-batch loss, whose gradient each rank then receives
        loss = dale_ext.wasserstein_loss(xi, lx[part], ti, lt[part], 3, input_weights=w[part], perturbation=0.1,
                                         process_group=True)
        (loss / world).backward()
        stats = dale_ext.class_gaussians(x[part], lx[part], 3, weights=w[part], process_group=True)
        torch.save({"loss": loss.detach(), "gx": xi.grad, "gt": ti.grad, "stats": tuple(stats)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_whole_batch(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    x, lx, t, lt, w = make_batch()
    xs, ts = x.clone().requires_grad_(), t.clone().requires_grad_()
    whole = dale_ext.wasserstein_loss(xs, lx, ts, lt, 3, input_weights=w, perturbation=0.1)
    whole.backward()
    stats = dale_ext.class_gaussians(x, lx, 3, weights=w)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt")
        part = slice(2 * rank, 2 * rank + 2)
        assert abs(r["loss"].item() - whole.item()) <= 1e-5 * abs(whole.item())
        torch.testing.assert_close(r["gx"], xs.grad[part], rtol=1e-4, atol=1e-10)
        torch.testing.assert_close(r["gt"], ts.grad[part], rtol=1e-4, atol=1e-10)
        for a, b in zip(r["stats"], stats):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_process_group_requires_initialised_distributed():
    x, lx, t, lt, _ = make_batch()
    with pytest.raises(ValueError, match="process_group"):
        dale_ext.wasserstein_loss(x, lx, t, lt, 3, process_group=True)
