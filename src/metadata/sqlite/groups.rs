//! Consumer-group rows: committed offsets and the group records that keep
//! empty groups listable across restarts.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{now_ms, parse_topic_id};
use crate::metadata::{CommittedOffset, GroupStateRow, MetadataError, Result, TopicId};

pub(super) fn commit(
    conn: &mut Connection,
    group: &str,
    coordinator_epoch: Option<i32>,
    offsets: &[CommittedOffset],
) -> Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(epoch) = coordinator_epoch {
        let stored: Option<i32> = tx
            .query_row(
                "SELECT coordinator_epoch FROM groups WHERE group_id = ?1",
                params![group],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(stored) = stored.filter(|stored| *stored > epoch) {
            return Err(MetadataError::Fenced(format!(
                "group {group} is coordinated at epoch {stored}, after this broker's {epoch}"
            )));
        }
    }
    let mut written = Vec::with_capacity(offsets.len());
    {
        // Only for partitions that still exist: a topic deleted since the
        // request was checked fails its own partitions, not the request.
        let mut stmt = tx.prepare_cached(
            "INSERT INTO group_offsets
                 (group_id, topic_id, partition, committed_offset, leader_epoch, metadata, commit_ms)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
             WHERE EXISTS (SELECT 1 FROM partitions WHERE topic_id = ?2 AND partition = ?3)
             ON CONFLICT (group_id, topic_id, partition) DO UPDATE SET
                 committed_offset = excluded.committed_offset,
                 leader_epoch = excluded.leader_epoch,
                 metadata = excluded.metadata,
                 commit_ms = excluded.commit_ms",
        )?;
        for o in offsets {
            let rows = stmt.execute(params![
                group,
                o.topic_id.0.to_string(),
                o.partition,
                o.offset,
                o.leader_epoch,
                o.metadata,
                o.commit_ms
            ])?;
            written.push(rows > 0);
        }
    }
    tx.commit()?;
    Ok(written)
}

pub(super) fn fetch(conn: &Connection, group: &str) -> Result<Vec<CommittedOffset>> {
    let mut stmt = conn.prepare_cached(
        "SELECT topic_id, partition, committed_offset, leader_epoch, metadata, commit_ms
         FROM group_offsets WHERE group_id = ?1 ORDER BY topic_id, partition",
    )?;
    let rows = stmt.query_map(params![group], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i32>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i32>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (topic, partition, offset, leader_epoch, metadata, commit_ms) = row?;
        out.push(CommittedOffset {
            topic_id: parse_topic_id(&topic)?,
            partition,
            offset,
            leader_epoch,
            metadata,
            commit_ms,
        });
    }
    Ok(out)
}

pub(super) fn delete_partitions(
    conn: &mut Connection,
    group: &str,
    partitions: &[(TopicId, i32)],
) -> Result<()> {
    let tx = conn.transaction()?;
    for (topic, partition) in partitions {
        tx.execute(
            "DELETE FROM group_offsets WHERE group_id = ?1 AND topic_id = ?2 AND partition = ?3",
            params![group, topic.0.to_string(), partition],
        )?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn delete_group(conn: &mut Connection, group: &str) -> Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM group_offsets WHERE group_id = ?1",
        params![group],
    )?;
    tx.execute("DELETE FROM groups WHERE group_id = ?1", params![group])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn record(conn: &Connection, group: &str, protocol_type: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO groups (group_id, protocol_type, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (group_id) DO UPDATE SET protocol_type = excluded.protocol_type,
             updated_ms = excluded.updated_ms",
        params![group, protocol_type, now_ms()],
    )?;
    Ok(())
}

pub(super) fn put_state(
    conn: &Connection,
    group: &str,
    protocol_type: &str,
    state: &GroupStateRow,
) -> Result<bool> {
    let written = conn.execute(
        "INSERT INTO groups (group_id, protocol_type, updated_ms, coordinator_epoch, state_seq, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (group_id) DO UPDATE SET protocol_type = excluded.protocol_type,
             updated_ms = excluded.updated_ms, coordinator_epoch = excluded.coordinator_epoch,
             state_seq = excluded.state_seq, state = excluded.state
         WHERE excluded.coordinator_epoch > groups.coordinator_epoch
            OR (excluded.coordinator_epoch = groups.coordinator_epoch
                AND excluded.state_seq > groups.state_seq)",
        params![
            group,
            protocol_type,
            now_ms(),
            state.coordinator_epoch,
            state.seq,
            state.state
        ],
    )?;
    Ok(written > 0)
}

pub(super) fn state(conn: &Connection, group: &str) -> Result<Option<GroupStateRow>> {
    let row = conn
        .prepare_cached(
            "SELECT coordinator_epoch, state_seq, state FROM groups
             WHERE group_id = ?1 AND state IS NOT NULL",
        )?
        .query_row(params![group], |r| {
            Ok(GroupStateRow {
                coordinator_epoch: r.get(0)?,
                seq: r.get(1)?,
                state: r.get(2)?,
            })
        })
        .optional()?;
    Ok(row)
}

pub(super) fn stored(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    let mut stmt = conn.prepare_cached("SELECT DISTINCT group_id FROM group_offsets")?;
    for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
        groups.insert(row?, String::new());
    }
    let mut stmt = conn.prepare_cached("SELECT group_id, protocol_type FROM groups")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (group, protocol_type) = row?;
        groups.insert(group, protocol_type);
    }
    Ok(groups.into_iter().collect())
}

pub(super) fn expire(conn: &mut Connection, before_ms: i64, active: &[String]) -> Result<usize> {
    let tx = conn.transaction()?;
    let candidates: Vec<String> = {
        let mut stmt =
            tx.prepare("SELECT DISTINCT group_id FROM group_offsets WHERE commit_ms < ?1")?;
        let rows = stmt.query_map(params![before_ms], |r| r.get::<_, String>(0))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    // Records of groups without any offsets (groups that never committed)
    // and without members.
    let idle: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT group_id FROM groups WHERE updated_ms < ?1
               AND NOT EXISTS (SELECT 1 FROM group_offsets o WHERE o.group_id = groups.group_id)",
        )?;
        let rows = stmt.query_map(params![before_ms], |r| r.get::<_, String>(0))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    for group in idle.iter().filter(|g| !active.contains(g)) {
        tx.execute("DELETE FROM groups WHERE group_id = ?1", params![group])?;
    }
    let mut deleted = 0;
    for group in candidates.iter().filter(|g| !active.contains(g)) {
        deleted += tx.execute(
            "DELETE FROM group_offsets WHERE group_id = ?1 AND commit_ms < ?2",
            params![group, before_ms],
        )?;
        tx.execute(
            "DELETE FROM groups WHERE group_id = ?1
               AND NOT EXISTS (SELECT 1 FROM group_offsets WHERE group_id = ?1)",
            params![group],
        )?;
    }
    tx.commit()?;
    Ok(deleted)
}
