//! The layout of sealed objects (one partition's segment, or a shared object
//! holding several partitions' chunks).
//!
//! A sealed object is a run of sections, one per chunk, ordered by topic id
//! and partition, then a footer:
//!
//! ```text
//! section  = record batches, as stored | sparse index
//! index    = entry*            entry = base offset of a batch   (i64 BE)
//!                                      its byte position in the section (u32 BE)
//!                                      largest max timestamp of the batches
//!                                      from this entry to the next  (i64 BE)
//! footer   = section entry* | section count (u32 BE) | "STRATASG"
//! section entry = topic id (16) | partition (i32) | base offset (i64)
//!                 | last offset (i64) | max timestamp (i64)
//!                 | data start (u64) | data length (u64) | index length (u32)
//! ```
//!
//! An index entry is written for a section's first batch, then for the
//! first batch that starts at least `interval` bytes after the previous
//! entry. The metadata row of a chunk carries its data range and index
//! length (the index follows the data), so a reader fetches the index with
//! one ranged read (then cached) and jumps to the batch it needs; the footer
//! makes an object self-describing (for tools and recovery), nothing on the
//! read path needs it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::metadata::TopicId;
use crate::protocol::batch::iter_batches;

pub const INDEX_ENTRY: usize = 20;
const SECTION_ENTRY: usize = 16 + 4 + 8 + 8 + 8 + 8 + 8 + 4;
const MAGIC: &[u8; 8] = b"STRATASG";

/// One section of a sealed object being built.
#[derive(Debug, Clone)]
pub struct Section {
    pub topic_id: TopicId,
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub data_start: u64,
    pub data_len: u64,
    pub index_len: u64,
}

/// Builds a sealed object from sections, each made of stored record
/// batches; the parts are kept as they are (no copy of the data).
pub struct ObjectBuilder {
    interval: usize,
    parts: Vec<Bytes>,
    size: u64,
    sections: Vec<Section>,
}

impl ObjectBuilder {
    pub fn new(interval: usize) -> Self {
        Self {
            interval: interval.max(1),
            parts: Vec::new(),
            size: 0,
            sections: Vec::new(),
        }
    }

    /// Appends one partition's section: `chunks` hold whole record batches,
    /// contiguous in offsets, in order. Returns the section's record.
    pub fn add_section(
        &mut self,
        topic_id: TopicId,
        partition: i32,
        chunks: Vec<Bytes>,
    ) -> Section {
        let data_start = self.size;
        let mut index = BytesMut::new();
        let mut pos = 0u64;
        let mut since_entry = usize::MAX;
        let mut entry_ts_at: Option<usize> = None;
        let (mut base, mut last, mut max_ts) = (i64::MAX, -1i64, -1i64);
        for chunk in chunks {
            for (at, header) in iter_batches(&chunk) {
                let total = header.total_len() as usize;
                if since_entry >= self.interval {
                    index.put_i64(header.base_offset());
                    index.put_u32(u32::try_from(pos + at as u64).unwrap_or(u32::MAX));
                    entry_ts_at = Some(index.len());
                    index.put_i64(-1);
                    since_entry = 0;
                }
                if let Some(ts_at) = entry_ts_at {
                    let current =
                        i64::from_be_bytes(index[ts_at..ts_at + 8].try_into().unwrap_or([0xff; 8]));
                    if header.max_timestamp() > current {
                        index[ts_at..ts_at + 8]
                            .copy_from_slice(&header.max_timestamp().to_be_bytes());
                    }
                }
                since_entry = since_entry.saturating_add(total);
                base = base.min(header.base_offset());
                last = last.max(header.last_offset());
                max_ts = max_ts.max(header.max_timestamp());
            }
            pos += chunk.len() as u64;
            self.size += chunk.len() as u64;
            self.parts.push(chunk);
        }
        let index_len = index.len() as u64;
        self.size += index_len;
        self.parts.push(index.freeze());
        let section = Section {
            topic_id,
            partition,
            base_offset: base,
            last_offset: last,
            max_timestamp: max_ts,
            data_start,
            data_len: pos,
            index_len,
        };
        self.sections.push(section.clone());
        section
    }

    /// `add_section` for a section that covers `base_offset..=last_offset`
    /// whatever offsets its batches hold (compaction keeps each chunk's
    /// range, gaps included, so the log stays contiguous).
    pub fn add_section_covering(
        &mut self,
        topic_id: TopicId,
        partition: i32,
        chunks: Vec<Bytes>,
        base_offset: i64,
        last_offset: i64,
    ) -> Section {
        let mut section = self.add_section(topic_id, partition, chunks);
        section.base_offset = base_offset;
        section.last_offset = last_offset;
        if let Some(stored) = self.sections.last_mut() {
            stored.base_offset = base_offset;
            stored.last_offset = last_offset;
        }
        section
    }

    /// The object's parts (footer last) and its total size.
    pub fn finish(mut self) -> (Vec<Bytes>, u64) {
        let mut footer = BytesMut::with_capacity(self.sections.len() * SECTION_ENTRY + 12);
        for s in &self.sections {
            footer.put_slice(s.topic_id.0.as_bytes());
            footer.put_i32(s.partition);
            footer.put_i64(s.base_offset);
            footer.put_i64(s.last_offset);
            footer.put_i64(s.max_timestamp);
            footer.put_u64(s.data_start);
            footer.put_u64(s.data_len);
            footer.put_u32(u32::try_from(s.index_len).unwrap_or(u32::MAX));
        }
        footer.put_u32(self.sections.len() as u32);
        footer.put_slice(MAGIC);
        self.size += footer.len() as u64;
        self.parts.push(footer.freeze());
        (self.parts, self.size)
    }
}

/// One decoded index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub base_offset: i64,
    pub position: u64,
    pub max_timestamp: i64,
}

fn entry(index: &[u8], i: usize) -> Option<IndexEntry> {
    let e = index.get(i * INDEX_ENTRY..(i + 1) * INDEX_ENTRY)?;
    Some(IndexEntry {
        base_offset: i64::from_be_bytes(e[0..8].try_into().ok()?),
        position: u64::from(u32::from_be_bytes(e[8..12].try_into().ok()?)),
        max_timestamp: i64::from_be_bytes(e[12..20].try_into().ok()?),
    })
}

/// The last entry whose batch starts at or before `offset` (binary search).
pub fn seek_offset(index: &[u8], offset: i64) -> Option<IndexEntry> {
    let n = index.len() / INDEX_ENTRY;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if entry(index, mid)?.base_offset <= offset {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1).and_then(|i| entry(index, i))
}

/// The first entry whose batches hold a timestamp at or after `timestamp`,
/// and where its group of batches ends (the next entry's position; `None`:
/// the section's end).
pub fn seek_timestamp(index: &[u8], timestamp: i64) -> Option<(IndexEntry, Option<u64>)> {
    let n = index.len() / INDEX_ENTRY;
    let i = (0..n).find(|&i| entry(index, i).is_some_and(|e| e.max_timestamp >= timestamp))?;
    Some((entry(index, i)?, entry(index, i + 1).map(|e| e.position)))
}

/// Decodes a sealed object's footer (for tools and tests).
pub fn read_footer(object: &[u8]) -> Option<Vec<Section>> {
    let tail = object.len().checked_sub(12)?;
    if &object[tail + 4..] != MAGIC {
        return None;
    }
    let count = u32::from_be_bytes(object[tail..tail + 4].try_into().ok()?) as usize;
    let start = tail.checked_sub(count.checked_mul(SECTION_ENTRY)?)?;
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let e = &object[start + i * SECTION_ENTRY..start + (i + 1) * SECTION_ENTRY];
        let u64_at = |at: usize| u64::from_be_bytes(e[at..at + 8].try_into().unwrap_or_default());
        sections.push(Section {
            topic_id: TopicId(uuid::Uuid::from_slice(&e[0..16]).ok()?),
            partition: i32::from_be_bytes(e[16..20].try_into().ok()?),
            base_offset: u64_at(20) as i64,
            last_offset: u64_at(28) as i64,
            max_timestamp: u64_at(36) as i64,
            data_start: u64_at(44),
            data_len: u64_at(52),
            index_len: u64::from(u32::from_be_bytes(e[60..64].try_into().ok()?)),
        });
    }
    Some(sections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests::encode_records;
    use kafka_protocol::records::Compression;

    /// One stored batch of `n` records from `base`, all at `timestamp`.
    fn batch(base: i64, n: usize, timestamp: i64, value_len: usize) -> Bytes {
        encode_records(
            Compression::None,
            (base..base + n as i64).map(|offset| {
                let key = Bytes::from(format!("k{offset}"));
                (offset, timestamp, key, Bytes::from(vec![b'v'; value_len]))
            }),
        )
        .freeze()
    }

    #[test]
    fn sections_index_and_footer_round_trip() {
        let topic = TopicId(uuid::Uuid::from_u128(7));
        // Batches of 3 records at offsets 0, 3, 6, ...; timestamps go down
        // and up so that the index keeps maxima, not the last value.
        let batches: Vec<Bytes> = (0..40)
            .map(|i| batch(i * 3, 3, 1_000 + (i % 7) * 100, 200))
            .collect();
        let mut builder = ObjectBuilder::new(1_000);
        let first = builder.add_section(topic, 0, batches[..20].to_vec());
        let second = builder.add_section(topic, 1, batches[20..].to_vec());
        let (parts, size) = builder.finish();
        let object: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(object.len() as u64, size);
        assert_eq!((first.base_offset, first.last_offset), (0, 59));
        assert_eq!((second.base_offset, second.last_offset), (60, 119));
        assert_eq!(second.data_start, first.data_len + first.index_len);
        assert_eq!(read_footer(&object).map(|s| s.len()), Some(2));

        let index_at = (first.data_start + first.data_len) as usize;
        let index = &object[index_at..index_at + first.index_len as usize];
        assert!(
            index.len() / INDEX_ENTRY > 2,
            "sparse, but more than one entry"
        );
        // Every offset finds an entry at or before it, whose position is a
        // batch starting there.
        for offset in 0..60 {
            let e = seek_offset(index, offset).expect("entry");
            assert!(e.base_offset <= offset);
            let at = (first.data_start + e.position) as usize;
            let header = crate::protocol::batch::BatchHeader::new(&object[at..]).expect("batch");
            assert_eq!(header.base_offset(), e.base_offset);
        }
        assert_eq!(seek_offset(index, -1), None);
        // The first batch with a timestamp >= 1,600 is batch 6 (offset 18).
        let (e, end) = seek_timestamp(index, 1_600).expect("entry");
        assert!(e.base_offset <= 18 && e.max_timestamp >= 1_600);
        assert!(end.is_some_and(|end| end > e.position));
        assert_eq!(seek_timestamp(index, 5_000), None);
    }
}
