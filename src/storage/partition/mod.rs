//! One partition's committed log as the broker holds it in memory: the chunk
//! index (offset range -> byte range of an object), the high watermark and a
//! watch channel that long-polling fetches wait on.
//!
//! It also holds the committed state of the idempotent producers that wrote
//! to the partition (see `producers`); the write buffer keeps what is not
//! committed yet.
//!
//! Invariant: the index holds exactly the chunks committed to the metadata
//! store, contiguous from the log start offset to the high watermark; nothing
//! at or above the high watermark is ever readable.

mod follow;
mod index;
mod read;

pub use follow::StoreView;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use thiserror::Error;
use tokio::sync::watch;

use crate::metadata::{AbortedTxn, ChunkRecord, ProducerStateRecord, TopicId};

/// Whether `header` is a data batch of one of the `aborted` transactions
/// (its producer's, between the transaction's first offset and its marker).
pub fn is_aborted_batch(
    header: &crate::protocol::batch::BatchHeader<'_>,
    aborted: &[AbortedTxn],
) -> bool {
    header.is_transactional()
        && !header.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == header.producer_id()
                && a.first_offset <= header.base_offset()
                && header.base_offset() < a.last_offset
        })
}

/// Aborted transactions kept in memory per partition (`cache.aborted_txns_per_partition`):
/// the newest ones; reads below them ask the store. One value per process.
static ABORTED_WINDOW: AtomicUsize = AtomicUsize::new(DEFAULT_ABORTED_WINDOW);
pub const DEFAULT_ABORTED_WINDOW: usize = 4096;

/// Sets how many aborted transactions each partition keeps in memory.
pub fn set_aborted_window(entries: usize) {
    ABORTED_WINDOW.store(entries.max(1), Ordering::Release);
}

pub fn aborted_window() -> usize {
    ABORTED_WINDOW.load(Ordering::Acquire)
}

/// A partition's aborted transactions in memory, by their markers'
/// offsets: the newest `aborted_window()` of those within the log.
#[derive(Debug)]
struct AbortedList {
    entries: VecDeque<AbortedTxn>,
    /// Markers below this may be in the store only (`i64::MIN`: every
    /// aborted transaction of the log is in memory).
    paged_below: i64,
}

impl Default for AbortedList {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            paged_below: i64::MIN,
        }
    }
}

impl AbortedList {
    fn insert(&mut self, a: AbortedTxn) {
        if a.last_offset < self.paged_below {
            return; // older than the window: the store has it
        }
        let list = &mut self.entries;
        // Markers come in offset order: almost always an append.
        if list
            .back()
            .is_none_or(|last| last.last_offset < a.last_offset)
        {
            list.push_back(a);
        } else {
            let at = list.partition_point(|x| x.last_offset < a.last_offset);
            if list.get(at).map(|x| x.last_offset) != Some(a.last_offset) {
                list.insert(at, a);
            }
        }
        let window = aborted_window();
        while list.len() > window {
            if let Some(oldest) = list.pop_front() {
                self.paged_below = self.paged_below.max(oldest.last_offset + 1);
            }
        }
    }
}

/// Most aborted transactions one read asks the store for (a sanity bound:
/// only those overlapping the records read are asked for).
const ABORTED_READ_LIMIT: usize = 1_000_000;

/// `log.aborted_between(from, to)`, reading the store when the range
/// reaches below the ones in memory; `.1` says whether it did.
pub async fn aborted_in(
    log: &PartitionLog,
    metadata: &dyn crate::metadata::MetadataStore,
    from: i64,
    to: i64,
) -> Result<(Vec<AbortedTxn>, bool), crate::metadata::MetadataError> {
    if let Some(aborted) = log.aborted_between(from, to) {
        return Ok((aborted, false));
    }
    let aborted = metadata
        .aborted_range(log.topic_id, log.partition, from, to, ABORTED_READ_LIMIT)
        .await?;
    Ok((aborted, true))
}

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("offset {offset} is outside the log range {start}..{end}")]
    OutOfRange { offset: i64, start: i64, end: i64 },
    #[error("no chunk holds offset {0}")]
    Missing(i64),
    #[error("cannot read offset {offset}: {source}")]
    Storage { offset: i64, source: anyhow::Error },
}

pub struct PartitionLog {
    pub topic_id: TopicId,
    pub partition: i32,
    index: RwLock<index::ChunkIndex>,
    log_start: AtomicI64,
    /// Compacted topics: offsets below this have been compacted once.
    clean_offset: AtomicI64,
    leader_epoch: AtomicI32,
    /// The partition's leader as this broker last read it from the store
    /// (-1: not set). A broker serves writes and reads only of partitions
    /// it leads; other brokers' partitions are kept for Metadata only.
    leader_id: AtomicI32,
    high_watermark: watch::Sender<i64>,
    /// Shared by every partition of the topic: counts their commits, so a
    /// fetch over many partitions waits on one receiver instead of one per
    /// partition.
    topic_commits: Arc<watch::Sender<u64>>,
    /// Where the last read ended, so a consumer reading on finds its next
    /// batch without walking the chunk's headers from the start.
    cursor: Mutex<Option<ReadCursor>>,
    /// Committed idempotent producer state, by producer id.
    producers: Mutex<HashMap<i64, ProducerStateRecord>>,
    /// Open transactions' `(first offset, producer id)`: the last stable
    /// offset is the first of them (or the high watermark).
    open_txns: Mutex<BTreeSet<(i64, i64)>>,
    /// Aborted transactions within the log (the newest, see `AbortedList`).
    aborted: Mutex<AbortedList>,
    /// Reads served here while another broker leads the partition.
    replica: follow::ReplicaView,
}

#[derive(Debug, Clone)]
struct ReadCursor {
    /// The chunk's object: a chunk sealed meanwhile starts at the same
    /// offset in another object, at other byte positions.
    object_key: Arc<str>,
    chunk_base: i64,
    next_offset: i64,
    /// Byte position, in the chunk's object, of the batch holding
    /// `next_offset`.
    byte_pos: u64,
}

/// The commit signal the partitions of one topic share.
pub fn topic_commits() -> Arc<watch::Sender<u64>> {
    Arc::new(watch::Sender::new(0))
}

impl PartitionLog {
    pub fn new(
        topic_id: TopicId,
        partition: i32,
        leader_epoch: i32,
        log_start: i64,
        high_watermark: i64,
        chunks: Vec<ChunkRecord>,
        topic_commits: Arc<watch::Sender<u64>>,
    ) -> Self {
        let index = index::ChunkIndex::new(chunks);
        Self {
            topic_id,
            partition,
            index: RwLock::new(index),
            log_start: AtomicI64::new(log_start),
            clean_offset: AtomicI64::new(0),
            leader_epoch: AtomicI32::new(leader_epoch),
            leader_id: AtomicI32::new(-1),
            high_watermark: watch::Sender::new(high_watermark),
            topic_commits,
            cursor: Mutex::new(None),
            producers: Mutex::default(),
            open_txns: Mutex::default(),
            aborted: Mutex::default(),
            replica: follow::ReplicaView::default(),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }
    /// The last stable offset: below it every transaction is decided
    /// (read_committed consumers read up to it).
    pub fn last_stable_offset(&self) -> i64 {
        // Open transactions first: a transaction opened by a commit is
        // recorded before the high watermark moves past its first offset.
        let first_open = self
            .open_txns
            .lock()
            .ok()
            .and_then(|open| open.first().map(|(offset, _)| *offset));
        let hw = self.high_watermark();
        first_open.map_or(hw, |first| first.min(hw))
    }
    /// Aborted transactions that may hold records in `from..to` (their
    /// marker is at or after `from`, their first offset before `to`), or
    /// `None` when some of them may be older than the ones in memory: then
    /// `aborted_in` reads them from the store.
    pub fn aborted_between(&self, from: i64, to: i64) -> Option<Vec<AbortedTxn>> {
        let Ok(aborted) = self.aborted.lock() else {
            return Some(Vec::new());
        };
        if from < aborted.paged_below {
            return None;
        }
        let list = &aborted.entries;
        let start = list.partition_point(|a| a.last_offset < from);
        Some(
            list.range(start..)
                .filter(|a| a.first_offset < to)
                .copied()
                .collect(),
        )
    }
    /// Records aborted transactions (committed with their markers, or
    /// loaded at start), before the commit that makes them readable.
    pub fn apply_aborted(&self, aborted: &[AbortedTxn]) {
        if aborted.is_empty() {
            return;
        }
        if let Ok(mut list) = self.aborted.lock() {
            for a in aborted {
                list.insert(*a);
            }
        }
    }
    /// Replaces the aborted transactions in memory with `newest`, the
    /// newest `aborted_window()` ones the store holds (fewer: all of them).
    pub fn load_aborted(&self, newest: &[AbortedTxn]) {
        if let Ok(mut list) = self.aborted.lock() {
            *list = AbortedList::default();
            if newest.len() >= aborted_window()
                && let Some(first) = newest.first()
            {
                list.paged_below = first.last_offset;
            }
            for a in newest {
                list.insert(*a);
            }
        }
    }
    /// Forgets aborted transactions whose markers are below `below` but
    /// those in `keep` (compaction removed the others' records).
    pub fn forget_aborted(&self, below: i64, keep: &[i64]) {
        if let Ok(mut list) = self.aborted.lock() {
            list.entries
                .retain(|a| a.last_offset >= below || keep.contains(&a.last_offset));
        }
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }
    /// The leader as last read from the store (-1 before it is set).
    pub fn leader_id(&self) -> i32 {
        self.leader_id.load(Ordering::Acquire)
    }

    /// Records the partition's leader and epoch (the log's own data is only
    /// valid while this broker leads it).
    pub fn set_leader(&self, leader_id: i32, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
        self.leader_id.store(leader_id, Ordering::Release);
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }
    /// Moves the log start offset up to `offset` (stored first by the
    /// caller, with the chunks below it removed) and forgets the chunks
    /// wholly below it. Readers that looked one up still read its object,
    /// deleted only after the collector's grace period.
    pub fn advance_log_start(&self, offset: i64) {
        // Under the index lock, so that a swap applied concurrently
        // (`replace_chunks`) sees either the old start or the new one and
        // its chunks.
        let Ok(mut index) = self.index.write() else {
            return;
        };
        let start = self
            .log_start
            .fetch_max(offset, Ordering::AcqRel)
            .max(offset);
        let below: Vec<i64> = index
            .range(..start)
            .filter(|(_, c)| c.last_offset < start)
            .map(|(base, _)| *base)
            .collect();
        for base in below {
            index.remove(&base);
        }
        drop(index);
        if let Ok(mut aborted) = self.aborted.lock() {
            while aborted
                .entries
                .front()
                .is_some_and(|a| a.last_offset < start)
            {
                aborted.entries.pop_front();
            }
        }
    }

    /// Compacted topics: the offset below which the log has been compacted.
    pub fn clean_offset(&self) -> i64 {
        self.clean_offset.load(Ordering::Acquire)
    }
    /// Records the clean offset (stored first by the caller).
    pub fn set_clean_offset(&self, offset: i64) {
        self.clean_offset.fetch_max(offset, Ordering::AcqRel);
    }

    /// The commit signal shared by the topic's partitions (for new ones).
    pub fn topic_commits(&self) -> Arc<watch::Sender<u64>> {
        Arc::clone(&self.topic_commits)
    }

    /// A receiver that wakes up whenever the high watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// A receiver that wakes up whenever any partition of this topic
    /// commits.
    pub fn subscribe_topic(&self) -> watch::Receiver<u64> {
        self.topic_commits.subscribe()
    }

    /// Makes a chunk just committed to the metadata store readable.
    pub fn apply_commit(&self, chunk: ChunkRecord) {
        let next = chunk.last_offset + 1;
        debug_assert_eq!(
            chunk.base_offset,
            self.high_watermark(),
            "commits apply in order"
        );
        if let Ok(mut index) = self.index.write() {
            // The sealer may have swapped this chunk already (it seals what
            // the store has committed, which can be a moment ahead of this
            // call): then the sealed chunk already covers its offsets.
            let sealed = index
                .range(..=chunk.base_offset)
                .next_back()
                .is_some_and(|(_, c)| c.last_offset >= chunk.base_offset);
            if !sealed {
                index.insert(chunk);
            }
        }
        self.high_watermark.send_replace(next);
        self.topic_commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Swaps the chunks covering `chunk`'s offsets for it (the sealer's
    /// swap, already committed to the metadata store). Offsets and the high
    /// watermark do not change; readers holding a replaced chunk still read
    /// its object, which is deleted only after a grace period.
    pub fn replace_chunks(&self, chunk: ChunkRecord) {
        if let Ok(mut index) = self.index.write() {
            // Retention or DeleteRecords removed these offsets meanwhile
            // (the store removed the new row with them).
            if chunk.last_offset < self.log_start_offset() {
                return;
            }
            let replaced: Vec<i64> = index
                .range(chunk.base_offset..=chunk.last_offset)
                .map(|(base, _)| *base)
                .collect();
            for base in replaced {
                index.remove(&base);
            }
            index.insert(chunk);
        }
    }

    /// Runs `visit` over the chunks holding offsets from `from` on, in
    /// order, with the bytes of the whole index, under the index's read
    /// lock: nothing is copied, and `visit` stops where it likes (it must
    /// not block). For background work over long-retained partitions,
    /// which would otherwise copy a 100,000-chunk index per step.
    pub fn visit_chunks<R>(
        &self,
        from: i64,
        visit: impl FnOnce(&mut dyn Iterator<Item = &ChunkRecord>, u64) -> R,
    ) -> Option<R> {
        let index = self.index.read().ok()?;
        let first = index
            .range(..=from)
            .next_back()
            .map(|(base, _)| *base)
            .unwrap_or(from);
        let mut chunks = index.range(first..).map(|(_, c)| c);
        Some(visit(&mut chunks, index.bytes()))
    }

    /// The base offset of the chunk `n` chunks before the one starting at
    /// `base` (the first chunk's, if there are fewer).
    pub fn base_before(&self, base: i64, n: usize) -> i64 {
        let Ok(index) = self.index.read() else {
            return base;
        };
        index
            .range(..base)
            .rev()
            .take(n)
            .last()
            .map_or(base, |(b, _)| *b)
    }

    /// The chunks holding offsets from `from` on, in order.
    pub fn chunks_in(&self, from: i64) -> Vec<ChunkRecord> {
        let Ok(index) = self.index.read() else {
            return Vec::new();
        };
        let first = index
            .range(..=from)
            .next_back()
            .map(|(base, _)| *base)
            .unwrap_or(from);
        index.range(first..).map(|(_, c)| c.clone()).collect()
    }

    /// The write-ahead chunks (not sealed yet) stored in objects `keys`,
    /// in order: the sealer's inputs. They are the index's tail, after its
    /// last sealed chunk.
    pub fn write_ahead_chunks_in(
        &self,
        keys: &std::collections::HashSet<&str>,
    ) -> Vec<ChunkRecord> {
        let Ok(index) = self.index.read() else {
            return Vec::new();
        };
        let mut tail: Vec<ChunkRecord> = index
            .values()
            .rev()
            .take_while(|c| c.index_len == 0)
            .filter(|c| keys.contains(c.object_key.as_ref()))
            .cloned()
            .collect();
        tail.reverse();
        tail
    }

    /// How many chunks the in-memory index holds.
    pub fn chunk_count(&self) -> usize {
        self.index.read().map(|index| index.len()).unwrap_or(0)
    }

    /// A producer's committed state here, if it has any.
    pub fn producer(&self, producer_id: i64) -> Option<ProducerStateRecord> {
        self.producers.lock().ok()?.get(&producer_id).cloned()
    }

    /// Records producer states committed with a chunk (or loaded at start).
    pub fn apply_producers(&self, states: &[ProducerStateRecord]) {
        if states.is_empty() {
            return;
        }
        let (Ok(mut producers), Ok(mut open)) = (self.producers.lock(), self.open_txns.lock())
        else {
            return;
        };
        for state in states {
            let previous = producers.insert(state.producer_id, state.clone());
            if let Some(first) = previous.and_then(|p| p.txn_first_offset) {
                open.remove(&(first, state.producer_id));
            }
            if let Some(first) = state.txn_first_offset {
                open.insert((first, state.producer_id));
            }
        }
    }

    /// Every producer with committed state here, by producer id.
    pub fn producers(&self) -> Vec<ProducerStateRecord> {
        let mut all: Vec<_> = self
            .producers
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|p| p.producer_id);
        all
    }

    /// Forgets producers whose last write here is older than `before_ms`.
    pub fn expire_producers(&self, before_ms: i64) -> usize {
        let Ok(mut producers) = self.producers.lock() else {
            return 0;
        };
        let before = producers.len();
        // A producer with an open transaction stays until its marker.
        producers.retain(|_, state| {
            state.last_append_ms >= before_ms || state.txn_first_offset.is_some()
        });
        before - producers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_chunk as chunk;

    /// The sealer seals what the store committed, which can be ahead of
    /// the in-memory commit: a sealed chunk swapped in first is kept when
    /// the write-ahead chunk it covers is applied after it.
    #[test]
    fn a_seal_ahead_of_its_commit_is_kept() {
        let topic = TopicId(uuid::Uuid::from_u128(1));
        let log = PartitionLog::new(topic, 0, 0, 0, 0, Vec::new(), topic_commits());
        log.apply_commit(chunk(0, 9, "w1"));
        log.replace_chunks(chunk(0, 19, "s1"));
        log.apply_commit(chunk(10, 19, "w2"));
        assert_eq!(log.high_watermark(), 20);
        let keys: Vec<_> = log
            .chunks_in(0)
            .iter()
            .map(|c| (c.base_offset, c.object_key.to_string()))
            .collect();
        assert_eq!(keys, [(0, "s1".to_string())]);
        log.apply_commit(chunk(20, 29, "w3"));
        assert_eq!(log.chunk_count(), 2);
    }
}
