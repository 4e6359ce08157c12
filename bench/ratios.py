#!/usr/bin/env python3
"""One table of ratios from a bench/compare.sh run: Steadfast against every peer measured in the
same run by the same harness, and the issue's targets checked against those numbers.

usage: bench/ratios.py OUT_DIR      (reads OUT_DIR/runs.jsonl, raw/*/steadfast-server.json,
                                     targets.jsonl, run.txt; prints markdown)
Medians over repetitions, (min-max) beside them. Only standard-library Python.
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

out = Path(sys.argv[1])
runs = [json.loads(l) for l in (out / "runs.jsonl").read_text().splitlines() if l.strip()]
groups = defaultdict(lambda: {"w1": [], "w2": []})
versions = {}
for r in runs:
    key = (r["peer"], r.get("variant", ""), r["mode"])
    groups[key][r["workload"]].append(r)
    versions[key] = r.get("version", "")


def values(rs, field):
    return [r[field] for r in rs if r.get("completed") and r.get(field) is not None]


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(xs, f="{:,.0f}"):
    if not xs:
        return "n/a"
    m = f.format(statistics.median(xs))
    return m if len(xs) == 1 else f"{m} ({f.format(min(xs))}–{f.format(max(xs))})"


def is_ours(key):
    return key[0] in ("steadfast", "steadfast-pg")


def is_python(key):
    """Steadfast's server with the Python SDK's worker: reported on its own."""
    return key[0] == "steadfast-py"


def ours_on_pg(key):
    return key[0] == "steadfast-pg" or (key[0] == "steadfast" and key[1] == "pg")


def name(key):
    peer, variant, mode = key
    if is_python(key):
        handlers = "plain handlers" if key[1] == "sync" else "async handlers"
        return f"**Steadfast (SQLite) + Python worker, {handlers}**"
    if is_ours(key):
        return "**Steadfast (PostgreSQL)**" if ours_on_pg(key) else "**Steadfast (SQLite)**"
    label = peer + (f" ({variant})" if variant else "")
    return label + {"nodur": ", Redis no persistence", "aof": ", Redis AOF everysec"}.get(mode, "")


def raw_reports(key, name, workloads=("w1", "w2")):
    """The JSON files `name` the adapter left in each run's raw directory."""
    peer, variant, mode = key
    found = []
    for workload in workloads:
        for r in groups[key][workload]:
            tag = f"{peer}{('-' + variant) if variant else ''}-{mode}-{workload}-r{r['rep']}"
            f = out / "raw" / tag / name
            if f.exists():
                found.append(json.loads(f.read_text()))
    return found


def raw_workers(key):
    """Per W1 run, the reports of the steadfast-py worker processes."""
    peer, variant, mode = key
    runs = []
    for r in groups[key]["w1"]:
        tag = f"{peer}{('-' + variant) if variant else ''}-{mode}-w1-r{r['rep']}"
        runs.append([json.loads(f.read_text()) for f in sorted((out / "raw" / tag).glob("steadfast-py-worker-*.json"))])
    return runs


def server_rss(key):
    return [r["server_peak_rss_mb"] for r in raw_reports(key, "steadfast-server.json")]


stats = {}
for key, g in groups.items():
    stats[key] = {
        "enqueue": values(g["w1"], "enqueue_rate"),
        "drain": values(g["w1"], "drain_rate"),
        "p50": values(g["w2"], "lat_p50_ms"),
        "p99": values(g["w2"], "lat_p99_ms"),
        "runs": (len(g["w1"]), len(g["w2"])),
        "incomplete": sum(not r.get("completed") for r in g["w1"] + g["w2"]),
        "duplicates": sum(r.get("records", 0) - r.get("unique_ids", 0) for r in g["w1"] + g["w2"]),
    }

# One key per backend; `mode` is whatever the harness recorded (it calls every non-Redis system "pg").
ours = {}
for k in groups:
    if is_ours(k):
        ours["pg" if ours_on_pg(k) else "sqlite"] = k
python = [k for k in groups if is_python(k)]
peers = sorted((k for k in groups if not is_ours(k) and not is_python(k)), key=lambda k: -(med(stats[k]["drain"]) or 0))
pg_peers = [k for k in peers if k[2] == "pg"]

run_txt = out / "run.txt"
print("# Steadfast and the peers, one run\n")
if run_txt.exists():
    print("```\n" + run_txt.read_text().strip() + "\n```\n")
w1_n = next((r["enqueue_n"] for r in runs if r.get("enqueue_n")), 0)
w2_n = next((r["produce"]["n"] for r in runs if r.get("produce")), 0)
print(f"W1: enqueue {w1_n:,} no-op jobs (batches of 1,000 where the system has a batch API), then drain them;")
print(f"W2: one producer, one job per call at a steady rate ({w2_n:,} jobs), schedule-to-start latency.")
print("Median (min–max) of the repetitions.\n")
print("| system | version | enqueue jobs/s | drain jobs/s | W2 p50 ms | W2 p99 ms | runs W1/W2 |")
print("|---|---|---:|---:|---:|---:|---|")
for key in [k for k in ours.values() if k in groups] + python + peers:
    s = stats[key]
    runs_note = f"{s['runs'][0]}/{s['runs'][1]}"
    if s["incomplete"]:
        runs_note += f", {s['incomplete']} incomplete"
    if s["duplicates"]:
        runs_note += f", {s['duplicates']} duplicate executions"
    print(f"| {name(key)} | {versions[key]} | {fmt(s['enqueue'])} | {fmt(s['drain'])} | "
          f"{fmt(s['p50'], '{:,.2f}')} | {fmt(s['p99'], '{:,.2f}')} | {runs_note} |")
for variant, key in ours.items():
    rss = server_rss(key) if key in groups else []
    if rss:
        print(f"\nSteadfast ({'PostgreSQL' if variant == 'pg' else 'SQLite'}) server peak RSS per run: "
              f"{fmt(rss)} MB (VmHWM; the harness's worker columns are in runs.jsonl).")


def ratio(a, b):
    return f"{a / b:,.2f}×" if a and b else "n/a"


for variant, key in ours.items():
    if key not in groups:
        continue
    s = stats[key]
    versus = peers if variant == "sqlite" else pg_peers
    label = "SQLite" if variant == "sqlite" else "PostgreSQL"
    print(f"\n## Steadfast ({label}) ÷ peer (higher is better for Steadfast)\n")
    print("| peer | enqueue | drain | W2 p99 (peer p99 ÷ Steadfast p99) |")
    print("|---|---:|---:|---:|")
    for p in versus:
        t = stats[p]
        print(f"| {name(p)} | {ratio(med(s['enqueue']), med(t['enqueue']))} | {ratio(med(s['drain']), med(t['drain']))} "
              f"| {ratio(med(t['p99']), med(s['p99']))} |")

for key in python:
    s = stats[key]
    print(f"\n## {name(key)} ÷ the Python queues (higher is better for Steadfast)\n")
    print("| peer | enqueue | drain | W2 p99 (peer p99 ÷ Steadfast p99) |")
    print("|---|---:|---:|---:|")
    for p in peers:
        if p[0] not in ("celery", "rq", "dramatiq"):
            continue
        t = stats[p]
        print(f"| {name(p)} | {ratio(med(s['enqueue']), med(t['enqueue']))} | {ratio(med(s['drain']), med(t['drain']))} "
              f"| {ratio(med(t['p99']), med(s['p99']))} |")

targets = []
sq = ours.get("sqlite")
gw = ("graphile-worker", "", "pg")
if sq in groups and peers:
    # Issue 12's targets for the embedded store.
    s = stats[sq]
    best_enq = max(peers, key=lambda k: med(stats[k]["enqueue"]) or 0)
    best_p99 = min(peers, key=lambda k: med(stats[k]["p99"]) or float("inf"))
    d = med(s["drain"])
    if gw in groups and d:
        g = med(stats[gw]["drain"])
        targets.append(("drain ≥ 2× graphile-worker", f"{d:,.0f} vs 2 × {g:,.0f} = {2 * g:,.0f}: {d / g:.2f}×", d >= 2 * g))
    e, be = med(s["enqueue"]), med(stats[best_enq]["enqueue"])
    targets.append(("batched enqueue ≥ 1.5× the fastest peer", f"{e:,.0f} vs 1.5 × {be:,.0f} ({name(best_enq)}) = {1.5 * be:,.0f}: {e / be:.2f}×", e >= 1.5 * be))
    p, bp = med(s["p99"]), med(stats[best_p99]["p99"])
    if p is not None and bp is not None:
        targets.append(("p99 at 200/s ≤ the best peer's", f"{p:.2f} ms vs {bp:.2f} ms ({name(best_p99)})", p <= bp))
tj = out / "targets.jsonl"
if tj.exists():
    t = [json.loads(l) for l in tj.read_text().splitlines() if l.strip()]
    single = [x["enqueue_jobs_per_sec"] for x in t if x.get("bench") == "throughput"]
    p99k = [x["p99_ms"] for x in t if x.get("bench") == "latency-1000"]
    if single and sq in groups and peers:
        best_enq = max(peers, key=lambda k: med(stats[k]["enqueue"]) or 0)
        be = med(stats[best_enq]["enqueue"])
        targets.append(("(issue 7) one-by-one enqueue, 8 clients, on par with the fastest peer's enqueue",
                        f"{fmt(single)} vs {be:,.0f} ({name(best_enq)}, its batched figure)", med(single) >= be))
    if p99k:
        targets.append(("(issue 7) p99 at 1,000/s ≤ 5 ms", f"{fmt(p99k, '{:.2f}')} ms", med(p99k) <= 5))
pgk = ours.get("pg")
if pgk in groups:
    d = med(stats[pgk]["drain"])
    for peer, factor in (("graphile-worker", 1), ("pg-boss", 2)):
        k = (peer, "", "pg")
        if k in groups and d:
            o = med(stats[k]["drain"])
            targets.append((f"PostgreSQL drain ≥ {factor}× {peer}", f"{d:,.0f} vs {factor} × {o:,.0f} = {factor * o:,.0f}: {d / o:.2f}×", d >= factor * o))
    p = med(stats[pgk]["p99"])
    if gw in groups and p is not None:
        g = med(stats[gw]["p99"])
        targets.append(("PostgreSQL p99 at 200/s ≤ graphile-worker's", f"{p:.2f} ms vs {g:.2f} ms", p <= g))
for key in python:
    # Issue 16: the Python worker's drain against the Python queues, each in its faster Redis mode.
    s = stats[key]
    d = med(s["drain"])
    cpu = []
    for run in raw_workers(key):
        jobs = sum(r["jobs"] for r in run)
        if jobs:
            cpu.append(sum(r["worker_cpu_s"] for r in run) / jobs * 1e6)
    if cpu:
        print(f"\n{name(key)}: the worker processes' CPU per job over W1 (warm-up included): "
              f"{fmt(cpu, '{:,.1f}')} µs (getrusage, user + system, all processes).")
    for peer in ("celery", "rq", "dramatiq"):
        theirs = [k for k in peers if k[0] == peer]
        if not theirs or not d:
            continue
        best = max(theirs, key=lambda k: med(stats[k]["drain"]) or 0)
        o = med(stats[best]["drain"])
        targets.append((f"(issue 16) Python worker ({'plain' if key[1] == 'sync' else 'async'} handlers) drain ≥ 3× {peer}",
                        f"{d:,.0f} vs 3 × {o:,.0f} ({name(best)}) = {3 * o:,.0f}: {d / o:.2f}×", d >= 3 * o))
if targets:
    print("\n## Targets (issue 12, and issue 7's where so marked), from the medians above\n")
    print("| target | measured | met |")
    print("|---|---|---|")
    for what, measured, ok in targets:
        print(f"| {what} | {measured} | {'yes' if ok else '**no**'} |")
