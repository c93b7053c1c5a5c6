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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use thiserror::Error;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use super::cache::BlockCache;
use super::intents::Intents;
use super::metrics::FlushMetrics;
use super::object::ObjectStorage;
use super::partition::PartitionLog;
use super::producers::{self, SequenceCheck, SequenceError};
use crate::metadata::{
    ChunkCommit, ChunkOutcome, ChunkRecord, MetadataStore, ObjectCommit, ProducerStateRecord,
    TopicId,
};
use crate::protocol::batch::{BatchesSummary, ProducerBatch, assign_offsets};

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
}

/// When a buffer whose first byte arrived at `first` is due (below
/// `flush_bytes`): `interval` after the previous flush started, so flushes
/// start at most once per interval, and at once if the flusher has been idle
/// that long. A byte never waits more than `interval` for its flush to start
/// unless the previous flush itself takes longer.
fn flush_deadline(first: Instant, last_start: Option<Instant>, interval: Duration) -> Instant {
    match last_start {
        // The buffer began after the previous flush took its own, so this is
        // never later than `first + interval`.
        Some(started) => (started + interval).max(first),
        None => first,
    }
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
        })
    }

    /// Durations of the flushes so far (PUT, commit, both).
    pub fn flush_metrics(&self) -> &FlushMetrics {
        &self.metrics
    }

    /// Appends validated batches to `log`, assigning their offsets. The
    /// returned ticket completes once they are durable.
    pub async fn append(
        &self,
        log: &Arc<PartitionLog>,
        mut records: BytesMut,
        summary: BatchesSummary,
        producer: Option<ProducerBatch>,
    ) -> Result<AppendTicket, AppendError> {
        let size = records.len();
        // A batch larger than the whole budget waits for an empty buffer.
        let want = size.min(self.max_buffered_bytes).min(u32::MAX as usize) as u32;
        let permit = Arc::clone(&self.room)
            .acquire_many_owned(want)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        let (tx, rx) = oneshot::channel();
        let mut state = self
            .state
            .lock()
            .map_err(|_| AppendError::Storage("write buffer mutex poisoned".into()))?;
        let state = &mut *state;
        if state.closed {
            return Err(AppendError::ShuttingDown);
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
                let updated =
                    producers::record(entry.as_ref(), batch, base_offset, now_ms() as i64);
                state
                    .producers
                    .entry(key)
                    .or_default()
                    .insert(batch.producer_id, updated.clone());
                Some(updated)
            }
            _ => None,
        };
        let buffer = &mut state.buffer;
        let slot = match buffer.slot.get(&key) {
            Some(slot) => *slot,
            None => {
                buffer.partitions.push(PartitionBuffer {
                    log: Arc::clone(log),
                    leader_epoch: epoch,
                    base_offset,
                    next_offset,
                    max_timestamp: -1,
                    batches: Vec::new(),
                    producers: HashMap::new(),
                });
                buffer.slot.insert(key, buffer.partitions.len() - 1);
                buffer.partitions.len() - 1
            }
        };
        let part = &mut buffer.partitions[slot];
        part.next_offset = next_offset;
        part.max_timestamp = part.max_timestamp.max(summary.max_timestamp);
        part.batches.push(records.freeze());
        if let Some(updated) = producer_update {
            part.producers.insert(updated.producer_id, updated);
        }
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
        Ok(AppendTicket {
            base_offset,
            done: rx,
        })
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

    /// Drops the offset bookkeeping of a deleted topic.
    pub fn forget_topic(&self, topic_id: TopicId) {
        if let Ok(mut state) = self.state.lock() {
            state.next_offsets.retain(|(id, _), _| *id != topic_id);
            state.producers.retain(|(id, _), _| *id != topic_id);
        }
    }

    /// Takes the buffer if it is due (or `force`), leaving an empty one, with
    /// the generation its offsets belong to; otherwise returns when it will
    /// be due. `last_start`: when the previous flush began.
    fn take_due(
        &self,
        force: bool,
        last_start: Option<Instant>,
    ) -> (Option<(Buffer, u64)>, Option<Instant>) {
        let Ok(mut state) = self.state.lock() else {
            return (None, None);
        };
        let Some(first) = state.buffer.first_append else {
            return (None, None);
        };
        let deadline = flush_deadline(first, last_start, self.flush_interval);
        if force || state.buffer.bytes >= self.flush_bytes || Instant::now() >= deadline {
            let generation = state.generation;
            return (Some((std::mem::take(&mut state.buffer), generation)), None);
        }
        (None, Some(deadline))
    }

    fn generation(&self) -> Option<u64> {
        self.state.lock().ok().map(|state| state.generation)
    }

    /// The flusher: starts flushes as they fall due, up to
    /// `max_inflight_flushes` at once, until `shutdown`; then waits for them
    /// and flushes what is left.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let this = &*self;
        let mut last_start = None;
        let mut inflight = FuturesUnordered::new();
        // Settles when the most recently started flush has committed or failed.
        let mut previous: Option<oneshot::Receiver<()>> = None;
        loop {
            let mut deadline = None;
            if inflight.len() < this.max_inflight {
                let (due, next) = this.take_due(false, last_start);
                if let Some((buffer, generation)) = due {
                    last_start = Some(Instant::now());
                    let (settled, next_waits_on) = oneshot::channel();
                    let waits_on = previous.replace(next_waits_on);
                    inflight.push(this.flush(buffer, generation, waits_on, settled));
                    continue;
                }
                deadline = next;
            }
            let wait_deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = this.kick.notified() => {}
                _ = wait_deadline => {}
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        while inflight.next().await.is_some() {}
        if let (Some((buffer, generation)), _) = this.take_due(true, last_start) {
            let (settled, _) = oneshot::channel();
            this.flush(buffer, generation, None, settled).await;
        }
        this.room.close();
        // An append that got in after the final take (its room acquired just
        // before the close) is answered rather than left waiting.
        let leftover = this.state.lock().ok().map(|mut state| {
            state.closed = true;
            std::mem::take(&mut state.buffer)
        });
        if let Some(leftover) = leftover {
            leftover.fail(&AppendError::ShuttingDown);
        }
    }

    /// One flush: PUT the buffer as an object (concurrently with other
    /// flushes), wait until the previous flush has settled, then commit it
    /// and acknowledge its appends, or fail them.
    async fn flush(
        &self,
        buffer: Buffer,
        generation: u64,
        previous: Option<oneshot::Receiver<()>>,
        settled: oneshot::Sender<()>,
    ) {
        if buffer.partitions.is_empty() {
            // Only retried batches waiting for earlier flushes: a barrier.
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let result = if self.generation() == Some(generation) {
                Ok(())
            } else {
                Err(AppendError::Storage(
                    "an earlier flush of the write buffer failed".into(),
                ))
            };
            for (_, _, waiter) in buffer.waiters {
                let _ = waiter.send(result.clone());
            }
            let _ = settled.send(());
            return;
        }
        // The key's upload intent is recorded before the PUT and the key
        // stays live until the commit is decided (the guard's drop): the
        // collector never deletes an object whose commit may still land.
        let put_started = Instant::now();
        let (object, put, _live) = match self.intents.wal_key().await {
            Ok(live) => {
                let object = self.build_object(&buffer, live.key.clone());
                let put = self
                    .storage
                    .put(&object.key, object.bytes.clone())
                    .await
                    .map_err(|e| e.to_string());
                (Some(object), put, Some(live))
            }
            Err(error) => (
                None,
                Err(format!("cannot record the upload intent: {error}")),
                None,
            ),
        };
        let put_took = put_started.elapsed();
        // Commits apply in order. An error is only acted on once everything
        // before this flush has settled, so a reset of offset assignment
        // never races a commit that is still to land.
        if let Some(previous) = previous {
            let waiting = Instant::now();
            let _ = previous.await;
            self.metrics.order_wait.record(waiting.elapsed());
        }
        if self.generation() != Some(generation) {
            // An earlier flush failed and gave up the offsets this buffer
            // was assigned after it; its object is an orphan for the sweeper.
            buffer.fail(&AppendError::Storage(
                "an earlier flush of the write buffer failed".into(),
            ));
            let _ = settled.send(());
            return;
        }
        let result = match (put, object) {
            (Ok(()), Some(object)) => self.commit(&buffer, object, put_took).await,
            (Err(error), _) => Err(AppendError::Storage(error)),
            (Ok(()), None) => Err(AppendError::Storage("no object was written".into())),
        };
        match result {
            Ok((outcomes, durability_work)) => {
                let mut acked = 0;
                for (slot, appended, waiter) in buffer.waiters {
                    let result = match slot.map(|slot| outcomes.get(slot)) {
                        None | Some(Some(ChunkOutcome::Committed)) => {
                            self.metrics.append.record(appended.elapsed());
                            acked += 1;
                            Ok(())
                        }
                        _ => Err(AppendError::TopicDeleted),
                    };
                    let _ = waiter.send(result);
                }
                self.metrics
                    .append_flush
                    .record_times(durability_work, acked);
            }
            Err(error) => {
                tracing::error!(%error, "flush failed; failing buffered writes");
                buffer.fail(&error);
                // Everything behind the failed flush (uploading or filling)
                // was assigned offsets after it: fail it too and restart from
                // the committed state.
                let behind = match self.state.lock() {
                    Ok(mut state) => {
                        state.generation += 1;
                        state.next_offsets.clear();
                        state.producers.clear();
                        Some(std::mem::take(&mut state.buffer))
                    }
                    Err(_) => None,
                };
                if let Some(behind) = behind {
                    behind.fail(&error);
                }
            }
        }
        let _ = settled.send(());
    }

    /// Lays the buffer out as one object: each partition's batches back to
    /// back, in the order of `buffer.partitions`.
    fn build_object(&self, buffer: &Buffer, key: object_store::path::Path) -> FlushObject {
        let mut bytes = BytesMut::with_capacity(buffer.bytes);
        let mut chunks = Vec::with_capacity(buffer.partitions.len());
        let key_str: Arc<str> = Arc::from(key.as_ref());
        for part in &buffer.partitions {
            let start = bytes.len() as u64;
            for batch in &part.batches {
                bytes.extend_from_slice(batch);
            }
            chunks.push(ChunkCommit {
                topic_id: part.log.topic_id,
                partition: part.log.partition,
                leader_epoch: part.leader_epoch,
                chunk: ChunkRecord {
                    base_offset: part.base_offset,
                    last_offset: part.next_offset - 1,
                    max_timestamp: part.max_timestamp,
                    object_key: Arc::clone(&key_str),
                    object_size: buffer.bytes as u64,
                    byte_start: start,
                    byte_len: bytes.len() as u64 - start,
                    index_len: 0,
                },
                producers: part.producers.values().cloned().collect(),
            });
        }
        FlushObject {
            key,
            key_str,
            bytes: bytes.freeze(),
            chunks,
        }
    }

    /// Records the uploaded object in the metadata store (fenced on each
    /// partition's leader epoch) and makes it readable. Returns each
    /// partition's outcome and the flush's PUT + commit time.
    async fn commit(
        &self,
        buffer: &Buffer,
        object: FlushObject,
        put_took: Duration,
    ) -> Result<(Vec<ChunkOutcome>, Duration), AppendError> {
        let commit_started = Instant::now();
        let outcomes = self
            .metadata
            .commit_object(ObjectCommit {
                object_key: object.key_str.to_string(),
                object_size: object.bytes.len() as u64,
                chunks: object.chunks.clone(),
            })
            .await
            .map_err(|e| match e {
                crate::metadata::MetadataError::Fenced(msg) => AppendError::Fenced(msg),
                other => AppendError::Storage(other.to_string()),
            })?;
        let commit_took = commit_started.elapsed();
        self.metrics
            .record(put_took, commit_took, object.bytes.len() as u64);
        // Durable now: make it readable, tail first from the cache.
        self.cache.insert_object(&object.key_str, &object.bytes);
        // `chunks` and `outcomes` are in the order of `buffer.partitions`.
        for ((part, commit), outcome) in buffer.partitions.iter().zip(object.chunks).zip(&outcomes)
        {
            if *outcome == ChunkOutcome::Committed {
                part.log.apply_producers(&commit.producers);
                part.log.apply_commit(commit.chunk);
            }
        }
        self.forget_committed_producers(buffer);
        Ok((outcomes, put_took + commit_took))
    }
}

impl WalWriter {
    /// Drops pending producer state that a commit just made the committed
    /// state (unless a later append changed it again).
    fn forget_committed_producers(&self, buffer: &Buffer) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for part in buffer.partitions.iter().filter(|p| !p.producers.is_empty()) {
            let key = (part.log.topic_id, part.log.partition);
            let Some(pending) = state.producers.get_mut(&key) else {
                continue;
            };
            for (producer_id, committed) in &part.producers {
                if pending.get(producer_id) == Some(committed) {
                    pending.remove(producer_id);
                }
            }
            if pending.is_empty() {
                state.producers.remove(&key);
            }
        }
    }
}

/// A buffer laid out as one object, ready to PUT.
struct FlushObject {
    key: object_store::path::Path,
    key_str: Arc<str>,
    bytes: Bytes,
    chunks: Vec<ChunkCommit>,
}

#[cfg(test)]
mod tests {
    use super::{Duration, Instant, flush_deadline};

    #[test]
    fn flushes_are_spaced_by_the_interval_from_the_previous_start() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let interval = ms(10);
        // First flush ever: at once.
        assert_eq!(flush_deadline(t0, None, interval), t0);
        // Idle for longer than the interval: at once.
        assert_eq!(flush_deadline(t0 + ms(50), Some(t0), interval), t0 + ms(50));
        // Shortly after a flush started: waits out the rest of the interval.
        assert_eq!(flush_deadline(t0 + ms(3), Some(t0), interval), t0 + ms(10));
        // Never more than one interval after the buffer's first byte.
        let first = t0 + ms(1);
        assert!(flush_deadline(first, Some(t0), interval) <= first + interval);
    }
}
