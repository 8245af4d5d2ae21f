"""Two quick readings of the host's state, taken around each CPU benchmark: how much a second
thread helps right now (one float32 GEMM, 768 x 768, through ``torch.mm``, on one thread and on
all of torch's threads), and the memory bandwidth one thread reads at (the sum of 64 MB).

Why: on the development VM (2 vCPUs, KVM) some processes get no parallel speed-up at all for
seconds or for their whole life (the host seems to run both vCPUs on one physical core; no steal
time is reported). In such a process MKL's own GEMM is no faster on two threads than on one and
the statistics op took 3.4-3.5 ms (1.85-2.99 in six other processes), so a kernel/reference
ratio from that process says more about the host than about the code. The benchmarks record this
probe before and after each timing (``extra_info["cpu_parallel_speedup"]``), and
``summarise.py`` prints it, so such runs can be told apart instead of guessed at.

The second reading is there because the probe above does not catch everything: on 2026-11-28 the
statistics op took 3.5-6.0 ms on one thread within one process (the GEMM's speed-up stayed at
1.6-2.4x), as if memory traffic from outside the VM came and went
(``extra_info["cpu_read_gbs"]``).
"""
from __future__ import annotations

import time

import torch

_N = 768


def _best_ms(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def cpu_parallel_speedup(repeats: int = 5) -> float:
    """GEMM time on one thread / on ``torch.get_num_threads()`` threads (best of ``repeats``);
    ~1.8-2.0 where two cores really run in parallel, ~1.0 where they do not. Restores the thread
    count. About 0.1 s on the development VM."""
    threads = torch.get_num_threads()
    a = torch.randn(_N, _N, generator=torch.Generator().manual_seed(0))
    many = _best_ms(lambda: torch.mm(a, a), repeats)
    try:
        torch.set_num_threads(1)
        one = _best_ms(lambda: torch.mm(a, a), repeats)
    finally:
        torch.set_num_threads(threads)
    return round(one / many, 2)


def cpu_read_gbs(repeats: int = 3) -> float:
    """GB/s at which one thread sums a 64 MB float32 tensor (best of ``repeats``): far beyond the
    last-level cache, so this reads memory. Restores the thread count. ~0.05 s."""
    threads = torch.get_num_threads()
    x = torch.ones(16 * 2**20)
    try:
        torch.set_num_threads(1)
        ms = _best_ms(lambda: x.sum(), repeats)
    finally:
        torch.set_num_threads(threads)
    return round(x.numel() * x.element_size() / ms / 1e6, 1)


if __name__ == "__main__":
    print(f"{torch.get_num_threads()} threads: parallel speed-up of a GEMM {cpu_parallel_speedup()}, "
          f"one thread reads {cpu_read_gbs()} GB/s")
