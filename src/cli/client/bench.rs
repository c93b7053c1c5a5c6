//! `strata bench`: open-loop produce benchmark with a JSON result.
//!
//! A pacing loop gives record `i` the intended send time `start + i / rate`
//! and enqueues it at that time however many earlier records are still
//! unacknowledged. Latency runs from the intended send time to the delivery
//! report, so a stalled broker shows up in the percentiles instead of silently
//! lowering the offered load (no coordinated omission). Delivery reports are
//! awaited in a separate collector task, never by the pacing loop. Records
//! intended during the warmup are sent but left out of every reported number.
//! End-to-end latency and broker CPU/RSS come from `bench_probe`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use futures::future::{self, Join, Ready};
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngCore as _, SeedableRng as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::topic::{TopicError, create_topic};
use super::{Acks, CliContext, ConnectArgs, TopicInfo, find_topic, print_stdout};
use super::{bench_catch_up, bench_probe};

/// Distinct keys cycled through, so records spread over all partitions.
const KEY_COUNT: u64 = 1024;

/// Run a produce benchmark (fixed rate or maximum) or a catch-up read and print the result as JSON.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Topic to write to; created with --partitions if it does not exist
    #[arg(default_value = "strata-bench")]
    pub topic: String,
    /// Offered load in records per second, kept up however slow the acks are;
    /// or `max`: as fast as the broker acknowledges, with at most
    /// --max-in-flight records waiting for their acks (latency then runs
    /// from the moment a record is handed to the client)
    #[arg(long, default_value = "5000", value_parser = parse_rate, value_name = "RECORDS_PER_SEC|max")]
    pub rate: Rate,
    /// With --rate max: records waiting for acks before the sender waits
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,
    /// With --rate max: stop once this many MB (10^6 bytes of values) were
    /// sent, even before --duration-secs; to write a backlog of a given size
    #[arg(long, value_name = "MB")]
    pub total_mb: Option<u64>,
    /// Read the topic from its start to its current end instead of
    /// producing, and report the read throughput (a catch-up consumer);
    /// restart the broker with an emptied cache first to measure cold reads
    #[arg(long)]
    pub catch_up: bool,
    /// Do not run the end-to-end consumer (frees the client's CPU for
    /// maximum-throughput runs); end-to-end latency is then not reported
    #[arg(long)]
    pub no_end_to_end: bool,
    /// Length of the measurement in seconds, after the warmup
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration_secs: u64,
    /// Size of each record's value in bytes (the first half is random)
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the topic when the benchmark has to create it
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// The producer's linger.ms: how long librdkafka waits to fill a batch
    /// (5 is librdkafka's default; 0 sends at once, for lowest latency)
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Extra librdkafka producer setting, repeatable (e.g.
    /// socket.nagle.disable=true); applied last
    #[arg(long = "producer-config", value_name = "KEY=VALUE", value_parser = super::topic::parse_key_value)]
    pub producer_config: Vec<(String, String)>,
    /// Acknowledgement a record needs before it counts as delivered
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Seconds of load sent before measuring starts; excluded from the result
    #[arg(long, default_value_t = 3)]
    pub warmup_secs: u64,
    /// Also write the JSON result to this file
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Process id of a broker on this machine: adds its CPU seconds per GB
    /// and peak RSS to the result
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// A Strata broker's metrics endpoint (http://HOST:PORT/metrics): adds
    /// object-store PUTs and GETs per GB and the p50/p99 of one flush's
    /// object PUT + metadata commit to the result
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `--rate`: a fixed offered load, or as fast as the broker goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    PerSec(u64),
    Max,
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match text.parse::<u64>() {
        Ok(rate) if rate > 0 => Ok(Rate::PerSec(rate)),
        _ => Err(format!(
            "'{text}' is neither a positive number of records per second nor 'max'"
        )),
    }
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    /// Records per second offered; null for `--rate max`.
    target_rate: Option<u64>,
    duration_secs: u64,
    record_bytes: usize,
    partitions: usize,
    acks: &'static str,
    linger_ms: u64,
    records_acked: u64,
    errors: u64,
    throughput_records_per_sec: f64,
    /// MB = 10^6 bytes of record values.
    throughput_mb_per_sec: f64,
    produce_latency_ms: Latency,
    /// From the intended send time to a consumer holding the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    end_to_end_latency_ms: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_to_end_records: Option<u64>,
    #[serde(flatten)]
    broker: BrokerFigures,
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
}

/// The broker's counters at the start of a run.
pub(super) struct BrokerProbe {
    pid: Option<u32>,
    cpu_before: Option<u64>,
    metrics_url: Option<String>,
    metrics_before: Option<bench_probe::MetricsSnapshot>,
    started: std::time::Instant,
}

impl BrokerProbe {
    pub fn start(pid: Option<u32>, metrics_url: Option<&String>) -> anyhow::Result<Self> {
        Ok(BrokerProbe {
            pid,
            cpu_before: pid.map(bench_probe::cpu_nanos).transpose()?,
            metrics_url: metrics_url.cloned(),
            metrics_before: metrics_url
                .map(|url| bench_probe::MetricsSnapshot::scrape(url))
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
            let after = bench_probe::cpu_nanos(pid)?;
            figures.broker_cpu_seconds_per_gb =
                Some(after.saturating_sub(before) as f64 / 1e9 / gb);
            figures.broker_peak_rss_mb = Some(bench_probe::peak_rss_bytes(pid)? as f64 / 1e6);
        }
        if let (Some(url), Some(before)) = (&self.metrics_url, &self.metrics_before) {
            let delta = bench_probe::MetricsSnapshot::scrape(url)?.since(before)?;
            figures.object_store_puts_per_gb = Some(delta.puts as f64 / gb);
            figures.object_store_gets_per_gb = Some(delta.gets as f64 / gb);
            figures.object_store_puts_per_sec = Some(delta.puts as f64 / secs);
            figures.object_store_gets_per_sec = Some(delta.gets as f64 / secs);
            figures.flush_put_commit_p50_ms = delta.flush_p50_ms;
            figures.flush_put_commit_p99_ms = delta.flush_p99_ms;
            figures.flushes = Some(delta.flushes);
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

/// Runs `strata bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.catch_up {
        return bench_catch_up::run(args).await;
    }
    if args.rate != Rate::Max && args.total_mb.is_some() {
        bail!("--total-mb only applies with --rate max");
    }
    let partitions = ensure_topic(&args).await?;
    let (max_messages, max_kbytes) = match args.rate {
        // Room for many seconds of backlog, so enqueueing never waits on acks.
        Rate::PerSec(_) => (1_000_000, 2_097_151),
        Rate::Max => (
            args.max_in_flight.min(10_000_000),
            (args
                .max_in_flight
                .saturating_mul(args.record_bytes as u64 + 64)
                / 1024)
                .clamp(1024, 2_097_151),
        ),
    };
    let mut config = args.connect.client_config();
    config
        .set("acks", args.acks.as_str())
        .set("linger.ms", args.linger_ms.to_string())
        .set("queue.buffering.max.messages", max_messages.to_string())
        .set("queue.buffering.max.kbytes", max_kbytes.to_string())
        // A dead broker turns into counted errors instead of a hang.
        .set("message.timeout.ms", "30000");
    for (key, value) in &args.producer_config {
        config.set(key, value);
    }
    let producer: FutureProducer<CliContext> = config
        .create_with_context(CliContext)
        .context("could not create the kafka producer (check --producer-config)")?;

    let schedule = Schedule::new(&args);
    let measure_from_us = schedule.epoch_micros(schedule.measure_from);
    let e2e = if args.no_end_to_end {
        None
    } else {
        Some(bench_probe::EndToEnd::start(
            &args.connect,
            &args.topic,
            partitions,
            measure_from_us,
        )?)
    };
    let probe = BrokerProbe::start(args.broker_pid, args.metrics_url.as_ref())?;
    let sent = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(rx, schedule, Arc::clone(&sent)));
    pace(&args, &producer, schedule, &sent, tx).await;
    let stats = collector
        .await
        .context("the delivery collector task panicked")?;

    // All records sent, warmup included, over the whole run.
    let bytes_sent = sent.load(Ordering::Relaxed) * args.record_bytes as u64;
    let broker = probe.finish(bytes_sent)?;
    let mut report = stats.report(&args, partitions, broker);
    if let Some(e2e) = e2e {
        let (e2e_latency, e2e_records) = e2e.finish(report.records_acked, Duration::from_secs(10));
        report.end_to_end_latency_ms = Some(Latency::of(&e2e_latency));
        report.end_to_end_records = Some(e2e_records);
    }
    emit(&report, args.output.as_ref())?;
    if report.records_acked == 0 {
        let cause = stats
            .first_error
            .as_deref()
            .unwrap_or("no delivery report arrived");
        bail!("no record was acknowledged during the measurement; first error: {cause}");
    }
    Ok(())
}

/// Creates the topic unless it exists; returns its actual partition count.
async fn ensure_topic(args: &BenchArgs) -> anyhow::Result<usize> {
    let topic = match find_topic(&args.connect, &args.topic).await? {
        Some(topic) => topic,
        None => {
            match create_topic(&args.connect, &args.topic, args.partitions, 1, &[]).await {
                Ok(()) => eprintln!(
                    "created topic '{}' with {} partitions",
                    args.topic, args.partitions
                ),
                // Someone else created it meanwhile; use theirs.
                Err(TopicError::Rejected(RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err(err) => return Err(err.into_anyhow(&args.topic, "create")),
            }
            wait_for_topic(args).await?
        }
    };
    let count = topic.partitions.len();
    if i32::try_from(count).ok() != Some(args.partitions) {
        eprintln!(
            "warning: topic '{}' already exists with {count} partitions, not {}; delete it to benchmark with --partitions {}",
            args.topic, args.partitions, args.partitions
        );
    }
    Ok(count)
}

/// A fresh topic can take a moment to appear in every broker's metadata.
async fn wait_for_topic(args: &BenchArgs) -> anyhow::Result<TopicInfo> {
    for _ in 0..20 {
        if let Some(topic) = find_topic(&args.connect, &args.topic).await? {
            return Ok(topic);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "topic '{}' was created but is still missing from the metadata after 5 s; run the benchmark again",
        args.topic
    )
}

/// When each record is meant to be sent.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    /// Wall-clock microseconds at `start`, to stamp records with.
    start_epoch_us: u64,
    /// Records per second; `None` sends as fast as acks allow.
    rate: Option<u64>,
    /// Records to send at most.
    total: u64,
    /// Records intended before this instant are warmup.
    measure_from: Instant,
    /// Nothing is sent from this instant on.
    end: Instant,
}

impl Schedule {
    fn new(args: &BenchArgs) -> Self {
        // Begin a little in the future so the first records are not late.
        let start = Instant::now() + Duration::from_millis(10);
        let secs = args.warmup_secs + args.duration_secs;
        let (rate, total) = match args.rate {
            Rate::PerSec(rate) => (Some(rate), rate.saturating_mul(secs)),
            Rate::Max => (
                None,
                args.total_mb.map_or(u64::MAX, |mb| {
                    mb.saturating_mul(1_000_000)
                        .div_ceil(args.record_bytes.max(1) as u64)
                }),
            ),
        };
        Schedule {
            start,
            start_epoch_us: bench_probe::epoch_micros() + 10_000,
            rate,
            total,
            measure_from: start + Duration::from_secs(args.warmup_secs),
            end: start + Duration::from_secs(secs),
        }
    }

    /// Wall-clock microseconds of an instant of the schedule.
    fn epoch_micros(&self, at: Instant) -> u64 {
        self.start_epoch_us + at.saturating_duration_since(self.start).as_micros() as u64
    }

    /// When record `i` is meant to be sent; `now` at `--rate max`.
    fn intended(&self, i: u64) -> Instant {
        let Some(rate) = self.rate else {
            return Instant::now();
        };
        let nanos = u128::from(i) * 1_000_000_000 / u128::from(rate);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many records are due at `now` (all `i` with `intended(i) <= now`);
    /// at `--rate max`, all of them until the end.
    fn due(&self, now: Instant) -> u64 {
        if now < self.start {
            return 0;
        }
        let Some(rate) = self.rate else {
            return if now < self.end { self.total } else { 0 };
        };
        let elapsed = (now - self.start).as_nanos();
        let due = elapsed * u128::from(rate) / 1_000_000_000 + 1;
        u64::try_from(due).unwrap_or(u64::MAX).min(self.total)
    }
}

/// What the pacing loop hands to the collector for each record.
enum Sent {
    Enqueued(Instant, DeliveryFuture),
    /// librdkafka refused the record; the reason is kept for the report.
    Failed(Instant, String),
}

/// The pacing loop: enqueues every record at its intended time.
async fn pace(
    args: &BenchArgs,
    producer: &FutureProducer<CliContext>,
    schedule: Schedule,
    sent: &AtomicU64,
    tx: mpsc::UnboundedSender<Sent>,
) {
    let keys: Vec<String> = (0..KEY_COUNT).map(|k| format!("key-{k}")).collect();
    let mut payload = vec![0u8; args.record_bytes];
    let random_len = args.record_bytes / 2;
    for (i, byte) in payload[random_len..].iter_mut().enumerate() {
        *byte = b'a' + (i % 26) as u8;
    }
    let mut rng = SmallRng::from_os_rng();

    let mut i = 0;
    while i < schedule.total {
        let due = schedule.due(Instant::now());
        while i < due {
            rng.fill_bytes(&mut payload[..random_len]);
            let intended = schedule.intended(i);
            // The intended send time leads the value, for end-to-end latency.
            if let Some(stamp) = payload.first_chunk_mut::<8>() {
                *stamp = schedule.epoch_micros(intended).to_be_bytes();
            }
            let key = &keys[(i % KEY_COUNT) as usize];
            let mut record = FutureRecord::to(&args.topic).key(key).payload(&payload);
            let outcome = loop {
                match producer.send_result(record) {
                    // At `--rate max` latency starts once the client took the
                    // record, so its full queue (the closed loop) is not counted.
                    Ok(delivery) if schedule.rate.is_none() => {
                        break Sent::Enqueued(Instant::now(), delivery);
                    }
                    Ok(delivery) => break Sent::Enqueued(intended, delivery),
                    // Only librdkafka's own buffer can hold us back; the delay
                    // still counts, since latency starts at `intended`.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((err, _)) => break Sent::Failed(intended, err.to_string()),
                }
            };
            sent.fetch_add(1, Ordering::Relaxed);
            if tx.send(outcome).is_err() {
                return; // the collector is gone; nothing would be counted
            }
            i += 1;
            if i % 256 == 0 {
                // Catching up after a stall: let the collector run meanwhile.
                tokio::task::yield_now().await;
                if schedule.rate.is_none() && Instant::now() >= schedule.end {
                    return;
                }
            }
        }
        match schedule.rate {
            _ if i >= schedule.total => {}
            Some(_) => tokio::time::sleep_until(schedule.intended(i)).await,
            None if Instant::now() >= schedule.end => return,
            None => tokio::time::sleep_until(schedule.start).await,
        }
    }
}

/// Counters kept by the collector.
struct Stats {
    schedule: Schedule,
    /// Latency of measured records, in microseconds.
    latency_us: Histogram<u64>,
    acked: u64,
    errors: u64,
    /// First and last delivery report of a measured record.
    first_ack: Option<Instant>,
    last_ack: Option<Instant>,
    acked_total: u64,
    errors_total: u64,
    first_error: Option<String>,
    /// Latency over the last progress interval, warmup included.
    recent_us: Histogram<u64>,
}

impl Stats {
    fn new(schedule: Schedule) -> Self {
        // 1 µs to 1 h at 3 significant digits.
        let histogram =
            || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid");
        Stats {
            schedule,
            latency_us: histogram(),
            acked: 0,
            errors: 0,
            first_ack: None,
            last_ack: None,
            acked_total: 0,
            errors_total: 0,
            first_error: None,
            recent_us: histogram(),
        }
    }

    /// Counts one record: `Ok(ack time)` or `Err(why it was not delivered)`.
    fn record(&mut self, intended: Instant, outcome: Result<Instant, String>) {
        let measured = intended >= self.schedule.measure_from;
        let acked_at = match outcome {
            Ok(acked_at) => acked_at,
            Err(reason) => {
                self.errors_total += 1;
                self.errors += u64::from(measured);
                self.first_error.get_or_insert(reason);
                return;
            }
        };
        let micros = u64::try_from((acked_at - intended).as_micros()).unwrap_or(u64::MAX);
        self.acked_total += 1;
        self.recent_us.saturating_record(micros.max(1));
        if measured {
            self.acked += 1;
            self.latency_us.saturating_record(micros.max(1));
            self.first_ack = Some(self.first_ack.map_or(acked_at, |first| first.min(acked_at)));
            self.last_ack = self.last_ack.max(Some(acked_at));
        }
    }

    fn progress(&mut self, sent: u64) {
        let now = Instant::now();
        let phase = if now < self.schedule.measure_from {
            " (warmup)"
        } else {
            ""
        };
        let elapsed = now.saturating_duration_since(self.schedule.start).as_secs();
        eprintln!(
            "[{elapsed:>4}s] sent {sent} acked {} errors {} p99 {:.2} ms{phase}",
            self.acked_total,
            self.errors_total,
            ms(self.recent_us.value_at_quantile(0.99))
        );
        self.recent_us.reset();
    }

    fn report(&self, args: &BenchArgs, partitions: usize, broker: BrokerFigures) -> Report {
        let ack_span = match (self.first_ack, self.last_ack) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        };
        let (workload, target_rate, elapsed) = match args.rate {
            // Acks that spread over more than the window (a broker that cannot
            // keep up) stretch it, so throughput then drops below the target.
            Rate::PerSec(rate) => (
                "produce_open_loop",
                Some(rate),
                Duration::from_secs(args.duration_secs).max(ack_span),
            ),
            // Closed loop: what was acknowledged over the time it took.
            Rate::Max => ("produce_max", None, ack_span),
        };
        let records_per_sec = self.acked as f64 / elapsed.as_secs_f64().max(1e-3);
        Report {
            workload,
            target_rate,
            duration_secs: args.duration_secs,
            record_bytes: args.record_bytes,
            partitions,
            acks: args.acks.as_str(),
            linger_ms: args.linger_ms,
            records_acked: self.acked,
            errors: self.errors,
            throughput_records_per_sec: records_per_sec,
            throughput_mb_per_sec: records_per_sec * args.record_bytes as f64 / 1e6,
            produce_latency_ms: Latency::of(&self.latency_us),
            end_to_end_latency_ms: None,
            end_to_end_records: None,
            broker,
        }
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Awaits delivery reports until the pacing loop is done and all have arrived.
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Sent>,
    schedule: Schedule,
    sent: Arc<AtomicU64>,
) -> Stats {
    let mut stats = Stats::new(schedule);
    let mut pending: FuturesUnordered<Join<Ready<Instant>, DeliveryFuture>> =
        FuturesUnordered::new();
    let mut ticker = tokio::time::interval_at(
        schedule.start + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pacing_done = false;
    while !(pacing_done && pending.is_empty()) {
        tokio::select! {
            Some((intended, report)) = pending.next() => {
                let outcome = match report {
                    Ok(Ok(_)) => Ok(Instant::now()),
                    Ok(Err((err, _))) => Err(err.to_string()),
                    Err(_) => Err("the producer shut down before reporting delivery".to_owned()),
                };
                stats.record(intended, outcome);
            }
            next = rx.recv(), if !pacing_done => match next {
                Some(Sent::Enqueued(intended, delivery)) => {
                    pending.push(future::join(future::ready(intended), delivery));
                }
                Some(Sent::Failed(intended, reason)) => stats.record(intended, Err(reason)),
                None => pacing_done = true,
            },
            _ = ticker.tick() => stats.progress(sent.load(Ordering::Relaxed)),
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::{Duration, Instant, Rate, Schedule, parse_rate};

    #[test]
    fn schedule_spaces_records_evenly() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            start_epoch_us: 0,
            rate: Some(4),
            total: 8,
            measure_from: start,
            end: start + Duration::from_secs(2),
        };
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(3), start + Duration::from_millis(750));
        assert_eq!(schedule.due(start), 1);
        assert_eq!(schedule.due(start + Duration::from_millis(499)), 2);
        assert_eq!(schedule.due(start + Duration::from_millis(500)), 3);
        assert_eq!(schedule.due(start + Duration::from_secs(60)), 8);

        let max = Schedule {
            rate: None,
            total: u64::MAX,
            ..schedule
        };
        assert_eq!(max.due(start), u64::MAX, "everything is due until the end");
        assert_eq!(
            max.due(start + Duration::from_secs(2)),
            0,
            "nothing after it"
        );
    }

    #[test]
    fn rate_is_a_positive_number_or_max() {
        assert_eq!(parse_rate("2500"), Ok(Rate::PerSec(2500)));
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("MAX"), Ok(Rate::Max));
        for bad in ["0", "-5", "fast", ""] {
            let err = parse_rate(bad).expect_err(bad);
            assert!(err.contains("'max'"), "{err}");
        }
    }
}
