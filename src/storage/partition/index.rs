//! A partition's chunk index: its chunks by base offset, and the bytes they
//! hold in all, kept as chunks come and go so retention by size needs no
//! walk over a long-retained partition's whole index.

use std::collections::BTreeMap;

use crate::metadata::ChunkRecord;

#[derive(Debug, Default)]
pub struct ChunkIndex {
    chunks: BTreeMap<i64, ChunkRecord>,
    bytes: u64,
}

impl ChunkIndex {
    pub fn new(chunks: impl IntoIterator<Item = ChunkRecord>) -> Self {
        let mut index = Self::default();
        for chunk in chunks {
            index.insert(chunk);
        }
        index
    }

    /// Adds `chunk` (replacing one at the same base offset).
    pub fn insert(&mut self, chunk: ChunkRecord) {
        self.bytes += chunk.byte_len;
        if let Some(old) = self.chunks.insert(chunk.base_offset, chunk) {
            self.bytes -= old.byte_len;
        }
    }

    pub fn remove(&mut self, base: &i64) -> Option<ChunkRecord> {
        let removed = self.chunks.remove(base)?;
        self.bytes -= removed.byte_len;
        Some(removed)
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }

    /// The bytes of every chunk in the index.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::ops::Deref for ChunkIndex {
    type Target = BTreeMap<i64, ChunkRecord>;
    fn deref(&self) -> &Self::Target {
        &self.chunks
    }
}
