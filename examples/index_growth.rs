//! What background work costs on a long-retained partition, old way and
//! new, in one run: a partition of 100,000 sealed chunks in memory.
//!
//! - merge search per sealing cycle when nothing is left to merge;
//! - a cycle that merges a tail of small chunks (64 of them, one tier);
//! - a retention check (`retention.bytes` trims the oldest chunk);
//! - 100,000 aborted transactions recorded (keep-forever topic).
//!
//! The "old" figures run the code this replaced (copy the whole chunk
//! index, scan it; insert at a searched position), reimplemented here as
//! the reference. Prints one JSON object; docs/benchmarks.md has figures.
//!
//!     cargo run --release --example index_growth

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::metadata::{AbortedTxn, ChunkRecord, TopicId};
use strata::storage::cleaner::{CleanupPolicy, retention_start};
use strata::storage::partition::{PartitionLog, topic_commits};
use strata::storage::sealer::mergeable;

const CHUNKS: i64 = 100_000;
const TARGET: u64 = 4 << 20;
const SMALL: i64 = 64;

fn chunk(base: i64, byte_len: u64) -> ChunkRecord {
    ChunkRecord {
        base_offset: base * 100,
        last_offset: base * 100 + 99,
        max_timestamp: base,
        object_key: Arc::from(format!("seg/t/0/{base:020}.seg")),
        object_size: byte_len,
        byte_start: 0,
        byte_len,
        index_len: 64,
    }
}

/// A partition of `CHUNKS` sealed chunks at the merge target, then `small`
/// small ones (64 KiB, one tier).
fn partition(small: i64) -> PartitionLog {
    let chunks = (0..CHUNKS)
        .map(|i| chunk(i, TARGET))
        .chain((CHUNKS..CHUNKS + small).map(|i| chunk(i, 64 << 10)));
    PartitionLog::new(
        TopicId(uuid::Uuid::nil()),
        0,
        0,
        0,
        (CHUNKS + small) * 100,
        chunks.collect(),
        topic_commits(),
    )
}

/// The merge search this replaced: the whole index copied, then scanned.
fn old_mergeable(chunks: &[ChunkRecord]) -> Option<Vec<ChunkRecord>> {
    let small = |c: &ChunkRecord| c.index_len > 0 && c.byte_len < TARGET;
    chunks
        .windows(4)
        .find(|w| {
            w.iter().all(small)
                && w.windows(2)
                    .all(|p| p[0].last_offset + 1 == p[1].base_offset)
        })
        .map(<[ChunkRecord]>::to_vec)
}

fn merged(group: &[ChunkRecord]) -> ChunkRecord {
    ChunkRecord {
        last_offset: group[group.len() - 1].last_offset,
        byte_len: group.iter().map(|c| c.byte_len).sum(),
        ..group[0].clone()
    }
}

fn median(mut runs: Vec<Duration>) -> f64 {
    runs.sort();
    runs[runs.len() / 2].as_secs_f64() * 1e3
}

fn time(rounds: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..rounds)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let log = partition(0);
    let idle_old = time(11, || {
        assert!(old_mergeable(&log.chunks_in(0)).is_none());
    });
    let idle_new = time(11, || {
        assert!(
            log.visit_chunks(0, |c, _| mergeable(c, TARGET))
                .flatten()
                .is_none()
        );
    });

    // A cycle that merges 64 small chunks of one tier (into 16, then 4,
    // then 1: 21 merges), each step as the sealer takes it.
    // Fresh partitions built before the clock starts (building one is not
    // what is measured).
    let mut fresh: Vec<PartitionLog> = (0..10).map(|_| partition(SMALL)).collect();
    let cycle_old = time(5, || {
        let log = fresh.pop().expect("a fresh partition");
        while let Some(group) = old_mergeable(&log.chunks_in(0)) {
            log.replace_chunks(merged(&group));
        }
    });
    let cycle_new = time(5, || {
        let log = fresh.pop().expect("a fresh partition");
        let mut from = 0;
        loop {
            let Some(group) = log
                .visit_chunks(from, |c, _| mergeable(c, TARGET))
                .flatten()
            else {
                if from == 0 {
                    break;
                }
                from = 0;
                continue;
            };
            from = log.base_before(group[0].base_offset, 3);
            log.replace_chunks(merged(&group));
        }
    });

    // Retention by size that trims the oldest chunk.
    let policy = CleanupPolicy {
        delete: true,
        compact: false,
        retention_ms: -1,
        retention_bytes: ((CHUNKS - 1) as u64 * TARGET) as i64,
        delete_retention_ms: 0,
        min_compaction_lag_ms: 0,
        min_cleanable_dirty_ratio: 0.5,
        segment_bytes: 1 << 30,
    };
    let retention_old = time(11, || {
        let chunks = log.chunks_in(0);
        let total: u64 = chunks.iter().map(|c| c.byte_len).sum();
        assert_eq!(
            retention_start(&mut chunks.iter(), total, 0, &policy, 0),
            100
        );
    });
    let retention_new = time(11, || {
        let start = log
            .visit_chunks(0, |c, total| retention_start(c, total, 0, &policy, 0))
            .expect("index");
        assert_eq!(start, 100);
    });

    // 100,000 aborted transactions, markers in offset order.
    let aborted: Vec<AbortedTxn> = (0..CHUNKS)
        .map(|i| AbortedTxn {
            producer_id: i % 7,
            first_offset: i * 10,
            last_offset: i * 10 + 5,
        })
        .collect();
    let aborted_old = time(5, || {
        let mut list: VecDeque<AbortedTxn> = VecDeque::new();
        for a in &aborted {
            let at = list.partition_point(|x| x.last_offset < a.last_offset);
            if list.get(at).map(|x| x.last_offset) != Some(a.last_offset) {
                list.insert(at, *a);
            }
        }
    });
    let empty = PartitionLog::new(
        TopicId(uuid::Uuid::nil()),
        0,
        0,
        0,
        0,
        Vec::new(),
        topic_commits(),
    );
    let aborted_new = time(1, || {
        let log = &empty;
        for a in &aborted {
            log.apply_aborted(std::slice::from_ref(a));
        }
    });

    println!(
        "{}",
        serde_json::json!({
            "chunks": CHUNKS,
            "merge_search_idle_ms": {"old": idle_old, "new": idle_new},
            "merge_cycle_64_small_ms": {"old": cycle_old, "new": cycle_new},
            "retention_check_ms": {"old": retention_old, "new": retention_new},
            "aborted_100k_appends_ms": {"old": aborted_old, "new": aborted_new},
            "aborted_entry_bytes": std::mem::size_of::<AbortedTxn>(),
        })
    );
}
