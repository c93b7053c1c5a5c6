#!/usr/bin/env bash
# Bounded growth of the tiered store (docs/benchmarks.md, "Bounded growth"):
# builds a release Strata and runs scripts/bench_growth.py, which drives it
# with `strata bench` at 5,000 records/s x 1 KiB over 16 partitions and
# samples chunk rows, objects, SQLite bytes and RSS (see its header).
#
#   scripts/bench-growth.sh                # 60 minutes of load (~70 min)
#   scripts/bench-growth.sh --minutes 10   # the quick variant (~20 min)
#
# Other arguments go to bench_growth.py (--rate, --partitions, ...; --help).
# Results: target/bench/growth/<time>/growth.json and a markdown summary.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
esac
cargo build --release --quiet
out=target/bench/growth/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
python3 scripts/bench_growth.py --out "$out" "$@" 2>&1 | tee "$out/run.log"
