#!/usr/bin/env python3
"""Markdown tables of docs/REPRODUCTION.md from the score reports that
tools/train/quality_runs.sh writes (one JSON report per run, with logprobs).

  python3 tools/train/tables.py [RESULTS_DIR]
"""
from __future__ import annotations

import json
import math
import os
import sys


def load(d: str, name: str):
    p = os.path.join(d, name + ".json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def ppl(r, start: int = 0) -> str:
    if r is None:
        return "n/a"
    lp = r["logprobs"][start:]
    return f"{math.exp(-sum(lp) / len(lp)):.2f}"


def main() -> None:
    d = sys.argv[1] if len(sys.argv) > 1 else ".traindata/results"
    cols = [("dense", "dense"), ("window", "0+256"), ("sinks1", "1+255"), ("sinks2", "2+254"),
            ("sinks4", "4+252"), ("sinks8", "8+248"), ("recompute", "recompute 256")]
    models = [("v", "streamsink-llama-7m (vanilla)"), ("s", "streamsink-llama-7m-sink (sink token)")]
    any_r = next((load(d, f"{t}-{c}") for t, _ in models for c, _ in cols if load(d, f"{t}-{c}")), None)
    n = any_r["tokens"] if any_r else 0
    print(f"Perplexity over the whole stream ({n} tokens; the first 256 predictions are the same for every policy):\n")
    print("| model | " + " | ".join(h for _, h in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for t, name in models:
        print(f"| {name} | " + " | ".join(ppl(load(d, f"{t}-{c}")) for c, _ in cols) + " |")
    print(f"\nPerplexity of the tokens after the first 256 (where the policies differ):\n")
    print("| model | " + " | ".join(h for _, h in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for t, name in models:
        print(f"| {name} | " + " | ".join(ppl(load(d, f"{t}-{c}"), 256) for c, _ in cols) + " |")
    print("\nTable 3 layout (cache 256 = training context; sinks + window):\n")
    t3 = [("window", "0+256"), ("sinks1", "1+255"), ("sinks2", "2+254"), ("sinks4", "4+252")]
    print("| model | " + " | ".join(h for _, h in t3) + " |")
    print("|---|" + "---|" * len(t3))
    for t, name in models:
        print(f"| {name} | " + " | ".join(ppl(load(d, f"{t}-{c}")) for c, _ in t3) + " |")
    print("\nSeconds per run (CPU, 2 cores; the runs shared the machine, so these are not benchmarks):\n")
    print("| model | " + " | ".join(h for _, h in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for t, name in models:
        row = []
        for c, _ in cols:
            r = load(d, f"{t}-{c}")
            row.append("n/a" if r is None else f"{r['seconds']:.0f}")
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
