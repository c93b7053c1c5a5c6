//! Embedded SQLite backend. Every call runs on the blocking pool. Writes go
//! through one connection behind a mutex; reads that need no transaction
//! with a write (startup loads, admin reads, the collector's and the
//! sealer's queries) go through a second, read-only connection, so they
//! never queue behind (or hold up) the write path's commits. WAL journal
//! with `synchronous=FULL`: a commit that returned is on disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

mod cluster;
mod connection;
mod groups;
mod objects;
mod producers;
mod schema;
mod topics;
mod transactions;
mod users;

use super::{
    AbortedTxn, AclRecord, BrokerRecord, ChunkOutcome, ChunkRecord, CommittedOffset, GroupStateRow,
    LeaderMove, MetadataError, MetadataStore, ObjectCommit, PartitionProducerState,
    PartitionRecord, ProducerStateRecord, QuotaRecord, Result, ScramRecord, SealedObject,
    StaleIntents, TopicId, TopicRecord, TransactionRecord, UnsealedObjects, UploadIntent,
};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) use crate::metadata::rows::parse_topic_id;

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn cluster_id(&self) -> Result<String> {
        self.with_conn(|conn| {
            let existing: Option<String> = conn
                .query_row("SELECT cluster_id FROM cluster WHERE id = 0", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
            let id = Uuid::new_v4().simple().to_string();
            conn.execute(
                "INSERT INTO cluster (id, cluster_id) VALUES (0, ?1)",
                params![id],
            )?;
            Ok(id)
        })
        .await
    }

    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        leaders: Vec<i32>,
    ) -> Result<TopicRecord> {
        let name = name.to_string();
        self.with_conn(move |conn| topics::create(conn, name, partitions, configs, &leaders))
            .await
    }

    async fn delete_topic(&self, id: TopicId) -> Result<()> {
        self.with_conn(move |conn| topics::delete(conn, id)).await
    }

    async fn set_topic_configs(
        &self,
        id: TopicId,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
        let configs_json = serde_json::to_string(&configs)
            .map_err(|e| MetadataError::Backend(format!("encode configs: {e}")))?;
        self.with_conn(move |conn| {
            let updated = conn.execute(
                "UPDATE topics SET configs = ?1 WHERE topic_id = ?2",
                params![configs_json, id.0.to_string()],
            )?;
            if updated == 0 {
                return Err(MetadataError::UnknownTopic(id.to_string()));
            }
            Ok(())
        })
        .await
    }

    async fn add_partitions(
        &self,
        id: TopicId,
        partitions: i32,
        leaders: Vec<i32>,
    ) -> Result<Vec<PartitionRecord>> {
        self.with_conn(move |conn| topics::add_partitions(conn, id, partitions, &leaders))
            .await
    }

    async fn advance_log_start(&self, id: TopicId, partition: i32, offset: i64) -> Result<i64> {
        self.with_conn(move |conn| topics::advance_log_start(conn, id, partition, offset))
            .await
    }

    async fn set_clean_offset(&self, id: TopicId, partition: i32, offset: i64) -> Result<()> {
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE partitions SET clean_offset = MAX(clean_offset, ?1)
                 WHERE topic_id = ?2 AND partition = ?3",
                params![offset, id.0.to_string(), partition],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_topics(&self) -> Result<Vec<TopicRecord>> {
        self.with_reader(topics::list).await
    }

    async fn topic_by_name(&self, name: &str) -> Result<Option<TopicRecord>> {
        let name = name.to_string();
        self.with_reader(move |conn| topics::by_name(conn, &name))
            .await
    }

    async fn partitions(&self, id: TopicId) -> Result<Vec<PartitionRecord>> {
        self.with_reader(move |conn| topics::partitions(conn, id))
            .await
    }

    async fn chunks_from(
        &self,
        id: TopicId,
        partition: i32,
        from: i64,
    ) -> Result<Vec<ChunkRecord>> {
        self.with_reader(move |conn| objects::chunks_from(conn, id, partition, from))
            .await
    }

    async fn claim_own_partitions(&self, node_id: i32) -> Result<()> {
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE partitions SET leader_epoch = leader_epoch + 1 WHERE leader_id = ?1",
                params![node_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn all_partitions(&self) -> Result<Vec<(TopicId, PartitionRecord)>> {
        self.with_reader(topics::all_partitions).await
    }

    async fn partition_state(
        &self,
        id: TopicId,
        partition: i32,
        aborted_limit: usize,
    ) -> Result<(Vec<ProducerStateRecord>, Vec<AbortedTxn>)> {
        self.with_reader(move |conn| cluster::partition_state(conn, id, partition, aborted_limit))
            .await
    }

    async fn recent_aborted(
        &self,
        id: TopicId,
        partition: i32,
        limit: usize,
    ) -> Result<Vec<AbortedTxn>> {
        self.with_reader(move |conn| transactions::recent_aborted(conn, id, partition, limit))
            .await
    }

    async fn aborted_range(
        &self,
        id: TopicId,
        partition: i32,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<AbortedTxn>> {
        self.with_reader(move |conn| {
            transactions::aborted_range(conn, id, partition, from, to, limit)
        })
        .await
    }

    async fn forget_aborted(
        &self,
        id: TopicId,
        partition: i32,
        below: i64,
        keep: Vec<i64>,
    ) -> Result<()> {
        self.with_conn(move |conn| transactions::forget_aborted(conn, id, partition, below, &keep))
            .await
    }

    async fn register_broker(&self, record: BrokerRecord) -> Result<()> {
        self.with_conn(move |conn| cluster::register(conn, &record))
            .await
    }

    async fn renew_lease(&self, record: BrokerRecord) -> Result<bool> {
        self.with_conn(move |conn| cluster::renew(conn, &record))
            .await
    }

    async fn deregister_broker(&self, node_id: i32, boot: &str) -> Result<()> {
        let boot = boot.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM brokers WHERE node_id = ?1 AND boot = ?2",
                params![node_id, boot],
            )?;
            Ok(())
        })
        .await
    }

    async fn live_brokers(&self, now_ms: i64) -> Result<Vec<BrokerRecord>> {
        self.with_reader(move |conn| cluster::live(conn, now_ms))
            .await
    }

    async fn try_controller(
        &self,
        node_id: i32,
        boot: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool> {
        let boot = boot.to_string();
        self.with_conn(move |conn| {
            cluster::try_controller(conn, node_id, &boot, now_ms, lease_until_ms)
        })
        .await
    }

    async fn move_leaders(
        &self,
        node_id: i32,
        boot: &str,
        now_ms: i64,
        moves: Vec<LeaderMove>,
    ) -> Result<Vec<bool>> {
        let boot = boot.to_string();
        self.with_conn(move |conn| cluster::move_leaders(conn, node_id, &boot, now_ms, &moves))
            .await
    }

    async fn commit_object(&self, commit: ObjectCommit) -> Result<Vec<ChunkOutcome>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Cached statements: a flush runs these once per partition, so
            // parsing them each time cost more than executing them.
            objects::take_intent(&tx, &commit.object_key)?;
            tx.prepare_cached(
                "INSERT INTO objects (object_key, size, created_ms, kind) VALUES (?1, ?2, ?3, 0)",
            )?
            .execute(params![
                commit.object_key,
                commit.object_size as i64,
                now_ms()
            ])?;
            let mut advance = tx.prepare_cached(
                "UPDATE partitions SET high_watermark = ?1
                 WHERE topic_id = ?2 AND partition = ?3 AND leader_epoch = ?4
                   AND high_watermark = ?5",
            )?;
            let mut insert_chunk = tx.prepare_cached(
                "INSERT INTO chunks (topic_id, partition, base_offset, last_offset,
                     max_timestamp, object_key, byte_start, byte_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut outcomes = Vec::with_capacity(commit.chunks.len());
            for c in &commit.chunks {
                let topic = c.topic_id.0.to_string();
                let next = c.chunk.last_offset + 1;
                let updated = advance.execute(params![
                    next,
                    topic,
                    c.partition,
                    c.leader_epoch,
                    c.chunk.base_offset
                ])?;
                if updated == 0 {
                    let state: Option<(i32, i64)> = tx
                        .query_row(
                            "SELECT leader_epoch, high_watermark FROM partitions
                             WHERE topic_id = ?1 AND partition = ?2",
                            params![topic, c.partition],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    // Deleted, or fenced: this partition's part fails alone.
                    outcomes.push(match state {
                        None => ChunkOutcome::TopicDeleted,
                        Some((epoch, hw)) => {
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
                    });
                    continue;
                }
                insert_chunk.execute(params![
                    topic,
                    c.partition,
                    c.chunk.base_offset,
                    c.chunk.last_offset,
                    c.chunk.max_timestamp,
                    commit.object_key,
                    c.chunk.byte_start as i64,
                    c.chunk.byte_len as i64
                ])?;
                for state in &c.producers {
                    producers::upsert(&tx, c.topic_id, c.partition, state)?;
                }
                if !c.aborted.is_empty() {
                    transactions::insert_aborted(&tx, c.topic_id, c.partition, &c.aborted)?;
                }
                outcomes.push(ChunkOutcome::Committed);
            }
            drop((advance, insert_chunk));
            if !outcomes.contains(&ChunkOutcome::Committed) {
                // Nothing of it is part of any log.
                objects::retire_if_unreferenced(&tx, [commit.object_key.as_str()])?;
            }
            tx.commit()?;
            Ok(outcomes)
        })
        .await
    }

    async fn record_intents(&self, owner: &str, keys: Vec<String>) -> Result<()> {
        let owner = owner.to_string();
        self.with_conn(move |conn| objects::record_intents(conn, &owner, &keys))
            .await
    }

    async fn renew_intents(&self, owner: &str, keys: Vec<String>) -> Result<usize> {
        let owner = owner.to_string();
        self.with_conn(move |conn| objects::renew_intents(conn, &owner, &keys))
            .await
    }

    async fn stale_intents(&self, stale: StaleIntents, limit: usize) -> Result<Vec<UploadIntent>> {
        self.with_reader(move |conn| objects::stale_intents(conn, &stale, limit))
            .await
    }

    async fn doom_uncommitted(
        &self,
        keys: Vec<String>,
        stale: StaleIntents,
    ) -> Result<Vec<String>> {
        self.with_conn(move |conn| objects::doom_uncommitted(conn, &keys, &stale))
            .await
    }

    async fn forget_intents(&self, keys: Vec<String>) -> Result<()> {
        self.with_conn(move |conn| objects::forget_intents(conn, &keys))
            .await
    }

    async fn unnamed_objects(&self, keys: Vec<String>) -> Result<Vec<String>> {
        self.with_reader(move |conn| objects::unnamed_objects(conn, &keys))
            .await
    }

    async fn retired_objects(&self, grace_ms: i64, limit: usize) -> Result<Vec<String>> {
        self.with_reader(move |conn| objects::retired_objects(conn, grace_ms, limit))
            .await
    }

    async fn add_backup_hold(&self, hold_ms: i64) -> Result<String> {
        self.with_conn(move |conn| objects::add_backup_hold(conn, hold_ms))
            .await
    }

    async fn expire_backup_holds(&self) -> Result<usize> {
        self.with_conn(objects::expire_backup_holds).await
    }

    async fn forget_objects(&self, keys: Vec<String>) -> Result<()> {
        self.with_conn(move |conn| objects::forget_objects(conn, &keys))
            .await
    }

    async fn unsealed_objects(
        &self,
        _leader: i32,
        max_bytes: u64,
        limit: usize,
    ) -> Result<UnsealedObjects> {
        self.with_reader(move |conn| objects::unsealed_objects(conn, max_bytes, limit))
            .await
    }

    async fn replace_chunks(
        &self,
        sealed: Vec<SealedObject>,
        retire_replaced: bool,
    ) -> Result<Vec<Vec<bool>>> {
        self.with_conn(move |conn| objects::replace_chunks(conn, &sealed, retire_replaced))
            .await
    }

    async fn retire_unreferenced(&self, keys: Vec<String>) -> Result<()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            objects::retire_if_unreferenced(&tx, keys.iter().map(String::as_str))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        coordinator_epoch: Option<i32>,
        offsets: Vec<CommittedOffset>,
    ) -> Result<Vec<bool>> {
        let group = group.to_string();
        self.with_conn(move |conn| groups::commit(conn, &group, coordinator_epoch, &offsets))
            .await
    }

    async fn fetch_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>> {
        let group = group.to_string();
        self.with_reader(move |conn| groups::fetch(conn, &group))
            .await
    }

    async fn delete_offsets(&self, group: &str, partitions: Vec<(TopicId, i32)>) -> Result<()> {
        let group = group.to_string();
        self.with_conn(move |conn| groups::delete_partitions(conn, &group, &partitions))
            .await
    }

    async fn delete_group(&self, group: &str) -> Result<()> {
        let group = group.to_string();
        self.with_conn(move |conn| groups::delete_group(conn, &group))
            .await
    }

    async fn record_group(&self, group: &str, protocol_type: &str) -> Result<()> {
        let (group, protocol_type) = (group.to_string(), protocol_type.to_string());
        self.with_conn(move |conn| groups::record(conn, &group, &protocol_type))
            .await
    }

    async fn stored_groups(&self) -> Result<Vec<(String, String)>> {
        self.with_reader(groups::stored).await
    }

    async fn put_group_state(
        &self,
        group: &str,
        protocol_type: &str,
        state: GroupStateRow,
    ) -> Result<bool> {
        let (group, protocol_type) = (group.to_string(), protocol_type.to_string());
        self.with_conn(move |conn| groups::put_state(conn, &group, &protocol_type, &state))
            .await
    }

    async fn clock_ms(&self) -> Result<i64> {
        // Embedded: the store's clock is this broker's.
        Ok(now_ms())
    }

    async fn group_state(&self, group: &str) -> Result<Option<GroupStateRow>> {
        let group = group.to_string();
        self.with_reader(move |conn| groups::state(conn, &group))
            .await
    }

    async fn expire_offsets(&self, before_ms: i64, active: Vec<String>) -> Result<usize> {
        self.with_conn(move |conn| groups::expire(conn, before_ms, &active))
            .await
    }

    async fn allocate_producer_id(&self) -> Result<i64> {
        self.with_conn(producers::allocate).await
    }

    async fn producer_id_issued(&self, producer_id: i64) -> Result<bool> {
        self.with_conn(move |conn| producers::issued(conn, producer_id))
            .await
    }

    async fn producer_states(&self) -> Result<Vec<PartitionProducerState>> {
        self.with_reader(producers::load_all).await
    }

    async fn expire_producers(&self, before_ms: i64) -> Result<usize> {
        self.with_conn(move |conn| producers::expire(conn, before_ms))
            .await
    }

    async fn transactions_of(
        &self,
        only: Option<String>,
    ) -> Result<Vec<(TransactionRecord, Vec<(String, CommittedOffset)>)>> {
        self.with_reader(move |conn| transactions::load(conn, only.as_deref()))
            .await
    }

    async fn put_transaction(&self, record: TransactionRecord) -> Result<()> {
        self.with_conn(move |conn| transactions::put(conn, &record))
            .await
    }

    async fn put_txn_offsets(
        &self,
        transactional_id: &str,
        group: &str,
        coordinator_epoch: i32,
        offsets: Vec<CommittedOffset>,
    ) -> Result<()> {
        let (id, group) = (transactional_id.to_string(), group.to_string());
        self.with_conn(move |conn| {
            transactions::put_offsets(conn, &id, &group, coordinator_epoch, &offsets)
        })
        .await
    }

    async fn complete_transaction(&self, record: TransactionRecord, commit: bool) -> Result<()> {
        self.with_conn(move |conn| transactions::complete(conn, &record, commit))
            .await
    }

    async fn delete_transactions(&self, ids: Vec<String>) -> Result<()> {
        self.with_conn(move |conn| transactions::delete(conn, &ids))
            .await
    }

    async fn aborted_txns(&self) -> Result<Vec<(TopicId, i32, AbortedTxn)>> {
        self.with_reader(transactions::load_aborted).await
    }

    async fn scram_credentials(&self, users: Option<Vec<String>>) -> Result<Vec<ScramRecord>> {
        self.with_reader(move |conn| users::scram_credentials(conn, users.as_deref()))
            .await
    }

    async fn put_scram_credential(&self, record: ScramRecord) -> Result<()> {
        self.with_conn(move |conn| users::put_scram_credential(conn, &record))
            .await
    }

    async fn delete_scram_credential(&self, user: &str, mechanism: i8) -> Result<bool> {
        let user = user.to_string();
        self.with_conn(move |conn| users::delete_scram_credential(conn, &user, mechanism))
            .await
    }

    async fn acls(&self) -> Result<Vec<AclRecord>> {
        self.with_reader(users::acls).await
    }

    async fn create_acls(&self, bindings: Vec<AclRecord>) -> Result<()> {
        self.with_conn(move |conn| users::create_acls(conn, &bindings))
            .await
    }

    async fn delete_acls(&self, bindings: Vec<AclRecord>) -> Result<usize> {
        self.with_conn(move |conn| users::delete_acls(conn, &bindings))
            .await
    }

    async fn client_quotas(&self) -> Result<Vec<QuotaRecord>> {
        self.with_reader(users::client_quotas).await
    }

    async fn alter_client_quotas(
        &self,
        set: Vec<QuotaRecord>,
        remove: Vec<(String, String)>,
    ) -> Result<()> {
        self.with_conn(move |conn| users::alter_client_quotas(conn, &set, &remove))
            .await
    }
}

#[cfg(test)]
mod tests;
