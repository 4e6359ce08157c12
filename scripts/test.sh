#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test, on both storage
# backends. Starts its own private PostgreSQL server. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    echo "== installing Debian's prometheus package (a real Prometheus and promtool for the metrics tests)"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi

echo "== PostgreSQL for the tests"
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/steadfast-test-pg.XXXXXX")
# A free port unless one is given: a server left over from an interrupted
# run must not block this one.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=${STEADFAST_TEST_PG_PORT:-$(free_port)}
cleanup() {
    scripts/postgres.sh stop "$pg_dir"
    rm -rf "$pg_dir"
}
trap cleanup EXIT
STEADFAST_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$pg_dir" "$pg_port")
export STEADFAST_TEST_POSTGRES_URL
# The fault tests start and stop their own servers with these.
export STEADFAST_TEST_PG_SCRIPT="$PWD/scripts/postgres.sh"
echo "PostgreSQL at $STEADFAST_TEST_POSTGRES_URL"

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first: nextest's summary must be the run's closing line.
    cargo test --workspace --locked --doc
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
