//! The write buffer and its group commit: the durability point of Strata.
//!
//! Produce handlers `append` validated batches of any partition into one
//! shared buffer; offsets are assigned there, by rewriting `baseOffset` in
//! place. A flusher task turns the buffer into ONE object once it holds
//! `flush_bytes` or is due (below), PUTs it, records every partition's chunk
//! in ONE metadata transaction fenced on the leader epoch, and only then
//! completes the appends (the acks). The next buffer fills meanwhile.
//!
//! Below `flush_bytes`, flushes start at most once per `flush_interval`
//! (that bounds the PUT rate whatever the partition count), counted from the
//! start of the previous flush: a write that finds no flush started for
//! longer is flushed at once instead of waiting out a fresh interval.
//!
//! Up to `max_inflight_flushes` objects upload at once, so a write does not
//! wait for the upload before it to finish; each flush's metadata commit
//! waits until the flush started before it has settled.
//!
//! Ordering and failure rules:
//! - commits apply in flush order, so offsets become visible in order per
//!   partition;
//! - if a flush fails (PUT or commit), once everything before it has
//!   settled its appends fail, and so do those of every flush started after
//!   it and of the buffer filling behind it (they hold offsets after the
//!   failed ones; a generation number marks them); offset assignment
//!   restarts from the committed high watermarks. An unacknowledged write
//!   never leaves a gap or a half-visible batch. Uploaded objects that were
//!   not committed are orphans the garbage collector removes.
//! - at most `max_buffered_bytes` are buffered or uploading; appends wait
//!   for room beyond that.
//!
//! Idempotent producers: a batch carrying a producer id is checked against
//! the producer's state (`producers`) under the same lock that assigns its
//! offsets. State changed by buffered or uploading batches is kept here,
//! ahead of the committed state in `PartitionLog`, travels with the chunk
//! into its metadata commit, and is given up with the offsets when a flush
//! fails. A retried batch already committed is answered at once with its
//! first offsets; one still in flight waits for a flush that settles after
//! it (an empty flush is only such a barrier: no PUT, no commit).

mod flush;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::cache::BlockCache;
use super::intents::Intents;
use super::metrics::FlushMetrics;
use super::object::ObjectStorage;
use super::partition::PartitionLog;
use super::producers::{self, SequenceCheck, SequenceError};
use super::sealer::SealBacklog;
use crate::metadata::{AbortedTxn, MetadataStore, ProducerStateRecord, TopicId};
use crate::protocol::batch::{BatchesSummary, ProducerBatch, assign_offsets};
use crate::storage::txn::OpenTxn;

#[derive(Debug, Clone, Error)]
pub enum AppendError {
    #[error("the topic was deleted before the write was committed")]
    TopicDeleted,
    #[error("the write could not be made durable: {0}")]
    Storage(String),
    #[error("this broker is no longer the partition leader: {0}")]
    Fenced(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Sequence(SequenceError),
    #[error("{0}")]
    Transaction(String),
}

/// Completes when the appended batches are durable (or failed).
pub struct AppendTicket {
    pub base_offset: i64,
    done: oneshot::Receiver<Result<(), AppendError>>,
}

impl AppendTicket {
    pub async fn committed(self) -> Result<i64, AppendError> {
        match self.done.await {
            Ok(Ok(())) => Ok(self.base_offset),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AppendError::ShuttingDown),
        }
    }
}

type PartitionKey = (TopicId, i32);

struct PartitionBuffer {
    log: Arc<PartitionLog>,
    leader_epoch: i32,
    base_offset: i64,
    next_offset: i64,
    max_timestamp: i64,
    batches: Vec<Bytes>,
    /// Latest state of each idempotent producer that wrote here.
    producers: HashMap<i64, ProducerStateRecord>,
    /// Transactions this buffer's abort markers end.
    aborted: Vec<AbortedTxn>,
}

/// One append awaiting its flush: `(partition slot, when appended, ack)`.
/// No slot: a retried batch written by an earlier flush, acknowledged once
/// this flush settles (commits apply in order).
type Waiter = (
    Option<usize>,
    Instant,
    oneshot::Sender<Result<(), AppendError>>,
);

#[derive(Default)]
struct Buffer {
    partitions: Vec<PartitionBuffer>,
    slot: HashMap<PartitionKey, usize>,
    bytes: usize,
    first_append: Option<Instant>,
    waiters: Vec<Waiter>,
    permits: Vec<OwnedSemaphorePermit>,
}

impl Buffer {
    fn fail(self, error: &AppendError) {
        for (_, _, waiter) in self.waiters {
            let _ = waiter.send(Err(error.clone()));
        }
    }
}

#[derive(Default)]
struct State {
    /// Next offset to assign per partition, ahead of the committed high
    /// watermark by what is buffered or uploading. Absent = high watermark.
    next_offsets: HashMap<PartitionKey, i64>,
    buffer: Buffer,
    /// Idempotent producer state changed by buffered or uploading batches,
    /// ahead of the committed state in each `PartitionLog`.
    producers: HashMap<PartitionKey, HashMap<i64, ProducerStateRecord>>,
    /// Bumped when a failed flush gives up the offsets assigned after it; a
    /// buffer taken under an older generation must not be committed.
    generation: u64,
    /// Set after the final flush at shutdown: appends fail from then on.
    closed: bool,
}

pub struct WalWriter {
    state: Mutex<State>,
    /// Object keys with their upload intents (the collector leaves keys
    /// whose commit is undecided).
    intents: Arc<Intents>,
    kick: Notify,
    room: Arc<Semaphore>,
    max_buffered_bytes: usize,
    flush_bytes: usize,
    flush_interval: Duration,
    max_inflight: usize,
    storage: ObjectStorage,
    metadata: Arc<dyn MetadataStore>,
    cache: Arc<BlockCache>,
    metrics: FlushMetrics,
    /// Told what each flush commits, so the sealer knows when to run.
    backlog: Arc<SealBacklog>,
}

/// Batches with their offsets assigned, on their way into the buffer.
struct Pushed {
    /// The partition's leader epoch the offsets were assigned under.
    epoch: i32,
    base_offset: i64,
    next_offset: i64,
    max_timestamp: i64,
    batch: Bytes,
    producer: Option<ProducerStateRecord>,
    aborted: Option<AbortedTxn>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How the writer batches and flushes (from the `wal` config).
#[derive(Debug, Clone, Copy)]
pub struct FlushSettings {
    pub flush_bytes: usize,
    pub flush_interval: Duration,
    pub max_inflight: usize,
    pub max_buffered_bytes: usize,
}

impl WalWriter {
    pub fn new(
        settings: FlushSettings,
        storage: ObjectStorage,
        metadata: Arc<dyn MetadataStore>,
        cache: Arc<BlockCache>,
        intents: Arc<Intents>,
        backlog: Arc<SealBacklog>,
    ) -> Arc<Self> {
        let FlushSettings {
            flush_bytes,
            flush_interval,
            max_inflight,
            max_buffered_bytes,
        } = settings;
        let max_buffered_bytes = max_buffered_bytes
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize);
        Arc::new(Self {
            state: Mutex::new(State::default()),
            intents,
            kick: Notify::new(),
            room: Arc::new(Semaphore::new(max_buffered_bytes)),
            max_buffered_bytes,
            flush_bytes,
            flush_interval,
            max_inflight: max_inflight.max(1),
            storage,
            metadata,
            cache,
            metrics: FlushMetrics::default(),
            backlog,
        })
    }

    /// Durations of the flushes so far (PUT, commit, both).
    pub fn flush_metrics(&self) -> &FlushMetrics {
        &self.metrics
    }

    /// Appends validated batches to `log`, assigning their offsets. The
    /// returned ticket completes once they are durable. Transactional
    /// batches come with their ongoing transaction (`txn`), checked again
    /// under the buffer's lock: one that has begun to end refuses them.
    pub async fn append(
        &self,
        log: &Arc<PartitionLog>,
        mut records: BytesMut,
        summary: BatchesSummary,
        producer: Option<ProducerBatch>,
        txn: Option<&OpenTxn>,
    ) -> Result<AppendTicket, AppendError> {
        let size = records.len();
        // A batch larger than the whole budget waits for an empty buffer.
        let want = size.min(self.max_buffered_bytes).min(u32::MAX as usize) as u32;
        let permit = Arc::clone(&self.room)
            .acquire_many_owned(want)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| AppendError::Storage("write buffer mutex poisoned".into()))?;
        let state = &mut *state;
        if state.closed {
            return Err(AppendError::ShuttingDown);
        }
        if let Some(txn) = txn
            && !txn.is_open()
        {
            return Err(AppendError::Transaction(format!(
                "the transaction of producer {} is ending; the batch is not part of it",
                txn.producer_id
            )));
        }
        let key = (log.topic_id, log.partition);
        let mut producer_state = None;
        if let Some(batch) = &producer {
            let pending = state
                .producers
                .get(&key)
                .and_then(|p| p.get(&batch.producer_id))
                .cloned();
            let entry = pending.or_else(|| log.producer(batch.producer_id));
            match producers::check(entry.as_ref(), batch).map_err(AppendError::Sequence)? {
                SequenceCheck::Append => producer_state = Some(entry),
                SequenceCheck::Duplicate(original) => {
                    drop(permit);
                    let (tx, rx) = oneshot::channel();
                    return Ok(self.duplicate(
                        state,
                        log,
                        original.base_offset,
                        original.last_offset,
                        tx,
                        rx,
                    ));
                }
            }
        }
        let next = state
            .next_offsets
            .entry(key)
            .or_insert_with(|| log.high_watermark());
        let base_offset = *next;
        let epoch = log.leader_epoch();
        *next = assign_offsets(&mut records, base_offset, epoch);
        let next_offset = *next;
        let producer_update = match (&producer, producer_state) {
            (Some(batch), Some(entry)) => {
                let updated = producers::record(
                    entry.as_ref(),
                    batch,
                    base_offset,
                    now_ms() as i64,
                    txn.is_some(),
                );
                state
                    .producers
                    .entry(key)
                    .or_default()
                    .insert(batch.producer_id, updated.clone());
                Some(updated)
            }
            _ => None,
        };
        let ticket = self.push(
            state,
            log,
            Pushed {
                epoch,
                base_offset,
                next_offset,
                max_timestamp: summary.max_timestamp,
                batch: records.freeze(),
                producer: producer_update,
                aborted: None,
            },
            size,
            permit,
        );
        Ok(ticket)
    }

    /// Writes a transaction marker for `producer_id` at `epoch` into `log`
    /// (the coordinator ends a transaction): it closes the producer's
    /// transaction there and fences its older epochs. The ticket completes
    /// once the marker is durable.
    pub async fn append_marker(
        &self,
        log: &Arc<PartitionLog>,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<AppendTicket, AppendError> {
        let now = now_ms() as i64;
        let mut records =
            crate::protocol::control::marker_batch(producer_id, epoch, commit, 0, now);
        let size = records.len();
        let permit = Arc::clone(&self.room)
            .acquire_many_owned(size as u32)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| AppendError::Storage("write buffer mutex poisoned".into()))?;
        let state = &mut *state;
        if state.closed {
            return Err(AppendError::ShuttingDown);
        }
        let key = (log.topic_id, log.partition);
        let entry = state
            .producers
            .get(&key)
            .and_then(|p| p.get(&producer_id))
            .cloned()
            .or_else(|| log.producer(producer_id));
        if let Some(entry) = &entry
            && entry.epoch > epoch
        {
            return Err(AppendError::Sequence(SequenceError::InvalidEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            }));
        }
        let next = state
            .next_offsets
            .entry(key)
            .or_insert_with(|| log.high_watermark());
        let base_offset = *next;
        let leader_epoch = log.leader_epoch();
        *next = assign_offsets(&mut records, base_offset, leader_epoch);
        let next_offset = *next;
        let (updated, aborted) =
            producers::record_marker(entry.as_ref(), producer_id, epoch, commit, base_offset, now);
        state
            .producers
            .entry(key)
            .or_default()
            .insert(producer_id, updated.clone());
        Ok(self.push(
            state,
            log,
            Pushed {
                epoch: leader_epoch,
                base_offset,
                next_offset,
                max_timestamp: now,
                batch: records.freeze(),
                producer: Some(updated),
                aborted,
            },
            size,
            permit,
        ))
    }

    /// Puts batches whose offsets were just assigned into the buffer.
    fn push(
        &self,
        state: &mut State,
        log: &Arc<PartitionLog>,
        pushed: Pushed,
        size: usize,
        permit: OwnedSemaphorePermit,
    ) -> AppendTicket {
        let (tx, rx) = oneshot::channel();
        let key = (log.topic_id, log.partition);
        let buffer = &mut state.buffer;
        let slot = match buffer.slot.get(&key) {
            Some(slot) => *slot,
            None => {
                buffer.partitions.push(PartitionBuffer {
                    log: Arc::clone(log),
                    leader_epoch: pushed.epoch,
                    base_offset: pushed.base_offset,
                    next_offset: pushed.next_offset,
                    max_timestamp: -1,
                    batches: Vec::new(),
                    producers: HashMap::new(),
                    aborted: Vec::new(),
                });
                buffer.slot.insert(key, buffer.partitions.len() - 1);
                buffer.partitions.len() - 1
            }
        };
        let part = &mut buffer.partitions[slot];
        part.next_offset = pushed.next_offset;
        part.max_timestamp = part.max_timestamp.max(pushed.max_timestamp);
        part.batches.push(pushed.batch);
        if let Some(updated) = pushed.producer {
            part.producers.insert(updated.producer_id, updated);
        }
        part.aborted.extend(pushed.aborted);
        buffer.bytes += size;
        let now = Instant::now();
        buffer.waiters.push((Some(slot), now, tx));
        buffer.permits.push(permit);
        let first = buffer.first_append.is_none();
        if first {
            buffer.first_append = Some(now);
        }
        if first || buffer.bytes >= self.flush_bytes {
            self.kick.notify_one();
        }
        AppendTicket {
            base_offset: pushed.base_offset,
            done: rx,
        }
    }

    /// The answer to a retried batch first written at
    /// `base_offset..=last_offset`: at once if that is committed, else once
    /// a flush behind the one holding it settles.
    fn duplicate(
        &self,
        state: &mut State,
        log: &PartitionLog,
        base_offset: i64,
        last_offset: i64,
        tx: oneshot::Sender<Result<(), AppendError>>,
        done: oneshot::Receiver<Result<(), AppendError>>,
    ) -> AppendTicket {
        if last_offset < log.high_watermark() {
            let _ = tx.send(Ok(()));
        } else {
            let buffer = &mut state.buffer;
            let now = Instant::now();
            buffer.waiters.push((None, now, tx));
            if buffer.first_append.is_none() {
                buffer.first_append = Some(now);
                self.kick.notify_one();
            }
        }
        AppendTicket { base_offset, done }
    }

    /// Drops a partition's offset bookkeeping when its leadership moves:
    /// if it comes back, assignment restarts from the committed state.
    pub fn forget_partition(&self, topic_id: TopicId, partition: i32) {
        if let Ok(mut state) = self.state.lock() {
            state.next_offsets.remove(&(topic_id, partition));
            state.producers.remove(&(topic_id, partition));
        }
    }

    /// Drops the offset bookkeeping of a deleted topic.
    pub fn forget_topic(&self, topic_id: TopicId) {
        if let Ok(mut state) = self.state.lock() {
            state.next_offsets.retain(|(id, _), _| *id != topic_id);
            state.producers.retain(|(id, _), _| *id != topic_id);
        }
    }
}
