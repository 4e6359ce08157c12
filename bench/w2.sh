#!/usr/bin/env bash
# The harness's W2 without the harness, for A/B runs of one change: one `steadfast serve`, one SDK
# worker process (`bench peer worker`, concurrency 256) and one producer (`bench peer produce`),
# each its own process as bench/compare.sh runs them; prints schedule-to-start percentiles from
# the worker's per-job records. The side-by-side figures come from bench/compare.sh, not this.
#
#   bench/w2.sh sqlite [RATE] [SECS]
#   DATABASE_URL=postgres://app@127.0.0.1:55432/bench bench/w2.sh pg [RATE] [SECS]
#
# For `pg`, DATABASE_URL names a database migrated with `steadfast migrate --app-role` (the role
# in the URL); each run creates a tenant in it. BIN picks the binary (default: the release build).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${BIN:-$HERE/../target/release/steadfast}"
mode=${1:?usage: w2.sh sqlite|pg [RATE] [SECS]}; rate=${2:-200}; secs=${3:-15}
port=${STEADFAST_BENCH_PORT:-8660}
work=$(mktemp -d); mkdir -p "$work/rec" "$work/data"
export STEADFAST_URL="http://127.0.0.1:$port" REC_DIR="$work/rec" STEADFAST_BENCH_QUEUE="w2-$$"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

case "$mode" in
  sqlite) storage=(--data-dir "$work/data") ;;
  pg)
    : "${DATABASE_URL:?set DATABASE_URL for pg}"
    tenant="w2-$$-$(date +%s)"
    "$BIN" tenant create "$tenant" --database-url "$DATABASE_URL" >/dev/null
    "$BIN" key create --tenant "$tenant" --role admin --database-url "$DATABASE_URL" 2>/dev/null >"$work/key"
    # The database outlives this run: a fixed audit signing key for benchmarks.
    storage=(--database-url "$DATABASE_URL" --audit-signing-key 0000000000000000000000000000000000000000000000000000000000000001) ;;
  *) echo "usage: w2.sh sqlite|pg [RATE] [SECS]" >&2; exit 2 ;;
esac
"$BIN" serve "${storage[@]}" --listen "127.0.0.1:$port" </dev/null >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do curl -fsS "$STEADFAST_URL/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
[[ -s "$work/key" ]] || cp "$work/data/admin.key" "$work/key"
STEADFAST_KEY="$(cat "$work/key")"; export STEADFAST_KEY
"$BIN" bench peer worker --concurrency 256 >"$work/worker.log" 2>&1 &
pids+=($!)
# The harness's warm-up: a few jobs, run before measuring (negative ids).
"$BIN" bench peer warm 20
records() { cat "$work"/rec/* 2>/dev/null | awk -v lo="$1" '$1 >= lo' | wc -l; }
for _ in $(seq 300); do [[ $(records -1000) -ge 20 ]] && break; sleep 0.1; done
"$BIN" bench peer produce "$rate" "$secs" >&2
n=$((rate * secs))
for _ in $(seq 600); do [[ $(records 0) -ge $n ]] && break; sleep 0.1; done
cat "$work"/rec/* | awk '$1 >= 0 {print ($3 - $2) * 1000}' | sort -g | awk '
  {a[NR] = $1}
  END {printf "jobs=%d p50=%.2f p90=%.2f p99=%.2f max=%.2f ms\n", NR, a[int(NR*0.5+0.5)], a[int(NR*0.9+0.5)], a[int(NR*0.99+0.5)], a[NR]}'
