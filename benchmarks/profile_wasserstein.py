"""Where wasserstein_loss spends its time on the CPU: statistics of each side, the matrix op
(gaussian_w2), float64 eigh of the class covariances, the whole forward and forward+backward,
against the plain-PyTorch reference; the inputs of benchmarks/bench_wasserstein.py.

    python -m benchmarks.profile_wasserstein            # medians in ms, one line per shape

Quoted in benchmarks/results/2026-11-27-cpu-notes.md. Run on a quiet machine.
"""
from __future__ import annotations

import platform
import time

import torch

import dale_ext
from benchmarks import git_commit
from benchmarks.bench_wasserstein import make_inputs
from dale_ext.ops.wasserstein import _class_gaussians64, gaussian_w2
from dale_ext.reference import wasserstein_loss as reference_loss

SHAPES = [(8, 64, 56, 56, 2), (4, 128, 32, 32, 9)]


def median_ms(fn, repeats: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(sorted(times)[repeats // 2] * 1e3, 2)


def profile(shape) -> dict:
    x, lx, t, lt, w = make_inputs(torch.Generator().manual_seed(0), shape, "cpu")
    C, D = shape[-1], shape[1]
    x.requires_grad_()
    si = _class_gaussians64(x.detach(), lx, C, w, -100)
    st = _class_gaussians64(t, lt, C, None, -100)
    eye = torch.eye(D, dtype=torch.float64)
    cov_t, cov_in = st.covs + 0.01 + 1e-5 * eye, (si.covs + 1e-5 * eye).requires_grad_()

    def loss():
        return dale_ext.wasserstein_loss(x, lx, t, lt, C, input_weights=w, perturbation=0.01)

    def ref():
        return reference_loss(x, lx, t, lt, C, input_weights=w, perturbation=0.01, method="gather")

    return {
        "statistics input": median_ms(lambda: _class_gaussians64(x.detach(), lx, C, w, -100)),
        "statistics target": median_ms(lambda: _class_gaussians64(t, lt, C, None, -100)),
        "gaussian_w2": median_ms(lambda: gaussian_w2(st.means, cov_t, si.means, cov_in)),
        "eigh (batched)": median_ms(lambda: torch.linalg.eigh(cov_t)),
        "loss forward": median_ms(loss),
        "loss fwd+bwd": median_ms(lambda: torch.autograd.grad(loss(), x)),
        "reference fwd+bwd": median_ms(lambda: torch.autograd.grad(ref(), x)),
    }


def main() -> None:
    commit = git_commit(short=True)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, python "
          f"{platform.python_version()}, torch {torch.__version__}, {dale_ext.build_info()}, commit {commit}")
    for shape in SHAPES:
        print(shape, profile(shape))


if __name__ == "__main__":
    main()
