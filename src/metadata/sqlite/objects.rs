//! Objects and their lifecycle in SQLite: upload intents, the sealer's
//! chunk swap, retirement and what the collector may delete.

use std::collections::BTreeSet;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::now_ms;
use crate::metadata::{
    ChunkRecord, MetadataError, Result, SealedObject, StaleIntents, TopicId, UnsealedObjects,
    UploadIntent,
};

/// A partition's chunks whose last offset is at or after `from`, in order.
pub(super) fn chunks_from(
    conn: &Connection,
    id: TopicId,
    partition: i32,
    from: i64,
) -> Result<Vec<ChunkRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.base_offset, c.last_offset, c.max_timestamp, c.object_key, o.size,
                c.byte_start, c.byte_len, c.index_len
         FROM chunks c JOIN objects o ON o.object_key = c.object_key
         WHERE c.topic_id = ?1 AND c.partition = ?2 AND c.last_offset >= ?3
         ORDER BY c.base_offset",
    )?;
    let rows = stmt.query_map(params![id.0.to_string(), partition, from], |r| {
        Ok(ChunkRecord {
            base_offset: r.get(0)?,
            last_offset: r.get(1)?,
            max_timestamp: r.get(2)?,
            object_key: Arc::from(r.get::<_, String>(3)?),
            object_size: r.get::<_, i64>(4)? as u64,
            byte_start: r.get::<_, i64>(5)? as u64,
            byte_len: r.get::<_, i64>(6)? as u64,
            index_len: r.get::<_, i64>(7)? as u64,
        })
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Removes the upload intent of an object being committed; fails if it is
/// missing or doomed (the collector may be deleting the object).
pub(super) fn take_intent(tx: &Transaction<'_>, key: &str) -> Result<()> {
    let removed = tx
        .prepare_cached("DELETE FROM object_intents WHERE object_key = ?1 AND doomed = 0")?
        .execute(params![key])?;
    if removed == 0 {
        return Err(MetadataError::Fenced(format!(
            "object {key} has no live upload intent (its writer was presumed dead and it may \
             have been deleted)"
        )));
    }
    Ok(())
}

/// Marks each of `keys` retired if no chunk references it any more.
pub(super) fn retire_if_unreferenced<'a>(
    tx: &Transaction<'_>,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    // One statement for all of them (a sealing swap touches about a
    // thousand write-ahead objects): the keys go in as a JSON array.
    let keys: Vec<&str> = keys.into_iter().collect();
    if keys.is_empty() {
        return Ok(());
    }
    let keys = serde_json::to_string(&keys)
        .map_err(|e| MetadataError::Backend(format!("encode object keys: {e}")))?;
    let mut retire = tx.prepare_cached(
        "UPDATE objects SET retired_ms = ?1
         WHERE object_key IN (SELECT value FROM json_each(?2)) AND retired_ms IS NULL
           AND refs <= 0",
    )?;
    retire.execute(params![now_ms(), keys])?;
    Ok(())
}

pub(super) fn record_intents(conn: &mut Connection, owner: &str, keys: &[String]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO object_intents (object_key, owner, created_ms) VALUES (?1, ?2, ?3)",
        )?;
        let now = now_ms();
        for key in keys {
            insert.execute(params![key, owner, now])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Whether an intent is stale (see `StaleIntents`): parameters ?1 the
/// oldest renewal still live, ?2 this node's owner prefix, ?3 this process.
const STALE: &str = "(created_ms < ?1 OR (substr(owner, 1, length(?2)) = ?2 AND owner != ?3))";

fn stale_params(stale: &StaleIntents) -> (i64, String, String) {
    (
        now_ms().saturating_sub(stale.grace_ms),
        format!("{}:", stale.node),
        stale.current.clone(),
    )
}

pub(super) fn renew_intents(conn: &mut Connection, owner: &str, keys: &[String]) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut renewed = 0;
    {
        let mut renew = tx.prepare_cached(
            "UPDATE object_intents SET created_ms = ?1
             WHERE object_key = ?2 AND owner = ?3 AND doomed = 0",
        )?;
        let now = now_ms();
        for key in keys {
            renewed += renew.execute(params![now, key, owner])?;
        }
    }
    tx.commit()?;
    Ok(renewed)
}

pub(super) fn stale_intents(
    conn: &Connection,
    stale: &StaleIntents,
    limit: usize,
) -> Result<Vec<UploadIntent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT object_key, owner, created_ms FROM object_intents
         WHERE {STALE} ORDER BY created_ms LIMIT ?4"
    ))?;
    let (before, prefix, current) = stale_params(stale);
    let rows = stmt.query_map(params![before, prefix, current, limit as i64], |r| {
        Ok(UploadIntent {
            key: r.get(0)?,
            owner: r.get(1)?,
            created_ms: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

pub(super) fn doom_uncommitted(
    conn: &mut Connection,
    keys: &[String],
    stale: &StaleIntents,
) -> Result<Vec<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut doomed = Vec::new();
    {
        let (before, prefix, current) = stale_params(stale);
        let mut committed = tx.prepare_cached("SELECT 1 FROM objects WHERE object_key = ?1")?;
        let mut doom = tx.prepare_cached(&format!(
            "UPDATE object_intents SET doomed = 1 WHERE object_key = ?4 AND {STALE}"
        ))?;
        let mut forget = tx.prepare_cached("DELETE FROM object_intents WHERE object_key = ?1")?;
        for key in keys {
            let is_committed = committed
                .query_row(params![key], |_| Ok(()))
                .optional()?
                .is_some();
            if is_committed {
                // Committed: the intent is stale bookkeeping only.
                forget.execute(params![key])?;
            } else if doom.execute(params![before, prefix, current, key])? > 0 {
                doomed.push(key.clone());
            }
        }
    }
    tx.commit()?;
    Ok(doomed)
}

pub(super) fn unnamed_objects(conn: &Connection, keys: &[String]) -> Result<Vec<String>> {
    let mut named = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM objects WHERE object_key = ?1)
             OR EXISTS (SELECT 1 FROM object_intents WHERE object_key = ?1)",
    )?;
    let mut unnamed = Vec::new();
    for key in keys {
        if !named.query_row(params![key], |r| r.get::<_, bool>(0))? {
            unnamed.push(key.clone());
        }
    }
    Ok(unnamed)
}

pub(super) fn forget_intents(conn: &mut Connection, keys: &[String]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut forget = tx.prepare_cached("DELETE FROM object_intents WHERE object_key = ?1")?;
        for key in keys {
            forget.execute(params![key])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn retired_objects(
    conn: &Connection,
    grace_ms: i64,
    limit: usize,
) -> Result<Vec<String>> {
    let now = now_ms();
    let before_ms = now.saturating_sub(grace_ms);
    // Nothing retired since the oldest live backup hold was taken.
    let mut stmt = conn.prepare_cached(
        "SELECT object_key FROM objects WHERE retired_ms IS NOT NULL
           AND retired_ms < MIN(?1, COALESCE(
               (SELECT MIN(created_ms) FROM backup_holds WHERE expires_ms > ?3), ?1))
         ORDER BY retired_ms LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![before_ms, limit as i64, now], |r| r.get(0))?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

pub(super) fn forget_objects(conn: &mut Connection, keys: &[String]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut forget = tx.prepare_cached(
            "DELETE FROM objects WHERE object_key = ?1 AND retired_ms IS NOT NULL AND refs <= 0",
        )?;
        for key in keys {
            forget.execute(params![key])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn unsealed_objects(
    conn: &Connection,
    max_bytes: u64,
    limit: usize,
) -> Result<UnsealedObjects> {
    let mut stmt = conn.prepare_cached(
        "SELECT object_key, size FROM objects WHERE kind = 0 AND retired_ms IS NULL
         ORDER BY rowid LIMIT ?1",
    )?;
    // One row past `limit` tells whether more follow.
    let mut rows = stmt.query(params![limit.saturating_add(1) as i64])?;
    let mut out = UnsealedObjects::default();
    let mut total = 0u64;
    while let Some(row) = rows.next()? {
        let size = row.get::<_, i64>(1)?.max(0) as u64;
        if out.objects.len() >= limit || (!out.objects.is_empty() && total + size > max_bytes) {
            out.more = true;
            break;
        }
        total += size;
        out.objects.push((row.get(0)?, size));
    }
    Ok(out)
}

pub(super) fn replace_chunks(
    conn: &mut Connection,
    objects: &[SealedObject],
    retire_replaced: bool,
) -> Result<Vec<Vec<bool>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut applied = Vec::with_capacity(objects.len());
    let mut touched: BTreeSet<Arc<str>> = BTreeSet::new();
    {
        let mut insert_object = tx.prepare_cached(
            "INSERT INTO objects (object_key, size, created_ms, kind) VALUES (?1, ?2, ?3, ?4)",
        )?;
        // The rows in the new chunk's offset range are deleted and returned
        // in one pass (not a read, then a delete, nor a statement per
        // replaced chunk); they must be exactly the replaced chunks, else
        // the delete is rolled back and the chunk skipped.
        let mut take_range = tx.prepare_cached(
            "DELETE FROM chunks
             WHERE topic_id = ?1 AND partition = ?2 AND base_offset >= ?3 AND base_offset <= ?4
             RETURNING base_offset, last_offset, object_key",
        )?;
        let mut insert_chunk = tx.prepare_cached(
            "INSERT INTO chunks (topic_id, partition, base_offset, last_offset, max_timestamp,
                 object_key, byte_start, byte_len, index_len)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut epoch_of = tx.prepare_cached(
            "SELECT leader_epoch FROM partitions WHERE topic_id = ?1 AND partition = ?2",
        )?;
        for object in objects {
            take_intent(&tx, &object.key)?;
            insert_object.execute(params![
                object.key,
                object.size as i64,
                now_ms(),
                object.kind as i64
            ])?;
            let mut flags = Vec::with_capacity(object.chunks.len());
            for sealed in &object.chunks {
                let topic = sealed.topic_id.0.to_string();
                // The replaced chunks must all still be there, exactly
                // covering the new chunk's offsets.
                let (first, last) = (sealed.chunk.base_offset, sealed.chunk.last_offset);
                let epoch: Option<i32> = epoch_of
                    .query_row(params![topic, sealed.partition], |r| r.get(0))
                    .optional()?;
                if epoch != Some(sealed.leader_epoch) {
                    // Leadership moved (or the partition is gone).
                    flags.push(false);
                    continue;
                }
                tx.execute_batch("SAVEPOINT swap")?;
                let rows: Vec<(i64, i64, String)> = take_range
                    .query_map(params![topic, sealed.partition, first, last], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })?
                    .collect::<std::result::Result<_, _>>()?;
                // RETURNING rows come in no particular order.
                let mut taken: Vec<(i64, i64, &str)> = rows
                    .iter()
                    .map(|(base, last, key)| (*base, *last, key.as_str()))
                    .collect();
                if !crate::metadata::rows::replaced_exactly(&mut taken, sealed) {
                    tx.execute_batch("ROLLBACK TO swap; RELEASE swap")?;
                    flags.push(false);
                    continue;
                }
                tx.execute_batch("RELEASE swap")?;
                if retire_replaced {
                    touched.extend(sealed.replaces.iter().map(|(key, _)| Arc::clone(key)));
                }
                let c = &sealed.chunk;
                insert_chunk.execute(params![
                    topic,
                    sealed.partition,
                    c.base_offset,
                    c.last_offset,
                    c.max_timestamp,
                    object.key,
                    c.byte_start as i64,
                    c.byte_len as i64,
                    c.index_len as i64
                ])?;
                flags.push(true);
            }
            touched.insert(Arc::from(object.key.as_str()));
            applied.push(flags);
        }
    }
    retire_if_unreferenced(&tx, touched.iter().map(|k| k.as_ref()))?;
    tx.commit()?;
    Ok(applied)
}

/// Takes a backup hold for `hold_ms` from now; returns its id.
pub(super) fn add_backup_hold(conn: &mut Connection, hold_ms: i64) -> Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let now = now_ms();
    conn.execute(
        "INSERT INTO backup_holds (hold_id, created_ms, expires_ms) VALUES (?1, ?2, ?3)",
        params![id, now, now.saturating_add(hold_ms.max(0))],
    )?;
    Ok(id)
}

/// Forgets holds that have run out; returns how many.
pub(super) fn expire_backup_holds(conn: &mut Connection) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM backup_holds WHERE expires_ms <= ?1",
        params![now_ms()],
    )?)
}
