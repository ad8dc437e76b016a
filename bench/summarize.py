#!/usr/bin/env python3
"""Markdown tables from bench/fanout.sh's results.jsonl (medians over repeats).

usage: bench/summarize.py target/bench/results.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict

# A rate is "sustained" when (medians over repeats) almost nothing is lost, the
# deliveries kept up with the publishes (delivered/s counts the time until the
# last delivery arrived, so a backlog plus latency over ~10 % of the phase fails
# it) and no connection was closed or sent a gap.
MAX_LOSS_PCT = 0.01
MIN_KEPT_UP = 0.90

TARGETS = {
    "per_core": 1_000_000,  # deliveries per server CPU-second
    "vs_nats": 1.0,
    "p99_10k_us": 2000,
    "idle_kib": 4.0,
}


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, unit="", digits=0):
    if v is None:
        return "-"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{digits}f}{unit}"


def main(path):
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    fan = defaultdict(list)
    idle = defaultdict(list)
    for r in rows:
        if r["bench"] == "fanout":
            fan[(r["subscribers"], r["target"], r["rate"])].append(r)
        elif r["bench"] == "idle":
            idle[r["target"]].append(r)

    out = []
    p = out.append
    p("### Fan-out, every rate (median of repeats)\n")
    p("| subscribers | server | publishes/s | offered deliveries/s | delivered/s | loss % | p50 µs | p99 µs | p99.9 µs | server CPU cores | deliveries per server CPU-s | generator CPU cores | other CPU cores | runs |")
    p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    per = {}  # (subs, target, rate) -> medians
    for key in sorted(fan, key=lambda k: (k[0], k[1], k[2])):
        subs, target, rate = key
        rs = fan[key]
        m = {k: med(rs, k) for k in ["deliveries_per_sec", "loss_pct", "p50_us", "p99_us", "p999_us", "deliveries_per_server_cpu_s"]}
        cores = [r["server_cpu_s"] / (r["duration_s"] + r["drain_s"]) for r in rs if r.get("server_cpu_s") is not None]
        gcores = [r["generator_cpu_s"] / (r["duration_s"] + r["drain_s"]) for r in rs if r.get("generator_cpu_s") is not None]
        ocores = [r["other_cpu_s"] / (r["duration_s"] + r["drain_s"]) for r in rs if r.get("other_cpu_s") is not None]
        m["cores"] = statistics.median(cores) if cores else None
        m["gcores"] = statistics.median(gcores) if gcores else None
        m["ocores"] = statistics.median(ocores) if ocores else None
        m["clean"] = all(r["closed"] == 0 and r["gaps"] == 0 for r in rs)
        m["kept_up"] = (m["deliveries_per_sec"] or 0) / (rate * subs)
        per[key] = m
        p(f"| {subs:,} | {target} | {fmt(rate)} | {fmt(rate * subs)} | {fmt(m['deliveries_per_sec'])} | {fmt(m['loss_pct'], digits=3)} "
          f"| {fmt(m['p50_us'])} | {fmt(m['p99_us'])} | {fmt(m['p999_us'])} | {fmt(m['cores'], digits=2)} "
          f"| {fmt(m['deliveries_per_server_cpu_s'])} | {fmt(m['gcores'], digits=2)} | {fmt(m['ocores'], digits=2)} | {len(rs)} |")

    p("\n### Highest sustained rate (median of repeats: loss ≤ 0.01 %, delivered ≥ 90 % of offered, no gaps or closes)\n")
    p("| subscribers | server | publishes/s | deliveries/s | p50 µs | p99 µs | deliveries per server CPU-s |")
    p("|---:|---|---:|---:|---:|---:|---:|")
    best = {}
    for subs in sorted({k[0] for k in per}):
        for target in sorted({k[1] for k in per if k[0] == subs}):
            ok = [(k[2], per[k]) for k in per if k[0] == subs and k[1] == target
                  and per[k]["clean"] and per[k]["loss_pct"] is not None and per[k]["loss_pct"] <= MAX_LOSS_PCT
                  and per[k]["kept_up"] >= MIN_KEPT_UP]
            if not ok:
                p(f"| {subs:,} | {target} | none sustained | | | | |")
                continue
            rate, m = max(ok, key=lambda x: x[1]["deliveries_per_sec"])
            best[(subs, target)] = (rate, m)
            p(f"| {subs:,} | {target} | {fmt(rate)} | {fmt(m['deliveries_per_sec'])} | {fmt(m['p50_us'])} | {fmt(m['p99_us'])} "
              f"| {fmt(m['deliveries_per_server_cpu_s'])} |")

    common = sorted(k for k in per if k[1] == "acorn" and (k[0], "nats", k[2]) in per)
    if common:
        p("\n### Acorn vs NATS on the same workload (same subscribers and publish rate; medians)\n")
        p("| subscribers | publishes/s | delivered/s Acorn / NATS | p50 µs Acorn / NATS | p99 µs Acorn / NATS | deliveries per server CPU-s Acorn / NATS | CPU efficiency ratio |")
        p("|---:|---:|---:|---:|---:|---:|---:|")
        for subs, _, rate in common:
            a, n = per[(subs, "acorn", rate)], per[(subs, "nats", rate)]
            ac, nc = a["deliveries_per_server_cpu_s"], n["deliveries_per_server_cpu_s"]
            ratio = f"{ac / nc:.2f}×" if ac and nc else "-"
            p(f"| {subs:,} | {fmt(rate)} | {fmt(a['deliveries_per_sec'])} / {fmt(n['deliveries_per_sec'])} "
              f"| {fmt(a['p50_us'])} / {fmt(n['p50_us'])} | {fmt(a['p99_us'])} / {fmt(n['p99_us'])} | {fmt(ac)} / {fmt(nc)} | {ratio} |")

    if idle:
        p("\n### Idle connections (fresh server)\n")
        p("| server | connections | RSS before KiB | RSS after settle KiB | RSS at end of hold KiB | KiB per connection (settled) | KiB per connection (end) |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for target, rs in sorted(idle.items()):
            r = rs[-1]
            p(f"| {target} | {r['connections']:,} | {fmt(r['rss_before_kib'])} | {fmt(r['rss_settled_kib'])} | {fmt(r['rss_end_kib'])} "
              f"| {fmt(r['kib_per_conn_settled'], digits=2)} | {fmt(r['kib_per_conn_end'], digits=2)} |")

    p("\n### Against the targets\n")
    p("| target | goal | reached |")
    p("|---|---|---|")
    for subs in sorted({k[0] for k in per}):
        a = best.get((subs, "acorn"))
        n = best.get((subs, "nats"))
        if a:
            p(f"| deliveries per server CPU-s, {subs:,} subs, at the highest sustained rate ({fmt(a[0])}/s) | ≥ {TARGETS['per_core']:,} | {fmt(a[1]['deliveries_per_server_cpu_s'])} |")
        lossless = [(k[2], per[k]) for k in per if k[0] == subs and k[1] == "acorn" and per[k]["clean"]
                    and per[k]["loss_pct"] is not None and per[k]["loss_pct"] <= MAX_LOSS_PCT
                    and per[k]["deliveries_per_server_cpu_s"]]
        if lossless:
            rate, m = max(lossless, key=lambda x: x[1]["deliveries_per_server_cpu_s"])
            p(f"| deliveries per server CPU-s, {subs:,} subs, best lossless rate ({fmt(rate)}/s) | ≥ {TARGETS['per_core']:,} | {fmt(m['deliveries_per_server_cpu_s'])} |")
        if a and n:
            ratio = a[1]["deliveries_per_sec"] / n[1]["deliveries_per_sec"]
            p(f"| highest sustained deliveries/s vs NATS, {subs:,} subs | ≥ 1.0× | {ratio:.2f}× ({fmt(a[1]['deliveries_per_sec'])} vs {fmt(n[1]['deliveries_per_sec'])}) |")
            ac, nc = a[1]["deliveries_per_server_cpu_s"], n[1]["deliveries_per_server_cpu_s"]
            if ac and nc:
                p(f"| deliveries per server CPU-s vs NATS, {subs:,} subs | ≥ 1.0× | {ac / nc:.2f}× ({fmt(ac)} vs {fmt(nc)}) |")
    lows = sorted(k for k in per if k[0] == 10000 and k[1] == "acorn")
    if lows:
        lo = min(lows, key=lambda k: k[2])
        p(f"| p99 at 10,000 subs, {fmt(lo[2])} publishes/s | ≤ 2,000 µs | {fmt(per[lo]['p99_us'])} µs |")
        if (10000, "acorn") in best and best[(10000, "acorn")][0] != lo[2]:
            rate, m = best[(10000, "acorn")]
            p(f"| p99 at 10,000 subs, {fmt(rate)} publishes/s | ≤ 2,000 µs | {fmt(m['p99_us'])} µs |")
    if "acorn" in idle:
        r = idle["acorn"][-1]
        v = r.get("kib_per_conn_end") or r.get("kib_per_conn_settled")
        p(f"| RSS per idle connection at {r['connections']:,} | ≤ {TARGETS['idle_kib']} KiB | {fmt(v, ' KiB', 2)} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.jsonl")
