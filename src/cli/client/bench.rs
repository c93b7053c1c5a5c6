//! `strata bench`: a produce benchmark (fixed rate, open loop, or `--rate
//! max`) or a catch-up read (`--catch-up`), with a JSON result. This file
//! holds the arguments, the run and the produce report; the load generator
//! is `bench_load`, the broker-side figures and end-to-end consumer
//! `bench_probe`, the catch-up read `bench_catch_up`. Records intended during
//! the warmup are sent but left out of every reported number.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use tokio::sync::mpsc;

use super::bench_load::{Schedule, Stats, collect, pace};
use super::bench_probe::{BrokerFigures, BrokerProbe, Latency, emit};
use super::topic::{TopicError, create_topic};
use super::{Acks, CliContext, ConnectArgs, TopicInfo, find_topic};
use super::{bench_catch_up, bench_probe};

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
    /// object-store PUTs and GETs per GB and per second, the p50/p99 of one
    /// flush's object PUT + metadata commit (and its p99 over writes), and
    /// the p50/p99 of Produce requests and of the wait in the write buffer
    /// inside the broker to the result
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
    /// The same for each minute of the measurement (by intended send time).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    produce_latency_by_minute_ms: Vec<Latency>,
    /// From the intended send time to a consumer holding the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    end_to_end_latency_ms: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_to_end_records: Option<u64>,
    #[serde(flatten)]
    broker: BrokerFigures,
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
    let pacer = {
        let (topic, record_bytes) = (args.topic.clone(), args.record_bytes);
        let (producer, sent) = (producer.clone(), Arc::clone(&sent));
        tokio::task::spawn_blocking(move || {
            pace(&topic, record_bytes, &producer, schedule, &sent, tx);
        })
    };
    pacer.await.context("the pacing thread panicked")?;
    let stats = collector
        .await
        .context("the delivery collector task panicked")?;

    // All records sent, warmup included, over the whole run.
    let bytes_sent = sent.load(Ordering::Relaxed) * args.record_bytes as u64;
    let broker = probe.finish(bytes_sent)?;
    let mut report = report(&stats, &args, partitions, broker);
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

/// The JSON result of a produce run from the collector's counters.
fn report(stats: &Stats, args: &BenchArgs, partitions: usize, broker: BrokerFigures) -> Report {
    let ack_span = match (stats.first_ack, stats.last_ack) {
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
    let records_per_sec = stats.acked as f64 / elapsed.as_secs_f64().max(1e-3);
    Report {
        workload,
        target_rate,
        duration_secs: args.duration_secs,
        record_bytes: args.record_bytes,
        partitions,
        acks: args.acks.as_str(),
        linger_ms: args.linger_ms,
        records_acked: stats.acked,
        errors: stats.errors,
        throughput_records_per_sec: records_per_sec,
        throughput_mb_per_sec: records_per_sec * args.record_bytes as f64 / 1e6,
        produce_latency_ms: Latency::of(&stats.latency_us),
        produce_latency_by_minute_ms: stats.by_minute_us.iter().map(Latency::of).collect(),
        end_to_end_latency_ms: None,
        end_to_end_records: None,
        broker,
    }
}

#[cfg(test)]
mod tests {
    use super::{Rate, parse_rate};

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
