"""A short run of every CUDA op (forward and backward, several dtypes and odd sizes) for
compute-sanitizer (memcheck, racecheck). Prints OK at the end."""
import torch

import dale_ext

assert torch.cuda.is_available(), "needs a GPU"
g = torch.Generator(device="cuda").manual_seed(0)
for dtype in (torch.float32, torch.uint8, torch.bfloat16):
    for (B, C, H, W, p, bins) in ((2, 3, 37, 29, 8, 256), (1, 1, 16, 16, 16, 20000)):
        x = torch.rand(B, C, H, W, device="cuda", generator=g)
        x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
        lab = (torch.rand(B, H, W, device="cuda", generator=g) > 0.6).long()
        dale_ext.fuzzy_split(x, lab, patch_size=p, bins=bins)
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    for (B, D, H, W, C) in ((2, 5, 9, 13, 3), (1, 64, 20, 20, 2)):
        x = torch.randn(B, D, H, W, device="cuda", generator=g).to(dtype).requires_grad_()
        lab = torch.randint(0, C, (B, H, W), device="cuda", generator=g)
        w = torch.rand(B, H, W, device="cuda", generator=g).requires_grad_()
        s = dale_ext.class_gaussians(x, lab, C, weights=w)
        (s.covs.sum() + s.means.sum() + s.counts.sum()).backward()
        t = torch.randn(B, D, H, W, device="cuda", generator=g).to(dtype)
        dale_ext.wasserstein_loss(x, lab, t, lab, C, perturbation=0.01).backward()
# the capped partial sums (C x D^2 beyond 256 MiB per launch), a strided view, uint8 labels with
# out-of-range values over NaN features
x = torch.randn(2, 256, 12, 10, device="cuda", generator=g).requires_grad_()
lab = torch.randint(0, 19, (2, 12, 10), device="cuda", generator=g)
dale_ext.class_gaussians(x, lab, 19).covs.sum().backward()
x = torch.randn(2, 10, 15, 17, device="cuda", generator=g)
x[:, :, :2] = float("nan")
lab = torch.randint(0, 3, (2, 15, 17), device="cuda", generator=g).to(torch.uint8)
lab[:, :2] = 250
v = x[:, ::2, :, 1:].requires_grad_()
dale_ext.class_gaussians(v, lab[:, :, 1:], 3).covs.sum().backward()
torch.cuda.synchronize()
print("OK")
