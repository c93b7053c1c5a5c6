#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine
# (C toolchain for librdkafka, kcat, cargo-nextest, the moto S3 server and
# confluent-kafka in a Python venv), then runs lints and the whole test suite.
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
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

venv=target/test-venv
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
  echo "==> installing the moto S3 server and confluent-kafka into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5" "confluent-kafka==2.16.1"
fi
export PATH="$PWD/$venv/bin:$PATH"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "==> lints"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

echo "==> tests"
cargo nextest run --no-fail-fast "$@"
