"""Device-to-device copy bandwidth (the roofline of memory-bound ops) and the fraction of it that
fuzzy_split's minimal bytes reach; then gpu.json / gpu.md in OUTDIR with every figure of the
session (GPU, versions, commit, tests, sanitizer, benchmarks)."""
from __future__ import annotations

import json
import os
import platform
import sys

import torch

from benchmarks import git_commit


def median_ms(fn, reps: int = 50, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def copy_bandwidth() -> float:
    """GB/s of a 1 GiB device-to-device copy, counting bytes read plus bytes written."""
    src = torch.empty(1 << 28, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), reps=20)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def fuzzy_split_fraction(bw: float) -> dict:
    import dale_ext

    out = {}
    B, C, H, W = 24, 3, 224, 224
    for name, dtype in (("float32", torch.float32), ("uint8", torch.uint8), ("bfloat16", torch.bfloat16)):
        x = torch.rand(B, C, H, W, device="cuda")
        x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
        lab = (torch.rand(B, H, W, device="cuda") > 0.5).long()
        ms = median_ms(lambda: dale_ext.fuzzy_split(x, lab))
        out_elem = 4 if dtype == torch.uint8 else x.element_size()
        # minimal bytes: read image and labels once; write 2 masks (f32), 2 images, 3 patch maps
        nbytes = x.numel() * x.element_size() + lab.numel() * 8 + 2 * B * H * W * 4 + 2 * x.numel() * out_elem
        gbs = nbytes / (ms * 1e-3) / 1e9
        out[name] = {"ms": ms, "min_bytes": nbytes, "GB/s": gbs, "fraction_of_copy": gbs / bw}
    return out


def main(outdir: str) -> None:
    gpu = torch.cuda.is_available()
    info = {"gpu": torch.cuda.get_device_name() if gpu else None, "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version()}
    info["commit"] = git_commit()
    if gpu:
        bw = copy_bandwidth()
        info["copy_bandwidth_GBps"] = bw
        info["fuzzy_split_roofline"] = fuzzy_split_fraction(bw)
    else:
        info["note"] = "no GPU: dry run (no bandwidth figures)"
    status = {}
    path = os.path.join(outdir, "status.txt")
    if os.path.exists(path):
        status = dict(line.strip().split("=", 1) for line in open(path) if "=" in line)
    info["status"] = status
    bench = os.path.join(outdir, "bench.json")
    if os.path.exists(bench):
        data = json.load(open(bench))
        info["benchmarks"] = [{"group": b["group"], "impl": b["extra_info"].get("impl"),
                               "median_ms": 1e3 * b["stats"]["median"]} for b in data["benchmarks"]]
    json.dump(info, open(os.path.join(outdir, "gpu.json"), "w"), indent=2)
    print(json.dumps({k: v for k, v in info.items() if k != "benchmarks"}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
