#!/usr/bin/env python3
"""Markdown report from bench/run.sh's runs.tsv, rss.tsv and loadgen.tsv; header lines on stdin.

    report.py RUNS_TSV RSS_TSV LOADGEN_TSV CHART_FILE < header.txt > report.md
"""
import csv
import statistics
import sys
from collections import OrderedDict


def num(value):
    try:
        return float(value)
    except ValueError:
        return None


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}×"


def main():
    runs_path, rss_path, loadgen_path, chart = sys.argv[1:5]
    header = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    with open(runs_path) as f:
        runs = list(csv.DictReader(f, delimiter="\t"))

    groups = OrderedDict()  # (workload, clients) -> target -> [rows]
    for r in runs:
        groups.setdefault((r["workload"], int(r["clients"])), OrderedDict()).setdefault(r["target"], []).append(r)

    rounds = max((int(r["round"]) for r in runs), default=0)
    out = ["# rlsproxy benchmark", ""]
    out += [f"- {line}" for line in header]
    out += [
        "",
        f"Medians over {rounds} round(s). Latency in ms: pgbench's average, and p50/p99 from its",
        "per-transaction log (`--log`), median over rounds. Ratios are TPS / TPS of direct or PgBouncer",
        "for the same workload and clients. `errors` counts runs whose pgbench exit status was not 0 or",
        "whose output mentions an error (raw output in the results folder); only clean runs enter the",
        "medians, and \"failed\" means no run was clean. \"proxy CPU\" is the proxy process's user +",
        "system CPU time per transaction (PgBouncer's or rlsproxy's; PostgreSQL's is not in it).",
        "rls-mix is 80 % reads and 20 % write transactions on the example RLS schema: through PgBouncer",
        "it runs the app-side pattern (its own `set_config(…, true)` in each transaction), directly the",
        "tenant is a session setting, through rlsproxy the proxy injects it. rls-read is its read alone",
        "(a primary-key read). rlsproxy-tx-strict runs strict mode (a signed context verified by the",
        "policies, migrations/0003) on a copy of the same database.",
        "",
        f"![TPS by target and workload]({chart})",
        "",
        "| workload | clients | target | TPS | vs direct | vs PgBouncer | lat avg | p50 | p99 | proxy CPU µs/tx | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tps = {}
    for (workload, clients), targets in groups.items():
        # Only clean runs count: a run where pgbench clients aborted reports a meaningless TPS.
        def ok(rows):
            return [r for r in rows if r["status"] == "0"]

        direct = med(num(r["tps"]) for r in ok(targets.get("direct", []) or targets.get("direct-delayed", [])))
        bouncer = med(num(r["tps"]) for r in ok(targets.get("pgbouncer", [])))
        for target, rows in targets.items():
            t = med(num(r["tps"]) for r in ok(rows))
            tps[(workload, clients, target)] = t
            errors = len(rows) - len(ok(rows))
            lat = {k: med(num(r[k]) for r in ok(rows)) for k in ("lat_avg_ms", "p50_ms", "p99_ms", "proxy_cpu_us")}
            shown = fmt(t) if t is not None else "failed"
            out.append(
                f"| {workload} | {clients} | {target} | {shown} | {ratio(t, direct)} | {ratio(t, bouncer)} "
                f"| {fmt(lat['lat_avg_ms'], 3)} | {fmt(lat['p50_ms'], 3)} | {fmt(lat['p99_ms'], 3)} "
                f"| {fmt(lat['proxy_cpu_us'], 1)} | {errors}/{len(rows)} |"
            )

    # Issue 5's targets that this run can check.
    def g(w, c, t):
        return tps.get((w, c, t))

    def lat(w, c, t):
        rows = groups.get((w, c), {}).get(t, [])
        return med(num(r["lat_avg_ms"]) for r in rows)

    checks = []
    txn, pgb, direct = (g("select-simple", 32, t) for t in ("rlsproxy-transaction", "pgbouncer", "direct"))
    checks.append(("`-S` 32 clients, transaction mode ≥ 1.0× PgBouncer", ratio(txn, pgb), txn and pgb and txn >= pgb))
    checks.append(("`-S` 32 clients, transaction mode ≥ 0.75× direct", ratio(txn, direct),
                   txn and direct and txn >= 0.75 * direct))
    txp, dp = g("select-prepared", 32, "rlsproxy-transaction"), g("select-prepared", 32, "direct")
    checks.append(("`-S -M prepared` 32 clients, transaction mode ≥ 0.75× direct", ratio(txp, dp),
                   txp and dp and txp >= 0.75 * dp))
    app = g("appside-set_config", 32, "pgbouncer")
    checks.append(("`-S` 32 clients, transaction mode ≥ 2× app-side set_config through PgBouncer",
                   ratio(txn, app), txn and app and txn >= 2 * app))
    ld, lp, lt = (lat("select-simple", 1, t) for t in ("direct", "pgbouncer", "rlsproxy-transaction"))
    if None not in (ld, lp, lt):
        checks.append(("1 client: added latency ≤ PgBouncer's (avg, transaction mode)",
                       f"{(lt - ld) * 1000:.0f} µs vs {(lp - ld) * 1000:.0f} µs", lt - ld <= lp - ld))
    guard_on, guard_off = (g("select-simple", 32, t) for t in ("rlsproxy-transaction", "rlsproxy-tx-noguard"))
    checks.append(("`-S` 32 clients: guard on ≥ 0.95× guard off", ratio(guard_on, guard_off),
                   guard_on and guard_off and guard_on >= 0.95 * guard_off))
    mix_on, mix_off = (g("rls-mix", 32, t) for t in ("rlsproxy-transaction", "rlsproxy-tx-noguard"))
    checks.append(("rls-mix 32 clients: guard on ≥ 0.95× guard off", ratio(mix_on, mix_off),
                   mix_on and mix_off and mix_on >= 0.95 * mix_off))
    for w in ("rls-read", "rls-mix"):
        default, strict = (g(w, 16, t) for t in ("rlsproxy-transaction", "rlsproxy-tx-strict"))
        checks.append((f"{w} 16 clients: strict mode ≥ 0.9× default mode (transaction mode)", ratio(strict, default),
                       strict and default and strict >= 0.9 * default))
    for w in ("delayed-select-simple", "delayed-select-prepared"):
        dd, dp = lat(w, 1, "direct-delayed"), lat(w, 1, "rlsproxy-delayed")
        if None not in (dd, dp):
            checks.append((f"{w}, 1 client: latency ≤ 1.1× direct over the same delayed link",
                           f"{dp:.2f} ms vs {dd:.2f} ms ({dp / dd:.2f}×)", dp <= 1.1 * dd))
    out += ["", "## Issue 5 targets checked by this run", "", "| target | measured | met |", "|---|---|---|"]
    for name, measured, met in checks:
        out.append(f"| {name} | {measured} | {'-' if measured == '-' else ('yes' if met else '**no**')} |")

    with open(loadgen_path) as f:
        loadgen = list(csv.DictReader(f, delimiter="\t"))
    if loadgen:
        out += ["", "## Multi-tenant load generator (examples/loadgen.rs, through rlsproxy transaction mode)", "",
                "200 clients over 50 tenants, each with its own token, checking that every row it reads or",
                "updates is its own tenant's (`foreign` must be 0).", "", "| mode | summary |", "|---|---|"]
        for r in loadgen:
            out.append(f"| {r['mode']} | `{r['summary']}` |")

    with open(rss_path) as f:
        rss = list(csv.DictReader(f, delimiter="\t"))
    checks_memory = []
    if rss:
        out += ["", "## Memory with idle client connections (VmRSS)", "",
                "| target | clients asked | opened | RSS before (KiB) | RSS with clients (KiB) | per client |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in rss:
            before, after, opened = num(r["rss_before_kib"]), num(r["rss_after_kib"]), num(r["opened"])
            per = f"{(after - before) / opened:.1f} KiB" if opened and before and after else "-"
            if r["target"].startswith("rlsproxy") and r["clients"] == "10000" and per != "-":
                checks_memory.append((after - before) / opened)
            out.append(f"| {r['target']} | {r['clients']} | {fmt(opened)} | {fmt(before)} | {fmt(after)} | {per} |")
        out.append("")
        out.append("PgBouncer is one process; rlsproxy one process. PostgreSQL backends are not counted.")
        for per in checks_memory:
            out.append(f"Target ≤ 10 KiB per idle client at 10,000 clients: {per:.1f} KiB, "
                       f"{'met' if per <= 10 else '**not met**'}.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
