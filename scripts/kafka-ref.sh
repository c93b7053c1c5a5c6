#!/usr/bin/env bash
# Starts a real single-node Apache Kafka 4.4.0 (KRaft, broker+controller in one
# process) from the Maven jars of tests/java/pom.xml, as a reference broker for
# compatibility tests and benchmarks.
#
#   scripts/kafka-ref.sh [key=value ...]   start; extra keys are appended to
#                                          server.properties (later keys win),
#                                          e.g. log.flush.interval.messages=1
#   scripts/kafka-ref.sh stop PID_OR_DIR   stop it (SIGTERM, SIGKILL after 30 s)
#                                          and delete its data (logs stay)
#   scripts/kafka-ref.sh restart DIR       start a stopped or killed (kill -9)
#                                          broker again on its data and ports
#
# Start and restart print, on stdout, once the broker answers Kafka requests:
#   bootstrap=127.0.0.1:PORT
#   pid=PID
#   dir=target/kafka-ref/PORT
# The broker runs in its own session in the background; its data, config and
# log (server.log) live under target/kafka-ref/PORT/. Everything else goes to
# stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

stop() {
  local target=$1 dir pid
  if [ -d "$target" ]; then
    dir=$target
    pid=$(cat "$dir/pid")
  else
    pid=$target
    dir=$(grep -lx "$pid" target/kafka-ref/*/pid 2>/dev/null | head -n1 | xargs -r dirname || true)
    if [ -z "$dir" ]; then
      echo "kafka-ref.sh: no reference broker with pid $pid under target/kafka-ref" >&2
      exit 1
    fi
  fi
  # Only signal the process if it still is this broker (pids get reused).
  if kill -0 "$pid" 2>/dev/null &&
     tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka\.Kafka .*$(basename "$dir")/server\.properties"; then
    kill -TERM "$pid"
    for _ in $(seq 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "kafka-ref.sh: pid $pid still running after 30 s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$dir/data"
  echo "stopped pid=$pid dir=$dir" >&2
}

java_opts=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
  -Dorg.slf4j.simpleLogger.showDateTime=true
  -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS)
cp="$root/target/java/lib/*:$root/target/java/classes"

# Starts kafka.Kafka on DIR/server.properties in the background, waits until
# it answers on PORT and prints bootstrap=, pid=, dir=.
launch_and_wait() {
  local dir=$1 port=$2 pid
  # Own session (setsid) so that the broker outlives this script and its
  # process group; the shell records its pid, then becomes the JVM (exec).
  rm -f "$dir/pid"
  echo "=== kafka.Kafka starting at $(date '+%F %T')" >>"$dir/server.log"
  setsid bash -c 'echo $$ >"$1/pid"; shift; exec "$@"' _ "$dir" \
    java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" \
    </dev/null >>"$dir/server.log" 2>&1 &
  for _ in $(seq 50); do [ -s "$dir/pid" ] && break; sleep 0.1; done
  pid=$(cat "$dir/pid")
  local mark
  mark=$(grep -c '^=== kafka.Kafka starting' "$dir/server.log")

  # Ready when this run of the broker has started (it waits to be unfenced)
  # and answers an ApiVersions request on the client port.
  ready() {
    awk -v n="$mark" '/^=== kafka.Kafka starting/ {run++} run == n && /Kafka Server started/ {found=1} END {exit !found}' \
      "$dir/server.log" && python3 - "$port" <<'PY'
import socket, struct, sys
client = b"kafka-ref"
body = struct.pack(">hhih", 18, 0, 1, len(client)) + client  # ApiVersions v0
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
    s.sendall(struct.pack(">i", len(body)) + body)
    head = s.recv(10)
    size, correlation, error = struct.unpack(">iih", head[:10])
    sys.exit(0 if correlation == 1 and error == 0 else 1)
PY
  }
  local deadline=$((SECONDS + 90))
  until ready 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "kafka-ref.sh: Kafka exited during startup; last lines of $dir/server.log:" >&2
      tail -n 40 "$dir/server.log" >&2
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "kafka-ref.sh: Kafka did not answer within 90 s; see $dir/server.log" >&2
      kill -KILL "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
  echo "bootstrap=127.0.0.1:$port"
  echo "pid=$pid"
  echo "dir=$dir"
}

if [ "${1:-}" = stop ]; then
  [ $# -eq 2 ] || { echo "usage: $0 stop PID_OR_DIR" >&2; exit 2; }
  stop "$2"
  exit 0
fi
if [ "${1:-}" = restart ]; then
  [ $# -eq 2 ] && [ -f "$2/server.properties" ] || { echo "usage: $0 restart DIR" >&2; exit 2; }
  dir=${2%/}
  if [ -s "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "kafka-ref.sh: pid $(cat "$dir/pid") of $dir is still running" >&2
    exit 1
  fi
  scripts/java-deps.sh
  launch_and_wait "$dir" "$(basename "$dir")"
  exit 0
fi
for arg in "$@"; do
  case $arg in
    *=*) ;;
    *) echo "usage: $0 [key=value ...] | $0 stop PID_OR_DIR | $0 restart DIR" >&2; exit 2 ;;
  esac
done

scripts/java-deps.sh

# Two free ports (client listener, controller listener) and a cluster id
# (a random UUID in Kafka's URL-safe base64 form, not starting with '-').
read -r port cport cluster_id < <(python3 - <<'PY'
import base64, socket, uuid
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
ports = [s.getsockname()[1] for s in socks]
while True:
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not cid.startswith("-"):
        break
print(ports[0], ports[1], cid)
PY
)

dir="target/kafka-ref/$port"
rm -rf "$dir"
mkdir -p "$dir/data"
cat >"$dir/server.properties" <<EOF
# Single-node KRaft broker+controller, written by scripts/kafka-ref.sh.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$root/$dir/data
num.partitions=1
# Internal topics on a single node: replication factor 1, few partitions
# so that the first group or transaction does not create 50 of them.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=4
# Classic groups rebalance without waiting for more members. The consumer
# group protocol (KIP-848) is enabled as by default in Kafka 4.
group.initial.rebalance.delay.ms=0
EOF
if [ $# -gt 0 ]; then
  echo "# Extra settings from the command line." >>"$dir/server.properties"
  printf '%s\n' "$@" >>"$dir/server.properties"
fi

java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format --standalone \
  -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 || {
  echo "kafka-ref.sh: formatting the log directory failed:" >&2
  cat "$dir/format.log" >&2
  exit 1
}

launch_and_wait "$dir" "$port"

