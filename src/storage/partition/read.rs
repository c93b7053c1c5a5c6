//! The partition's read path: locating the chunk that holds an offset,
//! reading record batches from it (through the block cache), and lookups by
//! timestamp.

use std::sync::Arc;

use bytes::Bytes;

use super::{PartitionLog, ReadCursor, ReadError};
use crate::metadata::ChunkRecord;
use crate::protocol::batch::{
    BATCH_HEADER_LEN, BatchHeader, cut_at_offset, iter_batches, slice_from_offset,
};
use crate::protocol::records::walk_records;
use crate::storage::cache::BlockCache;
use crate::storage::object::{StorageError, StorageErrorKind};
use crate::storage::segment;

impl PartitionLog {
    fn chunk_for(&self, offset: i64) -> Option<ChunkRecord> {
        let index = self.index.read().ok()?;
        let (_, chunk) = index.range(..=offset).next_back()?;
        (chunk.last_offset >= offset).then(|| chunk.clone())
    }

    async fn chunk_bytes(
        &self,
        cache: &BlockCache,
        chunk: &ChunkRecord,
        offset: i64,
    ) -> Result<Bytes, ReadError> {
        let range = chunk.byte_start..chunk.byte_start + chunk.byte_len;
        read_range(cache, chunk, range, offset).await
    }

    /// Where the batch holding `offset` starts in `chunk`'s object, and its
    /// total size: batch headers are walked from `from` (a batch boundary of
    /// the chunk, at or before it), each read a small slice of a cached
    /// block, so the rest of the chunk is never read.
    async fn locate(
        &self,
        cache: &BlockCache,
        chunk: &ChunkRecord,
        offset: i64,
        from: u64,
    ) -> Result<Option<(u64, u64)>, ReadError> {
        let end = chunk.byte_start + chunk.byte_len;
        let header_len = BATCH_HEADER_LEN as u64;
        let mut pos = from;
        while pos + header_len <= end {
            let head = read_range(cache, chunk, pos..pos + header_len, offset).await?;
            let malformed = || ReadError::Storage {
                offset,
                source: anyhow::anyhow!(
                    "malformed record batch at byte {pos} of {}",
                    chunk.object_key
                ),
            };
            let header = BatchHeader::new(&head).map_err(|_| malformed())?;
            let total = header.total_len();
            if total < BATCH_HEADER_LEN as i64 || pos + total as u64 > end {
                return Err(malformed());
            }
            if header.last_offset() >= offset {
                return Ok(Some((pos, total as u64)));
            }
            pos += total as u64;
        }
        Ok(None)
    }

    /// A batch boundary at or before `offset` in `chunk` remembered from the
    /// previous read, if that read ended in this chunk.
    fn cursor_for(&self, chunk: &ChunkRecord, offset: i64) -> Option<u64> {
        let guard = self.cursor.lock().ok()?;
        let cursor = guard.as_ref()?;
        (cursor.chunk_base == chunk.base_offset
            && cursor.object_key == chunk.object_key
            && cursor.next_offset <= offset)
            .then_some(cursor.byte_pos)
    }

    /// Where to start walking batch headers for `offset` in `chunk`: the
    /// previous read's end, else the sparse index's entry at or before it
    /// (sealed chunks), else the chunk's start.
    async fn start_for(
        &self,
        cache: &BlockCache,
        chunk: &ChunkRecord,
        offset: i64,
    ) -> Result<u64, ReadError> {
        if let Some(pos) = self.cursor_for(chunk, offset) {
            return Ok(pos);
        }
        if chunk.index_len >= segment::INDEX_ENTRY as u64 {
            let index = self.chunk_index(cache, chunk, offset).await?;
            if let Some(entry) = segment::seek_offset(&index, offset)
                && entry.position < chunk.byte_len
            {
                return Ok(chunk.byte_start + entry.position);
            }
        }
        Ok(chunk.byte_start)
    }

    /// A sealed chunk's sparse index (one ranged read, then cached).
    async fn chunk_index(
        &self,
        cache: &BlockCache,
        chunk: &ChunkRecord,
        offset: i64,
    ) -> Result<Bytes, ReadError> {
        let start = chunk.byte_start + chunk.byte_len;
        read_range(cache, chunk, start..start + chunk.index_len, offset).await
    }

    fn remember(&self, cursor: ReadCursor) {
        if let Ok(mut slot) = self.cursor.lock() {
            *slot = Some(cursor);
        }
    }

    /// Whole record batches starting with the one holding `offset`, up to
    /// `max_bytes` (at least one batch), continuing across chunks, and
    /// nothing at or above `high_watermark` (the one the caller reports; a
    /// high watermark is always a chunk boundary) nor any batch starting at
    /// or after `stable` (read_committed: the last stable offset, which
    /// may fall inside a chunk). Empty at the end. Only the bytes returned are read from the cache
    /// (plus batch headers to find the first one); a read within one cache
    /// block is a slice (no copy).
    pub async fn read(
        &self,
        cache: &BlockCache,
        offset: i64,
        high_watermark: i64,
        stable: i64,
        max_bytes: usize,
    ) -> Result<Bytes, ReadError> {
        // An object can disappear under a read that looked its chunk up
        // before a swap, if the read outlived the delete grace: look the
        // chunk up again (it is in its new object now) and retry.
        let mut attempts = 0;
        loop {
            match self
                .read_once(cache, offset, high_watermark, stable, max_bytes)
                .await
            {
                Err(ReadError::Storage { source, .. }) if attempts < 3 && is_not_found(&source) => {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    async fn read_once(
        &self,
        cache: &BlockCache,
        offset: i64,
        high_watermark: i64,
        stable: i64,
        max_bytes: usize,
    ) -> Result<Bytes, ReadError> {
        let (start, end) = (
            self.log_start_offset(),
            high_watermark.min(self.high_watermark()),
        );
        if offset < start || offset > end {
            return Err(ReadError::OutOfRange { offset, start, end });
        }
        let mut parts: Vec<Bytes> = Vec::new();
        let mut size = 0usize;
        let mut next = offset;
        let visible = stable.min(end);
        while next < visible {
            let chunk = self.chunk_for(next).ok_or(ReadError::Missing(next))?;
            let from = self.start_for(cache, &chunk, next).await?;
            let Some((pos, first_len)) = self.locate(cache, &chunk, next, from).await? else {
                // No batch at or after `next` here: compaction removed the
                // chunk's last records; go on with the next chunk.
                next = chunk.last_offset + 1;
                continue;
            };
            let budget = max_bytes.saturating_sub(size);
            // Past the first batch, nothing may exceed the budget.
            if !parts.is_empty() && first_len > budget as u64 {
                break;
            }
            let chunk_end = chunk.byte_start + chunk.byte_len;
            let read_end = (pos + (budget as u64).max(first_len)).min(chunk_end);
            let data = read_range(cache, &chunk, pos..read_end, next).await?;
            let part = slice_from_offset(&data, next, budget.max(1));
            let whole = part.len();
            let part = cut_at_offset(part, visible);
            let cut = part.len() < whole;
            if part.is_empty() || (!parts.is_empty() && part.len() > budget) {
                break;
            }
            let Some(last) = iter_batches(&part).last().map(|(_, h)| h.last_offset()) else {
                break;
            };
            self.remember(ReadCursor {
                object_key: Arc::clone(&chunk.object_key),
                chunk_base: chunk.base_offset,
                next_offset: last + 1,
                byte_pos: pos + part.len() as u64,
            });
            let read_to = pos + part.len() as u64;
            size += part.len();
            parts.push(part);
            if last < next || cut {
                break; // a malformed chunk, or the last stable offset
            }
            if read_to < chunk_end {
                break; // the budget filled inside this chunk
            }
            // The chunk is read to its end (its last records may have been
            // compacted away: it still ends at its last offset).
            next = last.max(chunk.last_offset) + 1;
        }
        Ok(match parts.len() {
            0 => Bytes::new(),
            1 => parts.swap_remove(0),
            _ => {
                let mut joined = bytes::BytesMut::with_capacity(size);
                for part in &parts {
                    joined.extend_from_slice(part);
                }
                joined.freeze()
            }
        })
    }

    /// `(offset, timestamp)` of the first record with a timestamp at or after
    /// `timestamp`, as ListOffsets answers; `None` if there is none. Chunks
    /// are looked at one at a time under the index lock (nothing is copied
    /// but the chunk that may hold it); in a sealed chunk only the index
    /// group that holds it is read.
    pub async fn offset_for_timestamp(
        &self,
        cache: &BlockCache,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, ReadError> {
        let mut from = self.log_start_offset();
        loop {
            let chunk = {
                let Ok(index) = self.index.read() else {
                    return Ok(None);
                };
                let first = index
                    .range(..=from)
                    .next_back()
                    .map(|(base, _)| *base)
                    .unwrap_or(from);
                index
                    .range(first..)
                    .map(|(_, c)| c)
                    .find(|c| c.last_offset >= from && c.max_timestamp >= timestamp)
                    .cloned()
            };
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            let mut range = chunk.byte_start..chunk.byte_start + chunk.byte_len;
            if chunk.index_len >= segment::INDEX_ENTRY as u64 {
                let index = self.chunk_index(cache, &chunk, chunk.base_offset).await?;
                if let Some((entry, next)) = segment::seek_timestamp(&index, timestamp) {
                    let end = next.map_or(chunk.byte_len, |n| n.min(chunk.byte_len));
                    if entry.position < end {
                        range = chunk.byte_start + entry.position..chunk.byte_start + end;
                    }
                }
            }
            let data = read_range(cache, &chunk, range, chunk.base_offset).await?;
            let start = self.log_start_offset();
            if let Some(found) =
                find_in_batches(data, move |offset, ts| offset >= start && ts >= timestamp).await?
            {
                return Ok(Some(found));
            }
            from = chunk.last_offset + 1;
        }
    }

    /// `(offset, timestamp)` of the first record carrying the largest timestamp.
    pub async fn max_timestamp_offset(
        &self,
        cache: &BlockCache,
    ) -> Result<Option<(i64, i64)>, ReadError> {
        let start = self.log_start_offset();
        let best = {
            let Ok(index) = self.index.read() else {
                return Ok(None);
            };
            index
                .values()
                .filter(|c| c.last_offset >= start)
                .reduce(|best, c| {
                    if c.max_timestamp > best.max_timestamp {
                        c
                    } else {
                        best
                    }
                })
                .cloned()
        };
        let Some(best) = best else {
            return Ok(None);
        };
        let data = self.chunk_bytes(cache, &best, best.base_offset).await?;
        let max = best.max_timestamp;
        find_in_batches(data, move |_, ts| ts >= max).await
    }
}

/// Bytes `range` of `chunk`'s object: a sealed chunk through read-ahead
/// windows of its own bytes, a write-ahead one through the cache's blocks
/// (its object was cached whole when it was written).
async fn read_range(
    cache: &BlockCache,
    chunk: &ChunkRecord,
    range: std::ops::Range<u64>,
    offset: i64,
) -> Result<Bytes, ReadError> {
    let result = if chunk.index_len > 0 {
        let extent = chunk.byte_start..chunk.byte_start + chunk.byte_len + chunk.index_len;
        cache.read_extent(&chunk.object_key, extent, range).await
    } else {
        cache
            .read(&chunk.object_key, chunk.object_size, range)
            .await
    };
    result.map_err(|source| ReadError::Storage { offset, source })
}

/// Whether a read failed because its object is gone.
fn is_not_found(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<StorageError>()
            .is_some_and(|e| e.kind == StorageErrorKind::NotFound)
    })
}

/// Scans stored batches for the first record whose timestamp satisfies
/// `want`; only batches whose max timestamp could match are walked. Runs on
/// the blocking pool: compressed batches are inflated.
async fn find_in_batches(
    data: Bytes,
    want: impl Fn(i64, i64) -> bool + Send + 'static,
) -> Result<Option<(i64, i64)>, ReadError> {
    tokio::task::spawn_blocking(move || {
        for (pos, header) in iter_batches(&data) {
            if !want(header.last_offset(), header.max_timestamp()) {
                continue;
            }
            // Log-append-time batches carry the time only in the header.
            if header.attributes() & 0x08 != 0 {
                return Ok(Some((header.base_offset(), header.max_timestamp())));
            }
            let batch = &data[pos..pos + header.total_len() as usize];
            let mut found = None;
            walk_records(batch, |record| {
                let timestamp = header
                    .base_timestamp()
                    .saturating_add(record.timestamp_delta);
                let offset = header.base_offset() + i64::from(record.offset_delta);
                if want(offset, timestamp) {
                    found = Some((
                        header.base_offset() + i64::from(record.offset_delta),
                        timestamp,
                    ));
                    return false;
                }
                true
            })
            .map_err(|e| ReadError::Storage {
                offset: header.base_offset(),
                source: anyhow::Error::new(e),
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    })
    .await
    .map_err(|e| ReadError::Storage {
        offset: -1,
        source: anyhow::anyhow!("timestamp scan failed: {e}"),
    })?
}
