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


def test_paired_table_takes_each_rounds_faster_reference(tmp_path):
    group = "loss cpu paired"
    times = {"kernel": [0.010, 0.020, 0.010], "reference": [0.050, 0.060, 0.030],
             "reference_onehot": [0.040, 0.080, 0.040]}
    data = {"benchmarks": [_bench("other", "kernel", 0.001), _bench("other", "reference", 0.002),
                           _bench(group, "paired", 0.1, paired_s=times, cpu_read_gbs=[20.0, 25.0])]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    text = summarise(str(path))
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| loss cpu paired")}
    assert (group, "paired") not in rows  # the round's total is not an implementation
    # medians: kernel 10 ms, reference 50, one-hot 40 -> 4.00x; rounds: 40/10, 60/20, 30/10 -> 4, 3, 3 -> 3.00x
    assert rows[(group, "kernel")][2:7] == ["10.00", "4.00x", "3.00x", "", "20-25"]
    assert rows[(group, "reference")][3] == "0.80x"
    assert "| other | kernel | 1.00 | 2.00x |" in text


def test_run_paired_alternates_the_order_and_records_every_round():
    from benchmarks.conftest import run_paired

    calls = []

    class FakeBenchmark:
        def __init__(self):
            self.extra_info = {}

        def pedantic(self, fn, rounds, iterations):
            for _ in range(rounds):
                fn()

    fake = FakeBenchmark()
    times = run_paired(fake, {"kernel": lambda: calls.append("k"), "reference": lambda: calls.append("r")},
                       "test", rounds=4, warmup_rounds=1)
    assert calls == ["k", "r"] + ["k", "r", "r", "k", "k", "r", "r", "k"]
    assert [len(t) for t in times.values()] == [4, 4] and fake.extra_info["paired_s"] is times
