//! Objects and their lifecycle in PostgreSQL: flushed objects' commits,
//! upload intents, the sealer's chunk swap, retirement and what the
//! collector may delete.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use deadpool_postgres::GenericClient;

use super::{Client, STORE_NOW_MS, now_ms, producers, strings, tid, transactions};
use crate::metadata::{
    ChunkOutcome, MetadataError, ObjectCommit, Result, SealedObject, StaleIntents, TopicId,
    UnsealedObjects, UploadIntent,
};

/// Removes the upload intent of an object being committed; fails if it is
/// missing or doomed (the collector may be deleting the object).
async fn take_intent(client: &impl GenericClient, key: &str) -> Result<()> {
    let stmt = client
        .prepare_cached("DELETE FROM object_intents WHERE object_key = $1 AND NOT doomed")
        .await?;
    if client.execute(&stmt, &[&key]).await? == 0 {
        return Err(MetadataError::Fenced(format!(
            "object {key} has no live upload intent (its writer was presumed dead and it may \
             have been deleted)"
        )));
    }
    Ok(())
}

/// Marks each of `keys` retired if no chunk references it any more.
pub(super) async fn retire_if_unreferenced(
    client: &impl GenericClient,
    keys: &[String],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE objects SET retired_ms = {STORE_NOW_MS}
             WHERE object_key = ANY($1) AND retired_ms IS NULL AND refs <= 0"
        ))
        .await?;
    client.execute(&stmt, &[&keys]).await?;
    Ok(())
}

pub(super) async fn commit_object(
    client: &mut Client,
    commit: &ObjectCommit,
) -> Result<Vec<ChunkOutcome>> {
    let tx = client.transaction().await?;
    take_intent(&tx, &commit.object_key).await?;
    let insert_object = tx
        .prepare_cached(
            "INSERT INTO objects (object_key, size, created_ms, kind) VALUES ($1, $2, $3, 0)",
        )
        .await?;
    tx.execute(
        &insert_object,
        &[&commit.object_key, &(commit.object_size as i64), &now_ms()],
    )
    .await?;
    // The row lock this UPDATE takes orders it after any concurrent change
    // of the partition (another broker's commit, a leadership move), and
    // its condition is re-checked against the row as that change left it.
    let advance = tx
        .prepare_cached(
            "UPDATE partitions SET high_watermark = $1
             WHERE topic_id = $2 AND partition = $3 AND leader_epoch = $4
               AND high_watermark = $5",
        )
        .await?;
    let state = tx
        .prepare_cached(
            "SELECT leader_epoch, high_watermark FROM partitions
             WHERE topic_id = $1 AND partition = $2",
        )
        .await?;
    let insert_chunk = tx
        .prepare_cached(
            "INSERT INTO chunks (topic_id, partition, base_offset, last_offset,
                 max_timestamp, object_key, byte_start, byte_len)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    // Partition rows in (topic, partition) order, as the sealer's swap
    // locks them: two transactions never wait for each other in a cycle.
    let mut order: Vec<usize> = (0..commit.chunks.len()).collect();
    order.sort_by_key(|&i| (commit.chunks[i].topic_id, commit.chunks[i].partition));
    let mut outcomes = vec![ChunkOutcome::Committed; commit.chunks.len()];
    for &i in &order {
        let c = &commit.chunks[i];
        let topic = tid(c.topic_id);
        let next = c.chunk.last_offset + 1;
        let updated = tx
            .execute(
                &advance,
                &[
                    &next,
                    &topic,
                    &c.partition,
                    &c.leader_epoch,
                    &c.chunk.base_offset,
                ],
            )
            .await?;
        if updated == 0 {
            // Deleted, or fenced: this partition's part fails alone.
            let row = tx.query_opt(&state, &[&topic, &c.partition]).await?;
            outcomes[i] = match row {
                None => ChunkOutcome::TopicDeleted,
                Some(row) => {
                    let (epoch, hw): (i32, i64) = (row.try_get(0)?, row.try_get(1)?);
                    tracing::warn!(
                        "commit of {}-{} fenced: the store has epoch {epoch} and high \
                         watermark {hw}, the writer epoch {} and base offset {}",
                        c.topic_id,
                        c.partition,
                        c.leader_epoch,
                        c.chunk.base_offset
                    );
                    ChunkOutcome::Fenced
                }
            };
            continue;
        }
        tx.execute(
            &insert_chunk,
            &[
                &topic,
                &c.partition,
                &c.chunk.base_offset,
                &c.chunk.last_offset,
                &c.chunk.max_timestamp,
                &commit.object_key,
                &(c.chunk.byte_start as i64),
                &(c.chunk.byte_len as i64),
            ],
        )
        .await?;
        for state in &c.producers {
            producers::upsert(&tx, c.topic_id, c.partition, state).await?;
        }
        if !c.aborted.is_empty() {
            transactions::insert_aborted(&tx, c.topic_id, c.partition, &c.aborted).await?;
        }
    }
    if !outcomes.contains(&ChunkOutcome::Committed) {
        // Nothing of it is part of any log.
        retire_if_unreferenced(&tx, std::slice::from_ref(&commit.object_key)).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

pub(super) async fn record_intents(client: &Client, owner: &str, keys: &[String]) -> Result<()> {
    client
        .execute(
            &format!(
                "INSERT INTO object_intents (object_key, owner, created_ms)
                 SELECT k, $2, {STORE_NOW_MS} FROM unnest($1::TEXT[]) AS k"
            ),
            &[&keys, &owner],
        )
        .await?;
    Ok(())
}

pub(super) async fn renew_intents(client: &Client, owner: &str, keys: &[String]) -> Result<usize> {
    let renewed = client
        .execute(
            &format!(
                "UPDATE object_intents SET created_ms = {STORE_NOW_MS}
                 WHERE object_key = ANY($1) AND owner = $2 AND NOT doomed"
            ),
            &[&keys, &owner],
        )
        .await?;
    Ok(renewed as usize)
}

/// A grace in milliseconds that cannot overflow the server's arithmetic.
fn grace(ms: i64) -> i64 {
    ms.clamp(-(1 << 40), 1 << 50)
}

/// Whether an intent is stale (see `StaleIntents`), on the store's clock:
/// parameters $1 the grace, $2 this node's owner prefix, $3 this process.
fn stale_condition() -> String {
    format!("(created_ms < {STORE_NOW_MS} - $1 OR (starts_with(owner, $2) AND owner <> $3))")
}

pub(super) async fn stale_intents(
    client: &Client,
    stale: &StaleIntents,
    limit: usize,
) -> Result<Vec<UploadIntent>> {
    let prefix = format!("{}:", stale.node);
    let rows = client
        .query(
            &format!(
                "SELECT object_key, owner, created_ms FROM object_intents
                 WHERE {} ORDER BY created_ms LIMIT $4",
                stale_condition()
            ),
            &[
                &grace(stale.grace_ms),
                &prefix,
                &stale.current,
                &(limit as i64),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(UploadIntent {
                key: r.try_get(0)?,
                owner: r.try_get(1)?,
                created_ms: r.try_get(2)?,
            })
        })
        .collect()
}

pub(super) async fn doom_uncommitted(
    client: &mut Client,
    keys: &[String],
    stale: &StaleIntents,
) -> Result<Vec<String>> {
    let tx = client.transaction().await?;
    // Committed objects' intents are stale bookkeeping only: forgotten.
    tx.execute(
        "DELETE FROM object_intents i WHERE i.object_key = ANY($1)
           AND EXISTS (SELECT 1 FROM objects o WHERE o.object_key = i.object_key)",
        &[&keys],
    )
    .await?;
    // The rest are doomed if still stale (their owner may have renewed
    // them since they were listed): no commit of them can land any more
    // (the intent's row lock orders this against a commit taking it).
    let prefix = format!("{}:", stale.node);
    let doomed = strings(
        &tx.query(
            &format!(
                "UPDATE object_intents SET doomed = TRUE WHERE object_key = ANY($4) AND {}
                 RETURNING object_key",
                stale_condition()
            ),
            &[&grace(stale.grace_ms), &prefix, &stale.current, &keys],
        )
        .await?,
    )?;
    tx.commit().await?;
    Ok(doomed)
}

pub(super) async fn unnamed_objects(client: &Client, keys: &[String]) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT k FROM unnest($1::TEXT[]) AS k
             WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE o.object_key = k)
               AND NOT EXISTS (SELECT 1 FROM object_intents i WHERE i.object_key = k)",
            &[&keys],
        )
        .await?;
    strings(&rows)
}

pub(super) async fn retired_objects(
    client: &Client,
    grace_ms: i64,
    limit: usize,
) -> Result<Vec<String>> {
    let rows = client
        .query(
            &format!(
                "SELECT object_key FROM objects
                 WHERE retired_ms IS NOT NULL AND retired_ms < {STORE_NOW_MS} - $1
                   AND NOT EXISTS (SELECT 1 FROM backup_holds h
                       WHERE h.expires_ms > {STORE_NOW_MS} AND h.created_ms <= objects.retired_ms)
                 ORDER BY retired_ms LIMIT $2"
            ),
            &[&grace(grace_ms), &(limit as i64)],
        )
        .await?;
    strings(&rows)
}

pub(super) async fn unsealed_objects(
    client: &Client,
    leader: i32,
    max_bytes: u64,
    limit: usize,
) -> Result<UnsealedObjects> {
    // One row past `limit` tells whether more follow. An object without
    // chunks (its topics deleted, its swaps done) is anyone's to retire.
    let rows = client
        .query(
            "SELECT o.object_key, o.size FROM objects o
             WHERE o.kind = 0 AND o.retired_ms IS NULL AND (
                 EXISTS (SELECT 1 FROM chunks c JOIN partitions p
                           ON p.topic_id = c.topic_id AND p.partition = c.partition
                         WHERE c.object_key = o.object_key AND p.leader_id = $2)
                 OR NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = o.object_key))
             ORDER BY o.seq LIMIT $1",
            &[&(limit.saturating_add(1) as i64), &leader],
        )
        .await?;
    let mut out = UnsealedObjects::default();
    let mut total = 0u64;
    for row in rows {
        let size = row.try_get::<_, i64>(1)?.max(0) as u64;
        if out.objects.len() >= limit || (!out.objects.is_empty() && total + size > max_bytes) {
            out.more = true;
            break;
        }
        total += size;
        out.objects.push((row.try_get(0)?, size));
    }
    Ok(out)
}

pub(super) async fn replace_chunks(
    client: &mut Client,
    objects: &[SealedObject],
    retire_replaced: bool,
) -> Result<Vec<Vec<bool>>> {
    let mut tx = client.transaction().await?;
    let mut applied = Vec::with_capacity(objects.len());
    let mut touched: BTreeSet<Arc<str>> = BTreeSet::new();
    let insert_object = tx
        .prepare_cached(
            "INSERT INTO objects (object_key, size, created_ms, kind) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    // The rows in the new chunk's offset range are deleted and returned in
    // one statement; they must be exactly the replaced chunks, else the
    // delete is rolled back (to a savepoint) and the chunk skipped.
    let take_range = tx
        .prepare_cached(
            "DELETE FROM chunks
             WHERE topic_id = $1 AND partition = $2 AND base_offset >= $3 AND base_offset <= $4
             RETURNING base_offset, last_offset, object_key",
        )
        .await?;
    let insert_chunk = tx
        .prepare_cached(
            "INSERT INTO chunks (topic_id, partition, base_offset, last_offset, max_timestamp,
                 object_key, byte_start, byte_len, index_len)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await?;
    // FOR SHARE: a leadership move of the partition waits for this swap.
    let epoch_of = tx
        .prepare_cached(
            "SELECT leader_epoch FROM partitions WHERE topic_id = $1 AND partition = $2
             FOR SHARE",
        )
        .await?;
    // Every partition row the swap touches, locked first and in
    // (topic, partition) order, as commits lock them.
    let wanted: BTreeSet<(TopicId, i32)> = objects
        .iter()
        .flat_map(|o| o.chunks.iter().map(|c| (c.topic_id, c.partition)))
        .collect();
    let mut epochs: HashMap<(TopicId, i32), i32> = HashMap::with_capacity(wanted.len());
    for (topic, partition) in wanted {
        if let Some(row) = tx.query_opt(&epoch_of, &[&tid(topic), &partition]).await? {
            epochs.insert((topic, partition), row.try_get(0)?);
        }
    }
    for object in objects {
        take_intent(&tx, &object.key).await?;
        tx.execute(
            &insert_object,
            &[
                &object.key,
                &(object.size as i64),
                &now_ms(),
                &(object.kind as i16),
            ],
        )
        .await?;
        let mut flags = Vec::with_capacity(object.chunks.len());
        for sealed in &object.chunks {
            let topic = tid(sealed.topic_id);
            let (first, last) = (sealed.chunk.base_offset, sealed.chunk.last_offset);
            let epoch = epochs.get(&(sealed.topic_id, sealed.partition)).copied();
            if epoch != Some(sealed.leader_epoch) {
                // Leadership moved (or the partition is gone).
                flags.push(false);
                continue;
            }
            let swap = tx.savepoint("swap").await?;
            let rows = swap
                .query(&take_range, &[&topic, &sealed.partition, &first, &last])
                .await?;
            let mut taken = Vec::with_capacity(rows.len());
            for row in &rows {
                taken.push((
                    row.try_get::<_, i64>(0)?,
                    row.try_get::<_, i64>(1)?,
                    row.try_get::<_, &str>(2)?,
                ));
            }
            if !crate::metadata::rows::replaced_exactly(&mut taken, sealed) {
                swap.rollback().await?;
                flags.push(false);
                continue;
            }
            swap.commit().await?;
            if retire_replaced {
                touched.extend(sealed.replaces.iter().map(|(key, _)| Arc::clone(key)));
            }
            let c = &sealed.chunk;
            tx.execute(
                &insert_chunk,
                &[
                    &topic,
                    &sealed.partition,
                    &c.base_offset,
                    &c.last_offset,
                    &c.max_timestamp,
                    &object.key,
                    &(c.byte_start as i64),
                    &(c.byte_len as i64),
                    &(c.index_len as i64),
                ],
            )
            .await?;
            flags.push(true);
        }
        touched.insert(Arc::from(object.key.as_str()));
        applied.push(flags);
    }
    let touched: Vec<String> = touched.iter().map(|k| k.to_string()).collect();
    retire_if_unreferenced(&tx, &touched).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Takes a backup hold for `hold_ms` from now (the server's clock).
pub(super) async fn add_backup_hold(client: &Client, hold_ms: i64) -> Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    client
        .execute(
            &format!(
                "INSERT INTO backup_holds (hold_id, created_ms, expires_ms)
                 VALUES ($1, {STORE_NOW_MS}, {STORE_NOW_MS} + $2)"
            ),
            &[&id, &grace(hold_ms.max(0))],
        )
        .await?;
    Ok(id)
}

pub(super) async fn expire_backup_holds(client: &Client) -> Result<usize> {
    let n = client
        .execute(
            &format!("DELETE FROM backup_holds WHERE expires_ms <= {STORE_NOW_MS}"),
            &[],
        )
        .await?;
    Ok(n as usize)
}
