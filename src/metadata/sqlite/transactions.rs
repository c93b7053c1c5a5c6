//! Transaction coordinator rows: one per transactional id, the offsets its
//! ongoing transaction will commit, and each partition's aborted
//! transactions (written with the abort marker's chunk).

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use crate::metadata::rows::{decode_partitions, encode_partitions, parse_topic_id};
use crate::metadata::{
    AbortedTxn, CommittedOffset, MetadataError, Result, TopicId, TransactionRecord, TxnState,
};

fn upsert(tx: &Transaction<'_>, record: &TransactionRecord) -> Result<()> {
    let groups = serde_json::to_string(&record.groups)
        .map_err(|e| MetadataError::Backend(format!("encode transaction groups: {e}")))?;
    let written = tx
        .prepare_cached(
            "INSERT INTO transactions
             (transactional_id, producer_id, producer_epoch, last_producer_id,
              last_producer_epoch, timeout_ms, state, partitions, groups, start_ms, updated_ms,
              coordinator_epoch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
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
        )?
        .execute(params![
            record.transactional_id,
            record.producer_id,
            record.producer_epoch,
            record.last_producer_id,
            record.last_producer_epoch,
            record.timeout_ms,
            record.state as i64,
            encode_partitions(&record.partitions)?,
            groups,
            record.start_ms,
            record.updated_ms,
            record.coordinator_epoch,
        ])?;
    if written == 0 {
        return Err(fenced(
            tx,
            &record.transactional_id,
            record.coordinator_epoch,
        )?);
    }
    Ok(())
}

/// The refusal of a write under `epoch` to a transactional id whose row
/// was written under a newer coordinator epoch.
fn fenced(tx: &Transaction<'_>, transactional_id: &str, epoch: i32) -> Result<MetadataError> {
    let stored: i32 = tx.query_row(
        "SELECT coordinator_epoch FROM transactions WHERE transactional_id = ?1",
        params![transactional_id],
        |r| r.get(0),
    )?;
    Ok(MetadataError::Fenced(format!(
        "transactional id {transactional_id} is coordinated at epoch {stored}, not {epoch}"
    )))
}

pub(super) fn put(conn: &mut Connection, record: &TransactionRecord) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    upsert(&tx, record)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn put_offsets(
    conn: &mut Connection,
    transactional_id: &str,
    group: &str,
    coordinator_epoch: i32,
    offsets: &[CommittedOffset],
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let newer: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM transactions
                        WHERE transactional_id = ?1 AND coordinator_epoch > ?2)",
        params![transactional_id, coordinator_epoch],
        |r| r.get(0),
    )?;
    if newer {
        return Err(fenced(&tx, transactional_id, coordinator_epoch)?);
    }
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO txn_offsets
                 (transactional_id, group_id, topic_id, partition, committed_offset,
                  leader_epoch, metadata, commit_ms)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE EXISTS (SELECT 1 FROM partitions WHERE topic_id = ?3 AND partition = ?4)
             ON CONFLICT (transactional_id, group_id, topic_id, partition) DO UPDATE SET
                 committed_offset = excluded.committed_offset,
                 leader_epoch = excluded.leader_epoch,
                 metadata = excluded.metadata,
                 commit_ms = excluded.commit_ms",
        )?;
        for o in offsets {
            stmt.execute(params![
                transactional_id,
                group,
                o.topic_id.0.to_string(),
                o.partition,
                o.offset,
                o.leader_epoch,
                o.metadata,
                o.commit_ms
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Stores a completed transaction and, on commit, makes its pending
/// offsets its groups' committed offsets; the pending rows go either way.
pub(super) fn complete(
    conn: &mut Connection,
    record: &TransactionRecord,
    commit: bool,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if commit {
        tx.prepare_cached(
            "INSERT INTO group_offsets
                 (group_id, topic_id, partition, committed_offset, leader_epoch, metadata, commit_ms)
             SELECT group_id, topic_id, partition, committed_offset, leader_epoch, metadata, commit_ms
             FROM txn_offsets WHERE transactional_id = ?1
             ON CONFLICT (group_id, topic_id, partition) DO UPDATE SET
                 committed_offset = excluded.committed_offset,
                 leader_epoch = excluded.leader_epoch,
                 metadata = excluded.metadata,
                 commit_ms = excluded.commit_ms",
        )?
        .execute(params![record.transactional_id])?;
    }
    tx.prepare_cached("DELETE FROM txn_offsets WHERE transactional_id = ?1")?
        .execute(params![record.transactional_id])?;
    upsert(&tx, record)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn delete(conn: &mut Connection, ids: &[String]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut offsets =
            tx.prepare_cached("DELETE FROM txn_offsets WHERE transactional_id = ?1")?;
        let mut records =
            tx.prepare_cached("DELETE FROM transactions WHERE transactional_id = ?1")?;
        for id in ids {
            offsets.execute(params![id])?;
            records.execute(params![id])?;
        }
    }
    tx.commit()?;
    Ok(())
}

type Loaded = Vec<(TransactionRecord, Vec<(String, CommittedOffset)>)>;

/// Every transactional id, or only `only`.
pub(super) fn load(conn: &Connection, only: Option<&str>) -> Result<Loaded> {
    let mut stmt = conn.prepare(
        "SELECT transactional_id, producer_id, producer_epoch, last_producer_id,
                last_producer_epoch, timeout_ms, state, partitions, groups, start_ms, updated_ms,
                coordinator_epoch
         FROM transactions WHERE ?1 IS NULL OR transactional_id = ?1
         ORDER BY transactional_id",
    )?;
    let rows = stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i16>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i16>(4)?,
            r.get::<_, i32>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, String>(8)?,
            r.get::<_, i64>(9)?,
            r.get::<_, i64>(10)?,
            r.get::<_, i32>(11)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            id,
            pid,
            epoch,
            last_pid,
            last_epoch,
            timeout,
            state,
            parts,
            groups,
            start,
            updated,
            coordinator,
        ) = row?;
        let state = TxnState::from_code(state).ok_or_else(|| {
            MetadataError::Backend(format!("corrupt state {state} of transaction '{id}'"))
        })?;
        let groups: Vec<String> = serde_json::from_str(&groups).map_err(|e| {
            MetadataError::Backend(format!("corrupt groups of transaction '{id}': {e}"))
        })?;
        let partitions = decode_partitions(&id, &parts)?;
        out.push((
            TransactionRecord {
                transactional_id: id,
                producer_id: pid,
                producer_epoch: epoch,
                last_producer_id: last_pid,
                last_producer_epoch: last_epoch,
                timeout_ms: timeout,
                state,
                partitions,
                groups,
                start_ms: start,
                updated_ms: updated,
                coordinator_epoch: coordinator,
            },
            Vec::new(),
        ));
    }
    let mut stmt = conn.prepare(
        "SELECT transactional_id, group_id, topic_id, partition, committed_offset,
                leader_epoch, metadata, commit_ms
         FROM txn_offsets WHERE ?1 IS NULL OR transactional_id = ?1
         ORDER BY transactional_id",
    )?;
    let rows = stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i32>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i32>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, i64>(7)?,
        ))
    })?;
    for row in rows {
        let (id, group, topic, partition, offset, leader_epoch, metadata, commit_ms) = row?;
        let Ok(at) = out.binary_search_by(|(r, _)| r.transactional_id.as_str().cmp(&id)) else {
            continue; // cannot happen: rows go with their transaction
        };
        out[at].1.push((
            group,
            CommittedOffset {
                topic_id: parse_topic_id(&topic)?,
                partition,
                offset,
                leader_epoch,
                metadata,
                commit_ms,
            },
        ));
    }
    Ok(out)
}

/// Records aborted transactions of a partition (with the abort marker's chunk).
pub(super) fn insert_aborted(
    tx: &Transaction<'_>,
    topic_id: TopicId,
    partition: i32,
    aborted: &[AbortedTxn],
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO aborted_txns
             (topic_id, partition, producer_id, first_offset, last_offset)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for a in aborted {
        stmt.execute(params![
            topic_id.0.to_string(),
            partition,
            a.producer_id,
            a.first_offset,
            a.last_offset
        ])?;
    }
    Ok(())
}

/// Forgets a partition's aborted transactions wholly below its log start.
pub(super) fn trim_aborted(
    tx: &Transaction<'_>,
    topic_id: TopicId,
    partition: i32,
    log_start: i64,
) -> Result<()> {
    tx.prepare_cached(
        "DELETE FROM aborted_txns WHERE topic_id = ?1 AND partition = ?2 AND last_offset < ?3",
    )?
    .execute(params![topic_id.0.to_string(), partition, log_start])?;
    Ok(())
}

fn aborted_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AbortedTxn> {
    Ok(AbortedTxn {
        producer_id: r.get(0)?,
        first_offset: r.get(1)?,
        last_offset: r.get(2)?,
    })
}

pub(super) fn recent_aborted(
    conn: &Connection,
    id: TopicId,
    partition: i32,
    limit: usize,
) -> Result<Vec<AbortedTxn>> {
    let mut stmt = conn.prepare_cached(
        "SELECT producer_id, first_offset, last_offset FROM aborted_txns
         WHERE topic_id = ?1 AND partition = ?2 ORDER BY last_offset DESC LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt
        .query_map(params![id.0.to_string(), partition, limit], aborted_row)?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    rows.reverse();
    Ok(rows)
}

pub(super) fn aborted_range(
    conn: &Connection,
    id: TopicId,
    partition: i32,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<AbortedTxn>> {
    let mut stmt = conn.prepare_cached(
        "SELECT producer_id, first_offset, last_offset FROM aborted_txns
         WHERE topic_id = ?1 AND partition = ?2 AND last_offset >= ?3 AND first_offset < ?4
         ORDER BY last_offset LIMIT ?5",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(
            params![id.0.to_string(), partition, from, to, limit],
            aborted_row,
        )?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn forget_aborted(
    conn: &mut Connection,
    id: TopicId,
    partition: i32,
    below: i64,
    keep: &[i64],
) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM aborted_txns
             WHERE topic_id = ?1 AND partition = ?2 AND last_offset < ?3 AND last_offset > ?4",
        )?;
        // Between the kept markers, so each statement is one range.
        let mut bounds: Vec<i64> = keep.iter().copied().filter(|k| *k < below).collect();
        bounds.sort_unstable();
        let mut low = i64::MIN;
        for high in bounds.into_iter().chain(std::iter::once(below)) {
            stmt.execute(params![id.0.to_string(), partition, high, low])?;
            low = high;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn load_aborted(conn: &Connection) -> Result<Vec<(TopicId, i32, AbortedTxn)>> {
    let mut stmt = conn.prepare(
        "SELECT topic_id, partition, producer_id, first_offset, last_offset
         FROM aborted_txns ORDER BY topic_id, partition, last_offset",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i32>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (topic, partition, producer_id, first_offset, last_offset) = row?;
        out.push((
            parse_topic_id(&topic)?,
            partition,
            AbortedTxn {
                producer_id,
                first_offset,
                last_offset,
            },
        ));
    }
    Ok(out)
}
