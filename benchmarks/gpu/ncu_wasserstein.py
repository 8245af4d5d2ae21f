"""One wasserstein_loss forward + backward at (24, 64, 224, 224, 2), float32, for Nsight Compute:
run.sh profiles its statistics kernels (sums, moments, backward) with hardware counters."""
import torch

import dale_ext
from benchmarks.bench_wasserstein import make_inputs

B, D, H, W, C = shape = (24, 64, 224, 224, 2)
x, lx, t, lt, w = make_inputs(torch.Generator().manual_seed(0), shape, "cuda")
x.requires_grad_()
dale_ext.wasserstein_loss(x, lx, t, lt, C, input_weights=w, perturbation=0.01).backward()
torch.cuda.synchronize()
print("OK", float(x.grad.abs().sum()))
