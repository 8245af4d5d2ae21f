"""Where wasserstein_loss spends its GPU time: torch.profiler over a few forward+backward steps of
the kernel and the reference, per shape; prints the top CUDA-time rows and event-timed pieces."""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import dale_ext
from benchmarks.bench_wasserstein import make_inputs
from dale_ext.reference import wasserstein_loss as reference_loss


def ms(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


for shape in [(24, 64, 224, 224, 2), (4, 128, 32, 32, 9), (8, 64, 56, 56, 2)]:
    B, D, H, W, C = shape
    x, lx, t, lt, w = make_inputs(torch.Generator().manual_seed(0), shape, "cuda")
    xr = x.detach().requires_grad_()

    def kernel_step():
        xr.grad = None
        dale_ext.wasserstein_loss(xr, lx, t, lt, C, input_weights=w, perturbation=0.01).backward()

    def kernel_device_matrix_step():
        xr.grad = None
        dale_ext.wasserstein_loss(xr, lx, t, lt, C, input_weights=w, perturbation=0.01,
                                  matrix_device="cuda").backward()

    def ref_step():
        xr.grad = None
        reference_loss(xr, lx, t, lt, C, input_weights=w, perturbation=0.01, method="gather").backward()

    s1 = dale_ext.class_gaussians(x, lx, C, weights=w)
    s2 = dale_ext.class_gaussians(t, lt, C)
    xs = x.detach().requires_grad_()
    pieces = {
        "kernel fwd+bwd": kernel_step,
        "kernel fwd+bwd, matrix_device=cuda": kernel_device_matrix_step,
        "reference fwd+bwd": ref_step,
        "class_gaussians fwd (x)": lambda: dale_ext.class_gaussians(x, lx, C, weights=w),
        "class_gaussians fwd+bwd (x)": lambda: dale_ext.class_gaussians(xs, lx, C, weights=w).covs.sum().backward(),
        "reference class_gaussians fwd": lambda: dale_ext.reference.class_gaussians(x, lx, C, weights=w),
        "gaussian_w2 (checked)": lambda: dale_ext.gaussian_w2(s1.means, s1.covs, s2.means, s2.covs),
        "gaussian_w2 on the host, with copies": lambda: dale_ext.gaussian_w2(
            *(v.cpu() for v in (s1.means, s1.covs, s2.means, s2.covs))).to("cuda"),
    }
    print(f"== {shape}", flush=True)
    for name, fn in pieces.items():
        print(f"  {name:34s} {ms(fn):8.3f} ms", flush=True)
    # the matrix part's classes run over torch's intra-op threads: torchrun's default is one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print(f"  {'kernel fwd+bwd, 1 host thread':34s} {ms(kernel_step):8.3f} ms", flush=True)
    # the host matrix op alone, by thread count, twice (be0b1f8 read 2.78 ms once at the first
    # shape where d939466 read 0.57 ms: noise or not?)
    host_w2 = pieces["gaussian_w2 on the host, with copies"]
    for n in (1, 2, threads, threads):
        torch.set_num_threads(n)
        print(f"  {'host gaussian_w2, %d threads' % n:34s} {ms(host_w2):8.3f} ms", flush=True)
    torch.set_num_threads(threads)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            kernel_step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            kernel_step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=14, max_name_column_width=60))
    # host-side API calls per step: each launch or copy costs the host thread ~10 us on that machine
    calls = {e.key: e.count / 5 for e in prof.key_averages()
             if e.key.startswith(("cudaLaunchKernel", "cudaMemcpy", "cudaMemset", "cudaStreamSynchronize"))}
    print("  CUDA API calls per kernel fwd+bwd step:", {k: round(v, 1) for k, v in sorted(calls.items())}, flush=True)
sys.stdout.flush()
