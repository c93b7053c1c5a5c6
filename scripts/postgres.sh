#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's package:
#   scripts/postgres.sh start   (re)creates a cluster under target/pg and starts it
#   scripts/postgres.sh stop
#   scripts/postgres.sh restart [SECS]  stops it, waits (2 s), starts it again
#   scripts/postgres.sh url     prints the URL tests connect to
# STRATA_PG_DIR and STRATA_TEST_PG_PORT choose another server (directory, port).
# Port 55432 on 127.0.0.1 (the next free one if that is taken), user
# `strata` (trust auth: test data only).
# PostgreSQL refuses to run as root: as root, the server runs as the
# `postgres` user the package creates.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${STRATA_PG_DIR:-$PWD/target/pg}
# The port of the server under $dir once started (another checkout's test
# server may hold the default one).
port=${STRATA_TEST_PG_PORT:-$(cat "$dir/port" 2>/dev/null || echo 55432)}

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

bin_dir() {
  local initdb
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$initdb" ] && dirname "$initdb"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    if [ -z "$(bin_dir)" ]; then
      echo "==> installing PostgreSQL (Debian's postgresql package)"
      if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
      "${sudo[@]}" apt-get update -qq
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
    fi
    bin=$(bin_dir)
    [ -n "$bin" ] || { echo "PostgreSQL is not installed and could not be installed" >&2; exit 1; }
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    tries=0
    while in_use "$port"; do
      port=$((port + 1)); tries=$((tries + 1))
      [ $tries -lt 100 ] || { echo "no free port for PostgreSQL near $port" >&2; exit 1; }
    done
    echo "$port" >"$dir/port"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U strata --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # Tests create many connections (a pool per broker) and need no durability
    # beyond the process: fsync stays on anyway, to test what users run.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U strata -d postgres -qc "CREATE DATABASE strata" >/dev/null
    echo "postgres://strata@127.0.0.1:$port/strata"
    ;;
  stop)
    bin=$(bin_dir)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null
    fi
    ;;
  restart)
    # An outage: stop (fast: connections are cut), wait ${2:-2} s, start.
    bin=$(bin_dir)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null
    sleep "${2:-2}"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null
    ;;
  url)
    echo "postgres://strata@127.0.0.1:$port/strata"
    ;;
  *)
    echo "usage: $0 start|stop|restart [SECS]|url" >&2
    exit 2
    ;;
esac
