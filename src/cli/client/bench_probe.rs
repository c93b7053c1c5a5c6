//! What `strata bench` measures beside produce latency:
//! - end-to-end latency: a consumer reads the benchmark topic from its end
//!   while the load runs; every record carries its intended send time (epoch
//!   microseconds, first 8 bytes of the value), so latency runs from the
//!   intended send to the moment a consumer has the record;
//! - the broker's CPU time and peak RSS, from `/proc/<pid>` when the broker
//!   runs on the same machine (`--broker-pid`);
//! - object-store requests and flush durations from a Strata broker's
//!   `/metrics` (`--metrics-url`).
//!
//! Also the JSON pieces both benchmark modes share (`BrokerFigures`,
//! `Latency`, `emit`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{CliContext, ConnectArgs, print_stdout};

pub fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The end-to-end consumer, running on its own thread.
pub struct EndToEnd {
    stop: Arc<AtomicBool>,
    /// Measured records seen so far.
    seen: Arc<AtomicU64>,
    handle: JoinHandle<(Histogram<u64>, u64)>,
}

impl EndToEnd {
    /// Starts reading every partition of `topic` from its end. Records
    /// intended before `measure_from_us` (warmup) are not counted.
    pub fn start(
        connect: &ConnectArgs,
        topic: &str,
        partitions: usize,
        measure_from_us: u64,
    ) -> anyhow::Result<Self> {
        let consumer: BaseConsumer<CliContext> = connect
            .client_config()
            .set("group.id", "strata-bench-e2e")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create_with_context(CliContext)
            .context("could not create the end-to-end consumer")?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition as i32, Offset::End)
                .context("invalid partition")?;
        }
        consumer
            .assign(&assignment)
            .context("could not assign the end-to-end consumer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let seen = Arc::new(AtomicU64::new(0));
        let seen_count = Arc::clone(&seen);
        let handle = std::thread::spawn(move || {
            let mut latency = latency_histogram();
            let mut counted = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let Some(sent) = message
                    .payload()
                    .and_then(|p| p.first_chunk::<8>())
                    .map(|b| u64::from_be_bytes(*b))
                else {
                    continue;
                };
                if sent >= measure_from_us {
                    latency.saturating_record(epoch_micros().saturating_sub(sent).max(1));
                    counted += 1;
                    seen_count.store(counted, Ordering::Relaxed);
                }
            }
            (latency, counted)
        });
        Ok(EndToEnd { stop, seen, handle })
    }

    /// Waits until `expected` measured records were seen or `patience`
    /// passed, then stops; returns the latency histogram (microseconds) and
    /// the count.
    pub fn finish(self, expected: u64, patience: Duration) -> (Histogram<u64>, u64) {
        let deadline = std::time::Instant::now() + patience;
        while self.seen.load(Ordering::Relaxed) < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .unwrap_or_else(|_| (latency_histogram(), 0))
    }
}

/// One scrape of a Strata broker's Prometheus endpoint
/// (`http://host:port/metrics`; plain HTTP only).
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    body: String,
}

/// What the broker did between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct MetricsDelta {
    pub puts: u64,
    pub gets: u64,
    /// p50 and p99 (ms) of one flush's PUT + metadata commit, interpolated
    /// within the histogram's buckets; `None` without flushes.
    pub flush_p50_ms: Option<f64>,
    pub flush_p99_ms: Option<f64>,
    pub flushes: u64,
    /// p50 and p99 (ms) of Produce requests inside the broker, from the
    /// frame read to the response written; `None` without requests.
    pub produce_p50_ms: Option<f64>,
    pub produce_p99_ms: Option<f64>,
    /// p50 and p99 (ms) of an acknowledged append's wait in the write
    /// buffer until durable.
    pub append_p50_ms: Option<f64>,
    pub append_p99_ms: Option<f64>,
    /// p99 over acknowledged writes of their flush's PUT + commit.
    pub flush_per_write_p99_ms: Option<f64>,
}

impl MetricsSnapshot {
    pub fn scrape(metrics_url: &str) -> anyhow::Result<Self> {
        use std::io::{Read as _, Write as _};
        let rest = metrics_url.strip_prefix("http://").with_context(|| {
            format!("--metrics-url must start with http://, got '{metrics_url}'")
        })?;
        let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
        let mut stream = std::net::TcpStream::connect(host)
            .with_context(|| format!("cannot connect to {host} for metrics"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            path.trim_start_matches('/')
        )?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        let snapshot = MetricsSnapshot { body };
        // Fail now, not after the run, if this is not a Strata endpoint.
        snapshot.value("strata_object_store_requests_total{op=\"put\"}")?;
        Ok(snapshot)
    }

    /// The value of one sample, `name{labels}` exactly as exported.
    fn value(&self, sample: &str) -> anyhow::Result<f64> {
        self.body
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .with_context(|| format!("no {sample} in the broker's metrics"))
    }

    /// `(upper bound in seconds, cumulative count)` of a histogram's buckets
    /// whose labels start with `labels` (empty: a histogram without labels).
    fn buckets(&self, name: &str, labels: &str) -> Vec<(f64, f64)> {
        let prefix = if labels.is_empty() {
            format!("{name}_bucket{{le=\"")
        } else {
            format!("{name}_bucket{{{labels},le=\"")
        };
        self.body
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(&prefix)?;
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect()
    }

    /// What happened between `before` (an earlier scrape) and this one.
    pub fn since(&self, before: &MetricsSnapshot) -> anyhow::Result<MetricsDelta> {
        let delta = |sample: &str| -> anyhow::Result<u64> {
            Ok((self.value(sample)? - before.value(sample)?).max(0.0) as u64)
        };
        let buckets = self.bucket_delta(before, "strata_wal_flush_seconds", "stage=\"total\"");
        let produce = self.bucket_delta(before, "strata_request_seconds", "api=\"Produce\"");
        let append = self.bucket_delta(before, "strata_wal_append_seconds", "");
        let per_write = self.bucket_delta(before, "strata_wal_append_flush_seconds", "");
        Ok(MetricsDelta {
            puts: delta("strata_object_store_requests_total{op=\"put\"}")?,
            gets: delta("strata_object_store_requests_total{op=\"get\"}")?,
            flush_p50_ms: bucket_quantile(&buckets, 0.50).map(|s| s * 1e3),
            flush_p99_ms: bucket_quantile(&buckets, 0.99).map(|s| s * 1e3),
            flushes: buckets.last().map_or(0, |(_, count)| *count as u64),
            produce_p50_ms: bucket_quantile(&produce, 0.50).map(|s| s * 1e3),
            produce_p99_ms: bucket_quantile(&produce, 0.99).map(|s| s * 1e3),
            append_p50_ms: bucket_quantile(&append, 0.50).map(|s| s * 1e3),
            append_p99_ms: bucket_quantile(&append, 0.99).map(|s| s * 1e3),
            flush_per_write_p99_ms: bucket_quantile(&per_write, 0.99).map(|s| s * 1e3),
        })
    }

    /// A histogram's buckets counted since `before`.
    fn bucket_delta(&self, before: &MetricsSnapshot, name: &str, labels: &str) -> Vec<(f64, f64)> {
        let then = before.buckets(name, labels);
        self.buckets(name, labels)
            .iter()
            .map(|(le, count)| {
                let earlier = then.iter().find(|(l, _)| l == le).map_or(0.0, |(_, c)| *c);
                (*le, (count - earlier).max(0.0))
            })
            .collect()
    }
}

/// The `q` quantile of cumulative histogram buckets `(upper bound, count)`,
/// interpolated linearly within its bucket (as Prometheus'
/// `histogram_quantile`); the last finite bound if it falls in `+Inf`.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (bound, count) in buckets {
        if *count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        lower = *bound;
        below = *count;
    }
    Some(lower)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// CPU nanoseconds (user + system, all threads) a process has used, from
/// `/proc/<pid>/stat` (10 ms resolution).
pub fn cpu_nanos(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| {
        format!("cannot read /proc/{pid}/stat: is --broker-pid a local process?")
    })?;
    // The command name is in parentheses and may hold spaces: split after it.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) * (1_000_000_000 / USER_HZ)),
        _ => anyhow::bail!("unexpected /proc/{pid}/stat format"),
    }
}

/// Peak resident set size of a process, in bytes (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("no VmHWM in /proc status")
}

/// What the broker spent, from `/proc` and its metrics endpoint; shared with
/// the catch-up read's report.
#[derive(Debug, Default, Serialize)]
pub(super) struct BrokerFigures {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_seconds_per_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_peak_rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store_puts_per_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store_gets_per_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store_puts_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store_gets_per_sec: Option<f64>,
    /// One write-buffer flush: object PUT + metadata commit, the least an
    /// acks=all write waits for. From histogram buckets (±1 ms below 10 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_put_commit_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_put_commit_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flushes: Option<u64>,
    /// The same PUT + commit, p99 over acknowledged writes instead of over
    /// flushes: a slow flush counts once per write it held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_put_commit_per_write_p99_ms: Option<f64>,
    /// Produce requests inside the broker (frame read to response written):
    /// publish latency minus the client and the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_produce_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_produce_p99_ms: Option<f64>,
    /// An acknowledged write's wait in the write buffer (buffered to durable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_append_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_append_p99_ms: Option<f64>,
}

/// The broker's counters at the start of a run.
pub(super) struct BrokerProbe {
    pid: Option<u32>,
    cpu_before: Option<u64>,
    metrics_url: Option<String>,
    metrics_before: Option<MetricsSnapshot>,
    started: std::time::Instant,
}

impl BrokerProbe {
    pub fn start(pid: Option<u32>, metrics_url: Option<&String>) -> anyhow::Result<Self> {
        Ok(BrokerProbe {
            pid,
            cpu_before: pid.map(cpu_nanos).transpose()?,
            metrics_url: metrics_url.cloned(),
            metrics_before: metrics_url
                .map(|url| MetricsSnapshot::scrape(url))
                .transpose()?,
            started: std::time::Instant::now(),
        })
    }

    /// The broker's figures since `start`, per GB of `bytes` moved.
    pub fn finish(self, bytes: u64) -> anyhow::Result<BrokerFigures> {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let gb = (bytes as f64 / 1e9).max(1e-9);
        let mut figures = BrokerFigures::default();
        if let (Some(pid), Some(before)) = (self.pid, self.cpu_before) {
            let after = cpu_nanos(pid)?;
            figures.broker_cpu_seconds_per_gb =
                Some(after.saturating_sub(before) as f64 / 1e9 / gb);
            figures.broker_peak_rss_mb = Some(peak_rss_bytes(pid)? as f64 / 1e6);
        }
        if let (Some(url), Some(before)) = (&self.metrics_url, &self.metrics_before) {
            let delta = MetricsSnapshot::scrape(url)?.since(before)?;
            figures.object_store_puts_per_gb = Some(delta.puts as f64 / gb);
            figures.object_store_gets_per_gb = Some(delta.gets as f64 / gb);
            figures.object_store_puts_per_sec = Some(delta.puts as f64 / secs);
            figures.object_store_gets_per_sec = Some(delta.gets as f64 / secs);
            figures.flush_put_commit_p50_ms = delta.flush_p50_ms;
            figures.flush_put_commit_p99_ms = delta.flush_p99_ms;
            figures.flushes = Some(delta.flushes);
            figures.flush_put_commit_per_write_p99_ms = delta.flush_per_write_p99_ms;
            figures.broker_produce_p50_ms = delta.produce_p50_ms;
            figures.broker_produce_p99_ms = delta.produce_p99_ms;
            figures.broker_append_p50_ms = delta.append_p50_ms;
            figures.broker_append_p99_ms = delta.append_p99_ms;
        }
        Ok(figures)
    }
}

#[derive(Debug, Serialize)]
pub(super) struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Latency {
    pub(super) fn of(micros: &Histogram<u64>) -> Self {
        Latency {
            p50: ms(micros.value_at_quantile(0.50)),
            p99: ms(micros.value_at_quantile(0.99)),
            p999: ms(micros.value_at_quantile(0.999)),
            max: ms(micros.max()),
        }
    }
}

/// Prints the result and writes it to `--output`.
pub(super) fn emit(report: &impl Serialize, output: Option<&PathBuf>) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("could not encode the result")?;
    print_stdout(&format!("{json}\n"))?;
    if let Some(path) = output {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("could not write the result to {}", path.display()))?;
    }
    Ok(())
}

pub(super) fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// A latency histogram in microseconds: 1 µs to 1 h at 3 significant digits.
pub(super) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_and_rss() {
        let me = std::process::id();
        let before = cpu_nanos(me).expect("own /proc stat");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(120) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(
            cpu_nanos(me).expect("own /proc stat") > before,
            "busy loop shows up as CPU time"
        );
        assert!(peak_rss_bytes(me).expect("own VmHWM") > 1_000_000);
        assert!(cpu_nanos(u32::MAX).is_err(), "no such process");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        // 100 samples: 50 in (0, 1 ms], 49 in (1, 2 ms], 1 in (2 ms, +Inf).
        let buckets = [(0.001, 50.0), (0.002, 99.0), (f64::INFINITY, 100.0)];
        assert_eq!(bucket_quantile(&buckets, 0.5), Some(0.001));
        let p99 = bucket_quantile(&buckets, 0.99).expect("has samples");
        assert!((p99 - 0.002).abs() < 1e-9, "{p99}");
        let p75 = bucket_quantile(&buckets, 0.75).expect("has samples");
        assert!((p75 - (0.001 + 0.001 * 25.0 / 49.0)).abs() < 1e-9, "{p75}");
        assert_eq!(bucket_quantile(&buckets, 1.0), Some(0.002), "+Inf bucket");
        assert_eq!(
            bucket_quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5),
            None
        );
    }

    #[test]
    fn snapshot_delta_reads_counters_and_flush_histogram() {
        let render = |puts: u64, fast: u64, slow: u64| MetricsSnapshot {
            body: format!(
                "strata_object_store_requests_total{{op=\"put\"}} {puts}\n\
                 strata_object_store_requests_total{{op=\"get\"}} 7\n\
                 strata_wal_flush_seconds_bucket{{stage=\"total\",le=\"0.01\"}} {fast}\n\
                 strata_wal_flush_seconds_bucket{{stage=\"total\",le=\"0.02\"}} {}\n\
                 strata_wal_flush_seconds_bucket{{stage=\"total\",le=\"+Inf\"}} {}\n",
                fast + slow,
                fast + slow
            ),
        };
        let delta = render(110, 90, 10)
            .since(&render(10, 0, 0))
            .expect("all samples present");
        assert_eq!((delta.puts, delta.gets, delta.flushes), (100, 0, 100));
        let p99 = delta.flush_p99_ms.expect("flushes happened");
        assert!((p99 - 19.0).abs() < 1e-6, "{p99}");
    }
}
