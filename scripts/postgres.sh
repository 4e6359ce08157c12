#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL server for the test suite, in a
# temporary directory, trusting local connections. Prints the superuser URL.
#
#   scripts/postgres.sh start DIR PORT [CERT KEY]   # prints postgres://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop DIR
#
# With CERT and KEY (PEM files), the server also accepts TLS with them
# (ssl=on); plain connections are still accepted.
set -euo pipefail

command=$1
dir=$2
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] && command -v pg_ctl >/dev/null; then bin=$(dirname "$(command -v pg_ctl)"); fi
if [ -z "$bin" ]; then
    echo "PostgreSQL server binaries not found (install the postgresql package)" >&2
    exit 1
fi

# PostgreSQL refuses to run as root; run it as the postgres user then.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$command" in
start)
    port=$3
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync >/dev/null
    fi
    ssl=""
    if [ $# -ge 5 ]; then
        # PostgreSQL insists the key is private to the server's user.
        install -m 0644 "$4" "$dir/data/server.crt"
        install -m 0600 "$5" "$dir/data/server.key"
        if [ "$(id -u)" = 0 ]; then chown postgres "$dir/data/server.crt" "$dir/data/server.key"; fi
        ssl="-c ssl=on"
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=128MB $ssl" >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
*)
    echo "usage: $0 start DIR PORT [CERT KEY] | stop DIR" >&2
    exit 2
    ;;
esac
