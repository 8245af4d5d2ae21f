"""The benchmark tooling that turns timings into recorded figures: the summary's ratios and the
host probes (benchmarks/summarise.py, benchmarks/parallel_probe.py)."""
from __future__ import annotations

import json

import torch

from benchmarks.parallel_probe import cpu_parallel_speedup, cpu_read_gbs
from benchmarks.summarise import summarise


def _bench(group, impl, median, **extra):
    return {"group": group, "stats": {"median": median}, "extra_info": {"impl": impl, **extra}}


def test_summary_ratio_uses_the_faster_reference_and_shows_the_probe_range(tmp_path):
    cpu, gpu = "loss cpu (8,64)", "loss cuda (8,64)"
    data = {"benchmarks": [
        _bench(cpu, "kernel", 0.010, cpu_parallel_speedup=[1.9, 1.05], cpu_read_gbs=[17.5, 12.0]),
        _bench(cpu, "reference", 0.040, cpu_parallel_speedup=[1.8, 1.7], cpu_read_gbs=[18.0, 16.0]),
        _bench(cpu, "reference_onehot", 0.030, cpu_parallel_speedup=[2.0, 1.6], cpu_read_gbs=[15.0, 19.5]),
        _bench(gpu, "kernel", 0.001), _bench(gpu, "reference", 0.012),
    ]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
            for line in summarise(str(path)).splitlines() if line.startswith("| loss")}
    cells = lambda key: [c.strip() for c in rows[key].strip("|").split("|")]  # noqa: E731
    assert cells((cpu, "kernel"))[2:] == ["10.00", "3.00x", "1.05-2", "12-19.5"]  # 30 ms one-hot is faster
    assert cells((cpu, "reference"))[3] == "0.75x"
    assert cells((gpu, "kernel"))[2:] == ["1.00", "12.00x", "", ""]  # no host probe on the GPU


def test_probes_are_positive_and_leave_the_thread_count_alone():
    threads = torch.get_num_threads()
    speedup, read = cpu_parallel_speedup(repeats=2), cpu_read_gbs(repeats=1)
    assert torch.get_num_threads() == threads
    assert 0.1 < speedup < 64 and 0.1 < read < 10_000
