//! A partition read on a broker that does not lead it. Every acknowledged
//! byte is in the object store and every chunk in the metadata store, so
//! any broker can serve any partition's reads (KIP-392 fetch from a
//! replica): its in-memory index follows the store instead of the commits,
//! refreshed by the broker (see `broker::replicas`) while consumers read
//! it, and dropped when they stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use super::PartitionLog;
use crate::metadata::{AbortedTxn, ChunkRecord, ProducerStateRecord};

/// The follower side of a partition log (unused where it is led).
#[derive(Default)]
pub(super) struct ReplicaView {
    /// When a consumer last read it here (ms since the epoch; 0: never).
    last_read_ms: AtomicI64,
    /// When its whole index was last read from the store (0: never).
    synced_ms: AtomicI64,
    /// When the store was last read for it, whole or not (0: never).
    checked_ms: AtomicI64,
    /// One refresh at a time: two applied out of order could put a chunk
    /// row back that a newer one (sealed, merged) replaced.
    refreshing: tokio::sync::Mutex<()>,
}

/// What the store holds of a partition, read in this order: the partition
/// row (its high watermark and log start) first, then its chunks, so the
/// chunks cover at least up to that high watermark.
pub struct StoreView {
    /// `chunks` is every chunk (else those from the view's high watermark).
    pub full: bool,
    pub chunks: Vec<ChunkRecord>,
    pub log_start: i64,
    pub high_watermark: i64,
    pub producers: Vec<ProducerStateRecord>,
    pub aborted: Vec<AbortedTxn>,
    pub now_ms: i64,
}

impl PartitionLog {
    /// Notes a consumer's read here (the view is kept fresh while read).
    pub fn touch_replica(&self, now_ms: i64) {
        self.replica
            .last_read_ms
            .fetch_max(now_ms, Ordering::AcqRel);
    }
    pub fn replica_last_read_ms(&self) -> i64 {
        self.replica.last_read_ms.load(Ordering::Acquire)
    }
    /// When the whole index was last read from the store (0: never, and
    /// the view serves nothing).
    pub fn replica_synced_ms(&self) -> i64 {
        self.replica.synced_ms.load(Ordering::Acquire)
    }
    /// When the store was last read for this view (0: never).
    pub fn replica_checked_ms(&self) -> i64 {
        self.replica.checked_ms.load(Ordering::Acquire)
    }
    /// Notes a read of the store for this view.
    pub fn replica_checked(&self, now_ms: i64) {
        self.replica.checked_ms.fetch_max(now_ms, Ordering::AcqRel);
    }
    /// Held while a refresh reads the store and applies what it read.
    pub async fn replica_refresh_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.replica.refreshing.lock().await
    }

    /// Applies `view` (read under `replica_refresh_lock`): chunk rows
    /// replace those they overlap (a sealed or merged chunk covers several
    /// write-ahead ones), the log start and the high watermark move up,
    /// producer state and aborted transactions are the store's. Long polls
    /// waiting on the high watermark wake up.
    pub fn follow(&self, view: StoreView) {
        {
            let Ok(mut index) = self.index.write() else {
                return;
            };
            if view.full {
                index.clear();
            }
            for chunk in view.chunks {
                let overlapped: Vec<i64> = index
                    .range(..=chunk.last_offset)
                    .rev()
                    .take_while(|(_, c)| c.last_offset >= chunk.base_offset)
                    .map(|(base, _)| *base)
                    .collect();
                for base in overlapped {
                    index.remove(&base);
                }
                index.insert(chunk);
            }
        }
        if view.full {
            self.load_aborted(&view.aborted);
        } else {
            self.apply_aborted(&view.aborted);
        }
        // Trims the index and aborted list below the start as well.
        self.advance_log_start(view.log_start);
        if let (Ok(mut producers), Ok(mut open)) = (self.producers.lock(), self.open_txns.lock()) {
            let by_id: HashMap<i64, ProducerStateRecord> = view
                .producers
                .into_iter()
                .map(|p| (p.producer_id, p))
                .collect();
            open.clear();
            open.extend(
                by_id
                    .values()
                    .filter_map(|p| p.txn_first_offset.map(|first| (first, p.producer_id))),
            );
            *producers = by_id;
        }
        if view.full {
            self.replica
                .synced_ms
                .store(view.now_ms.max(1), Ordering::Release);
        }
        if view.high_watermark > self.high_watermark() {
            self.high_watermark.send_replace(view.high_watermark);
            self.topic_commits.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Drops the index of a view nobody reads any more (it is read from
    /// the store again when a consumer comes back).
    pub fn forget_replica(&self) {
        if let Ok(mut index) = self.index.write() {
            index.clear();
        }
        if let Ok(mut aborted) = self.aborted.lock() {
            *aborted = super::AbortedList::default();
        }
        if let Ok(mut producers) = self.producers.lock() {
            producers.clear();
        }
        if let Ok(mut open) = self.open_txns.lock() {
            open.clear();
        }
        self.replica.synced_ms.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{TopicId, test_chunk as chunk};
    use crate::storage::partition::topic_commits;

    fn view(full: bool, chunks: Vec<ChunkRecord>, log_start: i64, hw: i64) -> StoreView {
        StoreView {
            full,
            chunks,
            log_start,
            high_watermark: hw,
            producers: Vec::new(),
            aborted: Vec::new(),
            now_ms: 1_000,
        }
    }

    fn keys(log: &PartitionLog) -> Vec<(i64, String)> {
        log.chunks_in(i64::MIN)
            .iter()
            .map(|c| (c.base_offset, c.object_key.to_string()))
            .collect()
    }

    /// The store sealed two write-ahead chunks into one while the view
    /// knew only the first: the sealed row replaces it, the high watermark
    /// moves, and a later full read drops what retention removed.
    #[test]
    fn a_view_follows_commits_seals_and_retention() {
        let topic = TopicId(uuid::Uuid::from_u128(7));
        let log = PartitionLog::new(topic, 0, 0, 0, 0, Vec::new(), topic_commits());
        assert_eq!(log.replica_synced_ms(), 0);
        let rx = log.subscribe();
        log.follow(view(true, vec![chunk(0, 9, "w1")], 0, 10));
        assert_eq!(log.high_watermark(), 10);
        assert!(rx.has_changed().unwrap_or(false), "long polls wake up");
        assert_eq!(log.replica_synced_ms(), 1_000);
        // From the view's high watermark on: the sealed chunk covers 0..19.
        log.follow(view(
            false,
            vec![chunk(0, 19, "s1"), chunk(20, 29, "w3")],
            0,
            30,
        ));
        assert_eq!(keys(&log), [(0, "s1".into()), (20, "w3".into())]);
        assert_eq!(log.high_watermark(), 30);
        // Retention moved the start past the sealed chunk.
        log.follow(view(true, vec![chunk(20, 29, "w3")], 20, 30));
        assert_eq!(keys(&log), [(20, "w3".into())]);
        assert_eq!(log.log_start_offset(), 20);
        log.forget_replica();
        assert_eq!(log.chunk_count(), 0);
        assert_eq!(log.replica_synced_ms(), 0);
    }
}
