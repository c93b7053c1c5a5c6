//! Record batch (magic v2) header access and validation, without decoding the
//! records themselves.
//!
//! The broker stores batches exactly as the producer sent them; the only byte
//! it changes is `baseOffset`, which the CRC-32C does not cover. Everything in
//! here works on borrowed bytes and never allocates from a length read off the
//! wire.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// Size of the fixed v2 batch header, up to and including `recordCount`.
pub const BATCH_HEADER_LEN: usize = 61;
/// `baseOffset` (8) + `batchLength` (4): the part not counted by `batchLength`.
pub const BATCH_LOG_OVERHEAD: usize = 12;

const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORD_COUNT: usize = 57;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch truncated: {0} bytes, need at least {BATCH_HEADER_LEN}")]
    Truncated(usize),
    #[error("record batch length {declared} does not match the {available} bytes sent")]
    LengthMismatch { declared: i64, available: usize },
    #[error("record batch magic {0} is not supported, only magic 2 (Kafka 0.11+) is")]
    UnsupportedMagic(i8),
    #[error("record batch crc mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch has {count} records but last offset delta {delta}")]
    BadRecordCount { count: i32, delta: i32 },
    #[error("invalid records in batch: {0}")]
    Records(String),
}

/// A borrowed view of one v2 record batch header.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

fn read_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn read_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl<'a> BatchHeader<'a> {
    /// Wraps `bytes` if it holds at least a full header. No other check.
    pub fn new(bytes: &'a [u8]) -> Result<Self, BatchError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated(bytes.len()));
        }
        Ok(Self { bytes })
    }
    pub fn base_offset(&self) -> i64 {
        read_i64(self.bytes, 0)
    }
    /// Total size of the batch on the wire, including offset and length fields.
    pub fn total_len(&self) -> i64 {
        i64::from(read_i32(self.bytes, 8)) + BATCH_LOG_OVERHEAD as i64
    }
    pub fn magic(&self) -> i8 {
        self.bytes[OFFSET_MAGIC] as i8
    }
    pub fn crc(&self) -> u32 {
        read_i32(self.bytes, OFFSET_CRC) as u32
    }
    pub fn attributes(&self) -> i16 {
        read_i16(self.bytes, OFFSET_ATTRIBUTES)
    }
    pub fn last_offset_delta(&self) -> i32 {
        read_i32(self.bytes, OFFSET_LAST_OFFSET_DELTA)
    }
    pub fn base_timestamp(&self) -> i64 {
        read_i64(self.bytes, OFFSET_BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        read_i64(self.bytes, OFFSET_MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        read_i64(self.bytes, OFFSET_PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        read_i16(self.bytes, OFFSET_PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        read_i32(self.bytes, OFFSET_BASE_SEQUENCE)
    }
    pub fn record_count(&self) -> i32 {
        read_i32(self.bytes, OFFSET_RECORD_COUNT)
    }
    /// Offset of the last record: `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }
    /// Compression codec id from the attributes (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes() & 0x07
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }
    /// Whether the records carry the broker's append time (the batch's max
    /// timestamp) rather than their own create time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & 0x08 != 0
    }
}

/// The idempotent-producer fields of a record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// Offsets the batch occupies (`lastOffsetDelta + 1`).
    pub offset_count: i32,
}

/// Summary of the validated batches of one produce partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchesSummary {
    pub batch_count: usize,
    /// Number of offsets the batches occupy (sum of `lastOffsetDelta + 1`).
    pub offset_count: i64,
    pub max_timestamp: i64,
    pub largest_batch: usize,
    /// Whether any batch is compressed (its records need inflating to check).
    pub compressed: bool,
    /// Batches carrying a producer id (idempotent or transactional).
    pub producer_batches: usize,
    /// The producer fields of the first batch that carries a producer id.
    pub producer: Option<ProducerBatch>,
    pub any_transactional: bool,
    pub any_control: bool,
}

/// Validates every batch in `records` as a producer sent it: full length,
/// magic 2, CRC-32C, record count consistent with the offset delta.
pub fn validate_produce_batches(records: &[u8]) -> Result<BatchesSummary, BatchError> {
    let mut summary = BatchesSummary {
        batch_count: 0,
        offset_count: 0,
        max_timestamp: -1,
        largest_batch: 0,
        compressed: false,
        producer_batches: 0,
        producer: None,
        any_transactional: false,
        any_control: false,
    };
    let mut rest = records;
    if rest.is_empty() {
        return Err(BatchError::Truncated(0));
    }
    while !rest.is_empty() {
        // The magic byte sits at the same place in v0/v1 messages, so check it
        // before anything that assumes the v2 layout.
        if rest.len() > OFFSET_MAGIC && rest[OFFSET_MAGIC] as i8 != 2 {
            return Err(BatchError::UnsupportedMagic(rest[OFFSET_MAGIC] as i8));
        }
        let header = BatchHeader::new(rest)?;
        let total = header.total_len();
        if total < BATCH_HEADER_LEN as i64 || total > rest.len() as i64 {
            return Err(BatchError::LengthMismatch {
                declared: total,
                available: rest.len(),
            });
        }
        let total = total as usize;
        let batch = &rest[..total];
        let actual = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]);
        if actual != header.crc() {
            return Err(BatchError::CrcMismatch {
                expected: header.crc(),
                actual,
            });
        }
        let delta = header.last_offset_delta();
        let count = header.record_count();
        if delta < 0 || count <= 0 || i64::from(count) != i64::from(delta) + 1 {
            return Err(BatchError::BadRecordCount { count, delta });
        }
        summary.batch_count += 1;
        summary.offset_count += i64::from(delta) + 1;
        summary.max_timestamp = summary.max_timestamp.max(header.max_timestamp());
        summary.largest_batch = summary.largest_batch.max(total);
        summary.compressed |= header.compression() != 0;
        summary.any_transactional |= header.is_transactional();
        summary.any_control |= header.is_control();
        if header.producer_id() >= 0 {
            summary.producer_batches += 1;
            summary.producer.get_or_insert(ProducerBatch {
                producer_id: header.producer_id(),
                epoch: header.producer_epoch(),
                first_seq: header.base_sequence(),
                offset_count: delta + 1,
            });
        }
        rest = &rest[total..];
    }
    Ok(summary)
}

/// Rewrites `baseOffset` and `partitionLeaderEpoch` of every batch in
/// `records` (already validated) so the batches occupy consecutive offsets
/// from `base_offset`. Returns the next free offset. The CRC covers neither
/// field, so the batches stay valid.
pub fn assign_offsets(records: &mut BytesMut, base_offset: i64, leader_epoch: i32) -> i64 {
    let mut next = base_offset;
    let mut at = 0usize;
    while at + BATCH_HEADER_LEN <= records.len() {
        let (total, delta) = {
            let header = BatchHeader {
                bytes: &records[at..],
            };
            (header.total_len() as usize, header.last_offset_delta())
        };
        records[at..at + 8].copy_from_slice(&next.to_be_bytes());
        records[at + 12..at + 16].copy_from_slice(&leader_epoch.to_be_bytes());
        next += i64::from(delta) + 1;
        at += total;
    }
    next
}

/// Stamps every batch in `records` (already validated) with the broker's
/// append time, as `message.timestamp.type=LogAppendTime` requires: sets the
/// timestamp-type attribute and `maxTimestamp`, then recomputes the CRC.
pub fn set_log_append_time(records: &mut BytesMut, now_ms: i64) {
    let mut at = 0usize;
    while at + BATCH_HEADER_LEN <= records.len() {
        let total = BatchHeader {
            bytes: &records[at..],
        }
        .total_len() as usize;
        let end = (at + total).min(records.len());
        let attributes = read_i16(records, at + OFFSET_ATTRIBUTES) | 0x08;
        records[at + OFFSET_ATTRIBUTES..at + OFFSET_ATTRIBUTES + 2]
            .copy_from_slice(&attributes.to_be_bytes());
        records[at + OFFSET_MAX_TIMESTAMP..at + OFFSET_MAX_TIMESTAMP + 8]
            .copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&records[at + OFFSET_ATTRIBUTES..end]);
        records[at + OFFSET_CRC..at + OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
}

/// Iterates over the batches laid end to end in `data` (as stored), yielding
/// `(byte_position, header)`. Stops at the first incomplete batch.
pub fn iter_batches(data: &[u8]) -> impl Iterator<Item = (usize, BatchHeader<'_>)> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::new(data.get(at..)?).ok()?;
        let total = header.total_len();
        if total < BATCH_HEADER_LEN as i64 || (at as i64 + total) > data.len() as i64 {
            return None;
        }
        let item = (at, header);
        at += total as usize;
        Some(item)
    })
}

/// Returns the sub-slice of stored batches `data` that starts at the batch
/// containing `offset` and holds whole batches up to `max_bytes` (always at
/// least one batch, as Kafka does since KIP-74 so a consumer can make progress).
pub fn slice_from_offset(data: &Bytes, offset: i64, max_bytes: usize) -> Bytes {
    let mut start = None;
    let mut end = 0usize;
    for (pos, header) in iter_batches(data) {
        let batch_end = pos + header.total_len() as usize;
        match start {
            None => {
                if header.last_offset() >= offset {
                    start = Some(pos);
                    end = batch_end;
                }
            }
            Some(s) => {
                if batch_end - s > max_bytes {
                    break;
                }
                end = batch_end;
            }
        }
    }
    match start {
        Some(s) => data.slice(s..end),
        None => Bytes::new(),
    }
}

/// The whole batches at the front of `data` that start before `limit`
/// (read_committed reads stop at the last stable offset).
pub fn cut_at_offset(data: Bytes, limit: i64) -> Bytes {
    let mut end = 0usize;
    for (pos, header) in iter_batches(&data) {
        if header.base_offset() >= limit {
            break;
        }
        end = pos + header.total_len() as usize;
    }
    if end >= data.len() {
        data
    } else {
        data.slice(..end)
    }
}

/// Reads the big-endian i32 at the front of `buf` without consuming it.
pub fn peek_i32(buf: &[u8]) -> Option<i32> {
    let mut b = buf.get(..4)?;
    Some(b.get_i32())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    pub(crate) fn encode_batch(n: usize, compression: Compression) -> BytesMut {
        encode_records(
            compression,
            (0..n as i64).map(|i| {
                let value = Bytes::from(format!("value {i}"));
                (i, 1_000 + i, Bytes::from(format!("k{i}")), value)
            }),
        )
    }

    /// Encodes records `(offset, timestamp, key, value)` (offsets
    /// consecutive) as record batch v2.
    pub(crate) fn encode_records(
        compression: Compression,
        records: impl Iterator<Item = (i64, i64, Bytes, Bytes)>,
    ) -> BytesMut {
        let mut first = None;
        let records: Vec<Record> = records
            .map(|(offset, timestamp, key, value)| {
                let base = *first.get_or_insert(offset);
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset,
                    // offset - sequence constant keeps the encoder to one batch.
                    sequence: (offset - base) as i32,
                    timestamp,
                    key: Some(key),
                    value: Some(value),
                    headers: Default::default(),
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode test batch");
        buf
    }

    #[test]
    fn validates_and_assigns_offsets() {
        let mut buf = encode_batch(3, Compression::None);
        buf.extend_from_slice(&encode_batch(2, Compression::Gzip));
        let summary = validate_produce_batches(&buf).expect("valid");
        // The encoder may split records into several batches; offsets must
        // still come out dense whatever the split.
        assert!(summary.batch_count >= 2);
        assert_eq!(summary.offset_count, 5);
        assert_eq!(summary.max_timestamp, 1_002);
        let next = assign_offsets(&mut buf, 100, 7);
        assert_eq!(next, 105);
        // Still valid after the rewrite: the CRC does not cover baseOffset.
        validate_produce_batches(&buf).expect("still valid");
        let mut expected = 100;
        for (_, header) in iter_batches(&buf) {
            assert_eq!(header.base_offset(), expected);
            assert_eq!(header.record_count(), header.last_offset_delta() + 1);
            expected = header.last_offset() + 1;
        }
        assert_eq!(expected, 105);
        let frozen = buf.freeze();
        let tail = slice_from_offset(&frozen, 104, 1);
        let header = BatchHeader::new(&tail).expect("header");
        assert!(header.base_offset() <= 104 && header.last_offset() >= 104);
        assert_eq!(
            tail.len() as i64,
            header.total_len(),
            "one batch when max_bytes is tiny"
        );
        assert!(slice_from_offset(&frozen, 105, 1 << 20).is_empty());
    }

    #[test]
    fn log_append_time_keeps_batches_valid() {
        let mut buf = encode_batch(3, Compression::Lz4);
        set_log_append_time(&mut buf, 42_000);
        validate_produce_batches(&buf).expect("crc recomputed");
        let header = BatchHeader::new(&buf).expect("header");
        assert_eq!(header.max_timestamp(), 42_000);
        assert_eq!(header.attributes() & 0x08, 0x08);
    }

    #[test]
    fn rejects_bad_crc_magic_and_truncation() {
        let mut buf = encode_batch(1, Compression::None);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert!(matches!(
            validate_produce_batches(&buf),
            Err(BatchError::CrcMismatch { .. })
        ));
        let mut buf = encode_batch(1, Compression::None);
        buf[OFFSET_MAGIC] = 1;
        assert_eq!(
            validate_produce_batches(&buf),
            Err(BatchError::UnsupportedMagic(1))
        );
        let buf = encode_batch(1, Compression::None);
        assert!(matches!(
            validate_produce_batches(&buf[..buf.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            validate_produce_batches(&buf[..20]),
            Err(BatchError::Truncated(20))
        ));
        assert!(validate_produce_batches(&[]).is_err());
    }
}
