//! Topics and partitions: creation, deletion, growth, the log start.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{now_ms, objects, parse_topic_id};
use crate::metadata::{MetadataError, PartitionRecord, Result, TopicId, TopicRecord, leader_of};

/// A new partition: epoch 0, empty (log start = high watermark = 0).
fn insert_empty_partition(
    tx: &rusqlite::Transaction<'_>,
    id: TopicId,
    partition: i32,
    leader_id: i32,
) -> Result<()> {
    tx.execute(
        "INSERT INTO partitions
         (topic_id, partition, leader_id, leader_epoch, log_start_offset, high_watermark)
         VALUES (?1, ?2, ?3, 0, 0, 0)",
        params![id.0.to_string(), partition, leader_id],
    )?;
    Ok(())
}

/// A new topic with `partitions` empty partitions led by `leaders` in turn.
pub(super) fn create(
    conn: &mut Connection,
    name: String,
    partitions: i32,
    configs: BTreeMap<String, String>,
    leaders: &[i32],
) -> Result<TopicRecord> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists: Option<String> = tx
        .query_row(
            "SELECT topic_id FROM topics WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Err(MetadataError::TopicExists(name));
    }
    let id = TopicId(Uuid::new_v4());
    let configs_json = serde_json::to_string(&configs)
        .map_err(|e| MetadataError::Backend(format!("encode configs: {e}")))?;
    tx.execute(
        "INSERT INTO topics (topic_id, name, partitions, configs, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id.0.to_string(), name, partitions, configs_json, now_ms()],
    )?;
    for partition in 0..partitions {
        insert_empty_partition(&tx, id, partition, leader_of(leaders, partition))?;
    }
    tx.commit()?;
    Ok(TopicRecord {
        id,
        name,
        partitions,
        configs,
    })
}

/// Deletes a topic with its partitions and chunks; objects only it used retire.
pub(super) fn delete(conn: &mut Connection, id: TopicId) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let keys: Vec<String> = {
        let mut stmt = tx.prepare("SELECT DISTINCT object_key FROM chunks WHERE topic_id = ?1")?;
        let rows = stmt.query_map(params![id.0.to_string()], |r| r.get(0))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let deleted = tx.execute(
        "DELETE FROM topics WHERE topic_id = ?1",
        params![id.0.to_string()],
    )?;
    if deleted == 0 {
        return Err(MetadataError::UnknownTopic(id.to_string()));
    }
    // Its chunks went with it (cascade): objects it alone used retire.
    objects::retire_if_unreferenced(&tx, keys.iter().map(String::as_str))?;
    tx.commit()?;
    Ok(())
}

/// Grows a topic to `partitions` partitions.
pub(super) fn add_partitions(
    conn: &mut Connection,
    id: TopicId,
    partitions: i32,
    leaders: &[i32],
) -> Result<Vec<PartitionRecord>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: Option<i32> = tx
        .query_row(
            "SELECT partitions FROM topics WHERE topic_id = ?1",
            params![id.0.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    let Some(current) = current else {
        return Err(MetadataError::UnknownTopic(id.to_string()));
    };
    if partitions <= current {
        return Err(MetadataError::Backend(format!(
            "topic has {current} partitions, cannot grow to {partitions}"
        )));
    }
    tx.execute(
        "UPDATE topics SET partitions = ?1 WHERE topic_id = ?2",
        params![partitions, id.0.to_string()],
    )?;
    let mut added = Vec::new();
    for partition in current..partitions {
        let leader_id = leader_of(leaders, partition);
        insert_empty_partition(&tx, id, partition, leader_id)?;
        added.push(PartitionRecord {
            partition,
            leader_id,
            leader_epoch: 0,
            log_start_offset: 0,
            high_watermark: 0,
            clean_offset: 0,
        });
    }
    tx.commit()?;
    Ok(added)
}

/// Moves a partition's log start up (never past its high watermark), removes
/// the chunks wholly below it and retires the objects no chunk uses any more.
pub(super) fn advance_log_start(
    conn: &mut Connection,
    id: TopicId,
    partition: i32,
    offset: i64,
) -> Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let topic = id.0.to_string();
    tx.execute(
        "UPDATE partitions SET log_start_offset = MIN(MAX(log_start_offset, ?1), high_watermark)
             WHERE topic_id = ?2 AND partition = ?3",
        params![offset, topic, partition],
    )?;
    let start: Option<i64> = tx
        .query_row(
            "SELECT log_start_offset FROM partitions WHERE topic_id = ?1 AND partition = ?2",
            params![topic, partition],
            |r| r.get(0),
        )
        .optional()?;
    let Some(start) = start else {
        return Err(MetadataError::UnknownTopic(format!("{id}-{partition}")));
    };
    // Chunks are contiguous: those wholly below the start begin below it.
    let keys: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT DISTINCT object_key FROM chunks
                 WHERE topic_id = ?1 AND partition = ?2 AND base_offset < ?3 AND last_offset < ?3",
        )?;
        let rows = stmt.query_map(params![topic, partition, start], |r| r.get(0))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    if !keys.is_empty() {
        tx.execute(
            "DELETE FROM chunks
                 WHERE topic_id = ?1 AND partition = ?2 AND base_offset < ?3 AND last_offset < ?3",
            params![topic, partition, start],
        )?;
        objects::retire_if_unreferenced(&tx, keys.iter().map(String::as_str))?;
    }
    super::transactions::trim_aborted(&tx, id, partition, start)?;
    tx.commit()?;
    Ok(start)
}

/// Every topic, by name.
pub(super) fn list(conn: &Connection) -> Result<Vec<TopicRecord>> {
    select(conn, None)
}

/// The topic named `name`, if any.
pub(super) fn by_name(conn: &Connection, name: &str) -> Result<Option<TopicRecord>> {
    Ok(select(conn, Some(name))?.pop())
}

/// Every topic, or only the one named `name`.
fn select(conn: &Connection, name: Option<&str>) -> Result<Vec<TopicRecord>> {
    let mut stmt = conn.prepare(
        "SELECT topic_id, name, partitions, configs FROM topics
         WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map(params![name], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i32>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut topics = Vec::new();
    for row in rows {
        let (id, name, partitions, configs) = row?;
        let configs: BTreeMap<String, String> = serde_json::from_str(&configs)
            .map_err(|e| MetadataError::Backend(format!("corrupt configs of {name}: {e}")))?;
        topics.push(TopicRecord {
            id: parse_topic_id(&id)?,
            name,
            partitions,
            configs,
        });
    }
    Ok(topics)
}

/// A topic's partitions.
pub(super) fn partitions(conn: &Connection, id: TopicId) -> Result<Vec<PartitionRecord>> {
    let mut stmt = conn.prepare(
        "SELECT partition, leader_id, leader_epoch, log_start_offset, high_watermark,
                    clean_offset
             FROM partitions WHERE topic_id = ?1 ORDER BY partition",
    )?;
    let rows = stmt.query_map(params![id.0.to_string()], |r| {
        Ok(PartitionRecord {
            partition: r.get(0)?,
            leader_id: r.get(1)?,
            leader_epoch: r.get(2)?,
            log_start_offset: r.get(3)?,
            high_watermark: r.get(4)?,
            clean_offset: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Every partition of every topic.
pub(super) fn all_partitions(conn: &Connection) -> Result<Vec<(TopicId, PartitionRecord)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT topic_id, partition, leader_id, leader_epoch, log_start_offset, high_watermark,
                clean_offset
         FROM partitions ORDER BY topic_id, partition",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            PartitionRecord {
                partition: r.get(1)?,
                leader_id: r.get(2)?,
                leader_epoch: r.get(3)?,
                log_start_offset: r.get(4)?,
                high_watermark: r.get(5)?,
                clean_offset: r.get(6)?,
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (topic, record) = row?;
        out.push((parse_topic_id(&topic)?, record));
    }
    Ok(out)
}
