//! The sealer: rewrites write-ahead (L0) objects by partition, so that what
//! the broker keeps per partition is bounded by its data, not by time.
//!
//! As soon as `seal_cycle_bytes` of committed write-ahead data are pending
//! (the writer counts them in `SealBacklog`), one full cycle, and every
//! `seal_interval` one cycle of whatever is pending. Under load cycles are
//! full, so a partition's segment holds its share of `seal_cycle_bytes`
//! (and a cycle never leaves a small remainder to be sealed, then merged);
//! the interval bounds how long data stays in the write-ahead tier. A cycle:
//! 1. takes the oldest committed, unsealed write-ahead objects, together at
//!    most `seal_cycle_bytes` (which bounds the memory a cycle holds), and
//!    the chunks they hold;
//! 2. reads each object once (from the cache's memory when it is still
//!    there, else one GET);
//! 3. groups the chunks by partition into contiguous runs: a run of at
//!    least `own_segment_bytes` becomes its own segment object; the smaller
//!    ones are packed into one shared object, ordered by partition. Each run
//!    is one section with a sparse offset and time index (`segment`);
//! 4. records the outputs' upload intents, PUTs them, then swaps, in one
//!    metadata transaction per output object (not one for the whole cycle,
//!    which would hold the store's writer, and so the write-ahead commits,
//!    for as long as thousands of rows take), the replaced chunk rows for
//!    one row per run
//!    (offsets never change; a run whose partition was deleted or whose
//!    rows changed meanwhile is skipped); the replaced objects are retired
//!    and deleted by the collector after its delete grace, so a read that
//!    looked one up just before the swap still finds its bytes;
//! 5. applies the swap to the partitions' in-memory indexes.
//!
//! A crash anywhere leaves either the old rows or the new ones: outputs
//! whose swap did not happen are orphans the collector removes.

mod merge;
pub use merge::mergeable;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::cache::BlockCache;
use super::catalog::Catalog;
use super::cleaner::CleanerSettings;
use super::intents::Intents;
use super::object::ObjectStorage;
use super::paths;
use super::segment::{ObjectBuilder, Section};
use crate::metadata::{
    ChunkRecord, MetadataStore, ObjectChunk, ObjectKind, SealedChunk, SealedObject, TopicId,
};

#[derive(Debug, Clone)]
pub struct SealerConfig {
    pub seal_interval: Duration,
    pub seal_cycle_bytes: u64,
    pub own_segment_bytes: u64,
    pub index_interval_bytes: usize,
    /// Sealed chunks of a partition smaller than this are merged (see
    /// `merge_once`); a merge never writes more than this.
    pub segment_target_bytes: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SealReport {
    pub inputs: usize,
    pub input_bytes: u64,
    pub segments: usize,
    pub shared: usize,
    pub chunks_replaced: usize,
    pub chunks_written: usize,
    pub merges: usize,
    /// More write-ahead data was pending than this cycle took.
    pub more: bool,
}

pub struct Sealer {
    pub storage: ObjectStorage,
    pub metadata: Arc<dyn MetadataStore>,
    pub cache: Arc<BlockCache>,
    pub catalog: Arc<Catalog>,
    pub intents: Arc<Intents>,
    /// This broker: it seals and cleans only the partitions it leads.
    pub node_id: i32,
    pub config: SealerConfig,
    /// Retention and compaction, run between sealing cycles.
    pub cleaner: CleanerSettings,
    /// Counted by the writer; wakes the sealer when a full cycle is pending.
    pub backlog: Arc<SealBacklog>,
}

/// Committed write-ahead bytes not sealed yet, as a hint: the writer adds
/// what each flush commits and wakes the sealer once a full cycle is
/// pending; the sealer takes off what it seals, and sets it to what it
/// found when the hint was wrong (after a restart it starts at zero, and
/// the interval's cycle finds what is there).
pub struct SealBacklog {
    pending: AtomicU64,
    cycle_bytes: u64,
    ready: Notify,
}

impl SealBacklog {
    pub fn new(cycle_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            pending: AtomicU64::new(0),
            cycle_bytes: cycle_bytes.max(1),
            ready: Notify::new(),
        })
    }

    /// A flush committed `bytes` of write-ahead data.
    pub fn committed(&self, bytes: u64) {
        let before = self.pending.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) >= self.cycle_bytes {
            self.ready.notify_one();
        }
    }

    fn sealed(&self, bytes: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(bytes))
            });
    }

    fn found(&self, bytes: u64) {
        self.pending.store(bytes, Ordering::Relaxed);
    }
}

/// One partition's contiguous run of chunks, rewritten into one section.
pub(super) struct Run {
    pub topic_id: TopicId,
    pub partition: i32,
    pub chunks: Vec<ChunkRecord>,
    pub bytes: u64,
}

/// An object to write: key, kind, content, and the run of each section.
pub(super) type Output = (
    object_store::path::Path,
    ObjectKind,
    ObjectBuilder,
    Vec<(Run, Section)>,
);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Splits chunks (any order) into contiguous runs per partition.
fn runs(chunks: Vec<ObjectChunk>) -> Vec<Run> {
    let mut by_partition: BTreeMap<(TopicId, i32), Vec<ChunkRecord>> = BTreeMap::new();
    for c in chunks {
        by_partition
            .entry((c.topic_id, c.partition))
            .or_default()
            .push(c.chunk);
    }
    let mut out = Vec::new();
    for ((topic_id, partition), mut chunks) in by_partition {
        chunks.sort_by_key(|c| c.base_offset);
        let mut run: Option<Run> = None;
        for chunk in chunks {
            match &mut run {
                Some(r)
                    if r.chunks
                        .last()
                        .is_some_and(|l| l.last_offset + 1 == chunk.base_offset) =>
                {
                    r.bytes += chunk.byte_len;
                    r.chunks.push(chunk);
                }
                _ => {
                    if let Some(done) = run.take() {
                        out.push(done);
                    }
                    run = Some(Run {
                        topic_id,
                        partition,
                        bytes: chunk.byte_len,
                        chunks: vec![chunk],
                    });
                }
            }
        }
        out.extend(run);
    }
    out
}

/// Groups a cycle's chunks into runs and lays out the output objects:
/// one segment per run of at least `own_segment_bytes`, one shared object
/// for the rest.
fn build_outputs(
    chunks: Vec<ObjectChunk>,
    data: &HashMap<String, Bytes>,
    own_segment_bytes: u64,
    index_interval: usize,
) -> anyhow::Result<Vec<Output>> {
    let slice = |c: &ChunkRecord| -> anyhow::Result<Bytes> {
        let object = data
            .get(c.object_key.as_ref())
            .with_context(|| format!("{} was not read", c.object_key))?;
        let (start, end) = (c.byte_start as usize, (c.byte_start + c.byte_len) as usize);
        anyhow::ensure!(end <= object.len(), "chunk outside {}", c.object_key);
        Ok(object.slice(start..end))
    };

    // Outputs: one segment per large run, one shared object for the rest.
    let (own, shared): (Vec<Run>, Vec<Run>) = runs(chunks)
        .into_iter()
        .partition(|run| run.bytes >= own_segment_bytes);
    let mut groups: Vec<(ObjectKind, Vec<Run>)> = own
        .into_iter()
        .map(|run| (ObjectKind::Segment, vec![run]))
        .collect();
    if !shared.is_empty() {
        groups.push((ObjectKind::Shared, shared));
    }
    let mut outputs: Vec<Output> = Vec::with_capacity(groups.len());
    for (kind, runs) in groups {
        let mut builder = ObjectBuilder::new(index_interval);
        let mut sections = Vec::with_capacity(runs.len());
        for run in runs {
            let parts = run
                .chunks
                .iter()
                .map(&slice)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let section = builder.add_section(run.topic_id, run.partition, parts);
            sections.push((run, section));
        }
        let key = match (kind, sections.first()) {
            (ObjectKind::Segment, Some((run, section))) => {
                paths::new_segment(run.topic_id, run.partition, section.base_offset)
            }
            _ => paths::new_shared(now_ms()),
        };
        outputs.push((key, kind, builder, sections));
    }
    Ok(outputs)
}

impl Sealer {
    /// One cycle (see the module header) of whatever is pending, or, if
    /// `full_only`, only if a full `seal_cycle_bytes` is; a report of what
    /// it did.
    pub async fn seal_once(&self, full_only: bool) -> anyhow::Result<SealReport> {
        let mut report = SealReport::default();
        let unsealed = self
            .metadata
            .unsealed_objects(self.node_id, self.config.seal_cycle_bytes, 100_000)
            .await?;
        let inputs = unsealed.objects;
        if inputs.is_empty() || (full_only && !unsealed.more) {
            self.backlog
                .found(inputs.iter().map(|(_, size)| size).sum());
            return Ok(report);
        }
        report.more = unsealed.more;
        report.inputs = inputs.len();
        report.input_bytes = inputs.iter().map(|(_, size)| size).sum();
        // The inputs' chunks, from the partitions' in-memory indexes (which
        // hold exactly the committed chunks; one whose commit is not applied
        // in memory yet keeps its object unretired, and the next cycle
        // takes it).
        let chunks: Vec<ObjectChunk> = {
            let keys: std::collections::HashSet<&str> =
                inputs.iter().map(|(key, _)| key.as_str()).collect();
            self.catalog
                .all()
                .iter()
                .flat_map(|topic| topic.partitions.iter())
                .filter(|log| log.leader_id() == self.node_id)
                .flat_map(|log| {
                    log.write_ahead_chunks_in(&keys)
                        .into_iter()
                        .map(|chunk| ObjectChunk {
                            topic_id: log.topic_id,
                            partition: log.partition,
                            chunk,
                        })
                })
                .collect()
        };
        let began = std::time::Instant::now();
        let mut data: HashMap<String, Bytes> = HashMap::with_capacity(inputs.len());
        for (key, size) in &inputs {
            let bytes = self
                .cache
                .read_whole(key, *size)
                .await
                .with_context(|| format!("sealer cannot read {key}"))?;
            data.insert(key.clone(), bytes);
            // Memory hits never yield by themselves.
            tokio::task::yield_now().await;
        }
        // Grouping and indexing walk every batch header of the cycle: off
        // the async workers, which serve the produce path.
        let own_segment_bytes = self.config.own_segment_bytes;
        let index_interval = self.config.index_interval_bytes;
        let outputs = tokio::task::spawn_blocking(move || {
            build_outputs(chunks, &data, own_segment_bytes, index_interval)
        })
        .await
        .context("sealer build task failed")??;
        tracing::debug!(
            millis = began.elapsed().as_millis() as u64,
            "sealing cycle read and built"
        );
        self.write_and_swap(outputs, false, &mut report).await?;
        // The inputs left without chunks (all of them, unless a run was
        // skipped), a thousand keys per transaction. An input a crash left
        // unretired here is taken by the next cycle again, which finds no
        // chunks in it and retires it.
        for keys in inputs.chunks(1_000) {
            let began = std::time::Instant::now();
            self.metadata
                .retire_unreferenced(keys.iter().map(|(key, _)| key.clone()).collect())
                .await?;
            tokio::time::sleep(began.elapsed().min(Duration::from_millis(100))).await;
        }
        self.backlog.sealed(report.input_bytes);
        Ok(report)
    }

    /// Records the outputs' intents, PUTs them, swaps each one's chunks in
    /// one metadata transaction and applies the swaps in memory; returns how
    /// many new chunks took effect.
    /// Replaced objects are retired in the swaps if `retire_replaced`.
    /// The partition's leader epoch if this broker leads it, else -1 (no
    /// swap of it can apply).
    pub(super) fn led_epoch(&self, topic_id: TopicId, partition: i32) -> i32 {
        self.catalog
            .by_id(topic_id)
            .and_then(|t| t.partition(partition).cloned())
            .filter(|log| log.leader_id() == self.node_id)
            .map_or(-1, |log| log.leader_epoch())
    }

    pub(super) async fn write_and_swap(
        &self,
        outputs: Vec<Output>,
        retire_replaced: bool,
        report: &mut SealReport,
    ) -> anyhow::Result<usize> {
        let mut swapped = 0;
        let live = self
            .intents
            .reserve(outputs.iter().map(|(key, ..)| key.clone()).collect())
            .await?;
        let mut sealed = Vec::with_capacity(outputs.len());
        for (key, kind, builder, sections) in outputs {
            let (parts, size) = builder.finish();
            self.storage.put_parts(&key, parts).await?;
            let key_str: Arc<str> = Arc::from(key.as_ref());
            let chunks = sections
                .into_iter()
                .map(|(run, section)| SealedChunk {
                    topic_id: run.topic_id,
                    partition: run.partition,
                    leader_epoch: self.led_epoch(run.topic_id, run.partition),
                    chunk: ChunkRecord {
                        base_offset: section.base_offset,
                        last_offset: section.last_offset,
                        max_timestamp: run
                            .chunks
                            .iter()
                            .map(|c| c.max_timestamp)
                            .max()
                            .unwrap_or(section.max_timestamp),
                        object_key: Arc::clone(&key_str),
                        object_size: size,
                        byte_start: section.data_start,
                        byte_len: section.data_len,
                        index_len: section.index_len,
                    },
                    replaces: run
                        .chunks
                        .iter()
                        .map(|c| (Arc::clone(&c.object_key), c.base_offset))
                        .collect(),
                })
                .collect();
            match kind {
                ObjectKind::Segment => report.segments += 1,
                _ => report.shared += 1,
            }
            sealed.push(SealedObject {
                key: key.to_string(),
                size,
                kind,
                chunks,
            });
        }
        // One transaction per output object (each replaces its own chunks):
        // a cycle's swap replaces thousands of rows, and the write-ahead
        // commits share the store's one writer with it.
        let mut applied = Vec::with_capacity(sealed.len());
        for object in &sealed {
            let began = std::time::Instant::now();
            let flags = self
                .metadata
                .replace_chunks(vec![object.clone()], retire_replaced)
                .await?;
            let took = began.elapsed();
            tracing::debug!(
                object = %object.key,
                replaced = object.chunks.iter().map(|c| c.replaces.len()).sum::<usize>(),
                millis = took.as_millis() as u64,
                "swap committed"
            );
            applied.extend(flags);
            // Leave the store's writer to the write-ahead commits for as
            // long as the swap held it: back-to-back swaps would starve
            // them (and every produce waiting on them).
            if sealed.len() > 1 {
                tokio::time::sleep(took.min(Duration::from_millis(100))).await;
            }
        }
        drop(live);
        for (object, flags) in sealed.into_iter().zip(applied) {
            for (sealed, applied) in object.chunks.into_iter().zip(flags) {
                if !applied {
                    continue;
                }
                report.chunks_replaced += sealed.replaces.len();
                report.chunks_written += 1;
                swapped += 1;
                if let Some(log) = self
                    .catalog
                    .by_id(sealed.topic_id)
                    .and_then(|t| t.partition(sealed.partition).cloned())
                {
                    log.replace_chunks(sealed.chunk);
                }
            }
        }
        Ok(swapped)
    }

    /// Seals every `seal_interval`, and whenever a full cycle is pending,
    /// until `shutdown`.
    /// Between cycles, compacts every `cleaner.backoff` and enforces
    /// retention every `cleaner.retention_check_interval`.
    pub async fn run(self, shutdown: CancellationToken) {
        use tokio::time::Instant;
        let start = Instant::now();
        let mut next_seal = start + self.config.seal_interval;
        let mut next_compaction = start + self.cleaner.backoff;
        let mut next_retention = start + self.cleaner.retention_check_interval;
        loop {
            let wake = next_seal.min(next_compaction).min(next_retention);
            let full = tokio::select! {
                _ = tokio::time::sleep_until(wake) => false,
                _ = self.backlog.ready.notified() => true,
                _ = shutdown.cancelled() => return,
            };
            let now = Instant::now();
            if full || now >= next_seal {
                self.seal_and_merge(now < next_seal, &shutdown).await;
                next_seal = Instant::now() + self.config.seal_interval;
            }
            if now >= next_retention {
                match self.enforce_retention(now_ms() as i64).await {
                    Ok(report) if report.partitions_trimmed > 0 => {
                        tracing::debug!(?report, "retention applied");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "retention failed; will retry")
                    }
                }
                next_retention = Instant::now() + self.cleaner.retention_check_interval;
            }
            if now >= next_compaction {
                match self.compact_once(now_ms() as i64).await {
                    Ok(report) if report.partitions_compacted > 0 => {
                        tracing::debug!(?report, "compacted");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        "compaction failed; will retry"
                    ),
                }
                next_compaction = Instant::now() + self.cleaner.backoff;
            }
        }
    }

    /// Seals (one cycle of whatever is pending unless `full_only`, then
    /// full cycles while there are), then merges.
    async fn seal_and_merge(&self, mut full_only: bool, shutdown: &CancellationToken) {
        loop {
            match self.seal_once(full_only).await {
                Ok(report) => {
                    if report.inputs > 0 {
                        tracing::debug!(?report, "sealed write-ahead objects");
                    }
                    if !report.more || shutdown.is_cancelled() {
                        break;
                    }
                    full_only = true;
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "sealing failed; will retry");
                    break;
                }
            }
        }
        match self.merge_once().await {
            Ok(report) if report.merges > 0 => {
                tracing::debug!(?report, "merged sealed chunks");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "merging failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_chunk as chunk;

    #[test]
    fn runs_are_contiguous_per_partition() {
        let t = TopicId(uuid::Uuid::from_u128(1));
        let c = |p, base, last, key| ObjectChunk {
            topic_id: t,
            partition: p,
            chunk: chunk(base, last, key),
        };
        let out = runs(vec![
            c(0, 5, 9, "b"),
            c(0, 0, 4, "a"),
            c(1, 0, 0, "a"),
            c(0, 12, 13, "c"), // a gap: offsets 10..11 are elsewhere
        ]);
        let shape: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.partition,
                    r.chunks.iter().map(|c| c.base_offset).collect::<Vec<_>>(),
                    r.bytes,
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![(0, vec![0, 5], 20), (0, vec![12], 10), (1, vec![0], 10)]
        );
    }
}
