#!/usr/bin/env python3
"""Bounded growth of the tiered store under steady load (issue 12).

Runs a release `strata serve` on this machine's disk and drives it with
`strata bench` (librdkafka, open loop) at RATE records/s x RECORD_BYTES over
PARTITIONS partitions:

1. baseline: sealing, merging and compaction off, BASELINE_SECS of load
   (the produce latency "before");
2. growth: a fresh broker with its default settings, MINUTES of the same
   load, sampled every SAMPLE_SECS: chunk rows (total and the largest
   partition), objects (live, retired, files), SQLite bytes (database + WAL),
   broker RSS, object-store requests and bytes;
3. restart: kill -9, then the time until the restarted broker answers a
   Metadata request (serving);
4. cold catch-up: `strata bench --catch-up` of the whole topic after that
   restart (the memory cache is empty; with the embedded store fetched
   blocks are kept in memory only): MB/s and GETs per GB read;
5. cost: a fresh broker with a cost-oriented flush interval, COST_SECS of
   load, for object-store requests per GB ingested.

Every phase uses the flush interval given (default 10 ms: the S3 default,
so request counts model S3; the embedded store's own default is 3 ms).
Request costs use S3 Standard prices (us-east-1): PUT/COPY/POST/LIST
$0.005 per 1,000, GET $0.0004 per 1,000, DELETE free.

Writes growth.json (every sample and the summary) to the output directory
and prints a markdown summary. Standard library only.
"""

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

PUT_PRICE = 0.005 / 1000
GET_PRICE = 0.0004 / 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, data_dir, log_path, args):
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.kafka = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.log_path = log_path
        self.args = args
        self.proc = None

    def start(self):
        """Starts the broker; returns seconds until it answered Metadata."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")
        began = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--data-dir", str(self.data_dir),
             "--kafka-addr", self.kafka, "--http-addr", self.http, *self.args],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "info"},
        )
        deadline = began + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"broker exited with {self.proc.returncode}; see {self.log_path}")
            done = subprocess.run(
                [self.binary, "topic", "list", "--brokers", self.kafka],
                capture_output=True)
            if done.returncode == 0:
                return time.monotonic() - began
            time.sleep(0.05)
        sys.exit(f"broker did not serve within 120 s; see {self.log_path}")

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill9()

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=10) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            try:
                values[name] = float(value)
            except ValueError:
                pass
        return values

    def rss_mib(self):
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def store_figures(self):
        db = sqlite3.connect(f"file:{self.data_dir / 'metadata.db'}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            per_partition = db.execute(
                "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM chunks "
                "GROUP BY topic_id, partition)").fetchone()[0]
            live, retired = db.execute(
                "SELECT COALESCE(SUM(retired_ms IS NULL), 0), COALESCE(SUM(retired_ms IS NOT NULL), 0) "
                "FROM objects").fetchone()
            by_kind = dict(db.execute(
                "SELECT kind, COUNT(*) FROM objects WHERE retired_ms IS NULL GROUP BY kind").fetchall())
            live_bytes = db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM objects WHERE retired_ms IS NULL").fetchone()[0]
        finally:
            db.close()
        sqlite_bytes = sum(
            (self.data_dir / name).stat().st_size
            for name in ("metadata.db", "metadata.db-wal", "metadata.db-shm")
            if (self.data_dir / name).exists())
        files = sum(len(f) for _, _, f in os.walk(self.data_dir / "objects"))
        return {
            "chunk_rows": rows,
            "max_rows_per_partition": per_partition,
            "objects_live": live,
            "objects_retired": retired,
            "objects_wal": by_kind.get(0, 0),
            "objects_segment": by_kind.get(1, 0),
            "objects_shared": by_kind.get(2, 0),
            "live_object_bytes": live_bytes,
            "object_files": files,
            "sqlite_bytes": sqlite_bytes,
        }


def store_counters(metrics):
    out = {}
    for op in ("put", "get", "delete", "list"):
        out[f"{op}_requests"] = metrics.get(f'strata_object_store_requests_total{{op="{op}"}}', 0)
        out[f"{op}_bytes"] = metrics.get(f'strata_object_store_bytes_total{{op="{op}"}}', 0)
    out["ingested_bytes"] = metrics.get("strata_wal_flush_bytes_total", 0)
    return out


def delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


def bench(binary, broker, out, name, secs, args, extra=()):
    result = out / f"{name}.json"
    cmd = [binary, "bench", "grow", "--brokers", broker.kafka,
           "--rate", str(args.rate), "--record-bytes", str(args.record_bytes),
           "--partitions", str(args.partitions), "--duration-secs", str(secs),
           "--broker-pid", str(broker.proc.pid), "--metrics-url", f"http://{broker.http}/metrics",
           "--output", str(result), *extra]
    with open(out / f"{name}.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"{name}: strata bench failed; see {out / (name + '.log')}")
    return json.loads(result.read_text())


def requests_per_gb(counters):
    gb = counters["ingested_bytes"] / 1e9
    if gb <= 0:
        return {}
    per = {op: counters[f"{op}_requests"] / gb for op in ("put", "get", "delete", "list")}
    per["cost_usd_per_gb"] = (per["put"] + per["list"]) * PUT_PRICE + per["get"] * GET_PRICE
    per["written_over_ingested"] = counters["put_bytes"] / counters["ingested_bytes"]
    return per


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/strata")
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--sample-secs", type=float, default=30)
    parser.add_argument("--baseline-secs", type=int, default=120)
    parser.add_argument("--cost-secs", type=int, default=180)
    parser.add_argument("--flush-interval-ms", type=int, default=10)
    parser.add_argument("--cost-flush-interval-ms", type=int, default=250)
    args = parser.parse_args()
    binary = str(Path(args.binary).resolve())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    flush = ["--wal-flush-interval-ms", str(args.flush_interval_ms)]
    summary = {"rate": args.rate, "record_bytes": args.record_bytes,
               "partitions": args.partitions, "minutes": args.minutes,
               "flush_interval_ms": args.flush_interval_ms}

    # 1. Baseline: no sealing (a day between cycles, and a cycle never kicked).
    config = out / "no-sealing.toml"
    config.write_text("[seal]\ninterval_ms = 86400000\ncycle_bytes = 1099511627776\n")
    broker = Broker(binary, out / "baseline-data", out / "baseline-broker.log",
                    ["--config", str(config), *flush])
    broker.start()
    print(f"baseline: {args.baseline_secs} s without sealing", flush=True)
    summary["baseline"] = bench(binary, broker, out, "baseline", args.baseline_secs, args)
    broker.stop()

    # 2. Growth, with the defaults.
    broker = Broker(binary, out / "data", out / "broker.log", flush)
    broker.start()
    samples = []
    stop = threading.Event()
    start = time.monotonic()

    def sample():
        while not stop.is_set():
            try:
                figures = broker.store_figures()
                figures.update(store_counters(broker.metrics()))
                figures["elapsed_secs"] = round(time.monotonic() - start, 1)
                figures["rss_mib"] = broker.rss_mib()
                samples.append(figures)
                print(json.dumps(figures), flush=True)
            except Exception as error:  # a sample may race a checkpoint
                print(f"sample failed: {error}", file=sys.stderr, flush=True)
            stop.wait(args.sample_secs)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    print(f"growth: {args.minutes} min at {args.rate} records/s", flush=True)
    summary["growth"] = bench(binary, broker, out, "growth", int(args.minutes * 60), args)
    stop.set()
    sampler.join()
    time.sleep(2)
    final = broker.store_figures()
    final.update(store_counters(broker.metrics()))
    final["rss_mib"] = broker.rss_mib()
    summary["final"] = final
    summary["requests_per_gb"] = requests_per_gb(final)
    half = [s for s in samples if s["elapsed_secs"] >= samples[-1]["elapsed_secs"] / 2] if samples else []
    if half:
        for key in ("rss_mib", "sqlite_bytes", "chunk_rows", "objects_live", "max_rows_per_partition"):
            values = [s[key] for s in half if s.get(key) is not None]
            summary[f"second_half_{key}"] = {"min": min(values), "max": max(values)}
    summary["peak_rss_mib"] = max((s["rss_mib"] or 0) for s in samples) if samples else None

    # 3. Restart after kill -9.
    broker.kill9()
    summary["restart_to_serving_secs"] = round(broker.start(), 3)
    print(f"restart to serving: {summary['restart_to_serving_secs']} s", flush=True)

    # 4. Cold catch-up of everything retained, once the write-ahead tail
    # left by the kill is sealed (so only the reader's GETs are counted).
    deadline = time.monotonic() + 180
    while broker.store_figures()["objects_wal"] > 0 and time.monotonic() < deadline:
        time.sleep(1)
    summary["catch_up_unsealed_objects"] = broker.store_figures()["objects_wal"]
    time.sleep(2)
    before = store_counters(broker.metrics())
    catch = out / "catch-up.json"
    with open(out / "catch-up.log", "w") as log:
        subprocess.run([binary, "bench", "grow", "--catch-up", "--brokers", broker.kafka,
                        "--broker-pid", str(broker.proc.pid), "--output", str(catch)],
                       stdout=log, stderr=subprocess.STDOUT, check=True)
    reads = delta(store_counters(broker.metrics()), before)
    summary["catch_up"] = json.loads(catch.read_text())
    read_gb = summary["catch_up"]["mb"] / 1000
    summary["catch_up_gets_per_gb"] = reads["get_requests"] / read_gb if read_gb else None
    summary["catch_up_fetched_over_read"] = reads["get_bytes"] / (read_gb * 1e9) if read_gb else None
    broker.stop()

    # 5. A cost-oriented flush interval.
    broker = Broker(binary, out / "cost-data", out / "cost-broker.log",
                    ["--wal-flush-interval-ms", str(args.cost_flush_interval_ms)])
    broker.start()
    print(f"cost: {args.cost_secs} s with flushes every {args.cost_flush_interval_ms} ms", flush=True)
    summary["cost"] = bench(binary, broker, out, "cost", args.cost_secs, args)
    time.sleep(2)
    summary["cost_requests_per_gb"] = requests_per_gb(store_counters(broker.metrics()))
    summary["cost_flush_interval_ms"] = args.cost_flush_interval_ms
    broker.stop()

    (out / "growth.json").write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    print_summary(summary, out)


def print_summary(s, out):
    g, b, f = s["growth"], s["baseline"], s["final"]
    rq, cq = s["requests_per_gb"], s.get("cost_requests_per_gb", {})
    mib = 1024 * 1024

    def lat(r):
        p = r["produce_latency_ms"]
        return f"p50 {p['p50']:.1f} / p99 {p['p99']:.1f} / max {p['max']:.0f} ms, {r['throughput_mb_per_sec']:.2f} MB/s"

    minutes = [m["p99"] for m in g.get("produce_latency_by_minute_ms", [])]
    blocks = [minutes[i:i + 10] for i in range(0, len(minutes), 10)]
    by_block = ", ".join(f"{max(block):.0f}" for block in blocks) or "-"
    median = sorted(minutes)[len(minutes) // 2] if minutes else 0

    print(f"""
## Bounded growth: {s['minutes']:g} min at {s['rate']} records/s x {s['record_bytes']} B, {s['partitions']} partitions ({out.name})

| figure | value |
|---|---|
| produce latency without sealing ({b['duration_secs']} s) | {lat(b)} |
| produce latency with sealing (whole run) | {lat(g)} |
| produce p99 per minute with sealing: min / median / max | {min(minutes, default=0):.1f} / {median:.1f} / {max(minutes, default=0):.1f} ms |
| worst minute's p99 in each 10 minutes | {by_block} ms |
| ingested (write-ahead bytes) | {f['ingested_bytes'] / 1e9:.2f} GB |
| chunk rows at the end (largest partition) | {f['chunk_rows']} ({f['max_rows_per_partition']}) |
| chunk rows, second half (min-max) | {s.get('second_half_chunk_rows')} |
| objects live at the end (write-ahead / segments / shared) | {f['objects_live']} ({f['objects_wal']} / {f['objects_segment']} / {f['objects_shared']}); files {f['object_files']} |
| SQLite bytes at the end; second half min-max | {f['sqlite_bytes'] / mib:.1f} MiB; {s.get('second_half_sqlite_bytes')} |
| broker RSS at the end; peak; second half min-max | {f['rss_mib']:.0f} MiB; {s['peak_rss_mib']:.0f} MiB; {s.get('second_half_rss_mib')} |
| bytes written to the object store / ingested | {rq.get('written_over_ingested', 0):.2f}x |
| requests per GB ingested (PUT / GET / DELETE / LIST), flush {s['flush_interval_ms']} ms | {rq.get('put', 0):.0f} / {rq.get('get', 0):.0f} / {rq.get('delete', 0):.0f} / {rq.get('list', 0):.0f}: ${rq.get('cost_usd_per_gb', 0):.4f} per GB |
| the same with flush {s.get('cost_flush_interval_ms')} ms | {cq.get('put', 0):.0f} / {cq.get('get', 0):.0f} / {cq.get('delete', 0):.0f} / {cq.get('list', 0):.0f}: ${cq.get('cost_usd_per_gb', 0):.4f} per GB |
| restart to serving after kill -9 | {s['restart_to_serving_secs']:.2f} s |
| cold catch-up of everything retained | {s['catch_up']['mb']:.0f} MB at {s['catch_up']['throughput_mb_per_sec']:.0f} MB/s, {s['catch_up_gets_per_gb'] or 0:.0f} GETs per GB read, {s['catch_up_fetched_over_read'] or 0:.2f}x bytes fetched per byte read |
""")


if __name__ == "__main__":
    main()
