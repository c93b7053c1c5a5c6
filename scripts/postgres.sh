#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's package:
#   scripts/postgres.sh start   (re)creates a cluster under target/pg and starts it
#   scripts/postgres.sh stop
#   scripts/postgres.sh restart [SECS]  stops it, waits (2 s), starts it again
#   scripts/postgres.sh url     prints the URL tests connect to
# STRATA_PG_DIR and STRATA_TEST_PG_PORT choose another server (directory, port).
# Port 55432 on 127.0.0.1 (the next free one if that is taken), user
# `strata` (trust auth: test data only). The server also speaks TLS, with a
# certificate for 127.0.0.1 and localhost signed by a CA of its own
# ($dir/tls/ca.pem), for the sslmode=verify-full tests.
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

# A CA and a server certificate (127.0.0.1, localhost) under $1.
tls() {
  mkdir -p "$1"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=strata test CA" \
    -keyout "$1/ca.key" -out "$1/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$1/server.key" -out "$1/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$1/ext.cnf"
  openssl x509 -req -in "$1/server.csr" -CA "$1/ca.pem" -CAkey "$1/ca.key" -CAcreateserial \
    -days 3650 -extfile "$1/ext.cnf" -out "$1/server.pem" >/dev/null 2>&1
  chmod 600 "$1/server.key"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$1"; fi
}

server_options() {
  echo "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" \
    "-c ssl=on -c ssl_cert_file=$dir/tls/server.pem -c ssl_key_file=$dir/tls/server.key"
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
    if ! command -v openssl >/dev/null; then
      echo "==> installing openssl (the test server's TLS certificate)"
      if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
    fi
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
    tls "$dir/tls"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "$(server_options)" start >/dev/null
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
      -o "$(server_options)" start >/dev/null
    ;;
  url)
    echo "postgres://strata@127.0.0.1:$port/strata"
    ;;
  *)
    echo "usage: $0 start|stop|restart [SECS]|url" >&2
    exit 2
    ;;
esac
