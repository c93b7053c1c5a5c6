//! Transaction markers: the control batches a transaction coordinator
//! writes into every partition of a transaction when it ends.
//!
//! A marker is a magic-2 batch with the transactional and control
//! attributes set, the producer's id and epoch, base sequence -1 and one
//! record whose key is `(version: i16 = 0, type: i16)` (0 abort, 1 commit)
//! and whose value is `(version: i16 = 0, coordinator epoch: i32)`.
//! Consumers never hand control records to applications; read_committed
//! ones use them to end the transaction's range.

use bytes::{BufMut, BytesMut};

use super::batch::{BATCH_HEADER_LEN, BATCH_LOG_OVERHEAD, BatchHeader};

/// Control record type of a commit marker.
pub const COMMIT: i16 = 1;
/// Control record type of an abort marker.
pub const ABORT: i16 = 0;

/// Batch attributes of a marker: transactional (0x10) and control (0x20).
const MARKER_ATTRIBUTES: i16 = 0x30;

/// The one record of a marker, laid out as a record of a v2 batch.
fn marker_record(kind: i16, coordinator_epoch: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(16);
    body.push(0); // attributes
    body.push(0); // timestamp delta (varint 0)
    body.push(0); // offset delta (varint 0)
    body.push(8); // key length 4, zigzag varint
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&kind.to_be_bytes());
    body.push(12); // value length 6, zigzag varint
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&coordinator_epoch.to_be_bytes());
    body.push(0); // no headers
    let mut record = Vec::with_capacity(body.len() + 1);
    // Record length as a zigzag varint: 16 bytes -> 32, one byte.
    record.push((body.len() as u8) << 1);
    record.extend_from_slice(&body);
    record
}

/// A marker batch at offset 0 (the write buffer assigns its offset) for
/// `producer_id`/`epoch`, committing (`commit`) or aborting its
/// transaction, stamped `timestamp_ms`.
pub fn marker_batch(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> BytesMut {
    let record = marker_record(if commit { COMMIT } else { ABORT }, coordinator_epoch);
    let total = BATCH_HEADER_LEN + record.len();
    let mut batch = BytesMut::with_capacity(total);
    batch.put_i64(0); // base offset
    batch.put_i32((total - BATCH_LOG_OVERHEAD) as i32);
    batch.put_i32(-1); // partition leader epoch, set on append
    batch.put_i8(2); // magic
    batch.put_u32(0); // crc, below
    batch.put_i16(MARKER_ATTRIBUTES);
    batch.put_i32(0); // last offset delta
    batch.put_i64(timestamp_ms);
    batch.put_i64(timestamp_ms);
    batch.put_i64(producer_id);
    batch.put_i16(epoch);
    batch.put_i32(-1); // base sequence
    batch.put_i32(1); // record count
    batch.extend_from_slice(&record);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// What a control batch says: `Some(true)` commit, `Some(false)` abort,
/// `None` if `batch` is not a well-formed uncompressed marker.
pub fn marker_kind(batch: &[u8]) -> Option<bool> {
    let header = BatchHeader::new(batch).ok()?;
    if !header.is_control() || header.compression() != 0 || header.record_count() < 1 {
        return None;
    }
    // The first record: length varint, attributes, timestamp delta, offset
    // delta (single-byte varints in every marker a client library or a
    // broker writes), key length, key.
    let records = batch.get(BATCH_HEADER_LEN..)?;
    let mut at = 0usize;
    let skip_varint = |at: &mut usize| -> Option<i64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *records.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        None
    };
    skip_varint(&mut at)?; // record length
    at += 1; // attributes
    skip_varint(&mut at)?; // timestamp delta
    skip_varint(&mut at)?; // offset delta
    let key_len = skip_varint(&mut at)?;
    if key_len < 4 {
        return None;
    }
    let key = records.get(at..at + 4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        COMMIT => Some(true),
        ABORT => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::validate_produce_batches;

    #[test]
    fn a_marker_is_a_valid_control_batch_that_says_what_it_ends() {
        for commit in [true, false] {
            let batch = marker_batch(42, 7, commit, 3, 1_700_000_000_000);
            let summary = validate_produce_batches(&batch).expect("valid batch");
            assert!(summary.any_control && summary.any_transactional);
            assert_eq!(summary.offset_count, 1);
            let header = BatchHeader::new(&batch).expect("header");
            assert_eq!(header.producer_id(), 42);
            assert_eq!(header.producer_epoch(), 7);
            assert_eq!(header.base_sequence(), -1);
            assert_eq!(marker_kind(&batch), Some(commit));
        }
        // A data batch is no marker.
        let mut data = marker_batch(1, 0, true, 0, 0);
        data[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        assert_eq!(marker_kind(&data), None);
    }
}
