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
}
