//! Rewriting a stored record batch with only some of its records (log
//! compaction). The batch keeps its base offset, last offset delta,
//! timestamps, producer fields and codec, so every kept record keeps its
//! offset and timestamp (records are stored as deltas from the batch's
//! base): the kept records' bytes are copied as they are, recompressed with
//! the batch's codec, and the header's record count, length and CRC
//! rewritten.

use bytes::{BufMut as _, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

use super::batch::{BATCH_HEADER_LEN, BATCH_LOG_OVERHEAD, BatchError, BatchHeader};
use super::records::{RecordRef, for_each_record};

const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_RECORD_COUNT: usize = 57;

/// What filtering did to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    /// Every record kept: the batch as it was.
    Unchanged,
    /// No record kept.
    Empty,
    /// Some records kept: the rewritten batch.
    Rewritten(Bytes),
}

/// Keeps the records of `batch` (one whole v2 batch) for which `keep`,
/// given each record's absolute offset, returns true.
pub fn filter_batch(
    batch: &[u8],
    mut keep: impl FnMut(i64, &RecordRef<'_>) -> bool,
) -> Result<Filtered, BatchError> {
    let header = BatchHeader::new(batch)?;
    let base = header.base_offset();
    let mut kept = Vec::with_capacity(batch.len());
    let (mut total, mut count) = (0usize, 0i32);
    for_each_record(batch, |record| {
        total += 1;
        if keep(base + i64::from(record.offset_delta), &record) {
            kept.extend_from_slice(record.raw);
            count += 1;
        }
        true
    })?;
    if count == 0 {
        return Ok(Filtered::Empty);
    }
    if count as usize == total {
        return Ok(Filtered::Unchanged);
    }
    let records = compress(header.compression(), kept)?;
    let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + records.len());
    out.put_slice(&batch[..BATCH_HEADER_LEN]);
    out.put_slice(&records);
    let len = i32::try_from(out.len() - BATCH_LOG_OVERHEAD)
        .map_err(|_| BatchError::Records("rewritten batch too large".into()))?;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    out[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[OFFSET_ATTRIBUTES..]);
    out[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Filtered::Rewritten(out.freeze()))
}

/// `records` compressed with Kafka's codec number `codec`.
fn compress(codec: i16, records: Vec<u8>) -> Result<Vec<u8>, BatchError> {
    fn with<C: Compressor<BytesMut>>(records: &[u8]) -> anyhow::Result<Vec<u8>>
    where
        C::BufMut: bytes::BufMut,
    {
        let mut out = BytesMut::new();
        C::compress(&mut out, |buf| {
            buf.put_slice(records);
            Ok(())
        })?;
        Ok(out.to_vec())
    }
    let compressed = match codec {
        0 => return Ok(records),
        1 => with::<Gzip>(&records),
        2 => with::<Snappy>(&records),
        3 => with::<Lz4>(&records),
        4 => with::<Zstd>(&records),
        other => {
            return Err(BatchError::Records(format!(
                "unknown compression codec {other}"
            )));
        }
    };
    compressed.map_err(|e| BatchError::Records(format!("cannot compress records: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests::encode_records;
    use kafka_protocol::records::Compression;

    #[test]
    fn kept_records_keep_offsets_timestamps_and_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_records(
                codec,
                (100..110).map(|o| {
                    (
                        o,
                        1_000 + o,
                        Bytes::from(format!("k{}", o % 3)),
                        Bytes::from(format!("v{o}")),
                    )
                }),
            );
            let Filtered::Rewritten(out) =
                filter_batch(&batch, |offset, _| offset % 2 == 1).expect("filter")
            else {
                panic!("{codec:?}: rewritten");
            };
            let header = BatchHeader::new(&out).expect("header");
            assert_eq!(header.base_offset(), 100, "{codec:?}");
            assert_eq!(header.last_offset(), 109, "{codec:?}: last offset kept");
            assert_eq!(header.record_count(), 5, "{codec:?}");
            assert_eq!(header.compression(), codec as i16, "{codec:?}");
            // Length and CRC as Kafka checks them...
            assert_eq!(header.total_len() as usize, out.len(), "{codec:?}");
            assert_eq!(header.crc(), crc32c::crc32c(&out[OFFSET_ATTRIBUTES..]));
            // ...and each kept record is where it was, with its value.
            let mut seen = Vec::new();
            for_each_record(&out, |r| {
                seen.push((
                    100 + i64::from(r.offset_delta),
                    r.timestamp_delta,
                    r.value.map(<[u8]>::to_vec),
                ));
                true
            })
            .expect("records");
            let want: Vec<_> = (100..110)
                .filter(|o| o % 2 == 1)
                .map(|o| (o, o - 100, Some(format!("v{o}").into_bytes())))
                .collect();
            assert_eq!(seen, want, "{codec:?}");
        }
    }

    #[test]
    fn all_or_nothing_kept() {
        let batch = encode_records(
            Compression::None,
            (0..3).map(|o| (o, 0, Bytes::from("k"), Bytes::from("v"))),
        );
        assert_eq!(filter_batch(&batch, |_, _| true), Ok(Filtered::Unchanged));
        assert_eq!(filter_batch(&batch, |_, _| false), Ok(Filtered::Empty));
    }
}
