//! Walking the records inside a v2 record batch, without materialising them:
//! each record's offset delta and timestamp delta, with every length checked.
//! Compressed batches are inflated with a hard cap on the output size, so a
//! small "zip bomb" batch cannot make the broker allocate without bound.
//!
//! Used to validate produced batches as Kafka does (record count and offset
//! deltas consistent with the header, so one offset holds one record), to
//! find records by timestamp for ListOffsets, to filter records by key
//! (compaction) and (`decode_records`, headers too) to export sealed
//! segments.

use std::borrow::Cow;
use std::io::Read;

use super::batch::{BATCH_HEADER_LEN, BatchError, BatchHeader};

/// Largest decompressed size of one batch's records.
pub const MAX_INFLATED_BYTES: usize = 128 * 1024 * 1024;

/// What a record walk sees of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
}

fn read_varlong(data: &[u8], at: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *data.get(*at)?;
        *at += 1;
        raw |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            // Zig-zag decoding.
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

fn read_capped<R: Read>(reader: R, what: &str) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    reader
        .take(MAX_INFLATED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Records(format!("cannot decompress {what}: {e}")))?;
    if out.len() > MAX_INFLATED_BYTES {
        return Err(BatchError::Records(format!(
            "{what} batch inflates beyond {MAX_INFLATED_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Kafka's snappy framing (xerial): an optional 16-byte magic header, then
/// blocks each prefixed with a 4-byte length; without the header, one raw block.
fn inflate_snappy(data: &[u8]) -> Result<Vec<u8>, BatchError> {
    const MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let bad = |e: snap::Error| BatchError::Records(format!("cannot decompress snappy: {e}"));
    let mut out = Vec::new();
    let mut block = |compressed: &[u8]| -> Result<(), BatchError> {
        let len = snap::raw::decompress_len(compressed).map_err(bad)?;
        if out.len().saturating_add(len) > MAX_INFLATED_BYTES {
            return Err(BatchError::Records(format!(
                "snappy batch inflates beyond {MAX_INFLATED_BYTES} bytes"
            )));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut out[start..])
            .map_err(bad)?;
        Ok(())
    };
    if !data.starts_with(MAGIC) {
        block(data)?;
        return Ok(out);
    }
    let mut rest = data
        .get(16..)
        .ok_or_else(|| BatchError::Records("truncated snappy header".into()))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| BatchError::Records("truncated snappy block length".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        let (compressed, tail) = tail
            .split_at_checked(len)
            .ok_or_else(|| BatchError::Records("truncated snappy block".into()))?;
        block(compressed)?;
        rest = tail;
    }
    Ok(out)
}

/// The records region of `batch`, inflated if the batch is compressed.
fn records_region(batch: &[u8]) -> Result<Cow<'_, [u8]>, BatchError> {
    let header = BatchHeader::new(batch)?;
    let data = batch.get(BATCH_HEADER_LEN..).unwrap_or_default();
    Ok(match header.compression() {
        0 => Cow::Borrowed(data),
        1 => Cow::Owned(read_capped(flate2::read::GzDecoder::new(data), "gzip")?),
        2 => Cow::Owned(inflate_snappy(data)?),
        3 => {
            let decoder = lz4::Decoder::new(data)
                .map_err(|e| BatchError::Records(format!("cannot decompress lz4: {e}")))?;
            Cow::Owned(read_capped(decoder, "lz4")?)
        }
        4 => {
            let decoder = zstd::stream::read::Decoder::new(data)
                .map_err(|e| BatchError::Records(format!("cannot decompress zstd: {e}")))?;
            Cow::Owned(read_capped(decoder, "zstd")?)
        }
        other => {
            return Err(BatchError::Records(format!(
                "unknown compression codec {other}"
            )));
        }
    })
}

/// One record of a batch, borrowed from its (inflated) records region.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's headers, still encoded (count, then key/value pairs).
    pub headers: &'a [u8],
    /// The whole record as stored, length prefix included.
    pub raw: &'a [u8],
}

impl RecordView {
    fn of(record: &RecordRef<'_>) -> Self {
        Self {
            offset_delta: record.offset_delta,
            timestamp_delta: record.timestamp_delta,
        }
    }
}

/// A length-prefixed field: `None` for length -1 (null).
fn read_bytes<'a>(data: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, BatchError> {
    let truncated = || BatchError::Records("record truncated".into());
    let len = read_varlong(data, at).ok_or_else(truncated)?;
    if len < 0 {
        return Ok(None);
    }
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| at.checked_add(len))
        .filter(|end| *end <= data.len())
        .ok_or_else(truncated)?;
    let field = &data[*at..end];
    *at = end;
    Ok(Some(field))
}

/// Parses the record starting at `at` of a records region; returns it and
/// where the next one starts.
fn parse_record(data: &[u8], at: usize) -> Result<(RecordRef<'_>, usize), BatchError> {
    let truncated = || BatchError::Records("record truncated".into());
    let mut pos = at;
    let length = read_varlong(data, &mut pos).ok_or_else(truncated)?;
    let Ok(length) = usize::try_from(length) else {
        return Err(BatchError::Records(format!(
            "negative record length {length}"
        )));
    };
    let end = pos
        .checked_add(length)
        .filter(|end| *end <= data.len())
        .ok_or_else(truncated)?;
    let body = &data[..end];
    let mut field = pos + 1; // attributes
    let timestamp_delta = read_varlong(body, &mut field).ok_or_else(truncated)?;
    let offset_delta = read_varlong(body, &mut field).ok_or_else(truncated)?;
    let offset_delta = i32::try_from(offset_delta)
        .map_err(|_| BatchError::Records(format!("offset delta {offset_delta} out of range")))?;
    let key = read_bytes(body, &mut field)?;
    let value = read_bytes(body, &mut field)?;
    let record = RecordRef {
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers: &data[field.min(end)..end],
        raw: &data[at..end],
    };
    Ok((record, end))
}

/// Calls `visit` for each record of one batch (whole batch bytes, as
/// validated by `validate_produce_batches`) until it returns `false`.
/// Checks that the records fill the region exactly and that their number
/// matches the header's record count.
pub fn for_each_record(
    batch: &[u8],
    mut visit: impl FnMut(RecordRef<'_>) -> bool,
) -> Result<(), BatchError> {
    let expected = BatchHeader::new(batch)?.record_count();
    let data = records_region(batch)?;
    let mut at = 0usize;
    let mut seen: i64 = 0;
    while at < data.len() {
        let (record, next) = parse_record(&data, at)?;
        seen += 1;
        at = next;
        if !visit(record) {
            return Ok(());
        }
    }
    if seen != i64::from(expected) {
        return Err(BatchError::Records(format!(
            "header says {expected} records, the batch holds {seen}"
        )));
    }
    Ok(())
}

/// `for_each_record`, seeing only offset and timestamp deltas.
pub fn walk_records(
    batch: &[u8],
    mut visit: impl FnMut(RecordView) -> bool,
) -> Result<(), BatchError> {
    for_each_record(batch, |record| visit(RecordView::of(&record)))
}

/// The records region of `batch`, inflated if the batch is compressed.
pub fn inflated_records(batch: &[u8]) -> Result<Cow<'_, [u8]>, BatchError> {
    records_region(batch)
}

/// What a topic asks of each produced record beyond its structure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordRules {
    /// Compacted topics (`cleanup.policy=compact`): every record has a key.
    pub require_keys: bool,
    /// `message.timestamp.type=CreateTime` topics: the window
    /// `[earliest, latest]` (ms) each record's timestamp must fall in
    /// (`message.timestamp.before.max.ms` / `after.max.ms` around now). A
    /// record without a timestamp (-1) is exempt, as in Kafka.
    pub timestamp_window: Option<(i64, i64)>,
}

/// Why one record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    MissingKey,
    TimestampOutOfRange,
}

/// A record refused by `RecordRules` (KIP-467): its index within its batch
/// and why, for the produce response's `record_errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub fault: RecordFault,
    pub message: String,
}

/// Validates the records of every batch in `records` as Kafka does for
/// produced batches: offset deltas 0, 1, 2, ... and a matching record count
/// (a batch that breaks these is corrupt: `Err`); then `rules`, record by
/// record: the records that break them are returned (every one of them, as
/// Kafka lists them), and their batch must be refused whole.
pub fn validate_records(
    records: &[u8],
    rules: RecordRules,
) -> Result<Vec<RecordError>, BatchError> {
    let mut refused = Vec::new();
    for (pos, header) in super::batch::iter_batches(records) {
        let batch = &records[pos..pos + header.total_len() as usize];
        let base_timestamp = header.base_timestamp();
        let mut next = 0i32;
        let mut problem = None;
        for_each_record(batch, |record| {
            if record.offset_delta != next {
                problem = Some(format!(
                    "record {next} has offset delta {}; deltas must be consecutive from 0",
                    record.offset_delta
                ));
                return false;
            }
            if rules.require_keys && record.key.is_none() {
                refused.push(RecordError {
                    batch_index: next,
                    fault: RecordFault::MissingKey,
                    message: format!(
                        "record {next} has no key; a compacted topic (cleanup.policy=compact) \
                         accepts only records with a key"
                    ),
                });
            }
            let timestamp = base_timestamp.saturating_add(record.timestamp_delta);
            if let Some((earliest, latest)) = rules.timestamp_window
                && base_timestamp != -1
                && !(earliest..=latest).contains(&timestamp)
            {
                refused.push(RecordError {
                    batch_index: next,
                    fault: RecordFault::TimestampOutOfRange,
                    message: format!(
                        "timestamp {timestamp} of record {next} is out of range: it must be \
                         within [{earliest}, {latest}] (message.timestamp.before.max.ms and \
                         message.timestamp.after.max.ms around the broker's time)"
                    ),
                });
            }
            next += 1;
            true
        })?;
        if let Some(problem) = problem {
            return Err(BatchError::Records(problem));
        }
    }
    Ok(refused)
}

/// One record with its key, value and headers, borrowed from the batch (or
/// from its inflated records when the batch is compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// `None`: a null key.
    pub key: Option<&'a [u8]>,
    /// `None`: a null value (a tombstone in a compacted topic).
    pub value: Option<&'a [u8]>,
    pub headers: Vec<DecodedHeader<'a>>,
}

/// A record header: a key (a string by convention, not checked here) and a
/// nullable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedHeader<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

fn decode_record(record: RecordRef<'_>) -> Result<DecodedRecord<'_>, BatchError> {
    let truncated = || BatchError::Records("record header truncated".into());
    let data = record.headers;
    let mut at = 0;
    let count = read_varlong(data, &mut at)
        .ok_or_else(|| BatchError::Records("record header count truncated".into()))?;
    if count < 0 {
        return Err(BatchError::Records(format!("record has {count} headers")));
    }
    // Grown as headers are read: the count itself is not trusted.
    let mut headers = Vec::new();
    for _ in 0..count {
        let key = read_bytes(data, &mut at)
            .map_err(|_| truncated())?
            .ok_or_else(|| BatchError::Records("record header has a null key".into()))?;
        let value = read_bytes(data, &mut at).map_err(|_| truncated())?;
        headers.push(DecodedHeader { key, value });
    }
    Ok(DecodedRecord {
        offset_delta: record.offset_delta,
        timestamp_delta: record.timestamp_delta,
        key: record.key,
        value: record.value,
        headers,
    })
}

/// Calls `visit` with each record of one batch, fully decoded (key, value,
/// headers), inflating a compressed batch first (capped as for
/// `walk_records`). Every length is checked against the bytes present.
pub fn decode_records(
    batch: &[u8],
    mut visit: impl FnMut(DecodedRecord<'_>),
) -> Result<(), BatchError> {
    let mut failed = None;
    for_each_record(batch, |record| match decode_record(record) {
        Ok(decoded) => {
            visit(decoded);
            true
        }
        Err(error) => {
            failed = Some(error);
            false
        }
    })?;
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests::encode_batch;
    use kafka_protocol::records::Compression;

    #[test]
    fn every_codec_walks_and_validates() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_batch(5, codec);
            let mut deltas = Vec::new();
            walk_records(&batch, |r| {
                deltas.push((r.offset_delta, r.timestamp_delta));
                true
            })
            .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(
                deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
                vec![0, 1, 2, 3, 4],
                "{codec:?}"
            );
            assert_eq!(deltas[4].1, 4, "{codec:?}: timestamps are base + delta");
            let rules = RecordRules {
                require_keys: true,
                timestamp_window: Some((1_000, 1_004)),
            };
            let refused =
                validate_records(&batch, rules).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert!(refused.is_empty(), "{codec:?}: {refused:?}");
            // Timestamps 1000..=1004: the last two past a window ending at 1002.
            let narrow = RecordRules {
                timestamp_window: Some((0, 1_002)),
                ..rules
            };
            let refused = validate_records(&batch, narrow).expect("structure is fine");
            assert_eq!(
                refused.iter().map(|r| r.batch_index).collect::<Vec<_>>(),
                vec![3, 4],
                "{codec:?}"
            );
            assert!(
                refused
                    .iter()
                    .all(|r| r.fault == RecordFault::TimestampOutOfRange)
            );
        }
    }

    #[test]
    fn lies_about_counts_and_offsets_are_caught() {
        // A single record whose offset delta claims 5.
        let mut records: Vec<u8> = Vec::new();
        let body = [0u8, 0, 10, 1, 0, 0]; // attributes, ts delta 0, offset delta 5 (zig-zag 10), key -1? (1 = -1), value len 0, headers 0
        records.push((body.len() as u8) << 1);
        records.extend_from_slice(&body);
        let mut batch = encode_batch(1, Compression::None);
        batch.truncate(BATCH_HEADER_LEN);
        batch.extend_from_slice(&records);
        let len = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(
            validate_records(&batch, RecordRules::default()).is_err(),
            "offset delta 5 in a one-record batch"
        );
        // A header that claims many more records than there are.
        let mut batch = encode_batch(2, Compression::None);
        batch[57..61].copy_from_slice(&1_000_000i32.to_be_bytes());
        assert!(walk_records(&batch, |_| true).is_err());
        // Garbage that is not a gzip stream.
        let mut batch = encode_batch(2, Compression::None);
        batch[22] |= 1; // attributes low byte: gzip
        assert!(walk_records(&batch, |_| true).is_err());
    }

    #[test]
    fn a_zip_bomb_is_refused() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_INFLATED_BYTES >> 20) + 2 {
            gz.write_all(&zeros).expect("compress");
        }
        let bomb = gz.finish().expect("finish");
        assert!(bomb.len() < 2 << 20, "the bomb itself is small");
        let mut batch = encode_batch(1, Compression::None);
        batch.truncate(BATCH_HEADER_LEN);
        batch[22] = (batch[22] & !7) | 1;
        batch.extend_from_slice(&bomb);
        let err = walk_records(&batch, |_| true).expect_err("refused");
        assert!(err.to_string().contains("inflates beyond"), "{err}");
    }

    #[test]
    fn every_codec_decodes_keys_values_and_headers() {
        use bytes::{Bytes, BytesMut};
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{
            Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let record = |offset: i64, key: Option<&'static [u8]>, value: Option<&'static [u8]>| {
            let mut headers = kafka_protocol::indexmap::IndexMap::new();
            if offset == 1 {
                headers.insert(
                    StrBytes::from_static_str("trace"),
                    Some(Bytes::from_static(b"t1")),
                );
                headers.insert(StrBytes::from_static_str("empty"), None);
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset,
                sequence: offset as i32,
                timestamp: 1_000 + offset * 10,
                key: key.map(Bytes::from_static),
                value: value.map(Bytes::from_static),
                headers,
            }
        };
        let records = [
            record(0, Some(b"k0"), Some(b"v0")),
            record(1, None, Some(b"")),
            record(2, Some(b"k2"), None),
        ];
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut batch = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut batch,
                records.iter(),
                &RecordEncodeOptions {
                    version: 2,
                    compression: codec,
                },
            )
            .expect("encode");
            let mut seen = Vec::new();
            decode_records(&batch, |r| {
                let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = r
                    .headers
                    .iter()
                    .map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))
                    .collect();
                seen.push((
                    r.offset_delta,
                    r.timestamp_delta,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    headers,
                ));
            })
            .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            let expected = vec![
                (0, 0, Some(b"k0".to_vec()), Some(b"v0".to_vec()), vec![]),
                (
                    1,
                    10,
                    None,
                    Some(Vec::new()),
                    vec![
                        (b"trace".to_vec(), Some(b"t1".to_vec())),
                        (b"empty".to_vec(), None),
                    ],
                ),
                (2, 20, Some(b"k2".to_vec()), None, vec![]),
            ];
            assert_eq!(seen, expected, "{codec:?}");
        }
    }

    #[test]
    fn truncated_keys_and_headers_are_errors() {
        // attributes, ts delta 0, offset delta 0, key length 10 but 2 bytes.
        let body: &[u8] = &[0, 0, 0, 20, b'a', b'b'];
        let mut batch = encode_batch(1, Compression::None);
        batch.truncate(BATCH_HEADER_LEN);
        batch.extend_from_slice(&[(body.len() as u8) << 1]);
        batch.extend_from_slice(body);
        let err = decode_records(&batch, |_| {}).expect_err("truncated key");
        assert!(err.to_string().contains("record truncated"), "{err}");
        // A header count of a million with no header bytes: an error, not
        // an allocation.
        let body: &[u8] = &[0, 0, 0, 1, 1, 0x80, 0x89, 0x7a];
        let mut batch = encode_batch(1, Compression::None);
        batch.truncate(BATCH_HEADER_LEN);
        batch.extend_from_slice(&[(body.len() as u8) << 1]);
        batch.extend_from_slice(body);
        let err = decode_records(&batch, |_| {}).expect_err("missing headers");
        assert!(err.to_string().contains("record header truncated"), "{err}");
    }
}
