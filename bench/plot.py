#!/usr/bin/env python3
"""PNG plots for BENCHMARKS.md, from a bench/compare.sh run and a `steadfast bench scale --json` report.

usage: bench/plot.py COMPARE_OUT_DIR SCALE_JSON PNG_DIR
  -> PNG_DIR/latency-percentiles.png   W2 schedule-to-start p50 / p90 / p99 per system (medians of runs)
  -> PNG_DIR/drain-vs-peers.png        W1 drain and enqueue jobs/s per system (medians of runs)
  -> PNG_DIR/throughput-vs-queued.png  batched enqueue and drain vs jobs already queued, and server RSS
Needs matplotlib (bench/plot.sh installs it in a private venv).
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, scale_json, png = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
png.mkdir(parents=True, exist_ok=True)
runs = [json.loads(l) for l in (out / "runs.jsonl").read_text().splitlines() if l.strip()]


def label(r):
    if r["peer"] in ("steadfast", "steadfast-pg"):
        on_pg = r["peer"] == "steadfast-pg" or r.get("variant") == "pg"
        return "Steadfast (PostgreSQL)" if on_pg else "Steadfast (SQLite)"
    mode = {"nodur": " (Redis)", "aof": " (Redis AOF)"}.get(r["mode"], "")
    return r["peer"] + (f" {r['variant']}" if r.get("variant") else "") + mode


groups = defaultdict(lambda: defaultdict(list))
for r in runs:
    if not r.get("completed"):
        continue
    for field in ("lat_p50_ms", "lat_p90_ms", "lat_p99_ms", "drain_rate", "enqueue_rate"):
        if r.get(field) is not None:
            groups[label(r)][field].append(r[field])
med = {k: {f: statistics.median(v) for f, v in fields.items()} for k, fields in groups.items()}
colour = lambda name: "#c0392b" if name.startswith("Steadfast") else "#7f8c8d"  # noqa: E731

# Latency percentiles, best p99 first.
lat = sorted((k for k in med if "lat_p99_ms" in med[k]), key=lambda k: med[k]["lat_p99_ms"])
fig, ax = plt.subplots(figsize=(10, 0.45 * len(lat) + 1.5))
for i, name in enumerate(lat):
    p50, p90, p99 = (med[name][f] for f in ("lat_p50_ms", "lat_p90_ms", "lat_p99_ms"))
    ax.barh(i, p99, color=colour(name), alpha=0.35)
    ax.barh(i, p90, color=colour(name), alpha=0.6)
    ax.barh(i, p50, color=colour(name), alpha=1.0)
    ax.text(p99, i, f"  {p50:.1f} / {p90:.1f} / {p99:.1f}", va="center", fontsize=8)
ax.set_yticks(range(len(lat)), lat)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlabel("schedule-to-start ms at 200 jobs/s (bars: p50, p90, p99; log scale)")
ax.set_title("W2 latency, one run on one machine (medians of repetitions)")
fig.tight_layout()
fig.savefig(png / "latency-percentiles.png", dpi=110)

# Drain and enqueue per system.
sysorder = sorted((k for k in med if "drain_rate" in med[k]), key=lambda k: -med[k]["drain_rate"])
fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(sysorder) + 1.5), sharey=True)
for ax, field, title in ((axes[0], "drain_rate", "W1 drain jobs/s"), (axes[1], "enqueue_rate", "W1 enqueue jobs/s")):
    values = [med[k].get(field, 0) for k in sysorder]
    ax.barh(range(len(sysorder)), values, color=[colour(k) for k in sysorder])
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    ax.set_title(title)
ax = axes[0]
ax.set_yticks(range(len(sysorder)), sysorder)
ax.invert_yaxis()
fig.tight_layout()
fig.savefig(png / "drain-vs-peers.png", dpi=110)

# Throughput vs backlog.
scale = json.loads(scale_json.read_text())
levels = scale["levels"]
x = [lv["queued"] for lv in levels]
fig, ax = plt.subplots(figsize=(8, 4.5))
ax.plot(x, [lv["enqueue_batched_jobs_per_sec"] for lv in levels], "o-", label="enqueue, batches of 1,000")
ax.plot(x, [lv["drain_jobs_per_sec"] for lv in levels], "s-", label="drain (8 workers)")
ax.set_xscale("log")
ax.set_ylim(bottom=0)
ax.set_xlabel("jobs already queued")
ax.set_ylabel("jobs/s")
ax2 = ax.twinx()
ax2.plot(x, [lv["server_peak_rss_mb"] for lv in levels], "^--", color="#7f8c8d", label="server peak RSS (MB)")
ax2.set_ylim(0, 250)
ax2.set_ylabel("server RSS MB (axis up to the 250 MB target)")
lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax.legend(lines, [l.get_label() for l in lines], loc="center left", fontsize=8)
ax.set_title(f"Steadfast ({scale['backend']}): throughput vs backlog; restart-to-ready {scale['restart_to_ready_ms']:.0f} ms")
fig.tight_layout()
fig.savefig(png / "throughput-vs-queued.png", dpi=110)
print("wrote", *(str(p) for p in sorted(png.glob("*.png"))))
