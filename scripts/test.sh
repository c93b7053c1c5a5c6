#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine
# (C toolchain for librdkafka, kcat, libfaketime, cargo-nextest, the MinIO S3 server
# built with Go, boto3, the Python clients and the Parquet readers pyarrow and duckdb in a venv,
# kafkajs with npm, Java 17 + Maven and the Kafka 4.4.0 jars, franz-go and
# sarama with Go, PostgreSQL from Debian's package, the deployment checkers),
# then runs lints, checks the deployment files and
# the whole test suite (the metadata store tests on SQLite and on a
# PostgreSQL server it starts under target/pg).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v make >/dev/null || missing+=(make)
command -v perl >/dev/null || missing+=(perl)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v kcat >/dev/null || missing+=(kcat)
dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
# libfaketime: a cluster test runs a broker with its clock shifted.
dpkg -s libfaketime >/dev/null 2>&1 || missing+=(libfaketime)
command -v python3 >/dev/null || missing+=(python3)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

venv=target/test-venv
python_packages=("boto3==1.44.8" "confluent-kafka==2.16.1" "kafka-python==3.0.12"
  "python-snappy==0.7.3" "lz4==4.4.4" "zstandard==0.23.0" "pyarrow==26.0.1" "duckdb==2.0.1"
  "PyYAML==6.0.4")
if ! "$venv/bin/python" -c 'import boto3, confluent_kafka, kafka, snappy, lz4, zstandard, pyarrow, duckdb, yaml' 2>/dev/null; then
  echo "==> installing Python test clients into $venv: ${python_packages[*]}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${python_packages[@]}"
fi

node_dir=target/test-node
if [ ! -d "$node_dir/node_modules/@bokuweb/zstd-wasm" ]; then
  echo "==> installing kafkajs and its codec plugins into $node_dir"
  mkdir -p "$node_dir"
  npm install --prefix "$node_dir" --no-audit --no-fund --silent \
    kafkajs@2.2.4 kafkajs-snappy@1.1.0 kafkajs-lz4@1.2.1 @bokuweb/zstd-wasm@0.0.27
fi
export PATH="$PWD/$venv/bin:$PATH"

# Java 17, Maven, the pinned Kafka 4.4.0 jars (client, tools, broker) under
# target/, and the Java test programs.
./scripts/java-deps.sh
# Go's toolchain caches under target/go, the franz-go and sarama test
# programs, franz-go's kgo test binary and the MinIO server.
./scripts/go-deps.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "==> lints"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

echo "==> deployment files (docker-compose.yml, deploy/, terraform/)"
./scripts/check-deploy.sh

echo "==> PostgreSQL for the metadata tests"
STRATA_TEST_POSTGRES=$(./scripts/postgres.sh start)
export STRATA_TEST_POSTGRES
trap './scripts/postgres.sh stop' EXIT

echo "==> tests"
status=0
cargo nextest run --no-fail-fast "$@" || status=$?

# Every test of the storage, groups, producer state, transactions, tiering
# and export again, with each test broker's metadata in PostgreSQL.
echo "==> the metadata-dependent tests again, on PostgreSQL"
STRATA_TEST_METADATA=postgres cargo nextest run --no-fail-fast \
  -E 'test(/^(store|crash|produce_consume|groups|idempotence|tiering|cleanup|transactions|admin|export|s3)::/)' \
  "$@" || status=$?
exit $status
