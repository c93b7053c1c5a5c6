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

use super::bench_probe;
use super::topic::{TopicError, create_topic};
use super::{Acks, CliContext, ConnectArgs, TopicInfo, find_topic, print_stdout};

/// Distinct keys cycled through, so records spread over all partitions.
const KEY_COUNT: u64 = 1024;

/// Run an open-loop produce benchmark and print the result as JSON.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Topic to write to; created with --partitions if it does not exist
    #[arg(default_value = "strata-bench")]
    pub topic: String,
    /// Offered load in records per second, kept up however slow the acks are
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Length of the measurement in seconds, after the warmup
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration_secs: u64,
    /// Size of each record's value in bytes (the first half is random)
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the topic when the benchmark has to create it
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
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
    /// object-store PUTs and GETs per GB to the result
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    target_rate: u64,
    duration_secs: u64,
    record_bytes: usize,
    partitions: usize,
    acks: &'static str,
    records_acked: u64,
    errors: u64,
    throughput_records_per_sec: f64,
    /// MB = 10^6 bytes of record values.
    throughput_mb_per_sec: f64,
    produce_latency_ms: Latency,
    /// From the intended send time to a consumer holding the record.
    end_to_end_latency_ms: Latency,
    end_to_end_records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_cpu_seconds_per_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_peak_rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_store_puts_per_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_store_gets_per_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_store_puts_per_sec: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Latency {
    fn of(micros: &Histogram<u64>) -> Self {
        Latency {
            p50: ms(micros.value_at_quantile(0.50)),
            p99: ms(micros.value_at_quantile(0.99)),
            p999: ms(micros.value_at_quantile(0.999)),
            max: ms(micros.max()),
        }
    }
}

/// Runs `strata bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let partitions = ensure_topic(&args).await?;
    let producer: FutureProducer<CliContext> = args
        .connect
        .client_config()
        .set("acks", args.acks.as_str())
        .set("linger.ms", "5")
        // Room for many seconds of backlog, so enqueueing never waits on acks.
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097151")
        // A dead broker turns into counted errors instead of a hang.
        .set("message.timeout.ms", "30000")
        .create_with_context(CliContext)
        .context("could not create the kafka producer")?;

    let schedule = Schedule::new(&args);
    let measure_from_us = schedule.epoch_micros(schedule.measure_from);
    let e2e =
        bench_probe::EndToEnd::start(&args.connect, &args.topic, partitions, measure_from_us)?;
    let cpu_before = args.broker_pid.map(bench_probe::cpu_nanos).transpose()?;
    let object_requests = |url: &String| -> anyhow::Result<(u64, u64)> {
        Ok((
            bench_probe::object_store_requests(url, "put")?,
            bench_probe::object_store_requests(url, "get")?,
        ))
    };
    let requests_before = args.metrics_url.as_ref().map(object_requests).transpose()?;
    let run_started = std::time::Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(rx, schedule, Arc::clone(&sent)));
    pace(&args, &producer, schedule, &sent, tx).await;
    let stats = collector
        .await
        .context("the delivery collector task panicked")?;

    let cpu_after = args.broker_pid.map(bench_probe::cpu_nanos).transpose()?;
    let requests_after = args.metrics_url.as_ref().map(object_requests).transpose()?;
    let run_secs = run_started.elapsed().as_secs_f64();
    let mut report = stats.report(&args, partitions);
    let (e2e_latency, e2e_records) = e2e.finish(report.records_acked, Duration::from_secs(10));
    report.end_to_end_latency_ms = Latency::of(&e2e_latency);
    report.end_to_end_records = e2e_records;
    if let (Some(pid), Some(before), Some(after)) = (args.broker_pid, cpu_before, cpu_after) {
        // All records sent, warmup included, over the whole run's CPU time.
        let gb = (schedule.total as f64 * args.record_bytes as f64) / 1e9;
        report.broker_cpu_seconds_per_gb = Some((after - before) as f64 / 1e9 / gb.max(1e-9));
        report.broker_peak_rss_mb = Some(bench_probe::peak_rss_bytes(pid)? as f64 / 1e6);
    }
    if let (Some((puts0, gets0)), Some((puts1, gets1))) = (requests_before, requests_after) {
        // The whole run, warmup included, like the CPU figure.
        let gb = ((schedule.total as f64 * args.record_bytes as f64) / 1e9).max(1e-9);
        report.object_store_puts_per_gb = Some(puts1.saturating_sub(puts0) as f64 / gb);
        report.object_store_gets_per_gb = Some(gets1.saturating_sub(gets0) as f64 / gb);
        report.object_store_puts_per_sec =
            Some(puts1.saturating_sub(puts0) as f64 / run_secs.max(1e-9));
    }
    let json = serde_json::to_string_pretty(&report).context("could not encode the result")?;
    print_stdout(&format!("{json}\n"))?;
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("could not write the result to {}", path.display()))?;
    }
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
    rate: u64,
    total: u64,
    /// Records intended before this instant are warmup.
    measure_from: Instant,
}

impl Schedule {
    fn new(args: &BenchArgs) -> Self {
        // Begin a little in the future so the first records are not late.
        let start = Instant::now() + Duration::from_millis(10);
        Schedule {
            start,
            start_epoch_us: bench_probe::epoch_micros() + 10_000,
            rate: args.rate,
            total: args
                .rate
                .saturating_mul(args.warmup_secs + args.duration_secs),
            measure_from: start + Duration::from_secs(args.warmup_secs),
        }
    }

    /// Wall-clock microseconds of an instant of the schedule.
    fn epoch_micros(&self, at: Instant) -> u64 {
        self.start_epoch_us + at.saturating_duration_since(self.start).as_micros() as u64
    }

    fn intended(&self, i: u64) -> Instant {
        let nanos = u128::from(i) * 1_000_000_000 / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many records are due at `now` (all `i` with `intended(i) <= now`).
    fn due(&self, now: Instant) -> u64 {
        if now < self.start {
            return 0;
        }
        let elapsed = (now - self.start).as_nanos();
        let due = elapsed * u128::from(self.rate) / 1_000_000_000 + 1;
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
            }
        }
        if i < schedule.total {
            tokio::time::sleep_until(schedule.intended(i)).await;
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

    fn report(&self, args: &BenchArgs, partitions: usize) -> Report {
        // Acks that spread over more than the window (a broker that cannot keep
        // up) stretch it, so throughput then drops below the target rate.
        let window = Duration::from_secs(args.duration_secs);
        let ack_span = match (self.first_ack, self.last_ack) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        };
        let elapsed = window.max(ack_span).as_secs_f64();
        let records_per_sec = self.acked as f64 / elapsed;
        Report {
            workload: "produce_open_loop",
            target_rate: args.rate,
            duration_secs: args.duration_secs,
            record_bytes: args.record_bytes,
            partitions,
            acks: args.acks.as_str(),
            records_acked: self.acked,
            errors: self.errors,
            throughput_records_per_sec: records_per_sec,
            throughput_mb_per_sec: records_per_sec * args.record_bytes as f64 / 1e6,
            produce_latency_ms: Latency::of(&self.latency_us),
            end_to_end_latency_ms: Latency::of(&self.recent_us),
            end_to_end_records: 0,
            broker_cpu_seconds_per_gb: None,
            broker_peak_rss_mb: None,
            object_store_puts_per_gb: None,
            object_store_gets_per_gb: None,
            object_store_puts_per_sec: None,
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
    use super::{Duration, Instant, Schedule};

    #[test]
    fn schedule_spaces_records_evenly() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            start_epoch_us: 0,
            rate: 4,
            total: 8,
            measure_from: start,
        };
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(3), start + Duration::from_millis(750));
        assert_eq!(schedule.due(start), 1);
        assert_eq!(schedule.due(start + Duration::from_millis(499)), 2);
        assert_eq!(schedule.due(start + Duration::from_millis(500)), 3);
        assert_eq!(schedule.due(start + Duration::from_secs(60)), 8);
    }
}
