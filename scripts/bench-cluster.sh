#!/usr/bin/env bash
# Cluster throughput on this machine: 1 broker, then 3 brokers, sharing a
# PostgreSQL metadata store (Debian's, under target/bench/cluster-pg) and a
# MinIO server (built by scripts/go-deps.sh), driven by `strata bench` (librdkafka, 1 KiB records,
# acks=all, 12 partitions, bootstrap = every broker): at full speed (--rate
# max) and open loop at 5,000 records/s. Release build, default settings.
# Everything here shares the machine's cores: the brokers, PostgreSQL, the
# S3 server and the client.
#
#   scripts/bench-cluster.sh               # ~5 min
#   scripts/bench-cluster.sh --seconds 10
#
# Results: target/bench/cluster/<time>/*.json and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=30
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN=${2:?--seconds needs a number}; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --quiet
STRATA=$PWD/target/release/strata
OUT=$PWD/target/bench/cluster/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
export STRATA_PG_DIR=$PWD/target/bench/cluster-pg STRATA_TEST_PG_PORT=55433
PG=$(./scripts/postgres.sh start)
./scripts/go-deps.sh
S3_PORT=19900
mkdir -p "$OUT/minio/cluster1" "$OUT/minio/cluster3"   # directories of a fresh drive are buckets
MINIO_ROOT_USER=bench MINIO_ROOT_PASSWORD=bench-secret MINIO_BROWSER=off \
  target/go/bin/minio server "$OUT/minio" --address "127.0.0.1:$S3_PORT" --quiet >"$OUT/minio.log" 2>&1 &
MINIO=$!
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  kill "$MINIO" 2>/dev/null || true
  ./scripts/postgres.sh stop || true
}
trap cleanup EXIT
until curl -sf "http://127.0.0.1:$S3_PORT/minio/health/ready" >/dev/null; do sleep 0.2; done

# run N: N brokers on a fresh bucket and database schema, two bench runs.
run() {
  local n=$1 schema="bench_$1" brokers="" i
  psql -X -q -d "$PG" -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
  for i in $(seq 1 "$n"); do
    local port=$((19190 + i)) dir="$OUT/broker-$n-$i"
    mkdir -p "$dir"
    "$STRATA" serve --node-id "$i" --data-dir "$dir" --kafka-addr "127.0.0.1:$port" \
      --metadata "$PG?options=-csearch_path%3D$schema" \
      --object-store "s3://cluster$n/data" --s3-endpoint "http://127.0.0.1:$S3_PORT" \
      --s3-region us-east-1 --s3-access-key-id bench --s3-secret-access-key bench-secret \
      --s3-allow-http true --s3-path-style true >"$dir/log" 2>&1 &
    pids+=($!)
    brokers="$brokers${brokers:+,}127.0.0.1:$port"
  done
  for i in $(seq 1 "$n"); do
    until grep -q "strata listening" "$OUT/broker-$n-$i/log"; do sleep 0.2; done
  done
  sleep 3 # a heartbeat or two: every broker live, leadership spread
  "$STRATA" bench "max-$n" --brokers "$brokers" --partitions 12 --rate max --no-end-to-end \
    --duration-secs "$SECONDS_PER_RUN" --warmup-secs 5 --output "$OUT/max-$n.json" >/dev/null
  "$STRATA" bench "rate-$n" --brokers "$brokers" --partitions 12 --rate 5000 \
    --duration-secs "$SECONDS_PER_RUN" --warmup-secs 5 --output "$OUT/rate-$n.json" >/dev/null
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pids=()
}
run 1
run 3
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
print(f"results: {out}")
print("| brokers | full speed MB/s | full speed p99 ms | 5,000/s p50 ms | 5,000/s p99 ms |")
print("|---|---|---|---|---|")
for n in (1, 3):
    m = json.load(open(os.path.join(out, f"max-{n}.json")))
    r = json.load(open(os.path.join(out, f"rate-{n}.json")))
    def get(d, *keys):
        for k in keys:
            d = d.get(k, {}) if isinstance(d, dict) else {}
        return d if d != {} else None
    print(f"| {n} | {m.get('throughput_mb_per_sec', m.get('mb_per_sec'))} | "
          f"{get(m, 'produce_latency_ms', 'p99')} | {get(r, 'produce_latency_ms', 'p50')} | "
          f"{get(r, 'produce_latency_ms', 'p99')} |")
PY
