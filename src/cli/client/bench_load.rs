//! The load side of `strata bench`: when each record is meant to be sent
//! (`Schedule`), the pacing loop that enqueues records at those times, and
//! the collector that awaits delivery reports into `Stats`.
//!
//! A fixed rate gives record `i` the intended send time `start + i / rate`
//! and enqueues it at that time however many earlier records are still
//! unacknowledged; latency runs from the intended time to the delivery
//! report, so a stalled broker shows up in the percentiles instead of
//! silently lowering the offered load (no coordinated omission). Delivery
//! reports are awaited in a separate collector task, never by the pacing loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::{self, Join, Ready};
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngCore as _, SeedableRng as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::CliContext;
use super::bench::{BenchArgs, Rate};
use super::bench_probe::{self, latency_histogram, ms};

/// Distinct keys cycled through, so records spread over all partitions.
const KEY_COUNT: u64 = 1024;

/// When each record is meant to be sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    start: Instant,
    /// Wall-clock microseconds at `start`, to stamp records with.
    start_epoch_us: u64,
    /// Records per second; `None` sends as fast as acks allow.
    rate: Option<u64>,
    /// Records to send at most.
    total: u64,
    /// Records intended before this instant are warmup.
    pub(super) measure_from: Instant,
    /// Nothing is sent from this instant on.
    end: Instant,
}

impl Schedule {
    pub(super) fn new(args: &BenchArgs) -> Self {
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
    pub(super) fn epoch_micros(&self, at: Instant) -> u64 {
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
pub(super) enum Sent {
    Enqueued(Instant, DeliveryFuture),
    /// librdkafka refused the record; the reason is kept for the report.
    Failed(Instant, String),
}

/// The pacing loop: enqueues every record at its intended time. Runs on a
/// thread of its own (`std::thread::sleep` wakes within tens of
/// microseconds, tokio's timer only on whole milliseconds, which would add
/// up to a millisecond to every latency measured from the intended time).
pub(super) fn pace(
    topic: &str,
    record_bytes: usize,
    producer: &FutureProducer<CliContext>,
    schedule: Schedule,
    sent: &AtomicU64,
    tx: mpsc::UnboundedSender<Sent>,
) {
    let keys: Vec<String> = (0..KEY_COUNT).map(|k| format!("key-{k}")).collect();
    let mut payload = vec![0u8; record_bytes];
    let random_len = record_bytes / 2;
    for (i, byte) in payload[random_len..].iter_mut().enumerate() {
        *byte = b'a' + (i % 26) as u8;
    }
    let mut rng = SmallRng::from_os_rng();
    let sleep_until = |at: Instant| {
        let wait = at.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    };

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
            let mut record = FutureRecord::to(topic).key(key).payload(&payload);
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
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((err, _)) => break Sent::Failed(intended, err.to_string()),
                }
            };
            sent.fetch_add(1, Ordering::Relaxed);
            if tx.send(outcome).is_err() {
                return; // the collector is gone; nothing would be counted
            }
            i += 1;
            if i % 256 == 0 && schedule.rate.is_none() && Instant::now() >= schedule.end {
                return;
            }
        }
        match schedule.rate {
            _ if i >= schedule.total => {}
            Some(_) => sleep_until(schedule.intended(i)),
            None if Instant::now() >= schedule.end => return,
            None => sleep_until(schedule.start),
        }
    }
}

/// Counters kept by the collector.
pub(super) struct Stats {
    schedule: Schedule,
    /// Latency of measured records, in microseconds.
    pub(super) latency_us: Histogram<u64>,
    pub(super) acked: u64,
    pub(super) errors: u64,
    /// First and last delivery report of a measured record.
    pub(super) first_ack: Option<Instant>,
    pub(super) last_ack: Option<Instant>,
    acked_total: u64,
    errors_total: u64,
    pub(super) first_error: Option<String>,
    /// Latency over the last progress interval, warmup included.
    recent_us: Histogram<u64>,
    /// Latency of measured records by the minute they were due in, so a
    /// long run shows whether latency drifts.
    pub(super) by_minute_us: Vec<Histogram<u64>>,
}

impl Stats {
    fn new(schedule: Schedule) -> Self {
        let histogram = latency_histogram;
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
            by_minute_us: Vec::new(),
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
            let minute = (intended - self.schedule.measure_from).as_secs() / 60;
            let minute = usize::try_from(minute).unwrap_or(usize::MAX).min(24 * 60);
            while self.by_minute_us.len() <= minute {
                self.by_minute_us.push(latency_histogram());
            }
            self.by_minute_us[minute].saturating_record(micros.max(1));
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
}

/// Awaits delivery reports until the pacing loop is done and all have arrived.
pub(super) async fn collect(
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
}
