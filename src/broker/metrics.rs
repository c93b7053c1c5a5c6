//! Per-API request latency: from a request's frame read in full to its
//! response written to the socket (Kafka's `TotalTimeMs`), so an acks=all
//! Produce includes the wait for its group commit and a Fetch its long poll;
//! and how many Fetch requests are long-polling now (Kafka's fetch
//! purgatory size).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use crate::storage::metrics::{LatencyHistogram, render_header, render_value};

/// Highest API key tracked; Kafka's keys are below it.
const API_KEYS: usize = 128;

pub struct RequestMetrics {
    by_api: Box<[LatencyHistogram]>,
    fetches_waiting: AtomicU64,
    /// Record bytes fetched here from partitions another broker leads.
    replica_fetch_bytes: AtomicU64,
    /// Partition fetches answered with a preferred read replica (KIP-392).
    preferred_replica: AtomicU64,
    /// Reads of the metadata store that fetches of partitions led
    /// elsewhere made on demand (past the view, or its first load).
    replica_store_reads: AtomicU64,
    /// read_committed fetches that read aborted transactions older than
    /// the ones kept in memory from the store.
    aborted_store_reads: AtomicU64,
    /// Connections refused while authenticating (TLS handshake, client
    /// certificate).
    authentication_failures: AtomicU64,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            by_api: (0..API_KEYS).map(|_| LatencyHistogram::default()).collect(),
            fetches_waiting: AtomicU64::new(0),
            replica_fetch_bytes: AtomicU64::new(0),
            preferred_replica: AtomicU64::new(0),
            replica_store_reads: AtomicU64::new(0),
            aborted_store_reads: AtomicU64::new(0),
            authentication_failures: AtomicU64::new(0),
        }
    }
}

/// Counts one long-polling Fetch for as long as it is held.
pub struct FetchWaiting<'a>(&'a AtomicU64);

impl Drop for FetchWaiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RequestMetrics {
    /// Marks a Fetch as waiting for data until the guard is dropped.
    pub fn fetch_waiting(&self) -> FetchWaiting<'_> {
        self.fetches_waiting.fetch_add(1, Ordering::Relaxed);
        FetchWaiting(&self.fetches_waiting)
    }
    /// Counts record bytes served for a partition led elsewhere.
    pub fn replica_fetched(&self, bytes: usize) {
        self.replica_fetch_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// Counts a read of the store for a partition led elsewhere.
    pub fn replica_store_read(&self) {
        self.replica_store_reads.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a read of aborted transactions from the store.
    pub fn aborted_store_read(&self) {
        self.aborted_store_reads.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a connection refused while authenticating.
    pub fn authentication_failed(&self) {
        self.authentication_failures.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a partition fetch sent to a replica in the client's rack.
    pub fn preferred_replica_sent(&self) {
        self.preferred_replica.fetch_add(1, Ordering::Relaxed);
    }
    pub fn record(&self, api: ApiKey, elapsed: Duration) {
        if let Some(histogram) = usize::try_from(api as i16)
            .ok()
            .and_then(|key| self.by_api.get(key))
        {
            histogram.record(elapsed);
        }
    }

    /// `strata_request_seconds{api="Produce"}` and so on, for the APIs that
    /// have seen requests.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        render_header(
            &mut out,
            "strata_request_seconds",
            "histogram",
            "Kafka request latency, frame received to response written.",
        );
        for (key, histogram) in self.by_api.iter().enumerate() {
            if histogram.count() == 0 {
                continue;
            }
            let Ok(api) = ApiKey::try_from(key as i16) else {
                continue;
            };
            histogram.render(
                &mut out,
                "strata_request_seconds",
                &format!("api=\"{api:?}\""),
            );
        }
        render_value(
            &mut out,
            "strata_fetch_waiting",
            "gauge",
            "Fetch requests long-polling for data now (Kafka's fetch purgatory size).",
            self.fetches_waiting.load(Ordering::Relaxed),
        );
        render_value(
            &mut out,
            "strata_fetch_replica_bytes_total",
            "counter",
            "Record bytes fetched from this broker for partitions another broker leads.",
            self.replica_fetch_bytes.load(Ordering::Relaxed),
        );
        render_value(
            &mut out,
            "strata_fetch_preferred_replica_total",
            "counter",
            "Partition fetches told to fetch from a broker in the consumer's rack (KIP-392).",
            self.preferred_replica.load(Ordering::Relaxed),
        );
        render_value(
            &mut out,
            "strata_replica_store_reads_total",
            "counter",
            "Metadata store reads made on demand by fetches of partitions another broker leads.",
            self.replica_store_reads.load(Ordering::Relaxed),
        );
        render_value(
            &mut out,
            "strata_aborted_txns_store_reads_total",
            "counter",
            "read_committed partition fetches that read aborted transactions older than those kept in memory from the metadata store.",
            self.aborted_store_reads.load(Ordering::Relaxed),
        );
        render_value(
            &mut out,
            "strata_authentication_failures_total",
            "counter",
            "Connections refused while authenticating (failed TLS handshake, refused client certificate).",
            self.authentication_failures.load(Ordering::Relaxed),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_apis_seen() {
        let metrics = RequestMetrics::default();
        metrics.record(ApiKey::Produce, Duration::from_micros(1_200));
        metrics.record(ApiKey::Produce, Duration::from_micros(3_000));
        let text = metrics.render_prometheus();
        assert!(
            text.contains("strata_request_seconds_count{api=\"Produce\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("strata_request_seconds_bucket{api=\"Produce\",le=\"0.0015\"} 1"),
            "{text}"
        );
        assert!(!text.contains("api=\"Fetch\""), "{text}");
    }
}
