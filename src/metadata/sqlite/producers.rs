//! Idempotent producer ids and states in SQLite. A state is written by
//! `upsert` inside the commit transaction of the chunk it covers.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::parse_topic_id;
use crate::metadata::{
    MetadataError, PartitionProducerState, ProducerBatchRecord, ProducerStateRecord, Result,
    TopicId,
};

pub(super) fn allocate(conn: &mut Connection) -> Result<i64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let next: Option<i64> = tx
        .query_row(
            "SELECT next_producer_id FROM producer_ids WHERE id = 0",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let id = next.unwrap_or(0);
    tx.execute(
        "INSERT INTO producer_ids (id, next_producer_id) VALUES (0, ?1)
         ON CONFLICT (id) DO UPDATE SET next_producer_id = excluded.next_producer_id",
        params![id + 1],
    )?;
    tx.commit()?;
    Ok(id)
}

pub(super) fn issued(conn: &Connection, producer_id: i64) -> Result<bool> {
    let next: Option<i64> = conn
        .query_row(
            "SELECT next_producer_id FROM producer_ids WHERE id = 0",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(producer_id >= 0 && producer_id < next.unwrap_or(0))
}

pub(super) fn upsert(
    tx: &Transaction<'_>,
    topic_id: TopicId,
    partition: i32,
    state: &ProducerStateRecord,
) -> Result<()> {
    let batches = serde_json::to_string(&state.batches)
        .map_err(|e| MetadataError::Backend(format!("encode producer batches: {e}")))?;
    tx.prepare_cached(
        "INSERT INTO producer_state
             (topic_id, partition, producer_id, epoch, batches, last_append_ms, txn_first_offset)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (topic_id, partition, producer_id) DO UPDATE SET
             epoch = excluded.epoch, batches = excluded.batches,
             last_append_ms = excluded.last_append_ms,
             txn_first_offset = excluded.txn_first_offset",
    )?
    .execute(params![
        topic_id.0.to_string(),
        partition,
        state.producer_id,
        state.epoch,
        batches,
        state.last_append_ms,
        state.txn_first_offset
    ])?;
    Ok(())
}

pub(super) fn load_all(conn: &Connection) -> Result<Vec<PartitionProducerState>> {
    let mut stmt = conn.prepare(
        "SELECT topic_id, partition, producer_id, epoch, batches, last_append_ms, txn_first_offset
         FROM producer_state",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i32>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i16>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Option<i64>>(6)?,
        ))
    })?;
    let mut states = Vec::new();
    for row in rows {
        let (topic, partition, producer_id, epoch, batches, last_append_ms, txn_first_offset) =
            row?;
        let batches: Vec<ProducerBatchRecord> = serde_json::from_str(&batches).map_err(|e| {
            MetadataError::Backend(format!("corrupt state of producer {producer_id}: {e}"))
        })?;
        states.push(PartitionProducerState {
            topic_id: parse_topic_id(&topic)?,
            partition,
            state: ProducerStateRecord {
                producer_id,
                epoch,
                batches,
                last_append_ms,
                txn_first_offset,
            },
        });
    }
    Ok(states)
}

/// One partition's producer states.
pub(super) fn load_partition(
    conn: &Connection,
    topic_id: TopicId,
    partition: i32,
) -> Result<Vec<ProducerStateRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT producer_id, epoch, batches, last_append_ms, txn_first_offset
         FROM producer_state WHERE topic_id = ?1 AND partition = ?2",
    )?;
    let rows = stmt.query_map(params![topic_id.0.to_string(), partition], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i16>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    let mut states = Vec::new();
    for row in rows {
        let (producer_id, epoch, batches, last_append_ms, txn_first_offset) = row?;
        let batches: Vec<ProducerBatchRecord> = serde_json::from_str(&batches).map_err(|e| {
            MetadataError::Backend(format!("corrupt state of producer {producer_id}: {e}"))
        })?;
        states.push(ProducerStateRecord {
            producer_id,
            epoch,
            batches,
            last_append_ms,
            txn_first_offset,
        });
    }
    Ok(states)
}

pub(super) fn expire(conn: &Connection, before_ms: i64) -> Result<usize> {
    Ok(conn.execute(
        // A producer with an open transaction stays until its marker.
        "DELETE FROM producer_state WHERE last_append_ms < ?1 AND txn_first_offset IS NULL",
        params![before_ms],
    )?)
}
