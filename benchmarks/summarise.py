"""Turn a pytest-benchmark JSON into a markdown table of medians and ratios: baseline / impl,
where the baseline is the faster plain-PyTorch ``reference*`` (ops) or the ``standard`` step (trainer),
and, for CPU groups, the range of the host probes taken around each timing of the group
(``parallel_probe.py``: a 2-thread speed-up near 1.0 means the host ran the threads on one core's
worth of time; the read bandwidth of one thread shows memory traffic from outside).
Entries timed by ``conftest.run_paired`` (implementations called in turn, round by round) get
a table of their own: each implementation's median, the ratio of medians, and the median over
rounds of the round's ratio (the round's faster reference over the kernel).

    python -m benchmarks.summarise results/<file>.json > results/<file>.md
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from statistics import median


def _spread(values: list[float]) -> str:
    return f"{min(values):g}-{max(values):g}" if values else ""


def summarise(path: str) -> str:
    data = json.load(open(path))
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    # parallel_probe.py's readings, before and after each CPU timing of the group
    speedups: dict[str, list[float]] = defaultdict(list)
    reads: dict[str, list[float]] = defaultdict(list)
    paired = [b for b in data["benchmarks"] if "paired_s" in b["extra_info"]]
    for bench in (b for b in data["benchmarks"] if "paired_s" not in b["extra_info"]):
        groups[bench["group"]][bench["extra_info"]["impl"]] = bench["stats"]["median"]
        speedups[bench["group"]] += bench["extra_info"].get("cpu_parallel_speedup", [])
        reads[bench["group"]] += bench["extra_info"].get("cpu_read_gbs", [])
    mi, ci = data.get("machine_info", {}), data.get("commit_info", {})
    extra = data["benchmarks"][0]["extra_info"] if data["benchmarks"] else {}
    lines = [
        f"# Benchmarks: {path.rsplit('/', 1)[-1]}",
        "",
        f"- machine: {mi.get('node')} / {mi.get('cpu', {}).get('brand_raw')} "
        f"({mi.get('cpu', {}).get('count')} CPUs), python {mi.get('python_version')}",
        f"- torch {extra.get('torch')}, dale_ext build {extra.get('build')}",
        *[f"- GPU: {gpu}" for gpu in sorted({b["extra_info"]["gpu"] for b in data["benchmarks"]
                                             if b["extra_info"].get("gpu")})],
        f"- commit {ci.get('id')} (dirty: {ci.get('dirty')}), {data.get('datetime')}",
        "",
        "| benchmark | impl | median (ms) | baseline / impl | host: 2-thread speed-up | host: read GB/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group in sorted(groups):
        meds = groups[group]
        # kernels: the faster plain-PyTorch reference (e.g. gather or one-hot); trainer: standard
        refs = [m for impl, m in meds.items() if impl.startswith("reference")]
        ref = min(refs) if refs else meds.get("standard")
        for impl in sorted(meds, key=lambda k: (k not in ("kernel", "dale"), k)):
            ratio = f"{ref / meds[impl]:.2f}x" if ref else ""
            lines.append(f"| {group} | {impl} | {meds[impl] * 1e3:.2f} | {ratio} | {_spread(speedups[group])} "
                         f"| {_spread(reads[group])} |")
    if paired:
        lines += ["", "Timed in turn, call by call (`run_paired`):", "",
                  "| benchmark | impl | median (ms) | baseline / impl, medians | baseline / impl, median of rounds "
                  "| host: 2-thread speed-up | host: read GB/s |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for bench in sorted(paired, key=lambda b: b["group"]):
            lines += _paired_rows(bench)
    return "\n".join(lines) + "\n"


def _paired_rows(bench: dict) -> list[str]:
    times: dict[str, list[float]] = bench["extra_info"]["paired_s"]
    refs = [name for name in times if name.startswith("reference")]
    rounds = min(len(t) for t in times.values())
    # the faster reference of each round, and of the medians
    base_rounds = [min(times[r][i] for r in refs) for i in range(rounds)] if refs else []
    meds = {name: median(t) for name, t in times.items()}
    base = min(meds[r] for r in refs) if refs else None
    info = bench["extra_info"]
    probes = f"| {_spread(info.get('cpu_parallel_speedup', []))} | {_spread(info.get('cpu_read_gbs', []))} |"
    rows = []
    for name in sorted(times, key=lambda k: (k != "kernel", k)):
        by_medians = f"{base / meds[name]:.2f}x" if base else ""
        by_rounds = f"{median(b / t for b, t in zip(base_rounds, times[name])):.2f}x" if base_rounds else ""
        rows.append(f"| {bench['group']} | {name} | {meds[name] * 1e3:.2f} | {by_medians} | {by_rounds} {probes}")
    return rows


if __name__ == "__main__":
    print(summarise(sys.argv[1]))
