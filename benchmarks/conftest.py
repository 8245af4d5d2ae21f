"""Benchmark helpers: devices, synchronisation and fresh random inputs.

Every benchmark times one op implementation (``kernel`` = dale_ext's compiled op, ``reference`` =
the package's vectorised plain-PyTorch version) in a pytest-benchmark group named after the op
and shape, so ``summarise.py`` can report kernel/reference ratios measured in one process.
``run_paired`` times the kernel and its references call by call in turn instead (one
pytest-benchmark entry per group, the per-call times in its extra_info), so that a slow spell of
the host falls on all of them alike (see ``run_paired``).
"""
from __future__ import annotations

import os
import time
from typing import Callable

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
    def call():
        out = fn()
        synchronize(device)
        return out

    return _timed(benchmark, device, lambda: benchmark.pedantic(call, rounds=rounds, iterations=1,
                                                                warmup_rounds=warmup_rounds))


def _timed(benchmark, device: str, timing: Callable[[], object]):
    """Runs ``timing`` (a benchmark.pedantic call) with the versions in extra_info and, on the
    CPU, the host probes taken before and after it."""
    benchmark.extra_info.update(torch=torch.__version__, build=dale_ext.build_info())
    if device == "cuda":
        benchmark.extra_info["gpu"] = torch.cuda.get_device_name()
    if device != "cpu":
        return timing()
    before = (cpu_parallel_speedup(), cpu_read_gbs())
    result = timing()
    after = (cpu_parallel_speedup(), cpu_read_gbs())
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


def run_paired(benchmark, fns: dict[str, Callable[[], object]], device: str, rounds: int = 30,
               warmup_rounds: int = 3) -> dict[str, list[float]]:
    """Time every implementation of ``fns`` once per round, in turn (the order reversed every
    other round, so none always runs right after another's cache traffic), and store the
    seconds of each call in ``extra_info["paired_s"]``; ``summarise.py`` takes the medians and
    the median of the per-round ratios from it. Why: on the development VM one process's
    reference timings range 18-31 ms from one group to the next (benchmarks/results/
    2026-11-27-cpu-notes.md), so ratios of groups timed one after another follow the host as
    much as the code; timed in turn, both sides of a ratio see the same host."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    benchmark.extra_info.update(impl="paired", paired_order=names)

    def one_round(record: bool, reverse: bool) -> None:
        for name in reversed(names) if reverse else names:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            if record:
                times[name].append(time.perf_counter() - start)

    for i in range(warmup_rounds):
        one_round(record=False, reverse=i % 2 == 1)
    counter = iter(range(rounds))
    _timed(benchmark, device, lambda: benchmark.pedantic(
        lambda: one_round(record=True, reverse=next(counter) % 2 == 1), rounds=rounds, iterations=1))
    benchmark.extra_info["paired_s"] = times
    return times
