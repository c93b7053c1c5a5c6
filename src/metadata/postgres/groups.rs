//! Consumer-group rows in PostgreSQL: committed offsets and the group
//! records that keep empty groups listable across restarts.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;

use super::{Client, now_ms, parse_topic_id, strings, tid};
use crate::metadata::{CommittedOffset, GroupStateRow, MetadataError, Result, TopicId};

pub(super) async fn commit(
    client: &mut Client,
    group: &str,
    coordinator_epoch: Option<i32>,
    offsets: &[CommittedOffset],
) -> Result<Vec<bool>> {
    let tx = client.transaction().await?;
    if let Some(epoch) = coordinator_epoch {
        // The row lock orders this against a successor writing the group
        // under its epoch: once it has, this coordinator writes nothing.
        let stored = tx
            .query_opt(
                "SELECT coordinator_epoch FROM groups WHERE group_id = $1 FOR SHARE",
                &[&group],
            )
            .await?;
        if let Some(row) = stored {
            let stored: i32 = row.try_get(0)?;
            if stored > epoch {
                return Err(MetadataError::Fenced(format!(
                    "group {group} is coordinated at epoch {stored}, after this broker's {epoch}"
                )));
            }
        }
    }
    // Only for partitions that still exist: a topic deleted since the
    // request was checked fails its own partitions, not the request.
    let stmt = tx
        .prepare_cached(
            "INSERT INTO group_offsets
                 (group_id, topic_id, partition, committed_offset, leader_epoch, metadata, commit_ms)
             SELECT $1, $2, $3, $4, $5, $6, $7
             WHERE EXISTS (SELECT 1 FROM partitions WHERE topic_id = $2 AND partition = $3)
             ON CONFLICT (group_id, topic_id, partition) DO UPDATE SET
                 committed_offset = excluded.committed_offset,
                 leader_epoch = excluded.leader_epoch,
                 metadata = excluded.metadata,
                 commit_ms = excluded.commit_ms",
        )
        .await?;
    let mut written = Vec::with_capacity(offsets.len());
    for o in offsets {
        let rows = tx
            .execute(
                &stmt,
                &[
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
        written.push(rows > 0);
    }
    tx.commit().await?;
    Ok(written)
}

/// Decodes rows of (topic, partition, offset, leader epoch, metadata,
/// commit time) starting at column `at`.
pub(super) fn offset_from_row(r: &tokio_postgres::Row, at: usize) -> Result<CommittedOffset> {
    Ok(CommittedOffset {
        topic_id: parse_topic_id(r.try_get(at)?)?,
        partition: r.try_get(at + 1)?,
        offset: r.try_get(at + 2)?,
        leader_epoch: r.try_get(at + 3)?,
        metadata: r.try_get(at + 4)?,
        commit_ms: r.try_get(at + 5)?,
    })
}

pub(super) async fn fetch(client: &Client, group: &str) -> Result<Vec<CommittedOffset>> {
    let stmt = client
        .prepare_cached(
            "SELECT topic_id, partition, committed_offset, leader_epoch, metadata, commit_ms
             FROM group_offsets WHERE group_id = $1 ORDER BY topic_id, partition",
        )
        .await?;
    client
        .query(&stmt, &[&group])
        .await?
        .iter()
        .map(|r| offset_from_row(r, 0))
        .collect()
}

pub(super) async fn delete_partitions(
    client: &mut Client,
    group: &str,
    partitions: &[(TopicId, i32)],
) -> Result<()> {
    let tx = client.transaction().await?;
    for (topic, partition) in partitions {
        tx.execute(
            "DELETE FROM group_offsets WHERE group_id = $1 AND topic_id = $2 AND partition = $3",
            &[&group, &tid(*topic), partition],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn delete_group(client: &mut Client, group: &str) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("DELETE FROM group_offsets WHERE group_id = $1", &[&group])
        .await?;
    tx.execute("DELETE FROM groups WHERE group_id = $1", &[&group])
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn record(client: &Client, group: &str, protocol_type: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO groups (group_id, protocol_type, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (group_id) DO UPDATE SET protocol_type = excluded.protocol_type,
                 updated_ms = excluded.updated_ms",
            &[&group, &protocol_type, &now_ms()],
        )
        .await?;
    Ok(())
}

pub(super) async fn put_state(
    client: &Client,
    group: &str,
    protocol_type: &str,
    state: &GroupStateRow,
) -> Result<bool> {
    let written = client
        .execute(
            "INSERT INTO groups (group_id, protocol_type, updated_ms, coordinator_epoch, state_seq, state)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (group_id) DO UPDATE SET protocol_type = excluded.protocol_type,
                 updated_ms = excluded.updated_ms, coordinator_epoch = excluded.coordinator_epoch,
                 state_seq = excluded.state_seq, state = excluded.state
             WHERE excluded.coordinator_epoch > groups.coordinator_epoch
                OR (excluded.coordinator_epoch = groups.coordinator_epoch
                    AND excluded.state_seq > groups.state_seq)",
            &[
                &group,
                &protocol_type,
                &now_ms(),
                &state.coordinator_epoch,
                &state.seq,
                &state.state,
            ],
        )
        .await?;
    Ok(written > 0)
}

pub(super) async fn state(client: &Client, group: &str) -> Result<Option<GroupStateRow>> {
    let row = client
        .query_opt(
            "SELECT coordinator_epoch, state_seq, state FROM groups
             WHERE group_id = $1 AND state IS NOT NULL",
            &[&group],
        )
        .await?;
    Ok(match row {
        Some(r) => Some(GroupStateRow {
            coordinator_epoch: r.try_get(0)?,
            seq: r.try_get(1)?,
            state: r.try_get(2)?,
        }),
        None => None,
    })
}

pub(super) async fn stored(client: &impl GenericClient) -> Result<Vec<(String, String)>> {
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    let with_offsets = client
        .query("SELECT DISTINCT group_id FROM group_offsets", &[])
        .await?;
    for group in strings(&with_offsets)? {
        groups.insert(group, String::new());
    }
    for r in client
        .query("SELECT group_id, protocol_type FROM groups", &[])
        .await?
    {
        groups.insert(r.try_get(0)?, r.try_get(1)?);
    }
    Ok(groups.into_iter().collect())
}

pub(super) async fn expire(
    client: &mut Client,
    before_ms: i64,
    active: &[String],
) -> Result<usize> {
    let tx = client.transaction().await?;
    // Records of groups without any offsets (groups that never committed)
    // and without members.
    tx.execute(
        "DELETE FROM groups WHERE updated_ms < $1 AND NOT (group_id = ANY($2))
           AND NOT EXISTS (SELECT 1 FROM group_offsets o WHERE o.group_id = groups.group_id)",
        &[&before_ms, &active],
    )
    .await?;
    let expired = strings(
        &tx.query(
            "DELETE FROM group_offsets WHERE commit_ms < $1 AND NOT (group_id = ANY($2))
             RETURNING group_id",
            &[&before_ms, &active],
        )
        .await?,
    )?;
    let mut groups = expired.clone();
    groups.sort_unstable();
    groups.dedup();
    tx.execute(
        "DELETE FROM groups g WHERE g.group_id = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM group_offsets o WHERE o.group_id = g.group_id)",
        &[&groups],
    )
    .await?;
    tx.commit().await?;
    Ok(expired.len())
}
