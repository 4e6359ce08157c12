#!/usr/bin/env bash
# Steadfast side by side with the queues people use today, in one run on one machine.
#
# usage: bench/compare.sh [SPEC ...]     SPEC = PEER[:VARIANT] as the peers' run-all.sh takes it
#   default: steadfast steadfast-pg steadfast-py celery bullmq graphile-worker pg-boss procrastinate
#            apalis dramatiq rq:simple   (steadfast = embedded SQLite, steadfast-pg = the harness's
#            PostgreSQL, steadfast-py = embedded SQLite with the Python SDK's worker, coroutine handlers;
#            steadfast-py:sync the same with plain handlers)
# env:
#   PEERS_DIR     the peers' harness (default: ../shared/peers next to this repository); it is
#                 copied to $WORK/peers (never modified); the peers install from the registries there
#   WORK          scratch space, reused between runs to keep installs (default /var/tmp/steadfast-compare)
#   OUT           results (default bench/results/<UTC time>): runs.jsonl, raw/, summary.md, ratios.md
#   REPS          repetitions, interleaved across systems (default 3)
#   REDIS_MODES   Redis durability modes for Redis peers (default "nodur aof")
#   W1_N W2_RATE W2_SECS ...   passed through to the harness (defaults 20000 / 200 / 15)
#   SKIP_INSTALL=1             do not run the peers' install.sh (already installed in $WORK)
#   SKIP_TARGETS=1             skip Steadfast's own target runs (8-client enqueue, p99 at 1,000/s)
#
# Every system gets the harness's identical procedure (see $PEERS_DIR/README.md): W1 = enqueue 20,000
# no-op jobs, then drain them; W2 = 200 jobs/s for 15 s, schedule-to-start latency. Steadfast runs
# through bench/peer/peer.sh. The table of ratios is written to $OUT/ratios.md and printed.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PEERS_DIR="$(cd "${PEERS_DIR:-$REPO/../shared/peers}" && pwd)"
WORK="${WORK:-/var/tmp/steadfast-compare}"
OUT="${OUT:-$REPO/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
export REPS="${REPS:-3}" REDIS_MODES="${REDIS_MODES:-nodur aof}"
SPECS=("$@")
if [[ ${#SPECS[@]} -eq 0 ]]; then
  SPECS=(steadfast steadfast-pg steadfast-py steadfast-py:sync celery bullmq graphile-worker pg-boss procrastinate apalis dramatiq rq:simple)
fi
mkdir -p "$OUT" "$WORK/peers"
OUT="$(cd "$OUT" && pwd)"

echo "== building steadfast (release)"
(cd "$REPO" && cargo build --release -q -p steadfast-cli)
export STEADFAST_BIN="$REPO/target/release/steadfast"

echo "== copying the harness from $PEERS_DIR to $WORK/peers"
(cd "$PEERS_DIR" && tar --exclude=./results --exclude=.venv --exclude=node_modules --exclude=target -cf - .) \
  | (cd "$WORK/peers" && tar -xf -)
chmod -R u+w "$WORK/peers"
for adapter in steadfast steadfast-pg steadfast-py; do
  mkdir -p "$WORK/peers/$adapter"
  ln -sfn "$REPO/bench/peer/peer.sh" "$WORK/peers/$adapter/peer.sh"
done
echo "== the Python SDK for steadfast-py (its own venv, from the repository)"
[[ -x "$WORK/steadfast-py-venv/bin/python" ]] || python3 -m venv "$WORK/steadfast-py-venv"
"$WORK/steadfast-py-venv/bin/pip" install -q --force-reinstall --no-deps "$REPO/sdks/python"
"$WORK/steadfast-py-venv/bin/pip" install -q "$REPO/sdks/python"
export STEADFAST_PY="$WORK/steadfast-py-venv/bin/python"
if [[ "${SKIP_INSTALL:-}" != 1 ]]; then
  echo "== installing the peers (registries; idempotent)"
  (cd "$WORK/peers" && ./install.sh)
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
  echo "steadfast: $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet || echo ' (uncommitted changes)')"
  echo "command: bench/compare.sh ${SPECS[*]}  (REPS=$REPS REDIS_MODES=\"$REDIS_MODES\")"
} > "$OUT/run.txt"
cat "$OUT/run.txt"

cleanup() { bash "$WORK/peers/steadfast/peer.sh" stop 2>/dev/null || true; }
trap cleanup EXIT
echo "== the harness: ${SPECS[*]}"
OUT="$OUT" SKIP_INSTALL=1 "$WORK/peers/run-all.sh" "${SPECS[@]}"
cleanup

if [[ "${SKIP_TARGETS:-}" != 1 ]]; then
  echo "== Steadfast's own targets: one-by-one enqueue with 8 clients, p99 at 1,000 jobs/s"
  for rep in $(seq 1 "$REPS"); do
    "$STEADFAST_BIN" bench throughput --jobs 20000 --producers 8 --json | sed "s/^{/{\"rep\":$rep,\"bench\":\"throughput\",/" >> "$OUT/targets.jsonl"
    "$STEADFAST_BIN" bench latency --rate 1000 --seconds 15 --json | sed "s/^{/{\"rep\":$rep,\"bench\":\"latency-1000\",/" >> "$OUT/targets.jsonl"
  done
fi

python3 "$REPO/bench/ratios.py" "$OUT" > "$OUT/ratios.md"
cat "$OUT/ratios.md"
echo "results: $OUT"
