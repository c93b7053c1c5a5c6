//! `strata bench --catch-up`: a consumer that reads a topic from its start
//! to its end as fast as the broker serves it, the way a consumer group
//! catches up on a backlog or a new application replays history.
//!
//! The end of every partition is read once, before reading starts; the run
//! is over when every partition has been read up to it. Run it after
//! restarting the broker with an emptied cache to measure reads from the
//! object store.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::bench::BenchArgs;
use super::bench_probe::{BrokerFigures, BrokerProbe, Latency, emit};
use super::{CliContext, find_topic};

/// A partition that delivers nothing for this long fails the run.
const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    partitions: usize,
    records: u64,
    /// MB = 10^6 bytes of record values.
    mb: f64,
    seconds: f64,
    throughput_mb_per_sec: f64,
    throughput_records_per_sec: f64,
    /// From the start of reading to the first record.
    first_record_ms: f64,
    /// Gaps between consecutive records handed to the application, in ms: a
    /// cold read shows up as waits here.
    record_gap_ms: Latency,
    #[serde(flatten)]
    broker: BrokerFigures,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let Some(topic) = find_topic(&args.connect, &args.topic).await? else {
        bail!(
            "topic '{}' does not exist; write a backlog first, e.g. `strata bench {} --rate max --total-mb 1100 --no-end-to-end`",
            args.topic,
            args.topic
        );
    };
    let partitions = topic.partitions.len();
    let connect = args.connect.clone();
    let name = args.topic.clone();
    let probe = BrokerProbe::start(args.broker_pid, args.metrics_url.as_ref())?;
    let read = tokio::task::spawn_blocking(move || read_all(&connect, &name, partitions))
        .await
        .context("the catch-up reader panicked")??;
    let broker = probe.finish(read.bytes)?;
    let seconds = read.elapsed.as_secs_f64().max(1e-3);
    let report = Report {
        workload: "catch_up_read",
        partitions,
        records: read.records,
        mb: read.bytes as f64 / 1e6,
        seconds,
        throughput_mb_per_sec: read.bytes as f64 / 1e6 / seconds,
        throughput_records_per_sec: read.records as f64 / seconds,
        first_record_ms: read.first_record.as_secs_f64() * 1e3,
        record_gap_ms: Latency::of(&read.gaps_us),
        broker,
    };
    emit(&report, args.output.as_ref())?;
    if read.records == 0 {
        bail!("topic '{}' is empty: nothing to catch up on", args.topic);
    }
    Ok(())
}

struct Read {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    first_record: Duration,
    gaps_us: Histogram<u64>,
}

/// Reads every partition of `topic` from its start to the end it had when
/// reading began.
fn read_all(connect: &super::ConnectArgs, topic: &str, partitions: usize) -> anyhow::Result<Read> {
    let consumer: BaseConsumer<CliContext> = connect
        .client_config()
        .set("group.id", "strata-bench-catch-up")
        .set("enable.auto.commit", "false")
        .create_with_context(CliContext)
        .context("could not create the catch-up consumer")?;
    // (end offset, next offset to see) per partition.
    let mut ends = Vec::with_capacity(partitions);
    let mut expected = 0u64;
    for partition in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("could not read the offsets of {topic}/{partition}"))?;
        expected += u64::try_from(high - low).unwrap_or(0);
        ends.push(high);
    }
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .context("invalid partition")?;
    }
    consumer
        .assign(&assignment)
        .context("could not assign the catch-up consumer")?;
    eprintln!("reading {expected} records of '{topic}' from {partitions} partitions");

    let mut gaps_us =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid");
    let started = Instant::now();
    let mut first_record = None;
    let mut last_record = started;
    let mut next_progress = started + Duration::from_secs(1);
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut remaining = ends.iter().filter(|end| **end > 0).count();
    let mut done = vec![false; partitions];
    for (partition, end) in ends.iter().enumerate() {
        done[partition] = *end <= 0;
    }
    while remaining > 0 {
        let now = Instant::now();
        if now >= next_progress {
            let secs = now.duration_since(started).as_secs_f64();
            eprintln!(
                "[{secs:>6.1}s] read {records} of {expected} records, {:.1} MB, {:.1} MB/s",
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / secs
            );
            next_progress += Duration::from_secs(1);
        }
        if now.duration_since(last_record) > STALL {
            bail!(
                "no record for {} s with {remaining} partitions not read to their end ({records} of {expected} records read)",
                STALL.as_secs()
            );
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(err)) => bail!("the catch-up read failed: {err}"),
            Some(Ok(message)) => message,
        };
        let at = Instant::now();
        if first_record.is_none() {
            first_record = Some(at.duration_since(started));
        } else {
            let gap = at.duration_since(last_record).as_micros();
            gaps_us.saturating_record(u64::try_from(gap).unwrap_or(u64::MAX).max(1));
        }
        last_record = at;
        records += 1;
        bytes += message.payload_len() as u64;
        let partition = usize::try_from(message.partition()).unwrap_or(usize::MAX);
        if let (Some(end), Some(finished)) = (ends.get(partition), done.get_mut(partition))
            && !*finished
            && message.offset() + 1 >= *end
        {
            *finished = true;
            remaining -= 1;
        }
    }
    Ok(Read {
        records,
        bytes,
        elapsed: last_record.duration_since(started),
        first_record: first_record.unwrap_or_default(),
        gaps_us,
    })
}
