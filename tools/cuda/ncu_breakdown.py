#!/usr/bin/env python3
"""Per-kernel time of one decode step from an ncu CSV.

    ncu --csv --print-units base --metrics gpu__time_duration.sum,\
dram__throughput.avg.pct_of_peak_sustained_elapsed <cmd> > step.csv
    tools/cuda/ncu_breakdown.py step.csv [--steps N]

Groups the kernels by name (template arguments dropped), prints total time,
count and the time-weighted DRAM throughput (% of peak) of each group, largest
first, and the sum over all kernels divided by --steps.
"""
import csv
import re
import sys
from collections import defaultdict


def main():
    path = sys.argv[1]
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 1
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        rows.append(r)
    kernels = defaultdict(lambda: {"ns": 0.0, "n": 0, "dram": 0.0})
    by_id = defaultdict(dict)
    for r in rows:
        by_id[(r["ID"], r["Kernel Name"])][r["Metric Name"]] = float(r["Metric Value"].replace(",", ""))
    for (kid, name), m in by_id.items():
        short = re.sub(r"<.*", "", re.sub(r"^void ", "", name)).replace("streamsink::gpu::", "")
        short = re.sub(r"\(.*", "", short)
        k = kernels[short]
        ns = m.get("gpu__time_duration.sum", 0.0)
        k["ns"] += ns
        k["n"] += 1
        k["dram"] += ns * m.get("dram__throughput.avg.pct_of_peak_sustained_elapsed", 0.0)
    total = sum(k["ns"] for k in kernels.values())
    print(f"{'kernel':40s} {'us/step':>9s} {'count':>6s} {'dram%':>6s} {'share':>6s}")
    for name, k in sorted(kernels.items(), key=lambda kv: -kv[1]["ns"]):
        print(f"{name[:40]:40s} {k['ns'] / 1e3 / steps:9.1f} {k['n'] // steps:6d} {k['dram'] / max(k['ns'], 1):6.1f} "
              f"{100 * k['ns'] / total:5.1f}%")
    print(f"{'total':40s} {total / 1e3 / steps:9.1f}")


if __name__ == "__main__":
    main()
