"""DALE under DDP (2 gloo processes) gives the same weights after a few steps as one process on
the same global batches; `dale train` runs under torchrun."""
from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dale_ext.data import SyntheticDataset
from dale_ext.train import DaleTrainer, TrainConfig, Trainer
from python_tests.distributed.test_distributed_loss import free_port

STEPS, BATCH = 3, 8


class SmallNet(nn.Module):
    """No BatchNorm: per-rank batch statistics would (legitimately) differ from the global batch."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.GroupNorm(3, 12), nn.ReLU(),
                                  nn.Conv2d(12, 12, 3, padding=1), nn.ReLU())
        self.segmentation_head = nn.Conv2d(12, 1, 1)

    def forward(self, x):
        return self.segmentation_head(self.body(x))


def data():
    return SyntheticDataset("train", n=24, size=32, seed=2, noise_level=1.0)


def config():
    return TrainConfig(epochs=1, batch_size=BATCH, patch_size=8, lr=1e-3, seed=4, eps_max=0.01)


def model(seed=0):
    torch.manual_seed(seed)
    return SmallNet()


def worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        t = DaleTrainer(model(), config(), device="cpu")
        assert t.distributed
        ds = data()
        idx = t.epoch_batches(len(ds), 0)[0]
        grad = confidence_gradient_of(t, ds, idx)
        torch.save(grad, out + f".g{rank}")
        t.fit(ds, max_steps=STEPS, progress=False)
        t.close()
        # killed after one step, resumed from its checkpoint on every rank: same weights
        ck = out + ".ckpt"
        killed = DaleTrainer(model(), config(), device="cpu")
        killed.fit(ds, checkpoint=ck, max_steps=1, progress=False)
        killed.close()
        resumed = DaleTrainer(model(seed=5), config(), device="cpu")  # state must come from disk
        resumed.fit(ds, checkpoint=ck, resume=True, max_steps=STEPS, progress=False)
        resumed.close()
        if rank == 0:
            torch.save({k: v.detach() for k, v in t.model.state_dict().items()}, out)
            torch.save({k: v.detach() for k, v in resumed.model.state_dict().items()}, out + ".resumed")
    finally:
        dist.destroy_process_group()


def confidence_gradient_of(trainer, ds, idx):
    x = torch.stack([ds[i][0] for i in idx])
    y = torch.stack([ds[i][1] for i in idx])
    s = trainer.split(x, y, 1)
    logits, _ = trainer.forward(s.x_fuzzy)
    return trainer.confidence_step(s, trainer.pixel_loss(logits.float(), s.y_fuzzy)).gradient


def global_batches(n):
    """What the 2 ranks see, concatenated: the single-process run's global batches."""
    per_rank = []
    for r in range(2):
        s = torch.utils.data.DistributedSampler(range(n), num_replicas=2, rank=r, shuffle=True, seed=4, drop_last=True)
        s.set_epoch(0)
        order = list(s)
        per_rank.append([order[i:i + BATCH // 2] for i in range(0, len(order) - BATCH // 2 + 1, BATCH // 2)])
    return [a + b for a, b in zip(*per_rank)]


def test_ddp_matches_single_process(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(worker, args=(2, free_port(), out), nprocs=2, join=True)
    ds = data()
    single = DaleTrainer(model(), config(), device="cpu")
    # the confidence gradient of each rank is its slice of the global batch's (averaged gradients)
    g = confidence_gradient_of(single, ds, global_batches(len(ds))[0])
    # atol scales with the gradient: it comes from float32 forwards and JVPs, whose elements that
    # cancel to ~0 keep an error of a few float32 ulps of the largest terms, and the two sides
    # differ in batch split (4 vs 8) and thread count (seen: 1.6e-13 on one machine, 8.5e-12 on
    # another, max |g| 3.4e-7). A wrong rank average or slice is off by O(max |g|).
    atol = 1e-4 * g.abs().max().item()
    for r in range(2):
        torch.testing.assert_close(torch.load(out + f".g{r}"), g[r * BATCH // 2:(r + 1) * BATCH // 2],
                                   rtol=1e-4, atol=atol)
    for idx in global_batches(len(ds))[:STEPS]:
        x = torch.stack([ds[i][0] for i in idx])
        y = torch.stack([ds[i][1] for i in idx])
        single.train_step(x, y)
    single.close()
    ddp = torch.load(out)
    for name, value in torch.load(out + ".resumed").items():   # DDP resume-after-kill is bit-identical
        assert torch.equal(value, ddp[name]), name
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # and the steps did move the weights
    assert any(not torch.allclose(v, model().state_dict()[k]) for k, v in single.model.state_dict().items())


def test_dale_train_under_torchrun(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "run"
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "dale_ext.cli", "train",
           "--dataset", "synthetic", "--image-size", "32", "--base-channels", "8", "--depth", "2",
           "--set", "synthetic.n=16", "--epochs", "1", "--batch-size", "4", "--patch-size", "8",
           "--out", str(out), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(2 processes)" in res.stdout
    assert (out / "checkpoint.pt").exists() and (out / "metrics.json").exists()
    assert len((out / "log.csv").read_text().strip().splitlines()) == 2   # one writer: header + epoch 1


def compile_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        from torch.nn.parallel import DistributedDataParallel

        ds = data()
        idx = list(range(rank * BATCH // 2, (rank + 1) * BATCH // 2))
        x = torch.stack([ds[i][0] for i in idx])
        y = torch.stack([ds[i][1] for i in idx])
        losses = []
        for backend in (None, "aot_eager"):
            cfg = TrainConfig(method="standard", epochs=1, batch_size=BATCH, lr=1e-3, seed=4, compile=backend)
            t = Trainer(model(), cfg, device="cpu")
            if backend:  # compiled around the DDP wrapper, not dropped by it
                assert isinstance(t.run, torch._dynamo.eval_frame.OptimizedModule), type(t.run)
                assert isinstance(t.run._orig_mod, DistributedDataParallel), type(t.run._orig_mod)
            else:
                assert isinstance(t.run, DistributedDataParallel)
            losses.append([t.train_step(x, y)["loss"] for _ in range(2)])
        torch.save(losses, out + f".{rank}")
    finally:
        dist.destroy_process_group()


def test_ddp_with_compile_keeps_both(tmp_path):
    out = str(tmp_path / "compile")
    mp.spawn(compile_worker, args=(2, free_port(), out), nprocs=2, join=True)
    for r in range(2):
        eager, compiled = torch.load(out + f".{r}")
        # same start, same data: the compiled DDP model takes the same two steps
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
