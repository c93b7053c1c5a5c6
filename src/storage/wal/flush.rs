//! The flusher: takes the write buffer when it is due, uploads it as one
//! object (several at once), commits flushes in order, then acknowledges or
//! fails their appends (the rules are in the parent module's header).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{AppendError, Buffer, WalWriter};
use crate::metadata::{AbortedTxn, ChunkCommit, ChunkOutcome, ChunkRecord, ObjectCommit};

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

impl WalWriter {
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
                self.forget_fenced(&buffer, &outcomes);
                self.catch_up_fenced(&buffer, &outcomes).await;
                let mut acked = 0;
                for (slot, appended, waiter) in buffer.waiters {
                    let result = match slot.map(|slot| outcomes.get(slot)) {
                        None | Some(Some(ChunkOutcome::Committed)) => {
                            self.metrics.append.record(appended.elapsed());
                            acked += 1;
                            Ok(())
                        }
                        Some(Some(ChunkOutcome::Fenced)) => Err(AppendError::Fenced(
                            "the partition's leader epoch or high watermark moved".into(),
                        )),
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
                aborted: part.aborted.clone(),
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
        self.backlog.committed(object.bytes.len() as u64);
        // `chunks` and `outcomes` are in the order of `buffer.partitions`.
        for ((part, commit), outcome) in buffer.partitions.iter().zip(object.chunks).zip(&outcomes)
        {
            if *outcome == ChunkOutcome::Committed {
                // Aborted ranges, then open transactions, then the high
                // watermark: a read_committed fetch that sees the new last
                // stable offset finds every aborted range below it.
                part.log.apply_aborted(&commit.aborted);
                part.log.apply_producers(&commit.producers);
                part.log.apply_commit(commit.chunk);
            }
        }
        self.forget_committed_producers(buffer);
        Ok((outcomes, put_took + commit_took))
    }
}

impl WalWriter {
    /// A fenced partition's offset assignment and pending producer state
    /// restart from its committed state (writes already behind it in the
    /// pipeline are refused by the store the same way).
    fn forget_fenced(&self, buffer: &Buffer, outcomes: &[ChunkOutcome]) {
        if !outcomes.contains(&ChunkOutcome::Fenced) {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for (part, outcome) in buffer.partitions.iter().zip(outcomes) {
            if *outcome == ChunkOutcome::Fenced {
                let key = (part.log.topic_id, part.log.partition);
                state.next_offsets.remove(&key);
                state.producers.remove(&key);
            }
        }
    }

    /// A partition fenced at its own leader epoch is behind the store: a
    /// commit of this broker landed without it learning so (the metadata
    /// store's connection dropped after COMMIT, say). It takes the store's
    /// state (chunks, producer states, aborted transactions past its high
    /// watermark), so that offsets go on from there and retried batches are
    /// recognised as duplicates. (A partition whose leadership moved is
    /// left to the cluster loop.)
    async fn catch_up_fenced(&self, buffer: &Buffer, outcomes: &[ChunkOutcome]) {
        for (part, outcome) in buffer.partitions.iter().zip(outcomes) {
            if *outcome != ChunkOutcome::Fenced {
                continue;
            }
            let log = &part.log;
            let stored = match self.metadata.partitions(log.topic_id).await {
                Ok(all) => all.into_iter().find(|p| p.partition == log.partition),
                Err(error) => {
                    tracing::warn!(%error, "cannot read a fenced partition's state");
                    continue;
                }
            };
            let Some(stored) = stored else { continue };
            let behind = log.high_watermark();
            if stored.leader_epoch != log.leader_epoch() || stored.high_watermark <= behind {
                continue;
            }
            let state = async {
                let chunks = self.metadata.chunks(log.topic_id, log.partition).await?;
                let (producers, aborted) = self
                    .metadata
                    .partition_state(
                        log.topic_id,
                        log.partition,
                        crate::storage::partition::aborted_window(),
                    )
                    .await?;
                Ok::<_, crate::metadata::MetadataError>((chunks, producers, aborted))
            };
            let (chunks, producers, aborted) = match state.await {
                Ok(state) => state,
                Err(error) => {
                    tracing::warn!(%error, "cannot read a fenced partition's state");
                    continue;
                }
            };
            if log.high_watermark() != behind {
                continue; // caught up meanwhile
            }
            let missed: Vec<AbortedTxn> = aborted
                .into_iter()
                .filter(|a| a.last_offset >= behind)
                .collect();
            log.apply_aborted(&missed);
            log.apply_producers(&producers);
            for chunk in chunks.into_iter().filter(|c| c.base_offset >= behind) {
                if chunk.base_offset != log.high_watermark() {
                    break;
                }
                log.apply_commit(chunk);
            }
            tracing::warn!(
                topic = %log.topic_id,
                partition = log.partition,
                from = behind,
                to = log.high_watermark(),
                "caught up with commits the metadata store has and this broker missed"
            );
        }
    }

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
