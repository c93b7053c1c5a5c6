#!/usr/bin/env python3
"""Summarises a scripts/bench.sh results directory as markdown tables.

Usage: bench_report.py RESULTS_DIR [--update-docs docs/benchmarks.md]

Prints the tables for every broker with results in RESULTS_DIR (strata,
kafka, kafka-fsync, tansu), with Strata's ratios to each of the others; with
--update-docs also replaces the text between <!-- bench:start --> and
<!-- bench:end --> in the given file.
"""

import json
import pathlib
import sys

# Strata first, then the references in the order of the columns.
BROKERS = ("strata", "kafka", "kafka-fsync", "tansu")
REFERENCES = ("kafka", "kafka-fsync", "tansu")
DESCRIPTIONS = {
    "strata": "Strata, embedded store (fsync before every ack)",
    "kafka": "Apache Kafka 4.4.0, single node, its defaults: acks=all acknowledges "
             "once the record is in the page cache",
    "kafka-fsync": "the same Kafka with `log.flush.interval.messages=1`: fsync before "
                   "the ack, Strata's guarantee",
    "tansu": "Tansu 0.6.0, SQLite (libSQL) storage engine",
}
# Workloads run against Strata only (a Strata setting is what they vary).
STRATA_ONLY = {"latency-5000-i10", "latency-5000-linger0-i10"}
PRODUCE = [
    ("latency-5000", "5,000/s, 1 KiB"),
    ("latency-5000-linger0", "5,000/s, 1 KiB, linger.ms=0"),
    ("latency-5000-inflight5", "5,000/s, 1 KiB, max.in.flight=5"),
    ("latency-5000-i10", "5,000/s, 1 KiB, Strata flush interval 10 ms (its S3 default)"),
    ("latency-5000-linger0-i10",
     "5,000/s, 1 KiB, linger.ms=0, Strata flush interval 10 ms (its S3 default)"),
    ("latency-20000", "20,000/s, 1 KiB"),
    ("latency-50000", "50,000/s, 1 KiB"),
    ("max-1k", "max, 1 KiB"),
    ("max-100b", "max, 100 B"),
    ("latency-100b-50000", "50,000/s, 100 B"),
    ("partitions-16", "2,000/s, 16 partitions"),
    ("partitions-1000", "2,000/s, 1,000 partitions"),
    ("partitions-10000", "2,000/s, 10,000 partitions"),
    ("backlog-write", "max, 1 KiB (backlog)"),
]
PERFTEST = [
    ("perftest-max", "max (--throughput -1)"),
    ("perftest-5000", "5,000/s"),
]


def load(results, broker, workload):
    path = results / f"{broker}-{workload}.json"
    if path.exists():
        return json.loads(path.read_text())
    return None


def num(value, digits=1):
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def lat(report, key="produce_latency_ms"):
    if not report or key not in report:
        return "-"
    l = report[key]
    return f"{num(l['p50'])} / {num(l['p99'])} / {num(l['p999'])}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    x = a / b
    # Below 1x, two significant digits: 0.03x, not 0.0x.
    return f"{x:.1f}x" if x >= 0.95 else f"{x:.2g}x"


def cell(report, key, digits=1):
    if report is None:
        return "failed"
    return num(report.get(key), digits)


def get(report, *keys):
    """report[k1][k2]... or None."""
    for k in keys:
        if not isinstance(report, dict) or k not in report:
            return None
        report = report[k]
    return report


def references(brokers):
    """The brokers Strata is compared with: those present, when Strata is."""
    if "strata" not in brokers:
        return []
    return [b for b in REFERENCES if b in brokers]


def ratio_cells(ours, ref, throughput, p99):
    """Strata's throughput over the reference's, the reference's p99 over Strata's."""
    return [ratio(get(ours, *throughput), get(ref, *throughput)),
            ratio(get(ref, *p99), get(ours, *p99))]


def produce_tables(results, brokers):
    refs = references(brokers)
    head = ["workload"]
    for b in brokers:
        head += [f"{b} MB/s", f"{b} p50 / p99 / p99.9 ms"]
    for r in refs:
        head += [f"strata / {r} MB/s", f"{r} / strata p99"]
    head2 = ["workload"]
    for b in brokers:
        head2 += [f"{b} e2e p99 ms", f"{b} CPU s/GB", f"{b} peak RSS MB"]
    rows, rows2 = [], []
    for workload, label in PRODUCE:
        reports = {b: load(results, b, workload) for b in brokers}
        if not any(reports.values()):
            continue
        row, row2 = [label], [label]
        for b in brokers:
            r = reports[b]
            if r is None and b != "strata" and workload in STRATA_ONLY:
                row += ["n/a"] * 2
                row2 += ["n/a"] * 3
                continue
            e2e = r.get("end_to_end_latency_ms") if r else None
            mb = cell(r, "throughput_mb_per_sec")
            if r and r.get("errors"):
                mb += f" ({r['errors']:,} errors)"
            row += [mb, lat(r) if r else "failed"]
            row2 += [num(e2e["p99"]) if e2e else ("failed" if r is None else "-"),
                     cell(r, "broker_cpu_seconds_per_gb"),
                     cell(r, "broker_peak_rss_mb", 0)]
        for ref in refs:
            row += ratio_cells(reports["strata"], reports[ref],
                               ("throughput_mb_per_sec",), ("produce_latency_ms", "p99"))
        rows.append(row)
        rows2.append(row2)
    return table(head, rows), table(head2, rows2)


def strata_table(results):
    head = ["workload", "publish p99 ms", "broker Produce p99 ms",
            "in write buffer p99 ms", "flush PUT+commit p50 / p99 ms",
            "flush PUT+commit p99 per write ms",
            "publish p99 / flush p99", "PUTs/s", "PUTs/GB", "GETs/GB"]
    rows = []
    for workload, label in PRODUCE:
        r = load(results, "strata", workload)
        if not r or "flush_put_commit_p99_ms" not in r:
            continue
        publish = r["produce_latency_ms"]["p99"]
        flush = r["flush_put_commit_p99_ms"]
        rows.append([
            label, num(publish), num(r.get("broker_produce_p99_ms")),
            num(r.get("broker_append_p99_ms")),
            f"{num(r.get('flush_put_commit_p50_ms'))} / {num(flush)}",
            num(r.get("flush_put_commit_per_write_p99_ms")),
            ratio(publish, flush), num(r.get("object_store_puts_per_sec")),
            num(r.get("object_store_puts_per_gb"), 0),
            num(r.get("object_store_gets_per_gb"), 0),
        ])
    return table(head, rows)


def catch_up_table(results, brokers):
    head = ["broker", "backlog MB", "read MB/s", "records/s", "seconds",
            "first record ms", "CPU s/GB", "GETs/GB"]
    rows = []
    for b in brokers:
        r = load(results, b, "catch-up")
        if r is None:
            rows.append([b, "failed", "", "", "", "", "", ""])
            continue
        rows.append([
            b, num(r["mb"], 0), num(r["throughput_mb_per_sec"]),
            num(r["throughput_records_per_sec"], 0), num(r["seconds"]),
            num(r["first_record_ms"]), num(r.get("broker_cpu_seconds_per_gb")),
            num(r.get("object_store_gets_per_gb"), 0),
        ])
    return table(head, rows)


def perftest_table(results, brokers):
    head = ["load", "broker", "records/s", "MB/s", "avg ms", "p50 / p95 / p99 / p99.9 ms",
            "max ms", "CPU s/GB", "strata / broker MB/s", "broker / strata p99"]
    rows = []
    for workload, label in PERFTEST:
        reports = {b: load(results, b, workload) for b in brokers}
        if not any(reports.values()):
            continue
        ours = reports.get("strata")
        for b in brokers:
            r = reports[b]
            if r is None:
                rows.append([label, b, "failed"] + [""] * 7)
                continue
            l = r["latency_ms"]
            compare = (ratio_cells(ours, r, ("throughput_mb_per_sec",), ("latency_ms", "p99"))
                       if b != "strata" else ["", ""])
            rows.append([
                label, b, num(r["throughput_records_per_sec"], 0),
                num(r["throughput_mb_per_sec"]), num(l["avg"]),
                " / ".join(num(l[k]) for k in ("p50", "p95", "p99", "p999")),
                num(l["max"]), num(r.get("broker_cpu_seconds_per_gb")), *compare,
            ])
    return table(head, rows) if rows else "(not run)\n"


def floor_table(results):
    path = results / "floor.json"
    if not path.exists():
        return "(floor not measured)\n"
    f = json.loads(path.read_text())
    seq = f["seq_write_gb_per_sec"]
    rows = [
        ["sequential write, 1 MiB direct + fdatasync, 1 GiB x3",
         f"{min(seq):.2f} to {max(seq):.2f} GB/s"],
        ["4 KiB write with O_DSYNC (fsync latency)", f"{f['dsync_4k_write_ms']:.2f} ms"],
        ["loopback TCP, iperf3 5 s", f"{f['loopback_tcp_gbit_per_sec']:.1f} Gbit/s "
         f"({f['loopback_tcp_gbit_per_sec'] / 8 * 1000:,.0f} MB/s)"],
    ]
    return table(["floor", "value"], rows)


def targets(results, brokers):
    lines = []
    ours = load(results, "strata", "max-1k")
    ref = load(results, "tansu", "max-1k") if "tansu" in brokers else None
    if ours and ref:
        r = ours["throughput_mb_per_sec"] / max(ref["throughput_mb_per_sec"], 1e-9)
        lines.append(f"- produce throughput (max, 1 KiB): {r:.1f}x Tansu's "
                     f"(target >= 3x): {'met' if r >= 3 else 'NOT met'}")
    # Against Kafka: no target, the figures side by side.
    kafkas = [(b, name) for b, name in (("kafka", "Kafka's with its defaults"),
                                        ("kafka-fsync", "Kafka's with fsync before the ack"))
              if b in brokers]
    if ours and kafkas:
        parts = []
        for b, name in kafkas:
            r = load(results, b, "max-1k")
            if r:
                parts.append(f"{ours['throughput_mb_per_sec'] / max(r['throughput_mb_per_sec'], 1e-9):.1f}x "
                             f"{name} ({num(ours['throughput_mb_per_sec'])} against "
                             f"{num(r['throughput_mb_per_sec'])} MB/s)")
        if parts:
            lines.append("- produce throughput (max, 1 KiB): " + "; ".join(parts)
                         + " (for comparison)")
    for workload, label in (("latency-5000-linger0", "5,000/s, linger.ms=0"),
                            ("latency-5000", "5,000/s, linger.ms=5")):
        figures = [(b, get(load(results, b, workload), "produce_latency_ms", "p99"))
                   for b in ("strata", "kafka", "kafka-fsync") if b in brokers]
        if "strata" in brokers and len(figures) > 1:
            lines.append(f"- publish p99 at {label}: "
                         + ", ".join(f"{b} {num(v)} ms" for b, v in figures)
                         + " (for comparison)")
    pt = load(results, "strata", "perftest-max")
    if pt:
        parts = [f"{pt['throughput_mb_per_sec'] / max(r['throughput_mb_per_sec'], 1e-9):.1f}x {b}'s"
                 for b in REFERENCES if b in brokers
                 for r in [load(results, b, "perftest-max")] if r]
        if parts:
            lines.append("- kafka-producer-perf-test, max: Strata's throughput "
                         + ", ".join(parts) + " (for comparison)")
    # The target is read with a client that sends at once (linger.ms=0), so
    # the publish latency is the broker's and the network's; librdkafka's
    # default linger.ms=5 adds up to 5 ms of client-side waiting to it.
    for workload, label, target in (
            ("latency-5000-linger0", "5,000/s, linger.ms=0, default settings", True),
            ("latency-5000", "5,000/s, linger.ms=5, default settings", False),
            ("latency-5000-linger0-i10", "5,000/s, linger.ms=0, flush interval 10 ms", False),
            ("latency-5000-i10", "5,000/s, linger.ms=5, flush interval 10 ms", False)):
        r = load(results, "strata", workload)
        if r and r.get("flush_put_commit_p99_ms"):
            x = r["produce_latency_ms"]["p99"] / r["flush_put_commit_p99_ms"]
            verdict = (f"(target <= 2x): {'met' if x <= 2 else 'NOT met'}" if target
                       else "(for comparison)")
            line = f"- publish p99 at {label}: {x:.1f}x the flush's PUT + commit p99 {verdict}"
            per_write = r.get("flush_put_commit_per_write_p99_ms")
            if per_write:
                line += (f"; {r['produce_latency_ms']['p99'] / per_write:.1f}x the same p99 "
                         "taken over writes instead of flushes")
            lines.append(line)
    puts = [load(results, "strata", f"partitions-{p}") for p in (16, 1000, 10000)]
    if all(puts) and all("object_store_puts_per_sec" in p for p in puts):
        rates = [p["object_store_puts_per_sec"] for p in puts]
        spread = max(rates) / max(min(rates), 1e-9)
        lines.append("- PUTs/s at 16 / 1,000 / 10,000 partitions: "
                     + " / ".join(f"{x:.1f}" for x in rates)
                     + f" (max/min {spread:.2f}; target: independent of the partition count)")
    return "\n".join(lines) + "\n"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out) + "\n"


def main():
    args = sys.argv[1:]
    if not args or len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--update-docs"):
        sys.exit(__doc__)
    results = pathlib.Path(args[0])
    # By exact file names: "kafka-*" would also match kafka-fsync's files.
    workloads = [w for w, _ in PRODUCE + PERFTEST] + ["catch-up"]
    brokers = [b for b in BROKERS
               if any((results / f"{b}-{w}.json").exists() for w in workloads)]
    speed, resources = produce_tables(results, brokers)
    refs = references(brokers)
    text = "\n".join([
        f"Results: `{results.name}`. Brokers:\n",
        "\n".join(f"- {b}: {DESCRIPTIONS[b]}" for b in brokers) + "\n",
        "Produce (same client, same settings, one broker at a time): throughput "
        "and publish latency"
        + (". Ratios: Strata's MB/s over the other broker's, and the other "
           "broker's p99 over Strata's (above 1x: Strata is faster)" if refs else "")
        + ":\n",
        speed,
        "The same runs: end-to-end latency (a consumer reading the topic's end) "
        "and the broker's CPU and memory:\n",
        resources,
        "Strata's durability work per flush and its object-store requests:\n",
        strata_table(results),
        "Catch-up read of the backlog after a restart with the cache (and the "
        "kernel page cache) emptied:\n",
        catch_up_table(results, brokers),
        "A second load generator: Kafka 4.4.0's `kafka-producer-perf-test`, i.e. "
        "the Java producer with `acks=all` and its other defaults (idempotent, "
        "`linger.ms=5` as of Kafka 4, `batch.size` 16 KiB, at most 5 requests in "
        "flight per connection), 1 KiB records, a 16-partition topic; figures "
        "after 3 s of warmup records. It times a record from `send()`, which "
        "blocks when its 32 MiB buffer is full, so at a fixed rate a slow broker "
        "lowers the records/s more than it raises the latency (strata bench's "
        "open loop counts that wait). MB = 10^6 bytes of values:\n",
        perftest_table(results, brokers),
        "The physical floor, measured in the same run:\n",
        floor_table(results),
        "Targets:\n",
        targets(results, brokers),
    ])
    print(text)
    if len(args) == 3:
        doc = pathlib.Path(args[2])
        body = doc.read_text()
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        if start not in body or end not in body:
            sys.exit(f"{doc} has no {start} ... {end} markers")
        before, rest = body.split(start, 1)
        _, after = rest.split(end, 1)
        doc.write_text(f"{before}{start}\n{text}{end}{after}")
        print(f"updated {doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
