//! Retention and log compaction, run by the sealer's task between its
//! cycles (so they never race its merges over the same chunks; a swap that
//! finds its chunks changed by anyone else is skipped and redone later).
//!
//! **Retention** (`cleanup.policy` with `delete`): every
//! `retention_check_interval`, each partition's log start moves past its
//! oldest whole chunks whose newest record is older than `retention.ms`,
//! then past the oldest chunks as long as what is left is at least
//! `retention.bytes` (Kafka's rules, with chunks for segments). The store
//! removes the chunk rows in the same transaction; objects left without
//! chunks retire and the collector deletes them after its grace period.
//!
//! **Compaction** (`cleanup.policy` with `compact`): every `backoff`, a
//! partition whose dirty bytes (sealed chunks at or above its clean offset)
//! are at least `min.cleanable.dirty.ratio` of its cleanable bytes is
//! compacted:
//! 1. the cleanable range is the leading sealed chunks (write-ahead chunks
//!    are never compacted) whose newest record is older than
//!    `min.compaction.lag.ms`;
//! 2. a map of key hash -> latest offset is built over the dirty part, at
//!    most `dedupe_buffer_bytes` of it; if it fills, the pass ends at the
//!    last offset it holds and the next pass goes on from there;
//! 3. the cleanable chunks up to there are rewritten, about
//!    `segment_target_bytes` per new segment: a record is dropped if a later
//!    record has its key; a tombstone (null value) that has been through an
//!    earlier pass is dropped once its batch is older than
//!    `delete.retention.ms`. Kept records keep their offsets (batches keep
//!    their base and last offsets), and each new chunk covers exactly the
//!    offsets of the chunks it replaces, gaps included;
//! 4. each new segment is swapped in with one metadata transaction, as the
//!    sealer's; then the clean offset is stored.
//!
//! Transactions, as Kafka's cleaner treats them: nothing at or above the
//! last stable offset is cleaned (an open transaction may still abort);
//! records of aborted transactions never count as a key's latest value and
//! are removed; control batches (markers) are kept.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;

use super::partition::PartitionLog;
use super::paths;
use super::sealer::{Run, SealReport, Sealer};
use super::segment::ObjectBuilder;
use crate::metadata::{ChunkRecord, ObjectKind, TopicRecord};
use crate::protocol::batch::iter_batches;
use crate::protocol::filter::{Filtered, filter_batch};
use crate::protocol::records::for_each_record;

/// What retention and compaction do to one topic (its effective configs).
#[derive(Debug, Clone, PartialEq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
    /// -1: forever.
    pub retention_ms: i64,
    /// Per partition; -1: no limit.
    pub retention_bytes: i64,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    /// `segment.bytes`: sealed chunks are merged up to the smaller of this
    /// and `seal.segment_target_bytes`.
    pub segment_bytes: i64,
}

/// A topic's policy, from its config overrides and the broker's defaults.
pub type PolicyFn = Arc<dyn Fn(&TopicRecord) -> CleanupPolicy + Send + Sync>;

#[derive(Clone)]
pub struct CleanerSettings {
    pub policy: PolicyFn,
    pub retention_check_interval: Duration,
    pub backoff: Duration,
    pub dedupe_buffer_bytes: usize,
}

/// What one round of retention or compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanReport {
    /// Partitions whose log start retention moved.
    pub partitions_trimmed: usize,
    pub partitions_compacted: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Where retention moves a partition's log start: past each leading chunk
/// whose newest record is older than `retention.ms`, then past the oldest
/// chunks as long as the rest still holds `retention.bytes`. `chunks` are
/// the partition's chunks from its log start, in order, `total_bytes` what
/// they hold in all; they are walked only as far as retention goes (plus
/// one), not through a long-retained partition's whole index.
pub fn retention_start(
    chunks: &mut dyn Iterator<Item = &ChunkRecord>,
    total_bytes: u64,
    log_start: i64,
    policy: &CleanupPolicy,
    now_ms: i64,
) -> i64 {
    let mut start = log_start;
    let mut chunks = chunks.peekable();
    if policy.retention_ms >= 0 {
        let horizon = now_ms.saturating_sub(policy.retention_ms);
        let mut size = total_bytes;
        while let Some(chunk) = chunks.next_if(|c| c.max_timestamp < horizon) {
            start = start.max(chunk.last_offset + 1);
            size = size.saturating_sub(chunk.byte_len);
        }
        return by_size(&mut chunks, size, start, policy);
    }
    by_size(&mut chunks, total_bytes, start, policy)
}

/// The size part of `retention_start`: `size` is what `chunks` hold.
fn by_size(
    chunks: &mut std::iter::Peekable<&mut dyn Iterator<Item = &ChunkRecord>>,
    mut size: u64,
    mut start: i64,
    policy: &CleanupPolicy,
) -> i64 {
    let Ok(limit) = u64::try_from(policy.retention_bytes) else {
        return start;
    };
    while let Some(chunk) = chunks.next_if(|c| size.saturating_sub(c.byte_len) >= limit) {
        size -= chunk.byte_len;
        start = start.max(chunk.last_offset + 1);
    }
    start
}

/// Key hash -> latest offset, bounded: 128-bit hashes (two independently
/// keyed SipHashes), so a collision that would drop a live record is
/// practically impossible.
pub struct KeyMap {
    hashers: (RandomState, RandomState),
    latest: HashMap<u128, i64>,
    capacity: usize,
}

/// Memory per map entry, hash table overhead included.
const KEY_MAP_ENTRY_BYTES: usize = 48;

impl KeyMap {
    pub fn with_memory(bytes: usize) -> Self {
        Self {
            hashers: (RandomState::new(), RandomState::new()),
            latest: HashMap::new(),
            capacity: (bytes / KEY_MAP_ENTRY_BYTES).max(1),
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        (u128::from(self.hashers.0.hash_one(key)) << 64) | u128::from(self.hashers.1.hash_one(key))
    }

    /// Records `offset` as `key`'s latest; false (nothing recorded) if the
    /// key is new and the map is full.
    pub fn insert(&mut self, key: &[u8], offset: i64) -> bool {
        let hash = self.hash(key);
        if let Some(latest) = self.latest.get_mut(&hash) {
            *latest = (*latest).max(offset);
            return true;
        }
        if self.latest.len() >= self.capacity {
            return false;
        }
        self.latest.insert(hash, offset);
        true
    }

    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(&self.hash(key)).copied()
    }
}

impl Sealer {
    /// A sealed chunk's data, with one GET that does not fill the cache.
    pub(super) async fn read_chunk(&self, chunk: &ChunkRecord) -> anyhow::Result<Bytes> {
        self.cache
            .read_uncached(
                &chunk.object_key,
                chunk.byte_start..chunk.byte_start + chunk.byte_len,
            )
            .await
            .with_context(|| format!("cannot read {}", chunk.object_key))
    }

    /// Moves the log start of every partition of topics with the `delete`
    /// policy past what retention no longer keeps.
    pub async fn enforce_retention(&self, now_ms: i64) -> anyhow::Result<CleanReport> {
        let mut report = CleanReport::default();
        for topic in self.catalog.all() {
            let policy = (self.cleaner.policy)(&topic.record);
            if !policy.delete || (policy.retention_ms < 0 && policy.retention_bytes < 0) {
                continue;
            }
            for log in topic
                .partitions
                .iter()
                .filter(|l| l.leader_id() == self.node_id)
            {
                let start = log.log_start_offset();
                let Some(target) = log.visit_chunks(start, |chunks, total_bytes| {
                    retention_start(chunks, total_bytes, start, &policy, now_ms)
                }) else {
                    continue;
                };
                if target <= start {
                    continue;
                }
                let stored = self
                    .metadata
                    .advance_log_start(log.topic_id, log.partition, target)
                    .await?;
                log.advance_log_start(stored);
                report.partitions_trimmed += 1;
                tracing::info!(
                    topic = %topic.record.name,
                    partition = log.partition,
                    log_start_offset = stored,
                    "retention moved the log start"
                );
            }
        }
        Ok(report)
    }

    /// One compaction pass over each partition of compacted topics that
    /// has enough dirty data (see the module header).
    pub async fn compact_once(&self, now_ms: i64) -> anyhow::Result<CleanReport> {
        let mut report = CleanReport::default();
        for topic in self.catalog.all() {
            let policy = (self.cleaner.policy)(&topic.record);
            if !policy.compact {
                continue;
            }
            for log in topic
                .partitions
                .iter()
                .filter(|l| l.leader_id() == self.node_id)
            {
                self.compact_partition(log, &policy, now_ms, &mut report)
                    .await
                    .with_context(|| {
                        format!("compacting {}-{}", topic.record.name, log.partition)
                    })?;
            }
        }
        Ok(report)
    }

    async fn compact_partition(
        &self,
        log: &PartitionLog,
        policy: &CleanupPolicy,
        now_ms: i64,
        report: &mut CleanReport,
    ) -> anyhow::Result<()> {
        let lag_horizon = if policy.min_compaction_lag_ms > 0 {
            now_ms.saturating_sub(policy.min_compaction_lag_ms)
        } else {
            i64::MAX
        };
        let stable = log.last_stable_offset();
        // Only the cleanable prefix is copied out of the index.
        let cleanable: Vec<ChunkRecord> = log
            .visit_chunks(log.log_start_offset(), |chunks, _| {
                chunks
                    .take_while(|c| {
                        c.index_len > 0 && c.max_timestamp <= lag_horizon && c.last_offset < stable
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // Aborted transactions' batches in the cleanable range.
        let (aborted, _) = super::partition::aborted_in(
            log,
            self.metadata.as_ref(),
            cleanable.first().map_or(0, |c| c.base_offset),
            cleanable.last().map_or(0, |c| c.last_offset + 1),
        )
        .await?;
        let is_aborted = |header: &crate::protocol::batch::BatchHeader<'_>| {
            super::partition::is_aborted_batch(header, &aborted)
        };
        let clean = log.clean_offset();
        let total: u64 = cleanable.iter().map(|c| c.byte_len).sum();
        let dirty: u64 = cleanable
            .iter()
            .filter(|c| c.last_offset >= clean)
            .map(|c| c.byte_len)
            .sum();
        if dirty == 0 || (dirty as f64) < policy.min_cleanable_dirty_ratio * total as f64 {
            return Ok(());
        }

        // 1. Each key's latest offset in the dirty part.
        let mut map = KeyMap::with_memory(self.cleaner.dedupe_buffer_bytes);
        let mut end = cleanable.last().map_or(clean - 1, |c| c.last_offset);
        'build: for chunk in cleanable.iter().filter(|c| c.last_offset >= clean) {
            let data = self.read_chunk(chunk).await?;
            for (at, header) in iter_batches(&data) {
                if header.is_control() || header.last_offset() < clean || is_aborted(&header) {
                    continue;
                }
                let base = header.base_offset();
                let mut full_at = None;
                for_each_record(&data[at..at + header.total_len() as usize], |r| {
                    let offset = base + i64::from(r.offset_delta);
                    match r.key {
                        Some(key) if offset >= clean && !map.insert(key, offset) => {
                            full_at = Some(offset);
                            false
                        }
                        _ => true,
                    }
                })?;
                if let Some(offset) = full_at {
                    end = offset - 1;
                    break 'build;
                }
            }
        }
        if end < clean {
            return Ok(()); // not even one key fits: nothing to gain
        }

        // 2. Rewrite the chunks up to `end`, a new segment per ~target bytes.
        let tombstone_horizon = now_ms.saturating_sub(policy.delete_retention_ms.max(0));
        let target = self.config.segment_target_bytes.max(1);
        let range: Vec<ChunkRecord> = cleanable
            .into_iter()
            .filter(|c| c.base_offset <= end)
            .collect();
        let count = range.len();
        let mut group: Vec<ChunkRecord> = Vec::new();
        let mut parts: Vec<Bytes> = Vec::new();
        let mut out_bytes = 0u64;
        // The group's last batch, and the marker of its aborted
        // transaction if it is one's.
        let mut last_batch: Option<(Bytes, Option<i64>)> = None;
        // Markers of aborted transactions whose records stay (a chunk's
        // last batch kept so that it is not empty): their entries stay.
        let mut kept_aborted: Vec<i64> = Vec::new();
        let mut removed = 0u64;
        let mut swap_report = SealReport::default();
        for (i, chunk) in range.into_iter().enumerate() {
            let data = self.read_chunk(&chunk).await?;
            for (at, header) in iter_batches(&data) {
                let raw = data.slice(at..at + header.total_len() as usize);
                let marker = if is_aborted(&header) {
                    aborted
                        .iter()
                        .find(|a| {
                            a.producer_id == header.producer_id()
                                && a.first_offset <= header.base_offset()
                                && header.base_offset() < a.last_offset
                        })
                        .map(|a| a.last_offset)
                } else {
                    None
                };
                last_batch = Some((raw.clone(), marker));
                if header.is_control() || header.base_offset() > end {
                    out_bytes += raw.len() as u64;
                    parts.push(raw);
                    continue;
                }
                if is_aborted(&header) {
                    removed += u64::try_from(header.record_count()).unwrap_or(0);
                    continue;
                }
                let batch_time = header.max_timestamp();
                let filtered = filter_batch(&raw, |offset, r| {
                    let Some(key) = r.key else {
                        return true;
                    };
                    let superseded = offset <= end && map.latest(key).is_some_and(|l| l > offset);
                    let expired_tombstone =
                        r.value.is_none() && offset < clean && batch_time < tombstone_horizon;
                    let keep = !superseded && !expired_tombstone;
                    if !keep {
                        removed += 1;
                    }
                    keep
                })?;
                match filtered {
                    Filtered::Unchanged => {
                        out_bytes += raw.len() as u64;
                        parts.push(raw);
                    }
                    Filtered::Rewritten(batch) => {
                        out_bytes += batch.len() as u64;
                        parts.push(batch);
                    }
                    Filtered::Empty => {}
                }
            }
            report.bytes_before += chunk.byte_len;
            group.push(chunk);
            if out_bytes < target && i + 1 < count {
                continue;
            }
            // A chunk never ends up empty: keep its last batch as it was.
            if parts.is_empty()
                && let Some((batch, marker)) = last_batch.take()
            {
                out_bytes += batch.len() as u64;
                parts.push(batch);
                kept_aborted.extend(marker);
            }
            let (base, last) = (
                group.first().map_or(0, |c| c.base_offset),
                group.last().map_or(0, |c| c.last_offset),
            );
            let mut builder = ObjectBuilder::new(self.config.index_interval_bytes);
            let section = builder.add_section_covering(
                log.topic_id,
                log.partition,
                std::mem::take(&mut parts),
                base,
                last,
            );
            let run = Run {
                topic_id: log.topic_id,
                partition: log.partition,
                bytes: section.data_len,
                chunks: std::mem::take(&mut group),
            };
            let key = paths::new_segment(log.topic_id, log.partition, base);
            let applied = self
                .write_and_swap(
                    vec![(key, ObjectKind::Segment, builder, vec![(run, section)])],
                    true,
                    &mut swap_report,
                )
                .await?;
            if applied == 0 {
                return Ok(()); // the chunks changed meanwhile: next pass
            }
            report.bytes_after += out_bytes;
            out_bytes = 0;
        }
        self.metadata
            .set_clean_offset(log.topic_id, log.partition, end + 1)
            .await?;
        log.set_clean_offset(end + 1);
        // Aborted transactions wholly below the clean offset have no
        // records left (this pass removed them), so reads no longer need
        // them: the list of a compacted partition does not grow forever.
        self.metadata
            .forget_aborted(log.topic_id, log.partition, end + 1, kept_aborted.clone())
            .await?;
        log.forget_aborted(end + 1, &kept_aborted);
        report.partitions_compacted += 1;
        report.records_removed += removed;
        tracing::debug!(
            partition = log.partition,
            clean_offset = end + 1,
            removed,
            "compacted"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(base: i64, last: i64, max_timestamp: i64, byte_len: u64) -> ChunkRecord {
        ChunkRecord {
            base_offset: base,
            last_offset: last,
            max_timestamp,
            object_key: Arc::from("k"),
            object_size: 1_000,
            byte_start: 0,
            byte_len,
            index_len: 20,
        }
    }

    fn policy(retention_ms: i64, retention_bytes: i64) -> CleanupPolicy {
        CleanupPolicy {
            delete: true,
            compact: false,
            retention_ms,
            retention_bytes,
            delete_retention_ms: 0,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
            segment_bytes: 1 << 30,
        }
    }

    #[test]
    fn retention_removes_whole_old_chunks_then_keeps_at_least_the_byte_limit() {
        let chunks = [
            chunk(0, 9, 1_000, 100),
            chunk(10, 19, 2_000, 100),
            chunk(20, 29, 5_000, 100), // newer than the horizon: stops time retention
            chunk(30, 39, 1_500, 100),
        ];
        let total: u64 = chunks.iter().map(|c| c.byte_len).sum();
        // Time: the first two are older than now - retention.
        assert_eq!(
            retention_start(&mut chunks.iter(), total, 0, &policy(3_000, -1), 6_000),
            20
        );
        assert_eq!(
            retention_start(&mut chunks.iter(), total, 3, &policy(3_000, -1), 6_000),
            20
        );
        // Forever and no limit: nothing.
        assert_eq!(
            retention_start(&mut chunks.iter(), total, 3, &policy(-1, -1), 6_000),
            3
        );
        // Size: keep at least 250 bytes -> 300 kept, the first one goes.
        assert_eq!(
            retention_start(&mut chunks.iter(), total, 0, &policy(-1, 250), 6_000),
            10
        );
        assert_eq!(
            retention_start(&mut chunks.iter(), total, 0, &policy(-1, 200), 6_000),
            20
        );
        assert_eq!(
            retention_start(&mut chunks.iter(), total, 0, &policy(-1, 0), 6_000),
            40
        );
        // Both: time takes two, size (100) one more.
        assert_eq!(
            retention_start(&mut chunks.iter(), total, 0, &policy(3_000, 100), 6_000),
            30
        );
    }

    #[test]
    fn the_key_map_keeps_the_latest_offset_and_refuses_new_keys_when_full() {
        let mut map = KeyMap::with_memory(2 * KEY_MAP_ENTRY_BYTES);
        assert!(map.insert(b"a", 5));
        assert!(map.insert(b"a", 3), "an older offset of a known key");
        assert!(map.insert(b"b", 7));
        assert!(!map.insert(b"c", 8), "full");
        assert!(map.insert(b"b", 9), "known keys still update");
        assert_eq!(map.latest(b"a"), Some(5));
        assert_eq!(map.latest(b"b"), Some(9));
        assert_eq!(map.latest(b"c"), None);
    }
}
