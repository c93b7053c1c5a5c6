//! The sealer: rewrites write-ahead (L0) objects by partition, so that what
//! the broker keeps per partition is bounded by its data, not by time.
//!
//! Every `seal_interval` (or as soon as `seal_cycle_bytes` of committed
//! write-ahead data are pending), one cycle:
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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
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
}

pub struct Sealer {
    pub storage: ObjectStorage,
    pub metadata: Arc<dyn MetadataStore>,
    pub cache: Arc<BlockCache>,
    pub catalog: Arc<Catalog>,
    pub intents: Arc<Intents>,
    pub config: SealerConfig,
    /// Retention and compaction, run between sealing cycles.
    pub cleaner: CleanerSettings,
    /// Woken by the writer when enough unsealed data is pending.
    pub kick: Arc<Notify>,
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

/// A chunk's size class for merging: powers of 4 from 1 KiB.
fn tier(bytes: u64) -> u32 {
    (bytes.max(1024) / 1024).ilog2() / 2
}

/// Small sealed chunks a partition may keep before any 4 adjacent ones are
/// merged whatever their size classes.
const MAX_SMALL_CHUNKS: usize = 12;

/// The next merge of a partition's chunks: the oldest 4 adjacent sealed
/// chunks of one tier, each below `target` (write-ahead chunks, the
/// unsealed tail, are never merged). Size classes alone can leave small
/// chunks of mixed classes that never merge (20, 20, 20, 80, 80, 80 KiB,
/// repeated); once a partition has more than `MAX_SMALL_CHUNKS` small
/// chunks, its oldest 4 adjacent small ones are merged, so its rows stay
/// bounded by its retained bytes over `target` plus a constant.
fn mergeable(chunks: &[ChunkRecord], target: u64) -> Option<Vec<ChunkRecord>> {
    const FAN_IN: usize = 4;
    let small = |c: &ChunkRecord| c.index_len > 0 && c.byte_len < target;
    let contiguous = |w: &[ChunkRecord]| {
        w.windows(2)
            .all(|p| p[0].last_offset + 1 == p[1].base_offset)
    };
    let by_tier = chunks.windows(FAN_IN).find(|w| {
        w.iter()
            .all(|c| small(c) && tier(c.byte_len) == tier(w[0].byte_len))
            && contiguous(w)
    });
    if let Some(w) = by_tier {
        return Some(w.to_vec());
    }
    if chunks.iter().filter(|c| small(c)).count() <= MAX_SMALL_CHUNKS {
        return None;
    }
    chunks
        .windows(FAN_IN)
        .find(|w| w.iter().all(small) && contiguous(w))
        .map(<[ChunkRecord]>::to_vec)
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
    /// One cycle (see the module header); a report of what it did.
    pub async fn seal_once(&self) -> anyhow::Result<SealReport> {
        let mut report = SealReport::default();
        let inputs = self
            .metadata
            .unsealed_objects(self.config.seal_cycle_bytes, 100_000)
            .await?;
        if inputs.is_empty() {
            return Ok(report);
        }
        report.inputs = inputs.len();
        report.input_bytes = inputs.iter().map(|(_, size)| size).sum();
        let chunks = self
            .metadata
            .object_chunks(inputs.iter().map(|(key, _)| key.clone()).collect())
            .await?;
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
        self.write_and_swap(outputs, &mut report).await?;
        Ok(report)
    }

    /// Records the outputs' intents, PUTs them, swaps each one's chunks in
    /// one metadata transaction and applies the swaps in memory; returns how
    /// many new chunks took effect.
    pub(super) async fn write_and_swap(
        &self,
        outputs: Vec<Output>,
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
            let flags = self.metadata.replace_chunks(vec![object.clone()]).await?;
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

    /// Merges small sealed chunks of each partition, size-tiered: a chunk's
    /// tier is its size class (powers of 4 from 1 KiB); 4 adjacent sealed
    /// chunks of one tier, each below `segment_target_bytes`, become one
    /// segment (a tier up). As in a binary counter, a partition keeps at
    /// most 3 small chunks per tier, so its rows are bounded by its retained
    /// bytes over the target plus a few per tier, and a byte is rewritten
    /// at most once per tier it climbs (a busy partition's chunks start high).
    pub async fn merge_once(&self) -> anyhow::Result<SealReport> {
        let mut report = SealReport::default();
        let target = self.config.segment_target_bytes.max(1);
        for topic in self.catalog.all() {
            for log in topic.partitions.iter().filter(|log| log.chunk_count() >= 4) {
                // Until nothing is left to merge (each merge removes 3 rows).
                while let Some(group) = mergeable(&log.chunks_in(log.log_start_offset()), target) {
                    let mut parts = Vec::with_capacity(group.len());
                    for c in &group {
                        parts.push(self.read_chunk(c).await?);
                    }
                    let mut builder = ObjectBuilder::new(self.config.index_interval_bytes);
                    let section = builder.add_section(log.topic_id, log.partition, parts);
                    let run = Run {
                        topic_id: log.topic_id,
                        partition: log.partition,
                        bytes: section.data_len,
                        chunks: group,
                    };
                    let key = paths::new_segment(log.topic_id, log.partition, section.base_offset);
                    let applied = self
                        .write_and_swap(
                            vec![(key, ObjectKind::Segment, builder, vec![(run, section)])],
                            &mut report,
                        )
                        .await?;
                    report.merges += applied;
                    if applied == 0 {
                        break; // the chunks changed meanwhile: next round
                    }
                }
            }
        }
        Ok(report)
    }

    /// Seals every `seal_interval`, or when kicked, until `shutdown`; a
    /// cycle that took a full `seal_cycle_bytes` is followed by another.
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
            let kicked = tokio::select! {
                _ = tokio::time::sleep_until(wake) => false,
                _ = self.kick.notified() => true,
                _ = shutdown.cancelled() => return,
            };
            let now = Instant::now();
            if kicked || now >= next_seal {
                self.seal_and_merge(&shutdown).await;
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

    async fn seal_and_merge(&self, shutdown: &CancellationToken) {
        loop {
            match self.seal_once().await {
                Ok(report) => {
                    if report.inputs > 0 {
                        tracing::debug!(?report, "sealed write-ahead objects");
                    }
                    if report.input_bytes < self.config.seal_cycle_bytes / 2
                        || shutdown.is_cancelled()
                    {
                        break;
                    }
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
    fn merges_take_four_adjacent_sealed_chunks_of_one_size_class() {
        let sized = |base: i64, len: u64, index_len: u64| ChunkRecord {
            byte_len: len,
            index_len,
            ..chunk(base, base, "s")
        };
        // Tiers: 64 KiB and 100 KiB are class 3, 300 KiB class 4.
        let chunks = vec![
            sized(0, 300 << 10, 40),
            sized(1, 64 << 10, 20),
            sized(2, 100 << 10, 20),
            sized(3, 64 << 10, 20),
            sized(4, 64 << 10, 20),
            sized(5, 64 << 10, 0), // unsealed: never merged
        ];
        let group = mergeable(&chunks, 1 << 20).expect("a group");
        assert_eq!(
            group.iter().map(|c| c.base_offset).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // At or above the target: final.
        assert!(mergeable(&chunks, 64 << 10).is_none());
        assert!(
            mergeable(&chunks[..4], 1 << 20).is_none(),
            "three of a class wait"
        );
    }

    #[test]
    fn small_chunks_of_mixed_classes_cannot_pile_up() {
        // 20, 20, 20, 80, 80, 80 KiB repeated: no 4 of a class are adjacent.
        let mut chunks: Vec<ChunkRecord> = (0..12)
            .map(|i| ChunkRecord {
                byte_len: if i % 6 < 3 { 20 << 10 } else { 80 << 10 },
                index_len: 20,
                ..chunk(i, i, "s")
            })
            .collect();
        assert!(mergeable(&chunks, 1 << 20).is_none(), "12 may stay");
        chunks.push(ChunkRecord {
            byte_len: 20 << 10,
            index_len: 20,
            ..chunk(12, 12, "s")
        });
        let group = mergeable(&chunks, 1 << 20).expect("13 small chunks merge");
        assert_eq!(
            group.iter().map(|c| c.base_offset).collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "the oldest adjacent ones"
        );
    }

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
