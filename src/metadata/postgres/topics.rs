//! Topics and partitions in PostgreSQL: creation, deletion, growth, the log start.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{Client, now_ms, objects, parse_topic_id, strings, tid};
use crate::metadata::{MetadataError, PartitionRecord, Result, TopicId, TopicRecord};

async fn insert_empty_partitions(
    tx: &Transaction<'_>,
    id: TopicId,
    from: i32,
    to: i32,
    leaders: &[i32],
) -> Result<()> {
    let partitions: Vec<i32> = (from..to).collect();
    let leader_ids: Vec<i32> = partitions
        .iter()
        .map(|p| crate::metadata::leader_of(leaders, *p))
        .collect();
    tx.execute(
        "INSERT INTO partitions
         (topic_id, partition, leader_id, leader_epoch, log_start_offset, high_watermark)
         SELECT $1, p, l, 0, 0, 0 FROM unnest($2::INTEGER[], $3::INTEGER[]) AS u(p, l)",
        &[&tid(id), &partitions, &leader_ids],
    )
    .await?;
    Ok(())
}

pub(super) async fn create(
    client: &mut Client,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    leaders: &[i32],
) -> Result<TopicRecord> {
    let id = TopicId(Uuid::new_v4());
    let configs_json = serde_json::to_string(&configs)
        .map_err(|e| MetadataError::Backend(format!("encode configs: {e}")))?;
    let tx = client.transaction().await?;
    let inserted = tx
        .execute(
            "INSERT INTO topics (topic_id, name, partitions, configs, created_ms)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            &[&tid(id), &name, &partitions, &configs_json, &now_ms()],
        )
        .await?;
    if inserted == 0 {
        return Err(MetadataError::TopicExists(name.to_string()));
    }
    insert_empty_partitions(&tx, id, 0, partitions, leaders).await?;
    tx.commit().await.map_err(|e| {
        // Another broker created the same name at the same moment.
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            MetadataError::TopicExists(name.to_string())
        } else {
            e.into()
        }
    })?;
    Ok(TopicRecord {
        id,
        name: name.to_string(),
        partitions,
        configs,
    })
}

pub(super) async fn delete(client: &mut Client, id: TopicId) -> Result<()> {
    let tx = client.transaction().await?;
    let keys = strings(
        &tx.query(
            "SELECT DISTINCT object_key FROM chunks WHERE topic_id = $1",
            &[&tid(id)],
        )
        .await?,
    )?;
    let deleted = tx
        .execute("DELETE FROM topics WHERE topic_id = $1", &[&tid(id)])
        .await?;
    if deleted == 0 {
        return Err(MetadataError::UnknownTopic(id.to_string()));
    }
    // Its chunks went with it (cascade): objects it alone used retire.
    objects::retire_if_unreferenced(&tx, &keys).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn add_partitions(
    client: &mut Client,
    id: TopicId,
    partitions: i32,
    leaders: &[i32],
) -> Result<Vec<PartitionRecord>> {
    let tx = client.transaction().await?;
    let current: Option<i32> = tx
        .query_opt(
            "SELECT partitions FROM topics WHERE topic_id = $1 FOR UPDATE",
            &[&tid(id)],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let Some(current) = current else {
        return Err(MetadataError::UnknownTopic(id.to_string()));
    };
    if partitions <= current {
        return Err(MetadataError::Backend(format!(
            "topic has {current} partitions, cannot grow to {partitions}"
        )));
    }
    tx.execute(
        "UPDATE topics SET partitions = $1 WHERE topic_id = $2",
        &[&partitions, &tid(id)],
    )
    .await?;
    insert_empty_partitions(&tx, id, current, partitions, leaders).await?;
    tx.commit().await?;
    Ok((current..partitions)
        .map(|partition| PartitionRecord {
            partition,
            leader_id: crate::metadata::leader_of(leaders, partition),
            leader_epoch: 0,
            log_start_offset: 0,
            high_watermark: 0,
            clean_offset: 0,
        })
        .collect())
}

pub(super) async fn advance_log_start(
    client: &mut Client,
    id: TopicId,
    partition: i32,
    offset: i64,
) -> Result<i64> {
    let tx = client.transaction().await?;
    let topic = tid(id);
    let start: Option<i64> = tx
        .query_opt(
            "UPDATE partitions
             SET log_start_offset = LEAST(GREATEST(log_start_offset, $1), high_watermark)
             WHERE topic_id = $2 AND partition = $3 RETURNING log_start_offset",
            &[&offset, &topic, &partition],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let Some(start) = start else {
        return Err(MetadataError::UnknownTopic(format!("{id}-{partition}")));
    };
    // Chunks are contiguous: those wholly below the start begin below it.
    let keys = strings(
        &tx.query(
            "DELETE FROM chunks
             WHERE topic_id = $1 AND partition = $2 AND base_offset < $3 AND last_offset < $3
             RETURNING object_key",
            &[&topic, &partition, &start],
        )
        .await?,
    )?;
    if !keys.is_empty() {
        objects::retire_if_unreferenced(&tx, &keys).await?;
    }
    tx.execute(
        "DELETE FROM aborted_txns WHERE topic_id = $1 AND partition = $2 AND last_offset < $3",
        &[&topic, &partition, &start],
    )
    .await?;
    tx.commit().await?;
    Ok(start)
}

pub(super) async fn list(client: &impl GenericClient) -> Result<Vec<TopicRecord>> {
    select(client, None).await
}

/// The topic named `name`, if any.
pub(super) async fn by_name(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<TopicRecord>> {
    Ok(select(client, Some(name)).await?.pop())
}

/// Every topic, or only the one named `name`.
async fn select(client: &impl GenericClient, name: Option<&str>) -> Result<Vec<TopicRecord>> {
    let rows = client
        .query(
            "SELECT topic_id, name, partitions, configs FROM topics
             WHERE $1::text IS NULL OR name = $1 ORDER BY name",
            &[&name],
        )
        .await?;
    let mut topics = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(1)?;
        let configs: BTreeMap<String, String> = serde_json::from_str(r.try_get(3)?)
            .map_err(|e| MetadataError::Backend(format!("corrupt configs of {name}: {e}")))?;
        topics.push(TopicRecord {
            id: parse_topic_id(r.try_get(0)?)?,
            name,
            partitions: r.try_get(2)?,
            configs,
        });
    }
    Ok(topics)
}

pub(super) async fn partitions(
    client: &impl GenericClient,
    id: TopicId,
) -> Result<Vec<PartitionRecord>> {
    let rows = client
        .query(
            "SELECT partition, leader_id, leader_epoch, log_start_offset, high_watermark,
                    clean_offset
             FROM partitions WHERE topic_id = $1 ORDER BY partition",
            &[&tid(id)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(PartitionRecord {
                partition: r.try_get(0)?,
                leader_id: r.try_get(1)?,
                leader_epoch: r.try_get(2)?,
                log_start_offset: r.try_get(3)?,
                high_watermark: r.try_get(4)?,
                clean_offset: r.try_get(5)?,
            })
        })
        .collect()
}

pub(super) async fn all_partitions(
    client: &impl GenericClient,
) -> Result<Vec<(TopicId, PartitionRecord)>> {
    let rows = client
        .query(
            "SELECT topic_id, partition, leader_id, leader_epoch, log_start_offset,
                    high_watermark, clean_offset
             FROM partitions ORDER BY topic_id, partition",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                parse_topic_id(r.try_get(0)?)?,
                PartitionRecord {
                    partition: r.try_get(1)?,
                    leader_id: r.try_get(2)?,
                    leader_epoch: r.try_get(3)?,
                    log_start_offset: r.try_get(4)?,
                    high_watermark: r.try_get(5)?,
                    clean_offset: r.try_get(6)?,
                },
            ))
        })
        .collect()
}
