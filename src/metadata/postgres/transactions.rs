//! Transaction coordinator rows in PostgreSQL: one per transactional id,
//! the offsets its ongoing transaction will commit, and each partition's
//! aborted transactions (written with the abort marker's chunk).

use deadpool_postgres::GenericClient;

use super::groups::offset_from_row;
use super::{Client, parse_topic_id, tid};
use crate::metadata::rows::{decode_partitions, encode_partitions};
use crate::metadata::{
    AbortedTxn, CommittedOffset, MetadataError, Result, TopicId, TransactionRecord, TxnState,
};

pub(super) async fn upsert(client: &impl GenericClient, record: &TransactionRecord) -> Result<()> {
    let groups = serde_json::to_string(&record.groups)
        .map_err(|e| MetadataError::Backend(format!("encode transaction groups: {e}")))?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO transactions
                 (transactional_id, producer_id, producer_epoch, last_producer_id,
                  last_producer_epoch, timeout_ms, state, partitions, groups, start_ms, updated_ms,
                  coordinator_epoch)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (transactional_id) DO UPDATE SET
                 producer_id = excluded.producer_id,
                 producer_epoch = excluded.producer_epoch,
                 last_producer_id = excluded.last_producer_id,
                 last_producer_epoch = excluded.last_producer_epoch,
                 timeout_ms = excluded.timeout_ms,
                 state = excluded.state,
                 partitions = excluded.partitions,
                 groups = excluded.groups,
                 start_ms = excluded.start_ms,
                 updated_ms = excluded.updated_ms,
                 coordinator_epoch = excluded.coordinator_epoch
             WHERE transactions.coordinator_epoch <= excluded.coordinator_epoch",
        )
        .await?;
    let written = client
        .execute(
            &stmt,
            &[
                &record.transactional_id,
                &record.producer_id,
                &record.producer_epoch,
                &record.last_producer_id,
                &record.last_producer_epoch,
                &record.timeout_ms,
                &(record.state as i16),
                &encode_partitions(&record.partitions)?,
                &groups,
                &record.start_ms,
                &record.updated_ms,
                &record.coordinator_epoch,
            ],
        )
        .await?;
    if written == 0 {
        return Err(fenced(client, &record.transactional_id, record.coordinator_epoch).await?);
    }
    Ok(())
}

/// The refusal of a write under `epoch` to a transactional id whose row
/// was written under a newer coordinator epoch.
async fn fenced(
    client: &impl GenericClient,
    transactional_id: &str,
    epoch: i32,
) -> Result<MetadataError> {
    let row = client
        .query_one(
            "SELECT coordinator_epoch FROM transactions WHERE transactional_id = $1",
            &[&transactional_id],
        )
        .await?;
    let stored: i32 = row.try_get(0)?;
    Ok(MetadataError::Fenced(format!(
        "transactional id {transactional_id} is coordinated at epoch {stored}, not {epoch}"
    )))
}

/// Refuses (`Fenced`) a write under `epoch` when the id's row was written
/// under a newer coordinator epoch; locks the row (`lock`: `SHARE` or
/// `UPDATE`) until `tx` ends, so that the answer holds for its writes.
async fn check_epoch(
    tx: &impl GenericClient,
    transactional_id: &str,
    epoch: i32,
    lock: &str,
) -> Result<()> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT coordinator_epoch FROM transactions WHERE transactional_id = $1 FOR {lock}"
            ),
            &[&transactional_id],
        )
        .await?;
    match row {
        Some(row) if row.try_get::<_, i32>(0)? > epoch => {
            Err(fenced(tx, transactional_id, epoch).await?)
        }
        _ => Ok(()),
    }
}

pub(super) async fn put_offsets(
    client: &mut Client,
    transactional_id: &str,
    group: &str,
    coordinator_epoch: i32,
    offsets: &[CommittedOffset],
) -> Result<()> {
    let tx = client.transaction().await?;
    check_epoch(&tx, transactional_id, coordinator_epoch, "SHARE").await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO txn_offsets
                 (transactional_id, group_id, topic_id, partition, committed_offset,
                  leader_epoch, metadata, commit_ms)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8
             WHERE EXISTS (SELECT 1 FROM partitions WHERE topic_id = $3 AND partition = $4)
             ON CONFLICT (transactional_id, group_id, topic_id, partition) DO UPDATE SET
                 committed_offset = excluded.committed_offset,
                 leader_epoch = excluded.leader_epoch,
                 metadata = excluded.metadata,
                 commit_ms = excluded.commit_ms",
        )
        .await?;
    for o in offsets {
        tx.execute(
            &stmt,
            &[
                &transactional_id,
                &group,
                &tid(o.topic_id),
                &o.partition,
                &o.offset,
                &o.leader_epoch,
                &o.metadata,
                &o.commit_ms,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Stores a completed transaction and, on commit, makes its pending
/// offsets its groups' committed offsets; the pending rows go either way.
pub(super) async fn complete(
    client: &mut Client,
    record: &TransactionRecord,
    commit: bool,
) -> Result<()> {
    let tx = client.transaction().await?;
    check_epoch(
        &tx,
        &record.transactional_id,
        record.coordinator_epoch,
        "UPDATE",
    )
    .await?;
    if commit {
        tx.execute(
            "INSERT INTO group_offsets
                 (group_id, topic_id, partition, committed_offset, leader_epoch, metadata, commit_ms)
             SELECT group_id, topic_id, partition, committed_offset, leader_epoch, metadata,
                    commit_ms
             FROM txn_offsets WHERE transactional_id = $1
             ON CONFLICT (group_id, topic_id, partition) DO UPDATE SET
                 committed_offset = excluded.committed_offset,
                 leader_epoch = excluded.leader_epoch,
                 metadata = excluded.metadata,
                 commit_ms = excluded.commit_ms",
            &[&record.transactional_id],
        )
        .await?;
    }
    tx.execute(
        "DELETE FROM txn_offsets WHERE transactional_id = $1",
        &[&record.transactional_id],
    )
    .await?;
    upsert(&tx, record).await?;
    tx.commit().await?;
    Ok(())
}

type Loaded = Vec<(TransactionRecord, Vec<(String, CommittedOffset)>)>;

/// Every transactional id, or only `only`.
pub(super) async fn load(client: &Client, only: Option<&str>) -> Result<Loaded> {
    let rows = client
        .query(
            "SELECT transactional_id, producer_id, producer_epoch, last_producer_id,
                    last_producer_epoch, timeout_ms, state, partitions, groups, start_ms,
                    updated_ms, coordinator_epoch
             FROM transactions WHERE $1::text IS NULL OR transactional_id = $1
             ORDER BY transactional_id",
            &[&only],
        )
        .await?;
    let mut out: Loaded = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get(0)?;
        let code: i16 = r.try_get(6)?;
        let state = TxnState::from_code(i64::from(code)).ok_or_else(|| {
            MetadataError::Backend(format!("corrupt state {code} of transaction '{id}'"))
        })?;
        let groups: Vec<String> = serde_json::from_str(r.try_get(8)?).map_err(|e| {
            MetadataError::Backend(format!("corrupt groups of transaction '{id}': {e}"))
        })?;
        let partitions = decode_partitions(&id, r.try_get(7)?)?;
        out.push((
            TransactionRecord {
                producer_id: r.try_get(1)?,
                producer_epoch: r.try_get(2)?,
                last_producer_id: r.try_get(3)?,
                last_producer_epoch: r.try_get(4)?,
                timeout_ms: r.try_get(5)?,
                state,
                partitions,
                groups,
                start_ms: r.try_get(9)?,
                updated_ms: r.try_get(10)?,
                coordinator_epoch: r.try_get(11)?,
                transactional_id: id,
            },
            Vec::new(),
        ));
    }
    let rows = client
        .query(
            "SELECT transactional_id, group_id, topic_id, partition, committed_offset,
                    leader_epoch, metadata, commit_ms
             FROM txn_offsets WHERE $1::text IS NULL OR transactional_id = $1
             ORDER BY transactional_id",
            &[&only],
        )
        .await?;
    for r in rows {
        let id: &str = r.try_get(0)?;
        let Ok(at) = out.binary_search_by(|(t, _)| t.transactional_id.as_str().cmp(id)) else {
            continue; // a transaction deleted between the two reads
        };
        out[at].1.push((r.try_get(1)?, offset_from_row(&r, 2)?));
    }
    Ok(out)
}

/// Records aborted transactions of a partition (with the abort marker's chunk).
pub(super) async fn insert_aborted(
    client: &impl GenericClient,
    topic_id: TopicId,
    partition: i32,
    aborted: &[AbortedTxn],
) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO aborted_txns (topic_id, partition, producer_id, first_offset, last_offset)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (topic_id, partition, last_offset) DO UPDATE SET
                 producer_id = excluded.producer_id, first_offset = excluded.first_offset",
        )
        .await?;
    for a in aborted {
        client
            .execute(
                &stmt,
                &[
                    &tid(topic_id),
                    &partition,
                    &a.producer_id,
                    &a.first_offset,
                    &a.last_offset,
                ],
            )
            .await?;
    }
    Ok(())
}

fn aborted_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<AbortedTxn>> {
    rows.iter()
        .map(|r| {
            Ok(AbortedTxn {
                producer_id: r.try_get(0)?,
                first_offset: r.try_get(1)?,
                last_offset: r.try_get(2)?,
            })
        })
        .collect()
}

pub(super) async fn recent_aborted(
    client: &Client,
    id: TopicId,
    partition: i32,
    limit: usize,
) -> Result<Vec<AbortedTxn>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT producer_id, first_offset, last_offset FROM aborted_txns
             WHERE topic_id = $1 AND partition = $2 ORDER BY last_offset DESC LIMIT $3",
            &[&tid(id), &partition, &limit],
        )
        .await?;
    let mut aborted = aborted_rows(&rows)?;
    aborted.reverse();
    Ok(aborted)
}

pub(super) async fn aborted_range(
    client: &Client,
    id: TopicId,
    partition: i32,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<AbortedTxn>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT producer_id, first_offset, last_offset FROM aborted_txns
             WHERE topic_id = $1 AND partition = $2 AND last_offset >= $3 AND first_offset < $4
             ORDER BY last_offset LIMIT $5",
            &[&tid(id), &partition, &from, &to, &limit],
        )
        .await?;
    aborted_rows(&rows)
}

pub(super) async fn forget_aborted(
    client: &Client,
    id: TopicId,
    partition: i32,
    below: i64,
    keep: &[i64],
) -> Result<()> {
    let keep: Vec<i64> = keep.iter().copied().filter(|k| *k < below).collect();
    client
        .execute(
            "DELETE FROM aborted_txns
             WHERE topic_id = $1 AND partition = $2 AND last_offset < $3
               AND NOT (last_offset = ANY($4))",
            &[&tid(id), &partition, &below, &keep],
        )
        .await?;
    Ok(())
}

pub(super) async fn load_aborted(client: &Client) -> Result<Vec<(TopicId, i32, AbortedTxn)>> {
    let rows = client
        .query(
            "SELECT topic_id, partition, producer_id, first_offset, last_offset
             FROM aborted_txns ORDER BY topic_id, partition, last_offset",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                parse_topic_id(r.try_get(0)?)?,
                r.try_get(1)?,
                AbortedTxn {
                    producer_id: r.try_get(2)?,
                    first_offset: r.try_get(3)?,
                    last_offset: r.try_get(4)?,
                },
            ))
        })
        .collect()
}
