#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md in one command: builds Strata, prepares
# the reference brokers, measures the physical floor (disk write bandwidth,
# fsync latency, loopback TCP), then runs the same workloads with the same
# client (`strata bench`, librdkafka) and the same settings against each
# broker in turn on this machine, each with its storage on the local disk:
#
#   strata       Strata with its embedded store (fsync before every ack)
#   kafka        Apache Kafka 4.4.0 with its defaults: acks=all on one node,
#                so a record is acknowledged once it is in the page cache
#   kafka-fsync  the same Kafka with log.flush.interval.messages=1: fsync
#                before the ack, Strata's guarantee
#   tansu        Tansu 0.6.0 with its SQLite (libSQL) storage engine
#
# Kafka runs from the Maven jars of scripts/java-deps.sh, started by
# scripts/kafka-ref.sh; Tansu is built once with `cargo install` under
# target/bench/tansu (~25 min on 2 cores). A second, independent load
# generator then runs against every broker: Kafka's own
# kafka-producer-perf-test (the Java producer with its defaults) at full
# speed and at 5,000 records/s. JSON results and logs go to
# target/bench/results/<time>/; a markdown summary is printed at the end.
#
#   scripts/bench.sh                      # everything, ~45 min plus builds
#   scripts/bench.sh --quick              # 5 s per workload, a 200 MB backlog
#   scripts/bench.sh --only strata,kafka  # some brokers only (comma list of
#                                         # strata, kafka, kafka-fsync, tansu)
#   scripts/bench.sh --update-docs        # also rewrite the tables in docs/benchmarks.md
#
# On Kafka each topic is created before its run, which starts once the broker
# leads every partition (Kafka creates the logs after answering CreateTopics);
# 10,000 partitions in two steps (5,000, then 10,000: KRaft rejects a request
# that makes more than 10,000 metadata records).
#
# Environment: BENCH_DIR (where the brokers keep their data; default
# target/bench/work, i.e. the disk under test), BENCH_OUT (results directory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ALL_BROKERS=(strata kafka kafka-fsync tansu)

QUICK=0
ONLY=""
UPDATE_DOCS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY=${2:?--only needs a comma list of: ${ALL_BROKERS[*]}}; shift ;;
    --update-docs) UPDATE_DOCS=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
BROKERS=()
if [ -z "$ONLY" ]; then
  BROKERS=("${ALL_BROKERS[@]}")
else
  IFS=, read -r -a wanted <<<"$ONLY"
  for w in "${wanted[@]}"; do
    case " ${ALL_BROKERS[*]} " in
      *" $w "*) ;;
      *) echo "--only takes a comma list of: ${ALL_BROKERS[*]}; not '$w'" >&2; exit 2 ;;
    esac
  done
  # In the usual order whatever the order given.
  for b in "${ALL_BROKERS[@]}"; do
    case ",$ONLY," in *",$b,"*) BROKERS+=("$b") ;; esac
  done
fi
wants() { case " ${BROKERS[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
is_kafka() { case "$1" in kafka|kafka-fsync) return 0 ;; *) return 1 ;; esac; }

DUR=20
BACKLOG_MB=1100
if [ "$QUICK" = 1 ]; then DUR=5; BACKLOG_MB=200; fi
WORK=${BENCH_DIR:-$ROOT/target/bench/work}
OUT=${BENCH_OUT:-$ROOT/target/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$WORK" "$OUT"
WORK=$(cd "$WORK" && pwd)   # absolute: it goes into Kafka's log.dirs
OUT=$(cd "$OUT" && pwd)
TANSU_VERSION=0.6.0
TANSU=$ROOT/target/bench/tansu/bin/tansu
STRATA=$ROOT/target/release/strata
# Strata and Tansu listen here; each Kafka on the free ports kafka-ref.sh picks.
PORT=29092
HTTP_PORT=29080
# Kafka's settings beyond kafka-ref.sh's single-node defaults, per broker.
KAFKA_FSYNC_SETTINGS=(log.flush.interval.messages=1)
JAVA_CP="$ROOT/target/java/lib/*"

log() { printf '\n== %s\n' "$*" >&2; }

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools -----------------------------------------------------------------
if ! command -v iperf3 >/dev/null; then
  log "installing iperf3 (loopback TCP floor)"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >/dev/null
fi
log "building strata (release)"
cargo build --release --quiet
# Kafka's jars: the Kafka brokers and kafka-producer-perf-test (every broker).
log "preparing the Kafka jars (scripts/java-deps.sh)"
scripts/java-deps.sh
if wants tansu && ! "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
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
# The running broker: its name, the address clients bootstrap from, its pid
# (for --broker-pid: CPU and RSS) and, for Kafka, kafka-ref.sh's directory
# (config, server.log; kept across a restart, removed by finish_broker).
BROKER=""
BROKER_ADDR=""
BROKER_PID=""
KAFKA_DIR=""

stop_broker() {
  if [ -n "$KAFKA_DIR" ]; then
    # A clean shutdown (SIGTERM, up to 30 s): a restart then loads the logs
    # without recovering them, i.e. without reading them into the page cache.
    # The data stays: it lives in $WORK (log.dirs), not in $KAFKA_DIR/data.
    scripts/kafka-ref.sh stop "$KAFKA_DIR" 2>/dev/null || true
  elif [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID"
    for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=""
}

# Stops the broker for good; Kafka's server.log goes to the results.
finish_broker() {
  stop_broker
  if [ -n "$KAFKA_DIR" ]; then
    cp "$KAFKA_DIR/server.log" "$OUT/$BROKER-broker.log" 2>/dev/null || true
    rm -rf "${KAFKA_DIR:?}"
    KAFKA_DIR=""
  fi
  BROKER=""
}
trap finish_broker EXIT

wait_for_port() {
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    kill -0 "$BROKER_PID" 2>/dev/null || { echo "the broker exited; see its log" >&2; return 1; }
    sleep 0.1
  done
  echo "the broker did not listen on $PORT within 30 s" >&2
  return 1
}

# Reads kafka-ref.sh's bootstrap=, pid= and dir= lines (on stdin).
read_kafka_ref() {
  local out
  out=$(cat)
  BROKER_ADDR=$(sed -n 's/^bootstrap=//p' <<<"$out")
  BROKER_PID=$(sed -n 's/^pid=//p' <<<"$out")
  KAFKA_DIR=$(sed -n 's/^dir=//p' <<<"$out")
  [ -n "$BROKER_ADDR" ] && [ -n "$BROKER_PID" ] && [ -n "$KAFKA_DIR" ]
}

# start_broker NAME [ARGS...]: starts NAME with its data under $WORK/NAME
# (kept); ARGS go to `strata serve`.
start_broker() {
  local name=$1 out
  shift
  BROKER=$name
  case "$name" in
    strata)
      mkdir -p "$WORK/$name"
      "$STRATA" serve --data-dir "$WORK/strata" --kafka-addr "127.0.0.1:$PORT" \
        --http-addr "127.0.0.1:$HTTP_PORT" "$@" >> "$OUT/strata-broker.log" 2>&1 &
      ;;
    tansu)
      mkdir -p "$WORK/$name"
      # Tansu resolves sqlite:// paths against its working directory.
      (cd "$WORK/tansu" && exec "$TANSU" broker --cluster-id bench \
        --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine "sqlite://tansu.db") >> "$OUT/tansu-broker.log" 2>&1 &
      ;;
    kafka|kafka-fsync)
      local settings=("log.dirs=$WORK/$name")
      if [ "$name" = kafka-fsync ]; then settings+=("${KAFKA_FSYNC_SETTINGS[@]}"); fi
      out=$(scripts/kafka-ref.sh "${settings[@]}") || return 1
      read_kafka_ref <<<"$out"
      return
      ;;
  esac
  BROKER_PID=$!
  BROKER_ADDR=127.0.0.1:$PORT
  wait_for_port
}

# restart_broker NAME: starts NAME again on its data, after stop_broker.
restart_broker() {
  local out
  if is_kafka "$1"; then
    out=$(scripts/kafka-ref.sh restart "$KAFKA_DIR") || return 1
    read_kafka_ref <<<"$out"
    # Kafka answers requests before it leads its partitions again (ListOffsets
    # gets NOT_LEADER_OR_FOLLOWER for a moment): wait until it lists the end
    # offsets of every topic (the admin client retries that error; no data is
    # read).
    kafka_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BROKER_ADDR" \
      > "$OUT/$1-restart-offsets.log" 2>&1 ||
      echo "   Kafka did not list its offsets after the restart (see $OUT/$1-restart-offsets.log)" >&2
  else
    start_broker "$1"
  fi
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

# bench BROKER WORKLOAD TOPIC ARGS...: one `strata bench` run, JSON to OUT.
bench() {
  local broker=$1 workload=$2
  shift 2
  if is_kafka "$broker" && [ ! -d "$WORK/$broker/$1-0" ]; then
    # Kafka creates a new topic's logs after answering CreateTopics, and a
    # partition takes no Produce until its log exists (seconds on a busy
    # machine, which would count as latency): create the topic first, as
    # strata bench would, and wait until it is ready.
    local parts=16 prev=""
    for a in "$@"; do [ "$prev" = --partitions ] && parts=$a; prev=$a; done
    kafka_topic "$broker" "$1" "$parts" || echo "   creating the topic FAILED" >&2
  fi
  local extra=(--broker-pid "$BROKER_PID")
  if [ "$broker" = strata ]; then extra+=(--metrics-url "http://127.0.0.1:$HTTP_PORT/metrics"); fi
  echo "-- $broker $workload: $*" >&2
  if "$STRATA" bench --brokers "$BROKER_ADDR" "${extra[@]}" \
      --output "$OUT/$broker-$workload.json" "$@" \
      > /dev/null 2> "$OUT/$broker-$workload.log"; then
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   ", {k: r[k] for k in ("throughput_mb_per_sec","produce_latency_ms") if k in r})' \
      "$OUT/$broker-$workload.json" >&2
  else
    echo "   FAILED (see $OUT/$broker-$workload.log)" >&2
    tail -3 "$OUT/$broker-$workload.log" >&2 || true
  fi
}

# Kafka's own CLI tools, as bin/kafka-*.sh would run them.
kafka_tool() {
  java -Xmx512m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$JAVA_CP" "$@"
}

# kafka_topic BROKER TOPIC PARTITIONS: creates a topic on Kafka, in steps of
# at most 5,000 partitions (KRaft's controller rejects a request that makes
# more than 10,000 metadata records, and a new partition is one), then waits
# until the broker has created every partition's log (one directory each; it
# does so in the background, about 100 a second on a busy 2-core machine) and
# leads every partition.
kafka_topic() {
  local b=$1 topic=$2 parts=$3 n=0 made
  local tlog="$OUT/$b-topic-$topic.log"
  if [ "$parts" -gt 16 ]; then echo "-- $b: creating topic $topic with $parts partitions" >&2; fi
  while [ "$n" -lt "$parts" ]; do
    n=$((n + 5000 < parts ? n + 5000 : parts))
    if [ "$n" -le 5000 ]; then
      kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKER_ADDR" \
        --create --topic "$topic" --partitions "$n" --replication-factor 1 >> "$tlog" 2>&1 || return 1
    else
      kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKER_ADDR" \
        --alter --topic "$topic" --partitions "$n" >> "$tlog" 2>&1 || return 1
    fi
  done
  local start=$SECONDS
  while :; do
    made=$(find "$WORK/$b" -maxdepth 1 -name "$topic-*" -type d | wc -l)
    [ "$made" -ge "$parts" ] && break
    if [ $((SECONDS - start)) -ge 600 ]; then
      echo "   only $made of $parts partitions loaded after 600 s" >&2
      return 1
    fi
    sleep 2
  done
  # Then until the broker answers ListOffsets for every partition (the admin
  # client retries NOT_LEADER_OR_FOLLOWER).
  until kafka_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BROKER_ADDR" \
      --topic "$topic" >> "$tlog" 2>&1; do
    if [ $((SECONDS - start)) -ge 600 ]; then
      echo "   $topic: no offsets for every partition after 600 s" >&2
      return 1
    fi
  done
  if [ "$parts" -gt 16 ]; then echo "   $parts partitions ready in $((SECONDS - start)) s" >&2; fi
}

# cpu_ticks: the broker's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$BROKER_PID/stat" 2>/dev/null || echo 0; }

# perftest BROKER WORKLOAD THROUGHPUT RECORDS WARMUP [NAME]: one
# kafka-producer-perf-test run (1 KiB records, acks=all, the Java producer's
# other defaults) on the 16-partition topic perf-WORKLOAD (created here);
# its summary lines are parsed into OUT/BROKER-perftest-NAME.json (NAME
# defaults to WORKLOAD). RECORDS includes WARMUP, which the steady-state
# figures leave out.
perftest() {
  local b=$1 workload=$2 throughput=$3 records=$4 warmup=$5 name=${6:-$2}
  local topic=perf-$workload plog="$OUT/$b-perftest-$name.log"
  echo "-- $b perftest-$name: $records records (warmup $warmup), --throughput $throughput" >&2
  : > "$plog"
  if ! is_kafka "$b"; then
    "$STRATA" topic create --brokers "$BROKER_ADDR" --partitions 16 "$topic" >> "$plog" 2>&1 || true
  elif [ ! -d "$WORK/$b/$topic-0" ]; then
    kafka_topic "$b" "$topic" 16 || echo "   creating the topic FAILED" >&2
  fi
  # Guards against a hung run: four times the expected time plus 2 minutes.
  local expected=$((records / (throughput > 0 ? throughput : 20000) + 1))
  local cpu0 cpu1 rc=0
  cpu0=$(cpu_ticks)
  timeout $((4 * expected + 120)) \
    java -Xmx512m -cp "$JAVA_CP" org.apache.kafka.tools.ProducerPerformance \
      --bootstrap-server "$BROKER_ADDR" --topic "$topic" --record-size 1024 \
      --num-records "$records" --warmup-records "$warmup" --throughput "$throughput" \
      --command-property acks=all >> "$plog" 2>&1 || rc=$?
  cpu1=$(cpu_ticks)
  if python3 - "$plog" "$OUT/$b-perftest-$name.json" "$throughput" "$records" "$warmup" \
      "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" <<'PY' >&2
import json, re, sys
log, out, throughput, records, warmup, ticks, tck = sys.argv[1:]
# e.g. "300000 records sent, 16825.57 records/sec (16.43 MB/sec), 1630.70 ms
# avg latency, 4469.00 ms max latency, 1545 ms 50th, 3578 ms 95th, 3756 ms
# 99th, 4123 ms 99.9th." and the same with "steady state records sent".
pattern = re.compile(
    r"(\d+) (steady state )?records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), "
    r"([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, "
    r"(\d+) ms 99th, (\d+) ms 99.9th")
runs = {}
for line in open(log, errors="replace"):
    m = pattern.search(line)
    if m:
        g = m.groups()
        runs["steady" if g[1] else "all"] = {
            "records": int(g[0]),
            "throughput_records_per_sec": float(g[2]),
            # The tool's "MB" is MiB; MB here is 10^6 bytes, as in strata bench.
            "throughput_mb_per_sec": float(g[2]) * 1024 / 1e6,
            "latency_ms": {"avg": float(g[4]), "max": float(g[5]), "p50": float(g[6]),
                           "p95": float(g[7]), "p99": float(g[8]), "p999": float(g[9])},
        }
if "all" not in runs:
    sys.exit("    FAILED: no summary line")
result = {
    "tool": "kafka-producer-perf-test (org.apache.kafka.tools.ProducerPerformance 4.4.0)",
    "producer": "Java, acks=all, other settings the defaults (idempotent, linger.ms=5, batch.size=16384)",
    "throughput_limit": int(throughput), "record_bytes": 1024, "partitions": 16,
    "num_records": int(records), "warmup_records": int(warmup),
    **runs.get("steady", runs["all"]),
    "whole_run": runs["all"],
}
gb = int(records) * 1024 / 1e9
if int(ticks) > 0:
    result["broker_cpu_seconds_per_gb"] = int(ticks) / int(tck) / gb
json.dump(result, open(out, "w"), indent=2)
print("    ", {k: result[k] for k in ("throughput_mb_per_sec", "latency_ms")})
PY
  then :; else
    echo "   FAILED (exit $rc; see $plog)" >&2
    grep -v '^\[' "$plog" | tail -3 >&2 || true
  fi
}

# The two kafka-producer-perf-test runs against the running broker $1.
perftest_runs() {
  local b=$1 pilot rate
  # (a) Maximum throughput for about DUR seconds: a short pilot run sized from
  # strata bench's max-1k result (about 1 s at that rate) measures the Java
  # producer's rate on this broker, which sizes the real run.
  rate=$(python3 -c 'import json,sys
try: print(int(json.load(open(sys.argv[1]))["throughput_records_per_sec"]))
except Exception: print(50000)' "$OUT/$b-max-1k.json")
  pilot=$((rate > 10000 ? rate : 10000))
  perftest "$b" max -1 "$pilot" 0 max-pilot
  rate=$(python3 -c 'import json,sys
try: print(max(int(json.load(open(sys.argv[1]))["throughput_records_per_sec"]), 1000))
except Exception: print(0)' "$OUT/$b-perftest-max-pilot.json")
  rm -f "$OUT/$b-perftest-max-pilot.json"
  if [ "$rate" -eq 0 ]; then
    # The pilot failed (no summary line; e.g. Tansu 0.6.0 drops the Java producer's
    # connections): the 5,000/s run would only wait for its timeouts too.
    echo "   the pilot failed: skipping the other kafka-producer-perf-test runs on $b" >&2
    return
  fi
  perftest "$b" max -1 $((rate * (DUR + 3))) $((rate * 3))
  # (b) A fixed 5,000 records/s for latency, 3 s of warmup as strata bench.
  perftest "$b" 5000 5000 $((5000 * (DUR + 3))) 15000
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
  # And with at most 5 requests in flight per connection (the Java producer's
  # default) instead of librdkafka's 1,000,000: Kafka handles one request per
  # connection at a time, so many small requests queue up in front of it.
  bench "$b" "latency-5000-inflight5" lat5000f5 --rate 5000 \
    --producer-config max.in.flight.requests.per.connection=5 "${d[@]}"
  # (2) maximum throughput, 1 KiB.
  bench "$b" "max-1k" max1k --rate max --no-end-to-end "${d[@]}"
  # (3) 100-byte records: maximum, and a fixed rate for latency.
  bench "$b" "max-100b" max100b --rate max --record-bytes 100 --no-end-to-end "${d[@]}"
  bench "$b" "latency-100b-50000" lat100b --rate 50000 --record-bytes 100 "${d[@]}"
  # (4) catch-up read of a backlog with the cache emptied. Before (5), so
  # that the restart does not load 11,000 partitions (Kafka's clean shutdown
  # and restart each took most of a minute with them on this machine).
  bench "$b" "backlog-write" backlog --rate max --total-mb "$BACKLOG_MB" \
    --duration-secs 900 --warmup-secs 0 --no-end-to-end
  stop_broker
  if is_kafka "$b" && [ ! -f "$WORK/$b/.kafka_cleanshutdown" ]; then
    echo "   warning: Kafka did not shut down cleanly; it will recover (read) its logs when it starts" >&2
  fi
  if [ "$b" = strata ]; then rm -rf "$WORK/strata/cache"; fi
  drop_page_cache
  restart_broker "$b"
  bench "$b" "catch-up" backlog --catch-up
  # (5) many partitions at a low total rate: PUTs/s must not grow.
  for parts in 16 1000 10000; do
    bench "$b" "partitions-$parts" "parts$parts" --rate 2000 --partitions "$parts" "${d[@]}"
  done
  # (6) the second load generator: kafka-producer-perf-test.
  perftest_runs "$b"
  finish_broker
  du -sh "$WORK/$b" > "$OUT/$b-disk-usage.txt" 2>&1 || true
  if [ "$b" = strata ]; then
    # For comparison, the flush interval Strata uses with S3 (10 ms, where
    # PUTs are billed) instead of the embedded store's default (3 ms).
    rm -rf "${WORK:?}/strata"
    start_broker strata --wal-flush-interval-ms 10
    bench strata "latency-5000-i10" lat5000i10 --rate 5000 "${d[@]}"
    bench strata "latency-5000-linger0-i10" lat5000l0i10 --rate 5000 --linger-ms 0 "${d[@]}"
    finish_broker
  fi
}

for b in "${BROKERS[@]}"; do
  run_broker "$b"
done

log "summary"
report_args=("$OUT")
if [ "$UPDATE_DOCS" = 1 ]; then report_args+=(--update-docs docs/benchmarks.md); fi
python3 scripts/bench_report.py "${report_args[@]}"
echo "results in $OUT" >&2
