//! Idempotent producer ids and states in PostgreSQL. A state is written by
//! `upsert` inside the commit transaction of the chunk it covers.

use deadpool_postgres::GenericClient;

use super::{Client, parse_topic_id, tid};
use crate::metadata::{
    MetadataError, PartitionProducerState, ProducerBatchRecord, ProducerStateRecord, Result,
    TopicId,
};

/// One id, unique across every broker of the cluster (one atomic upsert).
pub(super) async fn allocate(client: &Client) -> Result<i64> {
    let row = client
        .query_one(
            "INSERT INTO producer_ids (id, next_producer_id) VALUES (0, 1)
             ON CONFLICT (id) DO UPDATE SET next_producer_id = producer_ids.next_producer_id + 1
             RETURNING next_producer_id - 1",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

pub(super) async fn issued(client: &Client, producer_id: i64) -> Result<bool> {
    let next: Option<i64> = client
        .query_opt(
            "SELECT next_producer_id FROM producer_ids WHERE id = 0",
            &[],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    Ok(producer_id >= 0 && producer_id < next.unwrap_or(0))
}

pub(super) async fn upsert(
    client: &impl GenericClient,
    topic_id: TopicId,
    partition: i32,
    state: &ProducerStateRecord,
) -> Result<()> {
    let batches = serde_json::to_string(&state.batches)
        .map_err(|e| MetadataError::Backend(format!("encode producer batches: {e}")))?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO producer_state
                 (topic_id, partition, producer_id, epoch, batches, last_append_ms, txn_first_offset)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (topic_id, partition, producer_id) DO UPDATE SET
                 epoch = excluded.epoch, batches = excluded.batches,
                 last_append_ms = excluded.last_append_ms,
                 txn_first_offset = excluded.txn_first_offset",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &tid(topic_id),
                &partition,
                &state.producer_id,
                &state.epoch,
                &batches,
                &state.last_append_ms,
                &state.txn_first_offset,
            ],
        )
        .await?;
    Ok(())
}

/// One partition's producer states.
pub(super) async fn load_partition(
    client: &Client,
    topic_id: TopicId,
    partition: i32,
) -> Result<Vec<ProducerStateRecord>> {
    let rows = client
        .query(
            "SELECT producer_id, epoch, batches, last_append_ms, txn_first_offset
             FROM producer_state WHERE topic_id = $1 AND partition = $2",
            &[&tid(topic_id), &partition],
        )
        .await?;
    let mut states = Vec::with_capacity(rows.len());
    for r in rows {
        let producer_id: i64 = r.try_get(0)?;
        let batches: Vec<ProducerBatchRecord> =
            serde_json::from_str(r.try_get(2)?).map_err(|e| {
                MetadataError::Backend(format!("corrupt state of producer {producer_id}: {e}"))
            })?;
        states.push(ProducerStateRecord {
            producer_id,
            epoch: r.try_get(1)?,
            batches,
            last_append_ms: r.try_get(3)?,
            txn_first_offset: r.try_get(4)?,
        });
    }
    Ok(states)
}

pub(super) async fn load_all(client: &Client) -> Result<Vec<PartitionProducerState>> {
    let rows = client
        .query(
            "SELECT topic_id, partition, producer_id, epoch, batches, last_append_ms,
                    txn_first_offset
             FROM producer_state",
            &[],
        )
        .await?;
    let mut states = Vec::with_capacity(rows.len());
    for r in rows {
        let producer_id: i64 = r.try_get(2)?;
        let batches: Vec<ProducerBatchRecord> =
            serde_json::from_str(r.try_get(4)?).map_err(|e| {
                MetadataError::Backend(format!("corrupt state of producer {producer_id}: {e}"))
            })?;
        states.push(PartitionProducerState {
            topic_id: parse_topic_id(r.try_get(0)?)?,
            partition: r.try_get(1)?,
            state: ProducerStateRecord {
                producer_id,
                epoch: r.try_get(3)?,
                batches,
                last_append_ms: r.try_get(5)?,
                txn_first_offset: r.try_get(6)?,
            },
        });
    }
    Ok(states)
}
