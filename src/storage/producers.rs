//! Idempotent producer state of a partition, with Kafka's rules for it.
//!
//! For every producer id that wrote to a partition the broker keeps the
//! producer's epoch and the sequence ranges of its last
//! [`MAX_REMEMBERED_BATCHES`] batches with the offsets they got. A batch is
//! then either:
//! - a duplicate of one of those (same epoch, same first and last sequence):
//!   answered as success with the offset it got the first time, not written
//!   again;
//! - the next in sequence (or the first of a new epoch, sequence 0; or any
//!   sequence from a producer with no state left): written;
//! - anything else: refused with OUT_OF_ORDER_SEQUENCE_NUMBER, or
//!   INVALID_PRODUCER_EPOCH for an older epoch.
//!
//! The state is recorded in the same metadata transaction as the chunk that
//! holds the batches (`ChunkCommit::producers`), so after a crash a retried
//! batch is recognised exactly when its first attempt was committed.
//! Producers silent for `producer.id.expiration.ms` are forgotten.

use std::collections::VecDeque;

use thiserror::Error;

use crate::metadata::{ProducerBatchRecord, ProducerStateRecord};
pub use crate::protocol::batch::ProducerBatch;

/// How many batches per producer are remembered, as Kafka does (the Java
/// client keeps at most 5 requests in flight with idempotence on).
pub const MAX_REMEMBERED_BATCHES: usize = 5;

/// Sequence arithmetic on a batch's producer fields.
pub trait BatchSequence {
    /// The sequence of the batch's last record; sequences wrap from
    /// `i32::MAX` to 0.
    fn last_seq(&self) -> i32;
}

impl BatchSequence for ProducerBatch {
    fn last_seq(&self) -> i32 {
        let delta = self.offset_count - 1;
        if self.first_seq > i32::MAX - delta {
            delta - (i32::MAX - self.first_seq) - 1
        } else {
            self.first_seq + delta
        }
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SequenceError {
    #[error("producer {producer_id} sent epoch {epoch}, older than its current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id} epoch {epoch}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        expected: String,
        got: i32,
    },
}

/// What to do with a batch, given the producer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: write it.
    Append,
    /// Already written, at these offsets.
    Duplicate(ProducerBatchRecord),
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (next_seq == 0 && last_seq == i32::MAX)
}

/// Kafka's producer checks for `batch` against `entry`, the producer's
/// state in this partition (`None` if it has none).
pub fn check(
    entry: Option<&ProducerStateRecord>,
    batch: &ProducerBatch,
) -> Result<SequenceCheck, SequenceError> {
    let Some(entry) = entry else {
        // No state (new producer, or its state expired): any sequence.
        return Ok(SequenceCheck::Append);
    };
    if batch.epoch < entry.epoch {
        return Err(SequenceError::InvalidEpoch {
            producer_id: batch.producer_id,
            epoch: batch.epoch,
            current: entry.epoch,
        });
    }
    if batch.epoch > entry.epoch {
        // A new epoch starts its sequences over.
        if batch.first_seq != 0 {
            return Err(SequenceError::OutOfOrder {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                expected: "0 (first batch of a new epoch)".into(),
                got: batch.first_seq,
            });
        }
        return Ok(SequenceCheck::Append);
    }
    let last_seq = batch.last_seq();
    if let Some(previous) = entry
        .batches
        .iter()
        .find(|b| b.first_seq == batch.first_seq && b.last_seq == last_seq)
    {
        return Ok(SequenceCheck::Duplicate(*previous));
    }
    match entry.batches.last() {
        Some(latest) if !in_sequence(latest.last_seq, batch.first_seq) => {
            Err(SequenceError::OutOfOrder {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                expected: latest.last_seq.wrapping_add(1).max(0).to_string(),
                got: batch.first_seq,
            })
        }
        _ => Ok(SequenceCheck::Append),
    }
}

/// Records an appended batch (checked with [`check`]) at `base_offset`:
/// returns the producer's new state. A transactional batch opens the
/// producer's transaction in the partition if none is open.
pub fn record(
    entry: Option<&ProducerStateRecord>,
    batch: &ProducerBatch,
    base_offset: i64,
    now_ms: i64,
    transactional: bool,
) -> ProducerStateRecord {
    let open = entry.and_then(|e| e.txn_first_offset);
    let mut batches: VecDeque<ProducerBatchRecord> = match entry {
        Some(entry) if entry.epoch == batch.epoch => entry.batches.iter().copied().collect(),
        _ => VecDeque::new(),
    };
    batches.push_back(ProducerBatchRecord {
        first_seq: batch.first_seq,
        last_seq: batch.last_seq(),
        base_offset,
        last_offset: base_offset + i64::from(batch.offset_count) - 1,
    });
    while batches.len() > MAX_REMEMBERED_BATCHES {
        batches.pop_front();
    }
    ProducerStateRecord {
        producer_id: batch.producer_id,
        epoch: batch.epoch,
        batches: batches.into(),
        last_append_ms: now_ms,
        txn_first_offset: match open {
            Some(first) => Some(first),
            None if transactional => Some(base_offset),
            None => None,
        },
    }
}

/// The producer's state after a transaction marker at `offset` written at
/// `epoch` (checked not to be older than the producer's): its transaction
/// here is closed, and a newer epoch restarts its sequences. Returns the
/// new state and, for an abort that closed an open transaction, its range.
pub fn record_marker(
    entry: Option<&ProducerStateRecord>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    offset: i64,
    now_ms: i64,
) -> (ProducerStateRecord, Option<crate::metadata::AbortedTxn>) {
    let batches = match entry {
        Some(entry) if entry.epoch == epoch => entry.batches.clone(),
        _ => Vec::new(),
    };
    let aborted = match entry.and_then(|e| e.txn_first_offset) {
        Some(first_offset) if !commit => Some(crate::metadata::AbortedTxn {
            producer_id,
            first_offset,
            last_offset: offset,
        }),
        _ => None,
    };
    (
        ProducerStateRecord {
            producer_id,
            epoch,
            batches,
            last_append_ms: now_ms,
            txn_first_offset: None,
        },
        aborted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first_seq: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: 7,
            epoch,
            first_seq,
            offset_count: count,
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs() {
        // A new producer may start anywhere.
        assert_eq!(check(None, &batch(0, 5, 3)), Ok(SequenceCheck::Append));
        let state = record(None, &batch(0, 0, 3), 100, 1, false);
        assert_eq!(state.batches[0].last_seq, 2);
        assert_eq!(state.batches[0].last_offset, 102);
        // Next in sequence.
        assert_eq!(
            check(Some(&state), &batch(0, 3, 2)),
            Ok(SequenceCheck::Append)
        );
        let state = record(Some(&state), &batch(0, 3, 2), 110, 2, false);
        // A retry of either batch is a duplicate with its first offsets.
        assert!(matches!(
            check(Some(&state), &batch(0, 0, 3)),
            Ok(SequenceCheck::Duplicate(b)) if b.base_offset == 100
        ));
        assert!(matches!(
            check(Some(&state), &batch(0, 3, 2)),
            Ok(SequenceCheck::Duplicate(b)) if b.base_offset == 110
        ));
        // A gap, or an overlap that is not a duplicate, is out of order.
        assert!(matches!(
            check(Some(&state), &batch(0, 6, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert!(matches!(
            check(Some(&state), &batch(0, 4, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        // An older epoch is fenced; a newer one must start at 0.
        let bumped = record(Some(&state), &batch(1, 0, 1), 120, 3, false);
        assert_eq!(
            bumped.batches.len(),
            1,
            "a new epoch forgets the old batches"
        );
        assert!(matches!(
            check(Some(&bumped), &batch(0, 5, 1)),
            Err(SequenceError::InvalidEpoch { current: 1, .. })
        ));
        assert!(matches!(
            check(Some(&bumped), &batch(2, 3, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert_eq!(
            check(Some(&bumped), &batch(2, 0, 1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut state = record(None, &batch(0, 0, 1), 0, 0, false);
        for seq in 1..8 {
            state = record(Some(&state), &batch(0, seq, 1), i64::from(seq), 0, false);
        }
        assert_eq!(state.batches.len(), MAX_REMEMBERED_BATCHES);
        assert_eq!(state.batches[0].first_seq, 3);
        // Too old to be recognised: no longer a duplicate, and out of order.
        assert!(check(Some(&state), &batch(0, 1, 1)).is_err());
        let wrap = batch(0, i32::MAX - 1, 4);
        assert_eq!(wrap.last_seq(), 1);
        let state = record(None, &wrap, 50, 0, false);
        assert_eq!(
            check(Some(&state), &batch(0, 2, 1)),
            Ok(SequenceCheck::Append)
        );
        let state = record(None, &batch(0, i32::MAX, 1), 60, 0, false);
        assert_eq!(
            check(Some(&state), &batch(0, 0, 1)),
            Ok(SequenceCheck::Append)
        );
    }
}
