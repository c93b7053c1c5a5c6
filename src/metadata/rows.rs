//! Row encodings both backends share: how ids and lists are stored as
//! text, and the check a sealing swap makes on the rows it takes.

use super::{MetadataError, Result, SealedChunk, TopicId};

/// A topic id as stored.
pub(crate) fn parse_topic_id(text: &str) -> Result<TopicId> {
    uuid::Uuid::parse_str(text)
        .map(TopicId)
        .map_err(|e| MetadataError::Backend(format!("corrupt topic id '{text}': {e}")))
}

/// A transaction's partitions as stored (JSON).
pub(crate) fn encode_partitions(partitions: &[(TopicId, i32)]) -> Result<String> {
    let list: Vec<(String, i32)> = partitions
        .iter()
        .map(|(t, p)| (t.0.to_string(), *p))
        .collect();
    serde_json::to_string(&list)
        .map_err(|e| MetadataError::Backend(format!("encode transaction partitions: {e}")))
}

pub(crate) fn decode_partitions(id: &str, text: &str) -> Result<Vec<(TopicId, i32)>> {
    let list: Vec<(String, i32)> = serde_json::from_str(text).map_err(|e| {
        MetadataError::Backend(format!("corrupt partitions of transaction '{id}': {e}"))
    })?;
    list.into_iter()
        .map(|(t, p)| Ok((parse_topic_id(&t)?, p)))
        .collect()
}

/// Whether the chunk rows a swap took out of `sealed`'s offset range
/// (`(base, last, object key)`, in any order) are exactly the chunks it
/// replaces, covering its offsets without a gap.
pub(crate) fn replaced_exactly(taken: &mut [(i64, i64, &str)], sealed: &SealedChunk) -> bool {
    taken.sort_unstable_by_key(|(base, ..)| *base);
    let (first, last) = (sealed.chunk.base_offset, sealed.chunk.last_offset);
    let mut next = first;
    !taken.is_empty()
        && taken.len() == sealed.replaces.len()
        && taken.iter().zip(&sealed.replaces).all(
            |((base, row_last, key), (want_key, want_base))| {
                let ok = *want_base == *base && *base == next && **want_key == **key;
                next = row_last + 1;
                ok
            },
        )
        && next == last + 1
}

/// A 10-byte write-ahead chunk of a 100-byte object, for unit tests.
#[cfg(test)]
pub(crate) fn test_chunk(base: i64, last: i64, key: &str) -> crate::metadata::ChunkRecord {
    crate::metadata::ChunkRecord {
        base_offset: base,
        last_offset: last,
        max_timestamp: 0,
        object_key: std::sync::Arc::from(key),
        object_size: 100,
        byte_start: 0,
        byte_len: 10,
        index_len: 0,
    }
}
