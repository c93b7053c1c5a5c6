//! Counters of object-store traffic per operation (requests, errors, retries,
//! bytes, latency) and of the write buffer's flushes (PUT, metadata commit and
//! both together). Rendered in Prometheus text format by the HTTP endpoint;
//! read by logs and the benchmark.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (microseconds) of the latency histogram buckets: 1 ms steps
/// up to 10 ms and 2 to 5 ms steps up to 30 ms, where flushes of the local
/// and S3 stores land, so a p99 read from the buckets is within a
/// millisecond or two.
pub const LATENCY_BUCKETS_US: [u64; 34] = [
    250,
    500,
    750,
    1_000,
    1_500,
    2_000,
    2_500,
    3_000,
    4_000,
    5_000,
    6_000,
    7_000,
    8_000,
    9_000,
    10_000,
    12_000,
    14_000,
    16_000,
    18_000,
    20_000,
    25_000,
    30_000,
    40_000,
    50_000,
    75_000,
    100_000,
    150_000,
    200_000,
    300_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    u64::MAX,
];

/// A latency histogram with the fixed buckets above.
#[derive(Debug)]
pub struct LatencyHistogram {
    count: AtomicU64,
    sum_us: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Appends the `# HELP` and `# TYPE` lines of metric `name` to `out`.
pub fn render_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends an unlabelled counter or gauge: its header and its one value.
pub fn render_value(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    render_header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        self.record_times(elapsed, 1);
    }

    /// Records `elapsed` as `times` observations at once.
    pub fn record_times(&self, elapsed: Duration, times: u64) {
        if times == 0 {
            return;
        }
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.count.fetch_add(times, Ordering::Relaxed);
        self.sum_us
            .fetch_add(us.saturating_mul(times), Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        self.buckets[bucket].fetch_add(times, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// Appends `<name>_bucket`, `_sum` and `_count` lines with `labels`
    /// (`key="value"` pairs, comma separated) to `out`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let (bucket_labels, own) = if labels.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("{labels},"), format!("{{{labels}}}"))
        };
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let le = if *bound == u64::MAX {
                "+Inf".to_string()
            } else {
                format!("{}", *bound as f64 / 1e6)
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{bucket_labels}le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{name}_sum{own} {}", self.sum_us() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{own} {}", self.count());
    }
}

#[derive(Debug, Default)]
pub struct OpMetrics {
    requests: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
    latency: LatencyHistogram,
}

impl OpMetrics {
    pub fn record(&self, elapsed: Duration, ok_bytes: Option<u64>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match ok_bytes {
            Some(bytes) => {
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            None => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency.record(elapsed);
    }
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn latency_us_total(&self) -> u64 {
        self.latency.sum_us()
    }
}

/// The write buffer's flushes: how long the durability work of each took.
#[derive(Debug, Default)]
pub struct FlushMetrics {
    /// Uploading the flush's object (retries included).
    pub put: LatencyHistogram,
    /// The metadata transaction that makes it visible.
    pub commit: LatencyHistogram,
    /// Both, back to back: what an acknowledged write waits for at least.
    pub total: LatencyHistogram,
    /// Between a flush's PUT and its commit, waiting for the flush started
    /// before it to settle (commits apply in order).
    pub order_wait: LatencyHistogram,
    /// Per acknowledged append: from buffered to durable, what a write
    /// waits for inside the write buffer.
    pub append: LatencyHistogram,
    /// Per acknowledged append: the PUT + commit of the flush that made it
    /// durable. `total` counts each flush once; this counts it once per
    /// write in it, so a slow flush that holds many writes weighs as much
    /// here as in the writes' latency.
    pub append_flush: LatencyHistogram,
    bytes: AtomicU64,
}

impl FlushMetrics {
    pub fn record(&self, put: Duration, commit: Duration, bytes: u64) {
        self.put.record(put);
        self.commit.record(commit);
        self.total.record(put + commit);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        render_header(
            &mut out,
            "strata_wal_flush_seconds",
            "histogram",
            "Durability work per flush of the write buffer: object PUT, metadata commit, and both (total).",
        );
        for (stage, histogram) in [
            ("put", &self.put),
            ("commit", &self.commit),
            ("total", &self.total),
        ] {
            histogram.render(
                &mut out,
                "strata_wal_flush_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        render_header(
            &mut out,
            "strata_wal_flush_order_wait_seconds",
            "histogram",
            "Time a flush's upload waited for the flush before it to commit.",
        );
        self.order_wait
            .render(&mut out, "strata_wal_flush_order_wait_seconds", "");
        render_header(
            &mut out,
            "strata_wal_append_seconds",
            "histogram",
            "Time an acknowledged append waited in the write buffer until durable.",
        );
        self.append
            .render(&mut out, "strata_wal_append_seconds", "");
        render_header(
            &mut out,
            "strata_wal_append_flush_seconds",
            "histogram",
            "Per acknowledged append: object PUT + metadata commit of the flush that made it durable.",
        );
        self.append_flush
            .render(&mut out, "strata_wal_append_flush_seconds", "");
        render_value(
            &mut out,
            "strata_wal_flush_bytes_total",
            "counter",
            "Bytes flushed from the write buffer.",
            self.bytes.load(Ordering::Relaxed),
        );
        out
    }
}

#[derive(Debug, Default)]
pub struct ObjectStoreMetrics {
    pub put: OpMetrics,
    pub get: OpMetrics,
    pub delete: OpMetrics,
    pub list: OpMetrics,
}

impl ObjectStoreMetrics {
    /// The counters in Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        let ops = [
            ("put", &self.put),
            ("get", &self.get),
            ("delete", &self.delete),
            ("list", &self.list),
        ];
        let mut out = String::new();
        for (name, help, value) in [
            (
                "requests",
                "Object store requests, retries included.",
                OpMetrics::requests as fn(&OpMetrics) -> u64,
            ),
            (
                "errors",
                "Object store requests that failed.",
                OpMetrics::errors,
            ),
            (
                "retries",
                "Object store requests retried.",
                OpMetrics::retries,
            ),
            (
                "bytes",
                "Bytes written (put) or read (get).",
                OpMetrics::bytes,
            ),
        ] {
            render_header(
                &mut out,
                &format!("strata_object_store_{name}_total"),
                "counter",
                help,
            );
            for (op, metrics) in &ops {
                let _ = writeln!(
                    out,
                    "strata_object_store_{name}_total{{op=\"{op}\"}} {}",
                    value(metrics)
                );
            }
        }
        render_header(
            &mut out,
            "strata_object_store_request_seconds",
            "histogram",
            "Object store request latency.",
        );
        for (op, metrics) in &ops {
            metrics.latency.render(
                &mut out,
                "strata_object_store_request_seconds",
                &format!("op=\"{op}\""),
            );
        }
        out
    }

    /// One line per operation: requests, errors, retries, bytes, mean latency.
    pub fn summary(&self) -> String {
        [
            ("put", &self.put),
            ("get", &self.get),
            ("delete", &self.delete),
            ("list", &self.list),
        ]
        .iter()
        .map(|(name, op)| {
            let mean_us = op
                .latency_us_total()
                .checked_div(op.requests())
                .unwrap_or(0);
            format!(
                "{name}: {} requests, {} errors, {} retries, {} bytes, mean {mean_us} us",
                op.requests(),
                op.errors(),
                op.retries(),
                op.bytes()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_many_at_once_renders_like_recording_each() {
        let each = LatencyHistogram::default();
        let at_once = LatencyHistogram::default();
        for _ in 0..3 {
            each.record(Duration::from_micros(1_200));
        }
        at_once.record_times(Duration::from_micros(1_200), 3);
        at_once.record_times(Duration::from_micros(9_000), 0);
        let render = |h: &LatencyHistogram| {
            let mut out = String::new();
            h.render(&mut out, "x_seconds", "");
            out
        };
        assert_eq!(render(&each), render(&at_once));
        assert!(render(&at_once).contains("x_seconds_count 3"));
    }
}
