#!/usr/bin/env bash
# Transactional produce throughput, Strata against Apache Kafka 4.4.0 in the
# same run (docs/benchmarks.md, "Transactions"): Kafka's own
# kafka-producer-perf-test (org.apache.kafka.tools.ProducerPerformance, the
# Java producer with its defaults) with a transactional.id, 1 KiB records on
# a 16-partition topic, acks=all, at full speed and at 5,000 records/s, with
# transactions committed every 100 ms and every 1,000 ms
# (--transaction-duration-ms). The same runs without transactions give the
# baseline of each broker. Strata runs from a release build with its
# defaults; Kafka from the Maven jars (scripts/kafka-ref.sh) with its
# defaults.
#
#   scripts/bench-txn.sh              # ~10 min
#   scripts/bench-txn.sh --seconds 10 # shorter runs (default 30 s each)
#
# Results: target/bench/txn/<time>/results.json and a markdown table on stdout.
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
./scripts/java-deps.sh
cargo build --release --quiet
STRATA=$PWD/target/release/strata
CP="$PWD/target/java/lib/*:$PWD/target/java/classes"
OUT=target/bench/txn/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

# run BROKER ADDR NAME RATE TXN_MS: one ProducerPerformance run into OUT/BROKER-NAME.log.
run() {
  local b=$1 addr=$2 name=$3 rate=$4 txn_ms=$5 records
  local topic="perf-$name"
  if [ "$rate" -gt 0 ]; then records=$((rate * SECONDS_PER_RUN)); else records=$((60000 * SECONDS_PER_RUN)); fi
  java -cp "$CP" org.apache.kafka.tools.TopicCommand --bootstrap-server "$addr" --create \
    --topic "$topic" --partitions 16 --replication-factor 1 >/dev/null 2>&1 || true
  local extra=()
  if [ "$txn_ms" -gt 0 ]; then
    extra=(--transactional-id "bench-$name" --transaction-duration-ms "$txn_ms")
  fi
  echo "-- $b $name: $records records, --throughput $rate, transactions ${txn_ms} ms" >&2
  timeout $((SECONDS_PER_RUN * 6 + 120)) java -Xmx512m -cp "$CP" org.apache.kafka.tools.ProducerPerformance \
    --bootstrap-server "$addr" --topic "$topic" --record-size 1024 --num-records "$records" \
    --throughput "$rate" --command-property acks=all "${extra[@]}" > "$OUT/$b-$name.log" 2>&1 ||
    echo "   FAILED (see $OUT/$b-$name.log)" >&2
}

runs() {
  local b=$1 addr=$2
  run "$b" "$addr" max-plain -1 0
  run "$b" "$addr" max-txn100 -1 100
  run "$b" "$addr" max-txn1000 -1 1000
  run "$b" "$addr" r5000-plain 5000 0
  run "$b" "$addr" r5000-txn100 5000 100
}

# Strata, release build, defaults.
data=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-txn.XXXXXX")
"$STRATA" serve --data-dir "$data" --kafka-addr 127.0.0.1:0 2> "$OUT/strata.log" &
strata_pid=$!
trap 'kill "$strata_pid" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 300); do
  addr=$(sed -n 's/^strata listening on //p' "$OUT/strata.log" | head -n1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "strata did not start (see $OUT/strata.log)" >&2; exit 1; }
runs strata "$addr"
kill "$strata_pid"; wait "$strata_pid" 2>/dev/null || true

# Apache Kafka 4.4.0, defaults.
started=$(./scripts/kafka-ref.sh)
kafka=$(sed -n 's/^bootstrap=//p' <<<"$started")
kdir=$(sed -n 's/^dir=//p' <<<"$started")
trap './scripts/kafka-ref.sh stop "$kdir" >/dev/null 2>&1 || true; rm -rf "$data"' EXIT
runs kafka "$kafka"

python3 - "$OUT" <<'PY'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
pattern = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")
results = {}
for log in sorted(out.glob("*.log")):
    if log.name == "strata.log":
        continue
    broker, name = log.stem.split("-", 1)
    found = None
    for line in log.read_text(errors="replace").splitlines():
        m = pattern.search(line)
        if m and "steady state" not in line:
            g = m.groups()
            found = {"records": int(g[0]), "records_per_sec": float(g[1]),
                     "mb_per_sec": round(float(g[1]) * 1024 / 1e6, 2),
                     "latency_ms": {"avg": float(g[3]), "p50": int(g[5]), "p99": int(g[7]),
                                    "max": float(g[4])}}
    results.setdefault(name, {})[broker] = found
(out / "results.json").write_text(json.dumps(results, indent=2))
print("| run | Strata MB/s | Kafka MB/s | Strata p50 / p99 ms | Kafka p50 / p99 ms |")
print("|---|---|---|---|---|")
def rate(r):
    return "failed" if r is None else str(r["mb_per_sec"])
def lat(r):
    return "failed" if r is None else f"{r['latency_ms']['p50']} / {r['latency_ms']['p99']}"
for name, by in sorted(results.items()):
    s, k = by.get("strata"), by.get("kafka")
    print(f"| {name} | {rate(s)} | {rate(k)} | {lat(s)} | {lat(k)} |")
print(f"\nresults: {out}/results.json", file=sys.stderr)
PY
