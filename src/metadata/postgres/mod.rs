//! PostgreSQL backend, for clusters: every broker of a cluster opens the
//! same database. Calls take a connection from a small pool (so reads never
//! queue behind commits), and each multi-row change is one transaction at
//! PostgreSQL's default isolation (READ COMMITTED): the row locks of the
//! conditional `UPDATE`s that advance a partition (`... WHERE leader_epoch
//! = $writer AND high_watermark = $base`) are what fence a stale writer, as
//! the single writer connection does in SQLite. A commit that returned is
//! durable (PostgreSQL's default `synchronous_commit = on`).
//!
//! The schema is versioned by the files in `migrations/`, applied in order
//! at open under an advisory lock (brokers starting together migrate once).
//!
//! Every call is bounded by `call_timeout`, from waiting for a pooled
//! connection to the last row: a database that stops answering (a
//! failover, a dropped NAT entry, a frozen server) fails the call with
//! `MetadataError::Unavailable` (a retriable Kafka error for the request
//! behind it) instead of stalling the commit pipeline. The connection of a
//! call that ran out of time is closed, never handed to another call; the
//! server also ends statements that run past the bound (`statement_timeout`),
//! and TCP keepalives find a peer that vanished. An abandoned commit may
//! still land on the server: the write path learns that from the store
//! (its next commit is fenced and catches up), so nothing is lost or
//! written twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use uuid::Uuid;

mod cluster;
mod connection;
mod groups;
mod objects;
mod producers;
mod schema;
mod tls;
mod topics;
mod transactions;
mod users;

use super::{
    AbortedTxn, AclRecord, BrokerRecord, ChunkOutcome, ChunkRecord, CommittedOffset, GroupStateRow,
    LeaderMove, MetadataError, MetadataStore, ObjectCommit, PartitionProducerState,
    PartitionRecord, ProducerStateRecord, QuotaRecord, Result, ScramRecord, SealedObject,
    StaleIntents, TopicId, TopicRecord, TransactionRecord, UnsealedObjects, UploadIntent,
};

use connection::Client;
pub use connection::DEFAULT_CALL_TIMEOUT;

pub struct PostgresStore {
    pool: Pool,
    call_timeout: Duration,
}

pub(super) use crate::metadata::sqlite::now_ms;

/// The server's clock in milliseconds, as SQL (not the transaction's start
/// time): what leases, intents and retirements are aged on, so brokers
/// whose clocks disagree still agree.
pub(super) const STORE_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

pub(super) use crate::metadata::rows::parse_topic_id;

/// A topic id as stored (the same text as SQLite's).
/// How often a transaction the server aborted for a conflict runs again.
const CONFLICT_RETRIES: u32 = 3;

pub(super) fn tid(id: TopicId) -> String {
    id.0.to_string()
}

/// The first column of each row, as text.
pub(super) fn strings(rows: &[tokio_postgres::Row]) -> Result<Vec<String>> {
    rows.iter()
        .map(|r| Ok(r.try_get::<_, String>(0)?))
        .collect()
}

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn cluster_id(&self) -> Result<String> {
        self.bounded("cluster_id", async move {
            let client = self.client().await?;
            let id = Uuid::new_v4().simple().to_string();
            client
                .execute(
                    "INSERT INTO cluster (id, cluster_id) VALUES (0, $1) ON CONFLICT (id) DO NOTHING",
                    &[&id],
                )
                .await?;
            let row = client
                .query_one("SELECT cluster_id FROM cluster WHERE id = 0", &[])
                .await?;
            Ok(row.try_get(0)?)
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
        self.bounded("create_topic", async move {
            let mut client = self.client().await?;
            topics::create(&mut client, name, partitions, configs, &leaders).await
        })
        .await
    }

    async fn delete_topic(&self, id: TopicId) -> Result<()> {
        self.bounded("delete_topic", async move {
            let mut client = self.client().await?;
            topics::delete(&mut client, id).await
        })
        .await
    }

    async fn set_topic_configs(
        &self,
        id: TopicId,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
        self.bounded("set_topic_configs", async move {
            let configs_json = serde_json::to_string(&configs)
                .map_err(|e| MetadataError::Backend(format!("encode configs: {e}")))?;
            let client = self.client().await?;
            let updated = client
                .execute(
                    "UPDATE topics SET configs = $1 WHERE topic_id = $2",
                    &[&configs_json, &tid(id)],
                )
                .await?;
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
        self.bounded("add_partitions", async move {
            let mut client = self.client().await?;
            topics::add_partitions(&mut client, id, partitions, &leaders).await
        })
        .await
    }

    async fn advance_log_start(&self, id: TopicId, partition: i32, offset: i64) -> Result<i64> {
        self.bounded("advance_log_start", async move {
            let mut client = self.client().await?;
            topics::advance_log_start(&mut client, id, partition, offset).await
        })
        .await
    }

    async fn set_clean_offset(&self, id: TopicId, partition: i32, offset: i64) -> Result<()> {
        self.bounded("set_clean_offset", async move {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE partitions SET clean_offset = GREATEST(clean_offset, $1)
                     WHERE topic_id = $2 AND partition = $3",
                    &[&offset, &tid(id), &partition],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_topics(&self) -> Result<Vec<TopicRecord>> {
        self.bounded("list_topics", async move {
            let client = self.client().await?;
            topics::list(&*client).await
        })
        .await
    }

    async fn topic_by_name(&self, name: &str) -> Result<Option<TopicRecord>> {
        self.bounded("topic_by_name", async move {
            let client = self.client().await?;
            topics::by_name(&*client, name).await
        })
        .await
    }

    async fn partitions(&self, id: TopicId) -> Result<Vec<PartitionRecord>> {
        self.bounded("partitions", async move {
            let client = self.client().await?;
            topics::partitions(&*client, id).await
        })
        .await
    }

    async fn chunks_from(
        &self,
        id: TopicId,
        partition: i32,
        from: i64,
    ) -> Result<Vec<ChunkRecord>> {
        self.bounded("chunks_from", async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT c.base_offset, c.last_offset, c.max_timestamp, c.object_key, o.size,
                            c.byte_start, c.byte_len, c.index_len
                     FROM chunks c JOIN objects o ON o.object_key = c.object_key
                     WHERE c.topic_id = $1 AND c.partition = $2 AND c.last_offset >= $3
                     ORDER BY c.base_offset",
                )
                .await?;
            let rows = client.query(&stmt, &[&tid(id), &partition, &from]).await?;
            rows.iter()
                .map(|r| {
                    Ok(ChunkRecord {
                        base_offset: r.try_get(0)?,
                        last_offset: r.try_get(1)?,
                        max_timestamp: r.try_get(2)?,
                        object_key: Arc::from(r.try_get::<_, &str>(3)?),
                        object_size: r.try_get::<_, i64>(4)?.max(0) as u64,
                        byte_start: r.try_get::<_, i64>(5)?.max(0) as u64,
                        byte_len: r.try_get::<_, i64>(6)?.max(0) as u64,
                        index_len: r.try_get::<_, i64>(7)?.max(0) as u64,
                    })
                })
                .collect()
        })
        .await
    }

    async fn claim_own_partitions(&self, node_id: i32) -> Result<()> {
        self.bounded("claim_own_partitions", async move {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE partitions SET leader_epoch = leader_epoch + 1 WHERE leader_id = $1",
                    &[&node_id],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn all_partitions(&self) -> Result<Vec<(TopicId, PartitionRecord)>> {
        self.bounded("all_partitions", async move {
            let client = self.client().await?;
            topics::all_partitions(&*client).await
        })
        .await
    }

    async fn partition_state(
        &self,
        id: TopicId,
        partition: i32,
        aborted_limit: usize,
    ) -> Result<(Vec<ProducerStateRecord>, Vec<AbortedTxn>)> {
        self.bounded("partition_state", async move {
            let client = self.client().await?;
            cluster::partition_state(&client, id, partition, aborted_limit).await
        })
        .await
    }

    async fn recent_aborted(
        &self,
        id: TopicId,
        partition: i32,
        limit: usize,
    ) -> Result<Vec<AbortedTxn>> {
        self.bounded("recent_aborted", async move {
            let client = self.client().await?;
            transactions::recent_aborted(&client, id, partition, limit).await
        })
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
        self.bounded("aborted_range", async move {
            let client = self.client().await?;
            transactions::aborted_range(&client, id, partition, from, to, limit).await
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
        self.bounded("forget_aborted", async move {
            let client = self.client().await?;
            transactions::forget_aborted(&client, id, partition, below, &keep).await
        })
        .await
    }

    async fn register_broker(&self, record: BrokerRecord) -> Result<()> {
        self.bounded("register_broker", async move {
            let client = self.client().await?;
            cluster::register(&client, &record).await
        })
        .await
    }

    async fn renew_lease(&self, record: BrokerRecord) -> Result<bool> {
        self.bounded("renew_lease", async move {
            let client = self.client().await?;
            cluster::renew(&client, &record).await
        })
        .await
    }

    async fn deregister_broker(&self, node_id: i32, boot: &str) -> Result<()> {
        self.bounded("deregister_broker", async move {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM brokers WHERE node_id = $1 AND boot = $2",
                    &[&node_id, &boot],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn live_brokers(&self, now_ms: i64) -> Result<Vec<BrokerRecord>> {
        self.bounded("live_brokers", async move {
            let client = self.client().await?;
            cluster::live(&client, now_ms).await
        })
        .await
    }

    async fn clock_ms(&self) -> Result<i64> {
        self.bounded("clock_ms", async move {
            let client = self.client().await?;
            cluster::clock_ms(&client).await
        })
        .await
    }

    async fn try_controller(
        &self,
        node_id: i32,
        boot: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool> {
        self.bounded("try_controller", async move {
            let client = self.client().await?;
            // The lease's length; its end is set on the server's clock.
            let lease_ms = lease_until_ms.saturating_sub(now_ms);
            cluster::try_controller(&client, node_id, boot, lease_ms).await
        })
        .await
    }

    async fn move_leaders(
        &self,
        node_id: i32,
        boot: &str,
        _now_ms: i64,
        moves: Vec<LeaderMove>,
    ) -> Result<Vec<bool>> {
        self.bounded("move_leaders", async move {
            let mut client = self.client().await?;
            cluster::move_leaders(&mut client, node_id, boot, &moves).await
        })
        .await
    }

    async fn commit_object(&self, commit: ObjectCommit) -> Result<Vec<ChunkOutcome>> {
        self.bounded("commit_object", async move {
            let mut client = self.client().await?;
            // Partition rows are locked in one order by every transaction that
            // locks several, so a conflict is not expected; if the server
            // aborts one anyway, nothing of it happened and it runs again.
            let mut attempt = 0;
            loop {
                match objects::commit_object(&mut client, &commit).await {
                    Err(MetadataError::Conflict(why)) if attempt < CONFLICT_RETRIES => {
                        attempt += 1;
                        tracing::warn!(%why, attempt, "commit aborted by a conflict; running it again");
                    }
                    other => return other,
                }
            }
        })
        .await
    }

    async fn record_intents(&self, owner: &str, keys: Vec<String>) -> Result<()> {
        self.bounded("record_intents", async move {
            let client = self.client().await?;
            objects::record_intents(&client, owner, &keys).await
        })
        .await
    }

    async fn renew_intents(&self, owner: &str, keys: Vec<String>) -> Result<usize> {
        self.bounded("renew_intents", async move {
            let client = self.client().await?;
            objects::renew_intents(&client, owner, &keys).await
        })
        .await
    }

    async fn stale_intents(&self, stale: StaleIntents, limit: usize) -> Result<Vec<UploadIntent>> {
        self.bounded("stale_intents", async move {
            let client = self.client().await?;
            objects::stale_intents(&client, &stale, limit).await
        })
        .await
    }

    async fn doom_uncommitted(
        &self,
        keys: Vec<String>,
        stale: StaleIntents,
    ) -> Result<Vec<String>> {
        self.bounded("doom_uncommitted", async move {
            let mut client = self.client().await?;
            objects::doom_uncommitted(&mut client, &keys, &stale).await
        })
        .await
    }

    async fn forget_intents(&self, keys: Vec<String>) -> Result<()> {
        self.bounded("forget_intents", async move {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM object_intents WHERE object_key = ANY($1)",
                    &[&keys],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn unnamed_objects(&self, keys: Vec<String>) -> Result<Vec<String>> {
        self.bounded("unnamed_objects", async move {
            let client = self.client().await?;
            objects::unnamed_objects(&client, &keys).await
        })
        .await
    }

    async fn retired_objects(&self, grace_ms: i64, limit: usize) -> Result<Vec<String>> {
        self.bounded("retired_objects", async move {
            let client = self.client().await?;
            objects::retired_objects(&client, grace_ms, limit).await
        })
        .await
    }

    async fn add_backup_hold(&self, hold_ms: i64) -> Result<String> {
        self.bounded("add_backup_hold", async move {
            let client = self.client().await?;
            objects::add_backup_hold(&client, hold_ms).await
        })
        .await
    }

    async fn expire_backup_holds(&self) -> Result<usize> {
        self.bounded("expire_backup_holds", async move {
            let client = self.client().await?;
            objects::expire_backup_holds(&client).await
        })
        .await
    }

    async fn forget_objects(&self, keys: Vec<String>) -> Result<()> {
        self.bounded("forget_objects", async move {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM objects
                     WHERE object_key = ANY($1) AND retired_ms IS NOT NULL AND refs <= 0",
                    &[&keys],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn unsealed_objects(
        &self,
        leader: i32,
        max_bytes: u64,
        limit: usize,
    ) -> Result<UnsealedObjects> {
        self.bounded("unsealed_objects", async move {
            let client = self.client().await?;
            objects::unsealed_objects(&client, leader, max_bytes, limit).await
        })
        .await
    }

    async fn replace_chunks(
        &self,
        sealed: Vec<SealedObject>,
        retire_replaced: bool,
    ) -> Result<Vec<Vec<bool>>> {
        self.bounded("replace_chunks", async move {
            let mut client = self.client().await?;
            let mut attempt = 0;
            loop {
                match objects::replace_chunks(&mut client, &sealed, retire_replaced).await {
                    Err(MetadataError::Conflict(why)) if attempt < CONFLICT_RETRIES => {
                        attempt += 1;
                        tracing::warn!(%why, attempt, "swap aborted by a conflict; running it again");
                    }
                    other => return other,
                }
            }
        })
        .await
    }

    async fn retire_unreferenced(&self, keys: Vec<String>) -> Result<()> {
        self.bounded("retire_unreferenced", async move {
            let client = self.client().await?;
            objects::retire_if_unreferenced(&*client, &keys).await
        })
        .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        coordinator_epoch: Option<i32>,
        offsets: Vec<CommittedOffset>,
    ) -> Result<Vec<bool>> {
        self.bounded("commit_offsets", async move {
            let mut client = self.client().await?;
            groups::commit(&mut client, group, coordinator_epoch, &offsets).await
        })
        .await
    }

    async fn fetch_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>> {
        self.bounded("fetch_offsets", async move {
            let client = self.client().await?;
            groups::fetch(&client, group).await
        })
        .await
    }

    async fn delete_offsets(&self, group: &str, partitions: Vec<(TopicId, i32)>) -> Result<()> {
        self.bounded("delete_offsets", async move {
            let mut client = self.client().await?;
            groups::delete_partitions(&mut client, group, &partitions).await
        })
        .await
    }

    async fn delete_group(&self, group: &str) -> Result<()> {
        self.bounded("delete_group", async move {
            let mut client = self.client().await?;
            groups::delete_group(&mut client, group).await
        })
        .await
    }

    async fn record_group(&self, group: &str, protocol_type: &str) -> Result<()> {
        self.bounded("record_group", async move {
            let client = self.client().await?;
            groups::record(&client, group, protocol_type).await
        })
        .await
    }

    async fn stored_groups(&self) -> Result<Vec<(String, String)>> {
        self.bounded("stored_groups", async move {
            let client = self.client().await?;
            groups::stored(&*client).await
        })
        .await
    }

    async fn put_group_state(
        &self,
        group: &str,
        protocol_type: &str,
        state: GroupStateRow,
    ) -> Result<bool> {
        self.bounded("put_group_state", async move {
            let client = self.client().await?;
            groups::put_state(&client, group, protocol_type, &state).await
        })
        .await
    }

    async fn group_state(&self, group: &str) -> Result<Option<GroupStateRow>> {
        self.bounded("group_state", async move {
            let client = self.client().await?;
            groups::state(&client, group).await
        })
        .await
    }

    async fn expire_offsets(&self, before_ms: i64, active: Vec<String>) -> Result<usize> {
        self.bounded("expire_offsets", async move {
            let mut client = self.client().await?;
            groups::expire(&mut client, before_ms, &active).await
        })
        .await
    }

    async fn allocate_producer_id(&self) -> Result<i64> {
        self.bounded("allocate_producer_id", async move {
            let client = self.client().await?;
            producers::allocate(&client).await
        })
        .await
    }

    async fn producer_id_issued(&self, producer_id: i64) -> Result<bool> {
        self.bounded("producer_id_issued", async move {
            let client = self.client().await?;
            producers::issued(&client, producer_id).await
        })
        .await
    }

    async fn producer_states(&self) -> Result<Vec<PartitionProducerState>> {
        self.bounded("producer_states", async move {
            let client = self.client().await?;
            producers::load_all(&client).await
        })
        .await
    }

    async fn expire_producers(&self, before_ms: i64) -> Result<usize> {
        self.bounded("expire_producers", async move {
            let client = self.client().await?;
            let deleted = client
                .execute(
                    // A producer with an open transaction stays until its marker.
                    "DELETE FROM producer_state WHERE last_append_ms < $1 AND txn_first_offset IS NULL",
                    &[&before_ms],
                )
                .await?;
            Ok(deleted as usize)
        })
        .await
    }

    async fn transactions_of(
        &self,
        only: Option<String>,
    ) -> Result<Vec<(TransactionRecord, Vec<(String, CommittedOffset)>)>> {
        self.bounded("transactions_of", async move {
            let client = self.client().await?;
            transactions::load(&client, only.as_deref()).await
        })
        .await
    }

    async fn put_transaction(&self, record: TransactionRecord) -> Result<()> {
        self.bounded("put_transaction", async move {
            let client = self.client().await?;
            transactions::upsert(&*client, &record).await
        })
        .await
    }

    async fn put_txn_offsets(
        &self,
        transactional_id: &str,
        group: &str,
        coordinator_epoch: i32,
        offsets: Vec<CommittedOffset>,
    ) -> Result<()> {
        self.bounded("put_txn_offsets", async move {
            let mut client = self.client().await?;
            transactions::put_offsets(
                &mut client,
                transactional_id,
                group,
                coordinator_epoch,
                &offsets,
            )
            .await
        })
        .await
    }

    async fn complete_transaction(&self, record: TransactionRecord, commit: bool) -> Result<()> {
        self.bounded("complete_transaction", async move {
            let mut client = self.client().await?;
            transactions::complete(&mut client, &record, commit).await
        })
        .await
    }

    async fn delete_transactions(&self, ids: Vec<String>) -> Result<()> {
        self.bounded("delete_transactions", async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM txn_offsets WHERE transactional_id = ANY($1)",
                &[&ids],
            )
            .await?;
            tx.execute(
                "DELETE FROM transactions WHERE transactional_id = ANY($1)",
                &[&ids],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn aborted_txns(&self) -> Result<Vec<(TopicId, i32, AbortedTxn)>> {
        self.bounded("aborted_txns", async move {
            let client = self.client().await?;
            transactions::load_aborted(&client).await
        })
        .await
    }

    async fn scram_credentials(&self, users: Option<Vec<String>>) -> Result<Vec<ScramRecord>> {
        self.bounded("scram_credentials", async move {
            let client = self.client().await?;
            users::scram_credentials(&client, users.as_deref()).await
        })
        .await
    }

    async fn put_scram_credential(&self, record: ScramRecord) -> Result<()> {
        self.bounded("put_scram_credential", async move {
            let client = self.client().await?;
            users::put_scram_credential(&client, &record).await
        })
        .await
    }

    async fn delete_scram_credential(&self, user: &str, mechanism: i8) -> Result<bool> {
        self.bounded("delete_scram_credential", async move {
            let client = self.client().await?;
            users::delete_scram_credential(&client, user, mechanism).await
        })
        .await
    }

    async fn acls(&self) -> Result<Vec<AclRecord>> {
        self.bounded("acls", async move {
            let client = self.client().await?;
            users::acls(&client).await
        })
        .await
    }

    async fn create_acls(&self, bindings: Vec<AclRecord>) -> Result<()> {
        self.bounded("create_acls", async move {
            let mut client = self.client().await?;
            users::create_acls(&mut client, &bindings).await
        })
        .await
    }

    async fn delete_acls(&self, bindings: Vec<AclRecord>) -> Result<usize> {
        self.bounded("delete_acls", async move {
            let mut client = self.client().await?;
            users::delete_acls(&mut client, &bindings).await
        })
        .await
    }

    async fn client_quotas(&self) -> Result<Vec<QuotaRecord>> {
        self.bounded("client_quotas", async move {
            let client = self.client().await?;
            users::client_quotas(&client).await
        })
        .await
    }

    async fn alter_client_quotas(
        &self,
        set: Vec<QuotaRecord>,
        remove: Vec<(String, String)>,
    ) -> Result<()> {
        self.bounded("alter_client_quotas", async move {
            let mut client = self.client().await?;
            users::alter_client_quotas(&mut client, &set, &remove).await
        })
        .await
    }
}
