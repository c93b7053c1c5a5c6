//! Export of a topic's sealed segments as Parquet (`strata export parquet`).
//!
//! Reads the broker's metadata store (read-only) and object store, and writes
//! one Parquet file per sealed chunk (schema in [`parquet`]) to a destination
//! object store:
//!
//! ```text
//! <destination>/<topic>/partition=<p>/<first offset:020>-<last offset:020>.parquet
//! ```
//!
//! Guarantees:
//! - Only sealed chunks (segments and shared objects, `index_len > 0`) are
//!   exported; write-ahead chunks are left for a later run, once sealed.
//!   Records below the partition's log start offset, and control batches,
//!   are not exported.
//! - Only committed data is exported, as a read_committed consumer reads
//!   it: chunks at or above the partition's last stable offset (an open
//!   transaction) are left for a later run, and records of aborted
//!   transactions are skipped.
//! - A file's name is the offset range it covers; every offset of a
//!   partition is in at most one file. A run exports only the offsets no
//!   existing file covers (found by listing the partition's directory), so
//!   re-running is incremental, and chunks merged by the sealer since the
//!   last run are not exported twice. A range whose records are all control
//!   records still gets a file (with no rows), so it is not read again.
//! - Each file is written with one PUT, so a reader never sees a partial
//!   file; an interrupted run leaves whole files only.
//! - If an object disappears under the export (merged, or deleted by
//!   retention), the partition's chunks are looked up again and the export
//!   of that partition resumes.

pub mod parquet;

use std::ops::RangeInclusive;

use bytes::Bytes;
use object_store::path::Path;
use serde::Serialize;
use thiserror::Error;

use self::parquet::{FileBuilder, Row};
use crate::metadata::{
    AbortedTxn, ChunkRecord, MetadataError, MetadataStore, PartitionRecord, TopicRecord,
};
use crate::protocol::batch::{BatchError, iter_batches};
use crate::protocol::records::decode_records;
use crate::storage::object::{ObjectStorage, StorageError, StorageErrorKind};
use crate::storage::partition::is_aborted_batch;

/// Times a partition's export starts over after an object went missing.
const MISSING_OBJECT_RETRIES: usize = 3;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("partition {partition}, chunk at offset {base_offset} in {key}: {source}")]
    Decode {
        partition: i32,
        base_offset: i64,
        key: String,
        source: BatchError,
    },
    #[error("partition {partition}, chunk at offset {base_offset} in {key}: {message}")]
    Corrupt {
        partition: i32,
        base_offset: i64,
        key: String,
        message: String,
    },
    #[error("cannot write parquet for partition {partition}: {source}")]
    Parquet {
        partition: i32,
        source: ::parquet::errors::ParquetError,
    },
    #[error("export task failed: {0}")]
    Task(String),
}

/// What one run did; printed as one line of JSON.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub topic: String,
    pub destination: String,
    /// Parquet files written by this run.
    pub files_written: u64,
    /// Sealed chunks whose offsets existing files already cover.
    pub files_skipped: u64,
    /// Records in the files written.
    pub records: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Write-ahead (not yet sealed) chunks left for a later run.
    pub unsealed_chunks: u64,
    /// Sealed chunks at or above the last stable offset (an open
    /// transaction) left for a later run.
    pub unstable_chunks: u64,
}

/// The directory of one partition's files, relative to the destination.
fn partition_dir(topic: &str, partition: i32) -> String {
    format!("{topic}/partition={partition}")
}

/// The key of the file holding offsets `range` of a partition.
pub fn file_key(topic: &str, partition: i32, range: &RangeInclusive<i64>) -> Path {
    Path::from(format!(
        "{}/{:020}-{:020}.parquet",
        partition_dir(topic, partition),
        range.start(),
        range.end()
    ))
}

/// The offset range named by an exported file's name, if it is one.
fn parse_file_name(name: &str) -> Option<RangeInclusive<i64>> {
    let (first, last) = name.strip_suffix(".parquet")?.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some(first..=last)
}

/// The parts of `wanted` that no range of `covered` (sorted by start)
/// covers, in order.
fn uncovered(
    wanted: RangeInclusive<i64>,
    covered: &[RangeInclusive<i64>],
) -> Vec<RangeInclusive<i64>> {
    let mut gaps = Vec::new();
    let mut next = *wanted.start();
    for range in covered {
        if next > *wanted.end() {
            break;
        }
        if *range.end() < next {
            continue;
        }
        if *range.start() > *wanted.end() {
            break;
        }
        if *range.start() > next {
            gaps.push(next..=*range.start() - 1);
        }
        next = next.max(range.end().saturating_add(1));
    }
    if next <= *wanted.end() {
        gaps.push(next..=*wanted.end());
    }
    gaps
}

/// Whether the sealer has rewritten this chunk into a segment or shared
/// object (those carry a sparse index; write-ahead chunks do not).
fn is_sealed(chunk: &ChunkRecord) -> bool {
    chunk.index_len > 0
}

/// Exports every sealed chunk of `topic` not exported yet.
pub async fn export_topic(
    metadata: &dyn MetadataStore,
    source: &ObjectStorage,
    destination: &ObjectStorage,
    topic: &str,
) -> Result<ExportSummary, ExportError> {
    let record: TopicRecord = metadata
        .list_topics()
        .await?
        .into_iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| ExportError::UnknownTopic(topic.to_string()))?;
    let mut summary = ExportSummary {
        topic: topic.to_string(),
        destination: destination.description().to_string(),
        ..ExportSummary::default()
    };
    // Transactions, read in this order so that nothing uncommitted passes:
    // the high watermarks first (nothing above them is exported), then the
    // open transactions (a transaction open then is above the stable
    // offset), then the aborted ranges (a transaction that ended before
    // the open ones were read is in them, if it aborted).
    let partitions = metadata.partitions(record.id).await?;
    let open_all: Vec<(i32, i64)> = metadata
        .producer_states()
        .await?
        .into_iter()
        .filter(|s| s.topic_id == record.id)
        .filter_map(|s| s.state.txn_first_offset.map(|first| (s.partition, first)))
        .collect();
    let aborted_all: Vec<(i32, AbortedTxn)> = metadata
        .aborted_txns()
        .await?
        .into_iter()
        .filter(|(t, _, _)| *t == record.id)
        .map(|(_, p, a)| (p, a))
        .collect();
    for partition in partitions {
        let p = partition.partition;
        let txns = Transactions {
            aborted: aborted_all
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, a)| *a)
                .collect(),
            stable: open_all
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, first)| *first)
                .min()
                .unwrap_or(i64::MAX)
                .min(partition.high_watermark),
        };
        let mut attempt = 0;
        loop {
            let chunks = metadata.chunks(record.id, partition.partition).await?;
            let mut part = ExportSummary::default();
            match export_partition(
                topic,
                &partition,
                &chunks,
                &txns,
                source,
                destination,
                &mut part,
            )
            .await
            {
                Err(ExportError::Storage(e))
                    if e.kind == StorageErrorKind::NotFound
                        && e.op == "get"
                        && attempt < MISSING_OBJECT_RETRIES =>
                {
                    attempt += 1;
                    tracing::info!(partition = partition.partition, error = %e,
                        "an object went away under the export; looking the chunks up again");
                    // Files written before the miss count; the retry skips them.
                    summary.files_written += part.files_written;
                    summary.records += part.records;
                    summary.bytes += part.bytes;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    summary.files_written += part.files_written;
                    summary.files_skipped += part.files_skipped;
                    summary.records += part.records;
                    summary.bytes += part.bytes;
                    summary.unsealed_chunks += part.unsealed_chunks;
                    summary.unstable_chunks += part.unstable_chunks;
                    break;
                }
            }
        }
    }
    Ok(summary)
}

/// The offset ranges of a partition's existing files, sorted by start.
async fn exported_ranges(
    destination: &ObjectStorage,
    topic: &str,
    partition: i32,
) -> Result<Vec<RangeInclusive<i64>>, StorageError> {
    let listed = match destination.list(&partition_dir(topic, partition)).await {
        Ok(listed) => listed,
        Err(e) if e.kind == StorageErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut ranges: Vec<_> = listed
        .iter()
        .filter_map(|meta| meta.location.filename().and_then(parse_file_name))
        .collect();
    ranges.sort_by_key(|r| *r.start());
    Ok(ranges)
}

/// A partition's transactions as the export needs them.
struct Transactions {
    aborted: Vec<AbortedTxn>,
    /// The last stable offset.
    stable: i64,
}

async fn export_partition(
    topic: &str,
    partition: &PartitionRecord,
    chunks: &[ChunkRecord],
    txns: &Transactions,
    source: &ObjectStorage,
    destination: &ObjectStorage,
    summary: &mut ExportSummary,
) -> Result<(), ExportError> {
    let mut covered = exported_ranges(destination, topic, partition.partition).await?;
    for chunk in chunks {
        if !is_sealed(chunk) {
            summary.unsealed_chunks += 1;
            continue;
        }
        if chunk.last_offset >= txns.stable {
            summary.unstable_chunks += 1;
            continue;
        }
        let first = chunk.base_offset.max(partition.log_start_offset);
        if first > chunk.last_offset {
            continue; // wholly below the log start offset
        }
        let gaps = uncovered(first..=chunk.last_offset, &covered);
        if gaps.is_empty() {
            summary.files_skipped += 1;
            continue;
        }
        let key = Path::from(chunk.object_key.as_ref());
        let data = source
            .get_range(
                &key,
                chunk.byte_start..chunk.byte_start.saturating_add(chunk.byte_len),
            )
            .await?;
        let files = {
            let (chunk, gaps, id) = (chunk.clone(), gaps.clone(), partition.partition);
            let aborted = txns.aborted.clone();
            tokio::task::spawn_blocking(move || encode_chunk(id, &chunk, data, &gaps, &aborted))
                .await
                .map_err(|e| ExportError::Task(e.to_string()))??
        };
        for EncodedFile { range, file, rows } in files {
            let path = file_key(topic, partition.partition, &range);
            let len = file.len() as u64;
            destination.put(&path, Bytes::from(file)).await?;
            tracing::debug!(file = %path, rows, bytes = len, "exported");
            summary.files_written += 1;
            summary.records += rows;
            summary.bytes += len;
            covered.push(range);
        }
        covered.sort_by_key(|r| *r.start());
    }
    Ok(())
}

/// One Parquet file built from a chunk: the offsets it covers, its bytes
/// and its number of rows.
struct EncodedFile {
    range: RangeInclusive<i64>,
    file: Vec<u8>,
    rows: u64,
}

/// Decodes one chunk's record batches and builds one Parquet file per gap
/// (offset ranges, sorted).
fn encode_chunk(
    partition: i32,
    chunk: &ChunkRecord,
    data: Bytes,
    gaps: &[RangeInclusive<i64>],
    aborted: &[AbortedTxn],
) -> Result<Vec<EncodedFile>, ExportError> {
    let corrupt = |message: String| ExportError::Corrupt {
        partition,
        base_offset: chunk.base_offset,
        key: chunk.object_key.to_string(),
        message,
    };
    let parquet_error = |source| ExportError::Parquet { partition, source };
    if data.len() as u64 != chunk.byte_len {
        return Err(corrupt(format!(
            "read {} bytes, the chunk has {}",
            data.len(),
            chunk.byte_len
        )));
    }
    let mut builders = Vec::with_capacity(gaps.len());
    for _ in gaps {
        builders.push(FileBuilder::new().map_err(parquet_error)?);
    }
    let mut end = 0usize;
    let mut rows = Vec::new();
    for (pos, header) in iter_batches(&data) {
        let batch_len = header.total_len() as usize; // iter_batches checked it
        end = pos + batch_len;
        let in_some_gap = gaps
            .iter()
            .any(|g| header.base_offset() <= *g.end() && header.last_offset() >= *g.start());
        if header.is_control() || !in_some_gap || is_aborted_batch(&header, aborted) {
            continue;
        }
        let batch = &data[pos..end];
        let base_offset = header.base_offset();
        let base_timestamp = header.base_timestamp();
        let log_append_time = header.is_log_append_time();
        rows.clear();
        decode_records(batch, |record| {
            rows.push(Row {
                partition,
                offset: base_offset + i64::from(record.offset_delta),
                timestamp: if log_append_time {
                    header.max_timestamp()
                } else {
                    base_timestamp.saturating_add(record.timestamp_delta)
                },
                log_append_time,
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.map(<[u8]>::to_vec),
                headers: record
                    .headers
                    .iter()
                    .map(|h| {
                        let key = String::from_utf8_lossy(h.key).into_owned();
                        (key, h.value.map(<[u8]>::to_vec))
                    })
                    .collect(),
            });
        })
        .map_err(|source| ExportError::Decode {
            partition,
            base_offset: chunk.base_offset,
            key: chunk.object_key.to_string(),
            source,
        })?;
        for row in rows.drain(..) {
            if let Some(index) = gaps.iter().position(|g| g.contains(&row.offset)) {
                builders[index].push(row).map_err(parquet_error)?;
            }
        }
    }
    if end != data.len() {
        return Err(corrupt(format!(
            "the record batches end at byte {end} of {}",
            data.len()
        )));
    }
    let mut files = Vec::with_capacity(gaps.len());
    for (gap, builder) in gaps.iter().zip(builders) {
        let rows = builder.rows();
        let file = builder.finish().map_err(parquet_error)?;
        files.push(EncodedFile {
            range: gap.clone(),
            file,
            rows,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_others_are_ignored() {
        let key = file_key("orders", 3, &(42..=99));
        assert_eq!(
            key.as_ref(),
            "orders/partition=3/00000000000000000042-00000000000000000099.parquet"
        );
        assert_eq!(
            parse_file_name(key.filename().expect("file name")),
            Some(42..=99)
        );
        assert_eq!(parse_file_name("42-99.parquet"), None);
        assert_eq!(
            parse_file_name("00000000000000000099-00000000000000000042.parquet"),
            None
        );
        assert_eq!(parse_file_name("_SUCCESS"), None);
    }

    #[test]
    fn only_uncovered_offsets_are_wanted() {
        assert_eq!(uncovered(0..=9, &[]), vec![0..=9]);
        assert_eq!(
            uncovered(0..=9, &[0..=9]),
            Vec::<RangeInclusive<i64>>::new()
        );
        // Four small chunks merged into one: only what the files miss.
        assert_eq!(
            uncovered(0..=99, &[0..=9, 10..=19, 40..=59]),
            vec![20..=39, 60..=99]
        );
        assert_eq!(uncovered(10..=19, &[0..=14, 18..=30]), vec![15..=17]);
        assert_eq!(uncovered(5..=6, &[0..=1, 8..=9]), vec![5..=6]);
    }
}
