#!/usr/bin/env bash
# Steadfast's adapter for the peers' benchmark harness (../shared/peers). bench/compare.sh links
# this directory in as peers/steadfast, so the harness's bench.py measures Steadfast exactly as it
# measures every peer (same payload, same per-job record, same clock, same W1/W2 procedure).
#
#   peers/steadfast/peer.sh     embedded SQLite on a fresh data dir (WAL, fsync before every 2xx)
#   peers/steadfast-py/peer.sh  embedded SQLite, with the Python SDK's Worker (bench/peer/python_worker.py):
#                               coroutine handlers, or plain ones (in threads) as steadfast-py:sync
#   peers/steadfast-pg/peer.sh  PostgreSQL: the harness's own server and database (the one
#                               graphile-worker, pg-boss, procrastinate and apalis use), migrated by
#                               `steadfast migrate`, served by a non-superuser role as `serve` requires
# (PEER_VARIANT=pg does the same as the -pg directory.) Two directories rather than a variant because
# the harness asks `backend` before it passes the variant: the embedded store answers `sqlite`, so the
# harness does not sample the (unused) PostgreSQL server's memory during its runs; it still resets it.
#
# `setup` starts one `steadfast serve` (stopping the previous one); the worker is one process
# running the Rust SDK's Worker with STEADFAST_BENCH_CONCURRENCY (default 256) jobs at once.
# On SIGTERM the worker also records the server's peak RSS (VmHWM) in $REC_DIR/../steadfast-server.json.
set -euo pipefail
source "$(dirname "$0")/../common/env.sh"
[[ "$(basename "$(dirname "$0")")" == steadfast-pg ]] && export PEER_VARIANT=pg
# peers/steadfast-py: the same server (embedded SQLite), with the Python SDK's worker.
[[ "$(basename "$(dirname "$0")")" == steadfast-py ]] && PYTHON_WORKER=1
HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
BIN="${STEADFAST_BIN:-$HERE/../../target/release/steadfast}"
STATE="$PEERS_STATE/steadfast"
PORT="${STEADFAST_BENCH_PORT:-8659}"
export STEADFAST_URL="http://127.0.0.1:$PORT"
[[ -f "$STATE/key" ]] && STEADFAST_KEY="$(cat "$STATE/key")" && export STEADFAST_KEY
APP_ROLE=steadfast_bench_app
APP_URL="postgres://$APP_ROLE@127.0.0.1:$PG_PORT/$PGDATABASE"

stop_server() {
  local pid
  pid="$(cat "$STATE/server.pid" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

BENCH_AUDIT_KEY=0000000000000000000000000000000000000000000000000000000000000001

start_server() {
  stop_server
  rm -rf "$STATE" && mkdir -p "$STATE/data"
  local storage=(--data-dir "$STATE/data")
  if [[ "${PEER_VARIANT:-}" == pg ]]; then
    psql -q -v ON_ERROR_STOP=1 -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_ROLE') THEN
        CREATE ROLE $APP_ROLE LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END \$\$;" >/dev/null
    "$BIN" migrate --database-url "$DATABASE_URL" --app-role "$APP_ROLE" >/dev/null
    "$BIN" tenant create bench --database-url "$APP_URL" >/dev/null
    "$BIN" key create --tenant bench --role admin --database-url "$APP_URL" > "$STATE/key"
    # PostgreSQL nodes need the deployment's audit signing key; a benchmark's
    # database may outlive this state dir, so the key is a fixed one.
    storage=(--database-url "$APP_URL" --audit-signing-key "$BENCH_AUDIT_KEY")
  fi
  setsid "$BIN" serve "${storage[@]}" --listen "127.0.0.1:$PORT" \
    </dev/null >"$STATE/server.log" 2>&1 &
  echo $! > "$STATE/server.pid"
  for _ in $(seq 300); do
    if curl -fsS "$STEADFAST_URL/readyz" >/dev/null 2>&1; then
      [[ -s "$STATE/key" ]] || cp "$STATE/data/admin.key" "$STATE/key"
      return 0
    fi
    kill -0 "$(cat "$STATE/server.pid")" 2>/dev/null || { cat "$STATE/server.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "steadfast did not become ready in 30 s" >&2; cat "$STATE/server.log" >&2; exit 1
}

case "$1" in
  backend) [[ "${PEER_VARIANT:-}" == pg ]] && echo pg || echo sqlite ;;
  version) echo "steadfast $("$BIN" --version | cut -d' ' -f2) ($(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo unknown)) / $([[ "${PEER_VARIANT:-}" == pg ]] && echo PostgreSQL 15 || echo "embedded SQLite $(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || true)")$([[ -n "${PYTHON_WORKER:-}" ]] && echo " / Python worker, $("$STEADFAST_PY" --version)")" ;;
  setup) start_server ;;
  stop) stop_server ;;
  enqueue) exec "$BIN" bench peer enqueue "$2" ;;
  warm) exec "$BIN" bench peer warm "$2" ;;
  produce) exec "$BIN" bench peer produce "$2" "$3" ;;
  worker)
    if [[ -n "${PYTHON_WORKER:-}" ]]; then
      # steadfast-py:sync runs plain handlers (in the worker's threads); the default, coroutines.
      STEADFAST_PY_HANDLER="${STEADFAST_PY_HANDLER:-${PEER_VARIANT:-async}}" \
        "${STEADFAST_PY:?bench/compare.sh sets STEADFAST_PY to the SDK venv python}" "$HERE/python_worker.py" &
    else
      STEADFAST_BENCH_CONCURRENCY="${STEADFAST_BENCH_CONCURRENCY:-256}" "$BIN" bench peer worker &
    fi
    child=$!
    trap 'kill -TERM $child 2>/dev/null || true' TERM INT
    wait "$child" || true
    wait "$child" 2>/dev/null || true
    hwm_kb="$(awk '/^VmHWM:/ {print $2}' "/proc/$(cat "$STATE/server.pid")/status" 2>/dev/null || echo 0)"
    echo "{\"server_peak_rss_mb\": $((hwm_kb / 1024))}" > "$REC_DIR/../steadfast-server.json"
    ;;
  *) echo "usage: peer.sh backend|version|setup|stop|enqueue N|warm K|produce RATE SECS|worker" >&2; exit 2 ;;
esac
