//! Counters of object-store traffic per operation: requests, errors, retries,
//! bytes and latency. Read by logs and the benchmark; exported over HTTP once
//! the admin API exists.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (microseconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    u64::MAX,
];

#[derive(Debug, Default)]
pub struct OpMetrics {
    requests: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
    latency_us_total: AtomicU64,
    latency_buckets: [AtomicU64; 12],
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
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_us_total.fetch_add(us, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
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
        self.latency_us_total.load(Ordering::Relaxed)
    }
    pub fn latency_buckets(&self) -> Vec<(u64, u64)> {
        LATENCY_BUCKETS_US
            .iter()
            .zip(&self.latency_buckets)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect()
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
        use std::fmt::Write as _;
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
            let _ = writeln!(out, "# HELP strata_object_store_{name}_total {help}");
            let _ = writeln!(out, "# TYPE strata_object_store_{name}_total counter");
            for (op, metrics) in &ops {
                let _ = writeln!(
                    out,
                    "strata_object_store_{name}_total{{op=\"{op}\"}} {}",
                    value(metrics)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP strata_object_store_request_seconds Object store request latency."
        );
        let _ = writeln!(out, "# TYPE strata_object_store_request_seconds histogram");
        for (op, metrics) in &ops {
            let mut cumulative = 0;
            for (bound, count) in metrics.latency_buckets() {
                cumulative += count;
                let le = if bound == u64::MAX {
                    "+Inf".to_string()
                } else {
                    format!("{}", bound as f64 / 1e6)
                };
                let _ = writeln!(
                    out,
                    "strata_object_store_request_seconds_bucket{{op=\"{op}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "strata_object_store_request_seconds_sum{{op=\"{op}\"}} {}",
                metrics.latency_us_total() as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "strata_object_store_request_seconds_count{{op=\"{op}\"}} {}",
                metrics.requests()
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
