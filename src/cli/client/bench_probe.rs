//! What `strata bench` measures beside produce latency:
//! - end-to-end latency: a consumer reads the benchmark topic from its end
//!   while the load runs; every record carries its intended send time (epoch
//!   microseconds, first 8 bytes of the value), so latency runs from the
//!   intended send to the moment a consumer has the record;
//! - the broker's CPU time and peak RSS, from `/proc/<pid>` when the broker
//!   runs on the same machine (`--broker-pid`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{CliContext, ConnectArgs};

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
            let mut latency =
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid");
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
        self.handle.join().unwrap_or_else(|_| {
            (
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid"),
                0,
            )
        })
    }
}

/// `requests_total` of one object-store operation from a broker's
/// Prometheus endpoint (`http://host:port/metrics`; plain HTTP only).
pub fn object_store_requests(metrics_url: &str, op: &str) -> anyhow::Result<u64> {
    use std::io::{Read as _, Write as _};
    let rest = metrics_url
        .strip_prefix("http://")
        .with_context(|| format!("--metrics-url must start with http://, got '{metrics_url}'"))?;
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
    let wanted = format!("strata_object_store_requests_total{{op=\"{op}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no {wanted}in the metrics at {metrics_url}"))
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
}
