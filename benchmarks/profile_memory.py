"""Page faults and the matrix-function limit, as quoted in benchmarks/results/2026-11-27-cpu-notes.md:

- fuzzy_split (B=24, 3x224x224 float32): median ms and minor page faults per call, with the
  output cache on and off, dropping each output before the next call or holding it (as
  pytest-benchmark does); each setting in 3 fresh processes (the fault mode depends on the
  allocation history of the process); with the cache off, also under glibc's
  MALLOC_MMAP_THRESHOLD_ alone and together with MALLOC_TRIM_THRESHOLD_ (docs/ops.md's advice);
- class_gaussians and wasserstein_loss fwd+bwd at the benchmark's small shapes: ms and faults per call;
- float64 eigh of nine 128 x 128 matrices and the _gaussian_w2 op, on 1 and 2 threads;
- benchmarks/cpu_bandwidth.cpp (memory bandwidth, plain vs non-temporal stores), when g++ exists.

    python -m benchmarks.profile_memory > benchmarks/results/<date>-cpu-profile-memory.txt
"""
from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import torch

import dale_ext
from benchmarks import git_commit


def per_call(fn, calls: int = 60, keep: bool = False) -> tuple[float, float]:
    """(median ms, minor page faults per call) of ``fn()``; ``keep`` holds the previous result
    while the next call runs."""
    for _ in range(3):
        fn()
    held, times = None, []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        held = out if keep else None
        del out
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / calls
    del held
    return round(sorted(times)[calls // 2] * 1e3, 2), round(faults, 1)


def fuzzy_split_case(cache: bool, keep: bool) -> str:
    from benchmarks.bench_fuzzy_split import make_inputs

    if not cache:
        dale_ext.set_output_cache_limit(0)
    x, y = make_inputs(torch.Generator().manual_seed(0), torch.float32, "cpu")
    ms, faults = per_call(lambda: dale_ext.fuzzy_split(x, y), keep=keep)
    return f"{ms} ms, {faults} faults/call"


def loss_cases() -> list[str]:
    from benchmarks.bench_wasserstein import make_inputs

    lines = []
    for shape in [(8, 64, 56, 56, 2), (4, 128, 32, 32, 9)]:
        x, lx, t, lt, w = make_inputs(torch.Generator().manual_seed(0), shape, "cpu")
        C = shape[-1]
        op = torch.ops.dale_ext.class_gaussians.default
        stats = per_call(lambda: op(t, lt, C, None, -100))
        xg = x.detach().requires_grad_()
        loss = per_call(lambda: torch.autograd.grad(
            dale_ext.wasserstein_loss(xg, lx, t, lt, C, input_weights=w, perturbation=0.01), xg))
        lines.append(f"{shape}: class_gaussians (target side) {stats[0]} ms, {stats[1]} faults/call; "
                     f"wasserstein_loss fwd+bwd {loss[0]} ms, {loss[1]} faults/call")
    return lines


def matrix_cases() -> list[str]:
    g = torch.Generator().manual_seed(0)
    C, D = 9, 128
    a = torch.randn(C, D, 3 * D, generator=g, dtype=torch.float64)
    b = torch.randn(C, D, 3 * D, generator=g, dtype=torch.float64)
    A, B = a @ a.mT / D, b @ b.mT / D
    m = torch.zeros(C, D, dtype=torch.float64)
    op = torch.ops.dale_ext._gaussian_w2.default
    lines = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        eigh = per_call(lambda: torch.linalg.eigh(A), calls=21)[0]
        eigh32 = per_call(lambda: torch.linalg.eigh(A.float()), calls=21)[0]
        w2 = per_call(lambda: op(m, A, m, B, False, False), calls=21)[0]
        w2g = per_call(lambda: op(m, A, m, B, False, True), calls=21)[0]
        lines.append(f"{threads} thread(s), 9 x 128 x 128: eigh float64 {eigh} ms, eigh float32 {eigh32} ms, "
                     f"_gaussian_w2 {w2} ms, with the cov2 gradient {w2g} ms")
    return lines


def bandwidth() -> list[str]:
    gxx = shutil.which("g++")
    if gxx is None:
        return ["(no g++: cpu_bandwidth.cpp not run)"]
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_bandwidth.cpp")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "cpu_bandwidth")
        subprocess.run([gxx, "-O2", "-mavx2", "-fopenmp", src, "-o", exe], check=True)
        return subprocess.run([exe], capture_output=True, text=True, check=True).stdout.strip().splitlines()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--fuzzy-split":  # one setting, in its own process
        print(fuzzy_split_case(sys.argv[2] == "on", sys.argv[3] == "keep"))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
          f"threads, python {platform.python_version()}, torch {torch.__version__}, {dale_ext.build_info()}, "
          f"commit {git_commit(short=True)}")
    print("## fuzzy_split B=24 3x224x224 float32, 3 processes per setting")
    glibc = {"": {}, ", MALLOC_MMAP_THRESHOLD_ only": {"MALLOC_MMAP_THRESHOLD_": "33554432"},
             ", MALLOC_MMAP_THRESHOLD_ + MALLOC_TRIM_THRESHOLD_": {"MALLOC_MMAP_THRESHOLD_": "33554432",
                                                                  "MALLOC_TRIM_THRESHOLD_": "1073741824"}}
    for cache, env_name in [("on", ""), ("off", ""), ("off", ", MALLOC_MMAP_THRESHOLD_ only"),
                            ("off", ", MALLOC_MMAP_THRESHOLD_ + MALLOC_TRIM_THRESHOLD_")]:
        for keep in ("drop", "keep"):
            env = dict(os.environ, **glibc[env_name])
            runs = [subprocess.run([sys.executable, "-m", "benchmarks.profile_memory", "--fuzzy-split", cache, keep],
                                   capture_output=True, text=True, check=True, env=env).stdout.strip()
                    for _ in range(3)]
            print(f"cache {cache}{env_name}, previous output {'held' if keep == 'keep' else 'dropped'}: "
                  + " | ".join(runs))
    print("## statistics and loss")
    print("\n".join(loss_cases()))
    print("## matrix functions")
    print("\n".join(matrix_cases()))
    print("## memory bandwidth (benchmarks/cpu_bandwidth.cpp)")
    print("\n".join(bandwidth()))


if __name__ == "__main__":
    main()
