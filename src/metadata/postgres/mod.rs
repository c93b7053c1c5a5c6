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

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use uuid::Uuid;

mod cluster;
mod groups;
mod objects;
mod producers;
mod schema;
mod topics;
mod transactions;

use super::{
    AbortedTxn, BrokerRecord, ChunkOutcome, ChunkRecord, CommittedOffset, GroupStateRow,
    LeaderMove, MetadataError, MetadataStore, ObjectCommit, PartitionProducerState,
    PartitionRecord, ProducerStateRecord, Result, SealedObject, TopicId, TopicRecord,
    TransactionRecord, UnsealedObjects, UploadIntent,
};

/// Connections per broker: the write path's commits, the sealer, the
/// collector and admin reads each get their own without waiting.
const POOL_SIZE: usize = 8;

pub struct PostgresStore {
    pool: Pool,
}

pub(super) use crate::metadata::sqlite::now_ms;

pub(super) use crate::metadata::rows::parse_topic_id;

/// A topic id as stored (the same text as SQLite's).
/// How often a transaction the server aborted for a conflict runs again.
const CONFLICT_RETRIES: u32 = 3;

pub(super) fn tid(id: TopicId) -> String {
    id.0.to_string()
}

type Client = deadpool_postgres::Object;

/// The first column of each row, as text.
pub(super) fn strings(rows: &[tokio_postgres::Row]) -> Result<Vec<String>> {
    rows.iter()
        .map(|r| Ok(r.try_get::<_, String>(0)?))
        .collect()
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`)
    /// and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url, false)?;
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// For tools beside running brokers (the Parquet export): every
    /// session is read-only, nothing is migrated, and the schema must be
    /// this build's version.
    pub async fn open_read_only(url: &str) -> Result<Self> {
        let store = Self::connect(url, true)?;
        let client = store.client().await?;
        schema::check_current(&client).await?;
        Ok(store)
    }

    fn connect(url: &str, read_only: bool) -> Result<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            MetadataError::Backend(format!(
                "invalid PostgreSQL URL (expected postgres://user:password@host:port/database): {e}"
            ))
        })?;
        if config.get_application_name().is_none() {
            config.application_name("strata");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if read_only {
            // Kept with any options of the URL (a search_path, say).
            let options = match config.get_options() {
                Some(given) => format!("{given} -c default_transaction_read_only=on"),
                None => "-c default_transaction_read_only=on".to_string(),
            };
            config.options(&options);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| MetadataError::Backend(format!("postgres pool: {e}")))?;
        Ok(Self { pool })
    }

    async fn client(&self) -> Result<Client> {
        self.pool
            .get()
            .await
            .map_err(|e| MetadataError::Backend(format!("postgres connection: {e}")))
    }
}

impl From<tokio_postgres::Error> for MetadataError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message says what went wrong; the default Display
        // of a database error is only "db error".
        use tokio_postgres::error::SqlState;
        match e.as_db_error() {
            Some(db)
                if *db.code() == SqlState::T_R_DEADLOCK_DETECTED
                    || *db.code() == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                MetadataError::Conflict(format!("postgres: {}", db.message()))
            }
            Some(db) => MetadataError::Backend(format!("postgres: {}", db.message())),
            None => MetadataError::Backend(format!("postgres: {e}")),
        }
    }
}

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn cluster_id(&self) -> Result<String> {
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
    }

    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        leaders: Vec<i32>,
    ) -> Result<TopicRecord> {
        let mut client = self.client().await?;
        topics::create(&mut client, name, partitions, configs, &leaders).await
    }

    async fn delete_topic(&self, id: TopicId) -> Result<()> {
        let mut client = self.client().await?;
        topics::delete(&mut client, id).await
    }

    async fn set_topic_configs(
        &self,
        id: TopicId,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
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
    }

    async fn add_partitions(
        &self,
        id: TopicId,
        partitions: i32,
        leaders: Vec<i32>,
    ) -> Result<Vec<PartitionRecord>> {
        let mut client = self.client().await?;
        topics::add_partitions(&mut client, id, partitions, &leaders).await
    }

    async fn advance_log_start(&self, id: TopicId, partition: i32, offset: i64) -> Result<i64> {
        let mut client = self.client().await?;
        topics::advance_log_start(&mut client, id, partition, offset).await
    }

    async fn set_clean_offset(&self, id: TopicId, partition: i32, offset: i64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE partitions SET clean_offset = GREATEST(clean_offset, $1)
                 WHERE topic_id = $2 AND partition = $3",
                &[&offset, &tid(id), &partition],
            )
            .await?;
        Ok(())
    }

    async fn list_topics(&self) -> Result<Vec<TopicRecord>> {
        let client = self.client().await?;
        topics::list(&client).await
    }

    async fn topic_by_name(&self, name: &str) -> Result<Option<TopicRecord>> {
        let client = self.client().await?;
        topics::by_name(&client, name).await
    }

    async fn partitions(&self, id: TopicId) -> Result<Vec<PartitionRecord>> {
        let client = self.client().await?;
        topics::partitions(&client, id).await
    }

    async fn chunks_from(
        &self,
        id: TopicId,
        partition: i32,
        from: i64,
    ) -> Result<Vec<ChunkRecord>> {
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
    }

    async fn claim_own_partitions(&self, node_id: i32) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE partitions SET leader_epoch = leader_epoch + 1 WHERE leader_id = $1",
                &[&node_id],
            )
            .await?;
        Ok(())
    }

    async fn all_partitions(&self) -> Result<Vec<(TopicId, PartitionRecord)>> {
        let client = self.client().await?;
        topics::all_partitions(&client).await
    }

    async fn partition_state(
        &self,
        id: TopicId,
        partition: i32,
    ) -> Result<(Vec<ProducerStateRecord>, Vec<AbortedTxn>)> {
        let client = self.client().await?;
        cluster::partition_state(&client, id, partition).await
    }

    async fn register_broker(&self, record: BrokerRecord) -> Result<()> {
        let client = self.client().await?;
        cluster::register(&client, &record).await
    }

    async fn renew_lease(&self, record: BrokerRecord) -> Result<bool> {
        let client = self.client().await?;
        cluster::renew(&client, &record).await
    }

    async fn deregister_broker(&self, node_id: i32, boot: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM brokers WHERE node_id = $1 AND boot = $2",
                &[&node_id, &boot],
            )
            .await?;
        Ok(())
    }

    async fn live_brokers(&self, now_ms: i64) -> Result<Vec<BrokerRecord>> {
        let client = self.client().await?;
        cluster::live(&client, now_ms).await
    }

    async fn clock_ms(&self) -> Result<i64> {
        let client = self.client().await?;
        cluster::clock_ms(&client).await
    }

    async fn try_controller(
        &self,
        node_id: i32,
        boot: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool> {
        let client = self.client().await?;
        cluster::try_controller(&client, node_id, boot, now_ms, lease_until_ms).await
    }

    async fn move_leaders(
        &self,
        node_id: i32,
        boot: &str,
        now_ms: i64,
        moves: Vec<LeaderMove>,
    ) -> Result<Vec<bool>> {
        let mut client = self.client().await?;
        cluster::move_leaders(&mut client, node_id, boot, now_ms, &moves).await
    }

    async fn commit_object(&self, commit: ObjectCommit) -> Result<Vec<ChunkOutcome>> {
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
    }

    async fn record_intents(&self, owner: &str, keys: Vec<String>) -> Result<()> {
        let client = self.client().await?;
        objects::record_intents(&client, owner, &keys).await
    }

    async fn stale_intents(
        &self,
        before_ms: i64,
        node: i32,
        current: &str,
        limit: usize,
    ) -> Result<Vec<UploadIntent>> {
        let client = self.client().await?;
        objects::stale_intents(&client, before_ms, node, current, limit).await
    }

    async fn doom_uncommitted(&self, keys: Vec<String>) -> Result<Vec<String>> {
        let mut client = self.client().await?;
        objects::doom_uncommitted(&mut client, &keys).await
    }

    async fn forget_intents(&self, keys: Vec<String>) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM object_intents WHERE object_key = ANY($1)",
                &[&keys],
            )
            .await?;
        Ok(())
    }

    async fn retired_objects(&self, before_ms: i64, limit: usize) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT object_key FROM objects WHERE retired_ms IS NOT NULL AND retired_ms < $1
                 ORDER BY retired_ms LIMIT $2",
                &[&before_ms, &(limit as i64)],
            )
            .await?;
        strings(&rows)
    }

    async fn forget_objects(&self, keys: Vec<String>) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM objects
                 WHERE object_key = ANY($1) AND retired_ms IS NOT NULL AND refs <= 0",
                &[&keys],
            )
            .await?;
        Ok(())
    }

    async fn unsealed_objects(
        &self,
        leader: i32,
        max_bytes: u64,
        limit: usize,
    ) -> Result<UnsealedObjects> {
        let client = self.client().await?;
        objects::unsealed_objects(&client, leader, max_bytes, limit).await
    }

    async fn replace_chunks(
        &self,
        sealed: Vec<SealedObject>,
        retire_replaced: bool,
    ) -> Result<Vec<Vec<bool>>> {
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
    }

    async fn retire_unreferenced(&self, keys: Vec<String>) -> Result<()> {
        let client = self.client().await?;
        objects::retire_if_unreferenced(&client, &keys).await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<CommittedOffset>,
    ) -> Result<Vec<bool>> {
        let mut client = self.client().await?;
        groups::commit(&mut client, group, &offsets).await
    }

    async fn fetch_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>> {
        let client = self.client().await?;
        groups::fetch(&client, group).await
    }

    async fn delete_offsets(&self, group: &str, partitions: Vec<(TopicId, i32)>) -> Result<()> {
        let mut client = self.client().await?;
        groups::delete_partitions(&mut client, group, &partitions).await
    }

    async fn delete_group(&self, group: &str) -> Result<()> {
        let mut client = self.client().await?;
        groups::delete_group(&mut client, group).await
    }

    async fn record_group(&self, group: &str, protocol_type: &str) -> Result<()> {
        let client = self.client().await?;
        groups::record(&client, group, protocol_type).await
    }

    async fn stored_groups(&self) -> Result<Vec<(String, String)>> {
        let client = self.client().await?;
        groups::stored(&client).await
    }

    async fn put_group_state(
        &self,
        group: &str,
        protocol_type: &str,
        state: GroupStateRow,
    ) -> Result<bool> {
        let client = self.client().await?;
        groups::put_state(&client, group, protocol_type, &state).await
    }

    async fn group_state(&self, group: &str) -> Result<Option<GroupStateRow>> {
        let client = self.client().await?;
        groups::state(&client, group).await
    }

    async fn expire_offsets(&self, before_ms: i64, active: Vec<String>) -> Result<usize> {
        let mut client = self.client().await?;
        groups::expire(&mut client, before_ms, &active).await
    }

    async fn allocate_producer_id(&self) -> Result<i64> {
        let client = self.client().await?;
        producers::allocate(&client).await
    }

    async fn producer_id_issued(&self, producer_id: i64) -> Result<bool> {
        let client = self.client().await?;
        producers::issued(&client, producer_id).await
    }

    async fn producer_states(&self) -> Result<Vec<PartitionProducerState>> {
        let client = self.client().await?;
        producers::load_all(&client).await
    }

    async fn expire_producers(&self, before_ms: i64) -> Result<usize> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                // A producer with an open transaction stays until its marker.
                "DELETE FROM producer_state WHERE last_append_ms < $1 AND txn_first_offset IS NULL",
                &[&before_ms],
            )
            .await?;
        Ok(deleted as usize)
    }

    async fn transactions_of(
        &self,
        only: Option<String>,
    ) -> Result<Vec<(TransactionRecord, Vec<(String, CommittedOffset)>)>> {
        let client = self.client().await?;
        transactions::load(&client, only.as_deref()).await
    }

    async fn put_transaction(&self, record: TransactionRecord) -> Result<()> {
        let client = self.client().await?;
        transactions::upsert(&client, &record).await
    }

    async fn put_txn_offsets(
        &self,
        transactional_id: &str,
        group: &str,
        coordinator_epoch: i32,
        offsets: Vec<CommittedOffset>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        transactions::put_offsets(
            &mut client,
            transactional_id,
            group,
            coordinator_epoch,
            &offsets,
        )
        .await
    }

    async fn complete_transaction(&self, record: TransactionRecord, commit: bool) -> Result<()> {
        let mut client = self.client().await?;
        transactions::complete(&mut client, &record, commit).await
    }

    async fn delete_transactions(&self, ids: Vec<String>) -> Result<()> {
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
    }

    async fn aborted_txns(&self) -> Result<Vec<(TopicId, i32, AbortedTxn)>> {
        let client = self.client().await?;
        transactions::load_aborted(&client).await
    }
}
