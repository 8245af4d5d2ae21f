"""Benchmark helpers: devices, synchronisation and fresh random inputs.

Every benchmark times one op implementation (``kernel`` = dale_ext's compiled op, ``reference`` =
the package's vectorised plain-PyTorch version) in a pytest-benchmark group named after the op
and shape, so ``summarise.py`` can report kernel/reference ratios measured in one process.
"""
from __future__ import annotations

import os

import pytest
import torch

import dale_ext
from benchmarks.parallel_probe import cpu_parallel_speedup, cpu_read_gbs


def devices():
    out = ["cpu"]
    if torch.cuda.is_available() and dale_ext.cuda_built():
        out.append("cuda")
    return out


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run(benchmark, fn, device: str, rounds: int = 30, warmup_rounds: int = 3):
    """Time ``fn`` (synchronised on CUDA) with pedantic rounds, after warm-up. On the CPU the
    host is probed before and after (``parallel_probe.py``: the development VM sometimes gives a
    process's two threads one core's worth of time, and its memory bandwidth comes and goes)."""
    benchmark.extra_info.update(torch=torch.__version__, build=dale_ext.build_info())
    if device == "cuda":
        benchmark.extra_info["gpu"] = torch.cuda.get_device_name()

    def call():
        out = fn()
        synchronize(device)
        return out

    probe = (lambda: (cpu_parallel_speedup(), cpu_read_gbs())) if device == "cpu" else None
    before = probe() if probe else None
    result = benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    if probe:
        after = probe()
        benchmark.extra_info["cpu_parallel_speedup"] = [before[0], after[0]]
        benchmark.extra_info["cpu_read_gbs"] = [before[1], after[1]]
    return result


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(2025)


def pytest_benchmark_generate_commit_info(config):
    """The commit recorded in the JSON: DALE_GIT_COMMIT where the tree's git metadata is not the
    commit under test (the GPU machine's copy), else what git says."""
    sha = os.environ.get("DALE_GIT_COMMIT")
    if sha:
        return {"id": sha, "dirty": False, "project": "dale_ext", "branch": None, "source": "DALE_GIT_COMMIT"}
    return None  # pytest-benchmark's own
