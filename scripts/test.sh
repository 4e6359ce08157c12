#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test, on both storage
# backends. Starts its own private PostgreSQL server. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# A suite run builds from scratch or nearly: incremental caches only cost
# time and disk here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

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

if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi

echo "== PostgreSQL for the tests"
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/steadfast-test-pg.XXXXXX")
# A free port unless one is given: a server left over from an interrupted
# run must not block this one.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=${STEADFAST_TEST_PG_PORT:-$(free_port)}
st_pid=""
st_dir=""
small_fs=""
cleanup() {
    if [ -n "$st_pid" ]; then kill "$st_pid" 2>/dev/null || true; fi
    if [ -n "$st_dir" ]; then rm -rf "$st_dir"; fi
    if [ -n "$small_fs" ]; then $sudo umount -l "$small_fs" 2>/dev/null || true; rmdir "$small_fs" 2>/dev/null || true; fi
    scripts/postgres.sh stop "$pg_dir"
    rm -rf "$pg_dir"
}
trap cleanup EXIT
STEADFAST_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$pg_dir" "$pg_port")
export STEADFAST_TEST_POSTGRES_URL
# The fault tests start and stop their own servers with these.
export STEADFAST_TEST_PG_SCRIPT="$PWD/scripts/postgres.sh"
echo "PostgreSQL at $STEADFAST_TEST_POSTGRES_URL"

echo "== schemathesis: the live server against its own OpenAPI document"
# Bounded examples and a fixed seed: the same cases every run. Fails on any
# 5xx and on any response that does not match the document. Before the
# tests: nextest's summary must stay the run's closing line.
cargo build --locked -q -p steadfast-cli --bin steadfast
venv="$(realpath "${CARGO_TARGET_DIR:-target}")/schemathesis-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        $sudo apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends python3-venv >/dev/null
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi
st_dir=$(mktemp -d "${TMPDIR:-/tmp}/steadfast-schemathesis.XXXXXX")
st_port=$(free_port)
# Its own embedded store, whatever STEADFAST_* the caller's shell holds.
env $(env | sed -n 's/^\(STEADFAST_[A-Z_]*\)=.*/-u \1/p') \
    "${CARGO_TARGET_DIR:-target}/debug/steadfast" serve --data-dir "$st_dir/data" --listen "127.0.0.1:$st_port" \
    >"$st_dir/server.log" 2>&1 &
st_pid=$!
stop_st() { kill "$st_pid" 2>/dev/null || true; wait "$st_pid" 2>/dev/null || true; st_pid=""; rm -rf "$st_dir"; st_dir=""; }
python3 - "$st_port" <<'PY'
import socket, sys, time
deadline = time.time() + 30
while time.time() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("the server for schemathesis did not become ready")
PY
# Run from its scratch dir: schemathesis keeps a cache of crashes in the
# working directory, which must not steer later runs.
if ! (cd "$st_dir" && "$venv/bin/schemathesis" run "http://127.0.0.1:$st_port/openapi.json" \
    -H "Authorization: Bearer $(cat "$st_dir/data/admin.key")" \
    --checks not_a_server_error,response_schema_conformance \
    --phases fuzzing,stateful --max-examples 20 --seed 1 --workers 2); then
    cat "$st_dir/server.log" >&2
    stop_st
    exit 1
fi
stop_st

echo "== the providers' own webhook signing libraries (tests/providers)"
# Pinned: Stripe's and Octokit's Node libraries (package-lock.json), Standard
# Webhooks' and Slack's Python libraries (requirements.txt, in the same venv).
# The transactional-enqueue examples' psycopg too (examples/transactional-enqueue).
if ! "$venv/bin/python" -c "import standardwebhooks, slack_sdk, mypy, psycopg" 2>/dev/null; then
    "$venv/bin/pip" install -q -r tests/providers/requirements.txt \
        -r examples/transactional-enqueue/requirements.txt "ruff==0.17.6" "mypy==2.4.1"
fi
echo "== ruff and mypy --strict (Python)"
"$venv/bin/ruff" check tests/providers examples/transactional-enqueue
"$venv/bin/ruff" format --check tests/providers examples/transactional-enqueue
"$venv/bin/mypy" --strict tests/providers/sign.py examples/transactional-enqueue/orders.py
if ! command -v npm >/dev/null 2>&1; then
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
fi
(cd tests/providers && npm ci --no-audit --no-fund --loglevel=error)
(cd examples/transactional-enqueue && npm ci --no-audit --no-fund --loglevel=error)
export STEADFAST_TEST_PROVIDER_PYTHON="$venv/bin/python"

echo "== the dashboard in a real browser (tests/ui: Debian's Chromium driven by playwright-core, axe-core)"
if [ ! -x /usr/bin/chromium ]; then
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
# No install scripts: the browser is Debian's, and nothing phones home.
(cd tests/ui && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
ui_bin="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/steadfast"
(cd tests/ui && STEADFAST_BIN="$ui_bin" node --test --test-concurrency=1)

echo "== a small filesystem for the full-disk test"
# A size-capped tmpfs (mounting needs root; sudo otherwise); the test fills it.
small_fs=$(mktemp -d "${TMPDIR:-/tmp}/steadfast-small-fs.XXXXXX")
$sudo mount -t tmpfs -o size=6m,mode=1777 tmpfs "$small_fs"
export STEADFAST_TEST_SMALL_FS="$small_fs"

echo "== the Python SDK (sdks/python): ruff, mypy --strict, pytest against the built binary"
# Its own venv, installed from the repository as users install it (not
# editable); pinned tools. The tests start their own servers.
py_venv="$(realpath "${CARGO_TARGET_DIR:-target}")/python-sdk-venv"
py_tools="pytest==9.2.0 ruff==0.17.6 mypy==2.4.1 opentelemetry-api==1.45.2"
# Made anew when the pins change (the stamp records what it holds).
if [ "$(cat "$py_venv/pins" 2>/dev/null)" != "$py_tools" ]; then
    rm -rf "$py_venv"
    python3 -m venv "$py_venv"
    "$py_venv/bin/pip" install -q $py_tools
    echo "$py_tools" > "$py_venv/pins"
fi
"$py_venv/bin/pip" install -q --force-reinstall --no-deps ./sdks/python
"$py_venv/bin/pip" install -q ./sdks/python
(cd sdks/python && "$py_venv/bin/ruff" check . && "$py_venv/bin/ruff" format --check . \
    && "$py_venv/bin/mypy" --strict src tests examples)
STEADFAST_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/steadfast" \
    "$py_venv/bin/pytest" -q -p no:cacheprovider sdks/python/tests
# The package promises Python 3.9: where a 3.9 interpreter is installed
# (pyenv on our CI image), the client and worker tests run on it too.
py39=""
for candidate in python3.9 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python3.9; do
    if "$candidate" -c "import sys; assert sys.version_info[:2] == (3, 9)" 2>/dev/null; then
        py39="$candidate"
        break
    fi
done
if [ -n "$py39" ]; then
    py39_venv="$(realpath "${CARGO_TARGET_DIR:-target}")/python-sdk-venv-3.9"
    py39_tools="pytest==8.4.2 opentelemetry-api==1.41.1"
    if [ "$(cat "$py39_venv/pins" 2>/dev/null)" != "$py39_tools" ]; then
        rm -rf "$py39_venv"
        "$py39" -m venv "$py39_venv"
        "$py39_venv/bin/pip" install -q $py39_tools
        echo "$py39_tools" > "$py39_venv/pins"
    fi
    "$py39_venv/bin/pip" install -q --force-reinstall --no-deps ./sdks/python
    "$py39_venv/bin/pip" install -q ./sdks/python
    STEADFAST_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/steadfast" \
        "$py39_venv/bin/pytest" -q -p no:cacheprovider sdks/python/tests \
        --ignore sdks/python/tests/test_processes.py
else
    echo "(no Python 3.9 here: the SDK's tests ran on $("$py_venv/bin/python" --version) only)"
fi

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first: nextest's summary must be the run's closing line.
    cargo test --workspace --locked --doc
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

