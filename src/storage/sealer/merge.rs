//! Merging: small sealed chunks of a partition rewritten, size-tiered,
//! into larger segments (bounded rows per partition, bounded rewrites).

use super::{Run, SealReport, Sealer};
use crate::metadata::{ChunkRecord, ObjectKind};
use crate::storage::paths;
use crate::storage::segment::ObjectBuilder;

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
pub fn mergeable(
    chunks: &mut dyn Iterator<Item = &ChunkRecord>,
    target: u64,
) -> Option<Vec<ChunkRecord>> {
    const FAN_IN: usize = 4;
    let small = |c: &ChunkRecord| c.index_len > 0 && c.byte_len < target;
    // One pass, copying at most a window's chunks: the run of adjacent
    // small chunks of one tier ending here, and of any tier.
    let mut same_tier: Vec<&ChunkRecord> = Vec::with_capacity(FAN_IN);
    let mut any_tier: Vec<&ChunkRecord> = Vec::with_capacity(FAN_IN);
    let mut fallback: Option<Vec<ChunkRecord>> = None;
    let mut small_count = 0;
    for chunk in chunks {
        if !small(chunk) {
            same_tier.clear();
            any_tier.clear();
            continue;
        }
        small_count += 1;
        let follows = |run: &[&ChunkRecord]| {
            run.last()
                .is_some_and(|last| last.last_offset + 1 == chunk.base_offset)
        };
        if !follows(&any_tier) {
            any_tier.clear();
        }
        if !follows(&same_tier) || tier(same_tier[0].byte_len) != tier(chunk.byte_len) {
            same_tier.clear();
        }
        same_tier.push(chunk);
        if same_tier.len() == FAN_IN {
            return Some(same_tier.into_iter().cloned().collect());
        }
        if any_tier.len() == FAN_IN {
            any_tier.remove(0);
        }
        any_tier.push(chunk);
        if any_tier.len() == FAN_IN && fallback.is_none() {
            fallback = Some(any_tier.iter().map(|c| (*c).clone()).collect());
        }
    }
    fallback.filter(|_| small_count > MAX_SMALL_CHUNKS)
}

impl Sealer {
    /// Merges small sealed chunks of each partition, size-tiered: a chunk's
    /// tier is its size class (powers of 4 from 1 KiB); 4 adjacent sealed
    /// chunks of one tier, each below `segment_target_bytes`, become one
    /// segment (a tier up). As in a binary counter, a partition keeps at
    /// most 3 small chunks per tier, so its rows are bounded by its retained
    /// bytes over the target plus a few per tier, and a byte is rewritten
    /// at most once per tier it climbs (a busy partition's chunks start high).
    pub async fn merge_once(&self) -> anyhow::Result<SealReport> {
        let mut report = SealReport::default();
        for topic in self.catalog.all() {
            let segment_bytes = (self.cleaner.policy)(&topic.record).segment_bytes;
            let target = self
                .config
                .segment_target_bytes
                .min(u64::try_from(segment_bytes).unwrap_or(u64::MAX))
                .max(1);
            // Partitions led here only: another broker may read one it
            // does not lead, and holds its index then, but never merges it.
            let led = topic
                .partitions
                .iter()
                .filter(|log| log.leader_id() == self.node_id && log.chunk_count() >= 4);
            for log in led {
                // Until nothing is left to merge (each merge removes 3 rows).
                // After a merge the search goes on from three chunks before
                // it (everything older was searched and did not change),
                // and once more from the start before giving up, so a cycle
                // walks a long-retained partition's index about once, not
                // once per merge, and copies none of it.
                let start = log.log_start_offset();
                let mut from = start;
                loop {
                    let found = log
                        .visit_chunks(from, |chunks, _| mergeable(chunks, target))
                        .flatten();
                    let group = match found {
                        Some(group) => group,
                        None if from > start => {
                            from = start;
                            continue;
                        }
                        None => break,
                    };
                    from = log.base_before(group[0].base_offset, 3);
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
                            true,
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
        let chunks = [
            sized(0, 300 << 10, 40),
            sized(1, 64 << 10, 20),
            sized(2, 100 << 10, 20),
            sized(3, 64 << 10, 20),
            sized(4, 64 << 10, 20),
            sized(5, 64 << 10, 0), // unsealed: never merged
        ];
        let group = mergeable(&mut chunks.iter(), 1 << 20).expect("a group");
        assert_eq!(
            group.iter().map(|c| c.base_offset).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // At or above the target: final.
        assert!(mergeable(&mut chunks.iter(), 64 << 10).is_none());
        assert!(
            mergeable(&mut chunks[..4].iter(), 1 << 20).is_none(),
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
        assert!(
            mergeable(&mut chunks.iter(), 1 << 20).is_none(),
            "12 may stay"
        );
        chunks.push(ChunkRecord {
            byte_len: 20 << 10,
            index_len: 20,
            ..chunk(12, 12, "s")
        });
        let group = mergeable(&mut chunks.iter(), 1 << 20).expect("13 small chunks merge");
        assert_eq!(
            group.iter().map(|c| c.base_offset).collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "the oldest adjacent ones"
        );
    }
}
