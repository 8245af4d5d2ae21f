"""Turn a pytest-benchmark JSON into a markdown table of medians and ratios: baseline / impl,
where the baseline is the plain-PyTorch ``reference`` (ops) or the ``standard`` step (trainer).

    python -m benchmarks.summarise results/<file>.json > results/<file>.md
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def summarise(path: str) -> str:
    data = json.load(open(path))
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["group"]][bench["extra_info"]["impl"]] = bench["stats"]["median"]
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
        "| benchmark | impl | median (ms) | baseline / impl |",
        "|---|---|---:|---:|",
    ]
    for group in sorted(groups):
        meds = groups[group]
        ref = meds.get("reference", meds.get("standard"))  # kernels: reference; trainer: standard
        for impl in sorted(meds, key=lambda k: (k not in ("kernel", "dale"), k)):
            ratio = f"{ref / meds[impl]:.2f}x" if ref else ""
            lines.append(f"| {group} | {impl} | {meds[impl] * 1e3:.2f} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summarise(sys.argv[1]))
