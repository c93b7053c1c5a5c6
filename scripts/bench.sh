#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md in one command: builds Strata, installs
# the reference broker (Tansu 0.6.0, `cargo install`, cached under
# target/bench/tansu), measures the physical floor (disk write bandwidth, fsync
# latency, loopback TCP), then runs the same workloads with the same client
# (`strata bench`, librdkafka) against each broker in turn on this machine,
# each with its storage on the local disk. JSON results and logs go to
# target/bench/results/<time>/; a markdown summary is printed at the end.
#
#   scripts/bench.sh                  # everything, ~15 min plus builds
#   scripts/bench.sh --quick          # 5 s per workload, a 200 MB backlog
#   scripts/bench.sh --only strata    # skip the reference (or --only tansu)
#   scripts/bench.sh --update-docs    # also rewrite the table in docs/benchmarks.md
#
# Environment: BENCH_DIR (where the brokers keep their data; default
# target/bench/work, i.e. the disk under test), BENCH_OUT (results directory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
ONLY=""
UPDATE_DOCS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY=${2:?--only needs strata or tansu}; shift ;;
    --update-docs) UPDATE_DOCS=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$ONLY" in ""|strata|tansu) ;; *) echo "--only takes strata or tansu, not '$ONLY'" >&2; exit 2 ;; esac

DUR=20
BACKLOG_MB=1100
if [ "$QUICK" = 1 ]; then DUR=5; BACKLOG_MB=200; fi
WORK=${BENCH_DIR:-$ROOT/target/bench/work}
OUT=${BENCH_OUT:-$ROOT/target/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
TANSU_VERSION=0.6.0
TANSU=$ROOT/target/bench/tansu/bin/tansu
STRATA=$ROOT/target/release/strata
PORT=29092
HTTP_PORT=29080
mkdir -p "$WORK" "$OUT"

log() { printf '\n== %s\n' "$*" >&2; }

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools -----------------------------------------------------------------
if ! command -v iperf3 >/dev/null; then
  log "installing iperf3 (loopback TCP floor)"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >/dev/null
fi
log "building strata (release)"
cargo build --release --quiet
if [ "$ONLY" != strata ] && ! "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  log "installing tansu $TANSU_VERSION (cargo install; a long build on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql \
    --root "$ROOT/target/bench/tansu" --target-dir "$ROOT/target/bench/tansu-build"
fi

# --- the physical floor ------------------------------------------------------
log "floor: disk and loopback"
floor_log=$OUT/floor.log
: > "$floor_log"
for i in 1 2 3; do
  dd if=/dev/zero of="$WORK/dd.test" bs=1M count=1024 oflag=direct conv=fdatasync 2>&1 \
    | tail -1 | sed "s/^/seq-write $i: /" >> "$floor_log"
done
dd if=/dev/zero of="$WORK/dd.test" bs=4k count=2000 oflag=dsync 2>&1 \
  | tail -1 | sed 's/^/dsync-4k: /' >> "$floor_log"
rm -f "$WORK/dd.test"
iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
sleep 0.5
iperf3 -c 127.0.0.1 -p 5299 -t 5 -J > "$OUT/iperf3.json"
wait || true
python3 - "$floor_log" "$OUT/iperf3.json" "$OUT/floor.json" <<'PY'
import json, re, sys
lines = open(sys.argv[1]).read().splitlines()
def rate(line):
    # dd: "... bytes (...) copied, 0.5 s, 2.1 GB/s"
    m = re.search(r"copied, ([0-9.]+) s, ([0-9.]+) ([kMG]B)/s", line)
    seconds, value, unit = float(m.group(1)), float(m.group(2)), m.group(3)
    return seconds, value * {"kB": 1e-6, "MB": 1e-3, "GB": 1.0}[unit]
seq = [rate(l)[1] for l in lines if l.startswith("seq-write")]
dsync = [l for l in lines if l.startswith("dsync-4k")][0]
floor = {
    "seq_write_gb_per_sec": seq,
    "dsync_4k_write_ms": rate(dsync)[0] / 2000 * 1e3,
    "loopback_tcp_gbit_per_sec":
        json.load(open(sys.argv[2]))["end"]["sum_received"]["bits_per_second"] / 1e9,
}
json.dump(floor, open(sys.argv[3], "w"), indent=2)
print(json.dumps(floor))
PY

# --- brokers -----------------------------------------------------------------
BROKER_PID=""
stop_broker() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID"
    for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=""
}
trap stop_broker EXIT

wait_for_port() {
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    kill -0 "$BROKER_PID" 2>/dev/null || { echo "the broker exited; see its log" >&2; return 1; }
    sleep 0.1
  done
  echo "the broker did not listen on $PORT within 30 s" >&2
  return 1
}

# start_broker NAME [ARGS...]: starts NAME with its data under $WORK/NAME
# (kept); ARGS go to `strata serve`.
start_broker() {
  local name=$1
  shift
  mkdir -p "$WORK/$name"
  case "$name" in
    strata)
      "$STRATA" serve --data-dir "$WORK/strata" --kafka-addr "127.0.0.1:$PORT" \
        --http-addr "127.0.0.1:$HTTP_PORT" "$@" >> "$OUT/strata-broker.log" 2>&1 &
      ;;
    tansu)
      # Tansu resolves sqlite:// paths against its working directory.
      (cd "$WORK/tansu" && exec "$TANSU" broker --cluster-id bench \
        --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine "sqlite://tansu.db") >> "$OUT/tansu-broker.log" 2>&1 &
      ;;
  esac
  BROKER_PID=$!
  wait_for_port
}

# Drops the kernel's page cache when allowed, so cold reads come from disk.
drop_page_cache() {
  sync
  if (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
    echo "page cache dropped" >&2
  else
    echo "could not drop the page cache (not root): cold reads may hit it" >&2
  fi
}

# bench BROKER WORKLOAD ARGS...: one `strata bench` run, JSON to OUT.
bench() {
  local broker=$1 workload=$2
  shift 2
  local extra=(--broker-pid "$BROKER_PID")
  if [ "$broker" = strata ]; then extra+=(--metrics-url "http://127.0.0.1:$HTTP_PORT/metrics"); fi
  echo "-- $broker $workload: $*" >&2
  if "$STRATA" bench --brokers "127.0.0.1:$PORT" "${extra[@]}" \
      --output "$OUT/$broker-$workload.json" "$@" \
      > /dev/null 2> "$OUT/$broker-$workload.log"; then
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   ", {k: r[k] for k in ("throughput_mb_per_sec","produce_latency_ms") if k in r})' \
      "$OUT/$broker-$workload.json" >&2
  else
    echo "   FAILED (see $OUT/$broker-$workload.log)" >&2
    tail -3 "$OUT/$broker-$workload.log" >&2 || true
  fi
}

run_broker() {
  local b=$1
  log "$b"
  rm -rf "${WORK:?}/$b"
  start_broker "$b"
  local d=(--duration-secs "$DUR" --warmup-secs 3)
  # (1) latency at fixed rates: 16 partitions, 1 KiB, acks=all.
  for rate in 5000 20000 50000; do
    bench "$b" "latency-$rate" "lat$rate" --rate "$rate" "${d[@]}"
  done
  # The same moderate rate without client-side batching delay.
  bench "$b" "latency-5000-linger0" lat5000l0 --rate 5000 --linger-ms 0 "${d[@]}"
  # (2) maximum throughput, 1 KiB.
  bench "$b" "max-1k" max1k --rate max --no-end-to-end "${d[@]}"
  # (3) 100-byte records: maximum, and a fixed rate for latency.
  bench "$b" "max-100b" max100b --rate max --record-bytes 100 --no-end-to-end "${d[@]}"
  bench "$b" "latency-100b-50000" lat100b --rate 50000 --record-bytes 100 "${d[@]}"
  # (4) many partitions at a low total rate: PUTs/s must not grow.
  for parts in 16 1000 10000; do
    bench "$b" "partitions-$parts" "parts$parts" --rate 2000 --partitions "$parts" "${d[@]}"
  done
  # (5) catch-up read of a backlog with the cache emptied.
  bench "$b" "backlog-write" backlog --rate max --total-mb "$BACKLOG_MB" \
    --duration-secs 900 --warmup-secs 0 --no-end-to-end
  stop_broker
  if [ "$b" = strata ]; then rm -rf "$WORK/strata/cache"; fi
  drop_page_cache
  start_broker "$b"
  bench "$b" "catch-up" backlog --catch-up
  stop_broker
  du -sh "$WORK/$b" > "$OUT/$b-disk-usage.txt" 2>&1 || true
  if [ "$b" = strata ]; then
    # For comparison, the flush interval Strata uses with S3 (10 ms, where
    # PUTs are billed) instead of the embedded store's default (3 ms).
    rm -rf "${WORK:?}/strata"
    start_broker strata --wal-flush-interval-ms 10
    bench strata "latency-5000-i10" lat5000i10 --rate 5000 "${d[@]}"
    bench strata "latency-5000-linger0-i10" lat5000l0i10 --rate 5000 --linger-ms 0 "${d[@]}"
    stop_broker
  fi
}

for b in strata tansu; do
  if [ -z "$ONLY" ] || [ "$ONLY" = "$b" ]; then run_broker "$b"; fi
done

log "summary"
report_args=("$OUT")
if [ "$UPDATE_DOCS" = 1 ]; then report_args+=(--update-docs docs/benchmarks.md); fi
python3 scripts/bench_report.py "${report_args[@]}"
echo "results in $OUT" >&2
