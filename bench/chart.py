#!/usr/bin/env python3
"""PNG chart of bench/run.sh's runs.tsv: median TPS by workload (and clients) and target.

    chart.py RUNS_TSV OUT_PNG TITLE_SUFFIX

Needs matplotlib (bench/run.sh installs it in bench/.venv).
"""
import csv
import statistics
import sys
from collections import OrderedDict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

TARGETS = ["direct", "pgbouncer", "rlsproxy-session", "rlsproxy-transaction", "rlsproxy-tx-noguard",
           "rlsproxy-tx-strict"]
COLORS = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd"]


def main():
    runs_path, out_path, suffix = sys.argv[1:4]
    with open(runs_path) as f:
        runs = [r for r in csv.DictReader(f, delimiter="\t") if r["status"] == "0" and r["tps"] != "-"]
    groups = OrderedDict()  # "workload cN" -> target -> [tps]
    for r in runs:
        if r["target"] not in TARGETS:
            continue  # the delayed-link runs are about latency, not throughput
        key = f"{r['workload']}\n{r['clients']} clients"
        groups.setdefault(key, {}).setdefault(r["target"], []).append(float(r["tps"]))
    if not groups:
        sys.exit("chart.py: no clean runs to chart")
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups)), 5))
    width = 0.8 / len(TARGETS)
    for i, (target, color) in enumerate(zip(TARGETS, COLORS)):
        xs, ys = [], []
        for x, (_, by_target) in enumerate(groups.items()):
            if target in by_target:
                xs.append(x - 0.4 + width * (i + 0.5))
                ys.append(statistics.median(by_target[target]))
        if xs:
            ax.bar(xs, ys, width, label=target, color=color)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), fontsize=8)
    ax.set_ylabel("transactions per second (median)")
    ax.set_title(f"pgbench TPS by target and workload ({suffix})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main()
