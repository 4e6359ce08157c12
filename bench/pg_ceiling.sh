#!/usr/bin/env bash
# The ceiling of Steadfast's writes on PostgreSQL: a job's life as the set-based statements
# Steadfast's store sends, run as procedures inside the server (bench/pg_ceiling.sql) and driven
# by pgbench, so no HTTP, no Rust code and no client round trips are in the way. Enqueue and
# drain (lease + completion) are timed apart, each with a chainer linking audit records beside it.
#
# usage: bench/pg_ceiling.sh [SUPERUSER_URL]
#   default URL: the peers' harness server, postgres://postgres@127.0.0.1:5439/postgres
#   JOBS (default 200000), BATCH jobs per call (100), CLIENTS (4), STEADFAST_BIN
# Makes (and drops first) the database steadfast_ceiling on that server.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
URL="${1:-postgres://postgres@127.0.0.1:5439/postgres}"
BIN="${STEADFAST_BIN:-$REPO/target/release/steadfast}"
JOBS="${JOBS:-200000}" BATCH="${BATCH:-100}" CLIENTS="${CLIENTS:-4}"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
DB=steadfast_ceiling
DBURL="${URL%/*}/$DB"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

psql "$URL" -qAt -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
psql "$URL" -qAt -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'steadfast_ceiling_app')
  THEN CREATE ROLE steadfast_ceiling_app LOGIN; END IF; END \$\$" >/dev/null
"$BIN" migrate --database-url "$DBURL" --app-role steadfast_ceiling_app >/dev/null 2>&1
psql "$DBURL" -q -v ON_ERROR_STOP=1 -f "$REPO/bench/pg_ceiling.sql" >/dev/null
TENANT="$(psql "$DBURL" -qAt -c "INSERT INTO steadfast.tenants (tenant_id, name, created_at)
  VALUES (gen_random_uuid(), 'ceiling', 0) RETURNING tenant_id" | head -n 1)"
# (A procedure that commits cannot carry its own search_path.)
DBURL="$DBURL?options=-csearch_path%3Dsteadfast"
echo "CALL ceiling_enqueue('$TENANT', $BATCH);" > "$WORK/enqueue.sql"
echo "CALL ceiling_drain('$TENANT', $BATCH);" > "$WORK/drain.sql"
echo "CALL ceiling_chain('$TENANT', 5000);" > "$WORK/chain.sql"
per_client=$((JOBS / CLIENTS / BATCH))

# Runs pgbench on $1 with the chainer beside it; prints jobs/s.
phase() {
  "$PGBIN/pgbench" -n -c 1 -T 3600 -f "$WORK/chain.sql" "$DBURL" >/dev/null 2>&1 &
  local chainer=$!
  local tps
  tps="$("$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -t "$per_client" -f "$WORK/$1.sql" "$DBURL" 2>/dev/null \
    | awk '/^tps = / {print $3}')"
  kill -TERM "$chainer" 2>/dev/null || true
  wait "$chainer" 2>/dev/null || true
  awk -v tps="$tps" -v batch="$BATCH" 'BEGIN {printf "%.0f", tps * batch}'
}

echo "PostgreSQL ceiling of Steadfast's writes: $JOBS jobs, $BATCH per call, $CLIENTS clients ($("$PGBIN/postgres" --version))"
echo "enqueue (jobs + job.enqueued records, fsync'd): $(phase enqueue) jobs/s"
echo "drain (lease without fsync + completion with attempt, each with records): $(phase drain) jobs/s"
psql "$DBURL" -qAt -c "SELECT 'succeeded jobs: ' || count(*) FROM steadfast.jobs WHERE state = 'succeeded'" \
  -c "SELECT 'audit records chained: ' || count(*) || ', waiting: ' || (SELECT count(*) FROM steadfast.audit_intake) FROM steadfast.audit_records"
psql "$URL" -qAt -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
