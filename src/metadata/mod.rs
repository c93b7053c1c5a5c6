//! The metadata store: topics, partitions (leader epoch, log start offset,
//! high watermark) and the chunk index that maps offset ranges to byte ranges
//! of objects. One trait; the embedded SQLite backend lives in `sqlite`
//! and the PostgreSQL backend for clusters in `postgres`.
//!
//! Guarantees every backend keeps:
//! - `commit_object` is one transaction: either every chunk of the object is
//!   recorded and every high watermark advanced, or nothing is.
//! - A chunk is accepted only if the partition's leader epoch equals the
//!   writer's epoch and the chunk starts exactly at the high watermark, so a
//!   fenced writer cannot change anything and offsets stay dense. A refused
//!   chunk fails alone: the object's other partitions commit (a leadership
//!   move is never a write outage for the partitions that did not move).
//! - A commit that returned `Ok` is durable (survives a machine crash).

mod coordination;
pub mod postgres;
mod rows;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod store_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use uuid::Uuid;

/// A topic's immutable identity; object keys are built from it, never from names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub Uuid);

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("commit fenced: {0}")]
    Fenced(String),
    #[error("metadata store: {0}")]
    Backend(String),
    /// The store did not answer within the call's bound, or its connection
    /// broke; the call may or may not have taken effect. Retriable.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The store aborted the transaction for a conflict with a concurrent
    /// one (PostgreSQL: deadlock or serialization failure); nothing of it
    /// took effect, and running it again is safe.
    #[error("metadata store: transaction conflict: {0}")]
    Conflict(String),
}

impl From<rusqlite::Error> for MetadataError {
    fn from(e: rusqlite::Error) -> Self {
        MetadataError::Backend(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, MetadataError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    pub id: TopicId,
    pub name: String,
    pub partitions: i32,
    /// Overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRecord {
    pub partition: i32,
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Compacted topics: offsets below this have been through a compaction
    /// pass (the cleaner checkpoint).
    pub clean_offset: i64,
}

/// One partition's contiguous run of record batches inside one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub object_key: Arc<str>,
    pub object_size: u64,
    pub byte_start: u64,
    pub byte_len: u64,
    /// Bytes of the chunk's sparse index, stored right after its data
    /// (sealed segments; 0: none, the batch headers are walked).
    pub index_len: u64,
}

pub use coordination::{BrokerRecord, Endpoint, GroupStateRow, LeaderMove};
#[cfg(test)]
pub(crate) use rows::test_chunk;

/// What an object holds (stored with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A flushed write buffer: chunks of many partitions (the durability point).
    Wal = 0,
    /// One partition's sealed segment.
    Segment = 1,
    /// Sealed chunks of several partitions, ordered by partition.
    Shared = 2,
}

/// The oldest unsealed write-ahead objects, as many as one sealing cycle
/// takes (key, size).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsealedObjects {
    pub objects: Vec<(String, u64)>,
    /// More unsealed objects follow these: the budget was used up.
    pub more: bool,
}

/// A chunk with the partition it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChunk {
    pub topic_id: TopicId,
    pub partition: i32,
    pub chunk: ChunkRecord,
}

/// One new chunk of a sealed object and the chunks it replaces (same
/// partition, contiguous, together exactly its offset range).
#[derive(Debug, Clone)]
pub struct SealedChunk {
    pub topic_id: TopicId,
    pub partition: i32,
    /// The partition's leader epoch the sealer worked under: the swap is
    /// skipped if leadership moved since (only the leader changes a
    /// partition's chunks).
    pub leader_epoch: i32,
    pub chunk: ChunkRecord,
    /// `(object key, base offset)` of each replaced chunk.
    pub replaces: Vec<(Arc<str>, i64)>,
}

/// An object written by the sealer and the chunks it brings.
#[derive(Debug, Clone)]
pub struct SealedObject {
    pub key: String,
    pub size: u64,
    pub kind: ObjectKind,
    pub chunks: Vec<SealedChunk>,
}

/// Which upload intents the collector may doom: those not renewed for
/// `grace_ms` on the store's clock, and every intent of an earlier process
/// of `node` (owner `<node>:...` other than `current`; fenced when this one
/// started) whatever its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleIntents {
    pub grace_ms: i64,
    pub node: i32,
    pub current: String,
}

/// An upload intent: a key recorded before its object's PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadIntent {
    pub key: String,
    /// The writer: `<node id>:<boot id>`.
    pub owner: String,
    /// When it was recorded or last renewed (the store's clock).
    pub created_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ChunkCommit {
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader_epoch: i32,
    pub chunk: ChunkRecord,
    /// The new state of every idempotent producer that wrote to the chunk,
    /// recorded in the same transaction as the chunk.
    pub producers: Vec<ProducerStateRecord>,
    /// Transactions the chunk's abort markers ended.
    pub aborted: Vec<AbortedTxn>,
}

/// One remembered batch of an idempotent producer: its sequence range and
/// the offsets it was written at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProducerBatchRecord {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

/// An idempotent producer's state in one partition (see
/// `storage::producers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateRecord {
    pub producer_id: i64,
    pub epoch: i16,
    /// Oldest first, at most `storage::producers::MAX_REMEMBERED_BATCHES`.
    pub batches: Vec<ProducerBatchRecord>,
    /// Broker time of the producer's last write here.
    pub last_append_ms: i64,
    /// First offset of the producer's transaction open in this partition
    /// (no marker yet): the last stable offset is the smallest of these.
    pub txn_first_offset: Option<i64>,
}

/// An aborted transaction's offsets in one partition: from its first
/// batch to its abort marker (Fetch's aborted-transaction list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
}

/// A user's SCRAM credential as stored (never the password): Kafka's
/// mechanism code (1: SCRAM-SHA-256, 2: SCRAM-SHA-512), salt, iterations,
/// StoredKey and ServerKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramRecord {
    pub user: String,
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// An ACL binding, in Kafka's codes (see broker::security::acl).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclRecord {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

/// One client quota: an entity (its canonical text, see broker::quotas),
/// a quota key (`producer_byte_rate`, ...) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaRecord {
    pub entity: String,
    pub key: String,
    pub value: f64,
}

/// Kafka's transaction states (the coordinator's view of a transactional id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
}

impl TxnState {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            _ => return None,
        })
    }

    /// The name Kafka's admin APIs and tools use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }
}

/// A transactional id as its coordinator stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The id and epoch before the last bump (-1: none), so a retried
    /// InitProducerId is recognised (KIP-360).
    pub last_producer_id: i64,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions of the ongoing (or ending) transaction.
    pub partitions: Vec<(TopicId, i32)>,
    /// Groups whose offsets the transaction commits (AddOffsetsToTxn).
    pub groups: Vec<String>,
    /// When the ongoing transaction started (-1: none yet).
    pub start_ms: i64,
    pub updated_ms: i64,
    /// The coordinator epoch of the broker that writes the record (the
    /// leader epoch of the id's `__consumer_offsets` partition there; -1:
    /// none). A write under an older epoch than the stored one is refused
    /// as [`MetadataError::Fenced`]: a coordinator that lost the id (paused,
    /// or slow to learn the move) cannot undo its successor's decisions.
    pub coordinator_epoch: i32,
}

/// A stored producer state with the partition it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProducerState {
    pub topic_id: TopicId,
    pub partition: i32,
    pub state: ProducerStateRecord,
}

/// Partition `partition`'s leader when a topic is created or grown: round
/// robin over `leaders` (0 if there are none).
pub fn leader_of(leaders: &[i32], partition: i32) -> i32 {
    match usize::try_from(partition) {
        Ok(p) if !leaders.is_empty() => leaders[p % leaders.len()],
        _ => leaders.first().copied().unwrap_or(0),
    }
}

/// Everything one flushed object adds to the log.
#[derive(Debug, Clone)]
pub struct ObjectCommit {
    pub object_key: String,
    pub object_size: u64,
    pub chunks: Vec<ChunkCommit>,
}

/// Per chunk of a committed object: whether it was recorded, its topic was
/// deleted while the object was uploading, or it was fenced (the
/// partition's leader epoch or high watermark is not the writer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    Committed,
    TopicDeleted,
    Fenced,
}

/// A consumer group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic_id: TopicId,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// The cluster id, created on first start.
    async fn cluster_id(&self) -> Result<String>;
    /// A new topic; partition `p` is led by `leaders[p % leaders.len()]`
    /// (at least one leader).
    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        leaders: Vec<i32>,
    ) -> Result<TopicRecord>;
    async fn delete_topic(&self, id: TopicId) -> Result<()>;
    /// Replaces a topic's config overrides.
    async fn set_topic_configs(&self, id: TopicId, configs: BTreeMap<String, String>)
    -> Result<()>;
    /// Grows a topic to `partitions` partitions (new ones empty, partition
    /// `p` led by `leaders[p % leaders.len()]`); returns the new partitions.
    async fn add_partitions(
        &self,
        id: TopicId,
        partitions: i32,
        leaders: Vec<i32>,
    ) -> Result<Vec<PartitionRecord>>;
    /// Moves a partition's log start offset up to `offset` (never down, never
    /// past the high watermark) and, in the same transaction, removes the
    /// chunks wholly below it (objects left without chunks are retired);
    /// returns the log start offset now stored.
    async fn advance_log_start(&self, id: TopicId, partition: i32, offset: i64) -> Result<i64>;
    /// Records a compacted partition's clean offset (never moves it down).
    async fn set_clean_offset(&self, id: TopicId, partition: i32, offset: i64) -> Result<()>;
    async fn list_topics(&self) -> Result<Vec<TopicRecord>>;
    /// The topic named `name`, if it exists.
    async fn topic_by_name(&self, name: &str) -> Result<Option<TopicRecord>>;
    async fn partitions(&self, id: TopicId) -> Result<Vec<PartitionRecord>>;
    async fn chunks(&self, id: TopicId, partition: i32) -> Result<Vec<ChunkRecord>> {
        self.chunks_from(id, partition, i64::MIN).await
    }
    /// The partition's chunks holding offsets at or after `from` (their
    /// last offset is), in offset order: what a broker reading a partition
    /// it does not lead adds to its index since it last looked.
    async fn chunks_from(&self, id: TopicId, partition: i32, from: i64)
    -> Result<Vec<ChunkRecord>>;
    /// Bumps the leader epoch of every partition `node_id` leads, so that
    /// any earlier process of the node is fenced (at a broker's start).
    async fn claim_own_partitions(&self, node_id: i32) -> Result<()>;
    /// Every partition of every topic.
    async fn all_partitions(&self) -> Result<Vec<(TopicId, PartitionRecord)>>;
    /// A partition's stored idempotent producer states and aborted
    /// transactions (loaded when a broker takes the partition over).
    /// (at most the newest `aborted_limit` of them, in marker order).
    async fn partition_state(
        &self,
        id: TopicId,
        partition: i32,
        aborted_limit: usize,
    ) -> Result<(Vec<ProducerStateRecord>, Vec<AbortedTxn>)>;

    /// A partition's newest `limit` aborted transactions, in marker order.
    async fn recent_aborted(
        &self,
        id: TopicId,
        partition: i32,
        limit: usize,
    ) -> Result<Vec<AbortedTxn>>;

    /// A partition's aborted transactions that may hold records in
    /// `from..to` (marker at or after `from`, first offset before `to`),
    /// in marker order, at most `limit`.
    async fn aborted_range(
        &self,
        id: TopicId,
        partition: i32,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<AbortedTxn>>;

    /// Forgets a partition's aborted transactions whose markers are below
    /// `below`, but those whose marker offsets are in `keep`: compaction
    /// removed the others' records, so no read needs them.
    async fn forget_aborted(
        &self,
        id: TopicId,
        partition: i32,
        below: i64,
        keep: Vec<i64>,
    ) -> Result<()>;

    /// Registers this process as broker `record.node_id` with a lease,
    /// taking the node id over from any earlier process of it.
    async fn register_broker(&self, record: BrokerRecord) -> Result<()>;
    /// Renews the lease (and the draining flag) of this process; false if
    /// another process has taken its node id over.
    async fn renew_lease(&self, record: BrokerRecord) -> Result<bool>;
    /// Removes this process's registration (a clean stop).
    async fn deregister_broker(&self, node_id: i32, boot: &str) -> Result<()>;
    /// Brokers whose lease runs past `now_ms`, by node id. `now_ms` (here
    /// and below) is the store's clock as the broker last measured it.
    async fn live_brokers(&self, now_ms: i64) -> Result<Vec<BrokerRecord>>;
    /// The store's clock, in milliseconds since the Unix epoch. Leases are
    /// timed on it, so brokers whose clocks disagree still agree on who is
    /// live. An embedded store shares its broker's clock.
    async fn clock_ms(&self) -> Result<i64>;
    /// Takes or renews the controller lease for `(node_id, boot)` until
    /// `lease_until_ms`: succeeds if it is free, expired at `now_ms`, held
    /// by this process, or held by an earlier process of the same node.
    /// PostgreSQL runs the lease for `lease_until_ms - now_ms` from its own
    /// clock and judges it on that clock.
    async fn try_controller(
        &self,
        node_id: i32,
        boot: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool>;
    /// The controller's leadership moves, each applied only if the
    /// partition still has the leader and epoch the move was computed from
    /// and `(node_id, boot)` still holds the controller lease at `now_ms`;
    /// each applied move bumps the partition's leader epoch. Returns, per
    /// move, whether it was applied.
    async fn move_leaders(
        &self,
        node_id: i32,
        boot: &str,
        now_ms: i64,
        moves: Vec<LeaderMove>,
    ) -> Result<Vec<bool>>;
    /// Records a flushed object (see the module header for the guarantees).
    async fn commit_object(&self, commit: ObjectCommit) -> Result<Vec<ChunkOutcome>>;
    /// Records upload intents for `keys`, written by `owner`, before their
    /// PUTs, aged from now on the store's clock. A commit of an object
    /// needs its intent (and removes it).
    async fn record_intents(&self, owner: &str, keys: Vec<String>) -> Result<()>;
    /// Restarts the age of `owner`'s intents for `keys` (those still
    /// recorded and not doomed) from now on the store's clock: a live
    /// writer renews its reserved and in-flight keys well within the
    /// grace period, so the collector never dooms them however long they
    /// wait for use. Returns how many were renewed.
    async fn renew_intents(&self, owner: &str, keys: Vec<String>) -> Result<usize>;
    /// Intents that `stale` selects, oldest first, at most `limit`.
    async fn stale_intents(&self, stale: StaleIntents, limit: usize) -> Result<Vec<UploadIntent>>;
    /// Of `keys`, those whose object is not committed and whose intent
    /// `stale` still selects (its owner may have renewed it since it was
    /// listed): those intents are doomed in the same transaction (no
    /// commit of them can land any more), so the caller may delete the
    /// objects, then `forget_intents`. Intents of committed objects are
    /// forgotten.
    async fn doom_uncommitted(&self, keys: Vec<String>, stale: StaleIntents)
    -> Result<Vec<String>>;
    async fn forget_intents(&self, keys: Vec<String>) -> Result<()>;
    /// Of `keys`, those that neither an object row nor an upload intent
    /// (live or doomed) names: objects nothing accounts for.
    async fn unnamed_objects(&self, keys: Vec<String>) -> Result<Vec<String>>;
    /// Objects that no chunk has referenced for `grace_ms` on the store's
    /// clock, and retired before every live backup hold was taken, at most
    /// `limit`.
    async fn retired_objects(&self, grace_ms: i64, limit: usize) -> Result<Vec<String>>;
    /// Takes a backup hold for `hold_ms`: until it runs out, no object
    /// retired from now on is deleted, so a backup of this store taken
    /// after this call finds every object it names when restored. Returns
    /// the hold's id.
    async fn add_backup_hold(&self, hold_ms: i64) -> Result<String>;
    /// Forgets backup holds that ran out; returns how many.
    async fn expire_backup_holds(&self) -> Result<usize>;
    /// Forgets retired objects (deleted from the object store by the caller).
    async fn forget_objects(&self, keys: Vec<String>) -> Result<()>;
    /// Committed write-ahead objects not sealed yet that hold chunks of
    /// partitions `leader` leads, oldest first, together at most
    /// `max_bytes` (at least one if there is any) and `limit`. (SQLite, one
    /// broker: every unsealed object; objects whose partitions are gone
    /// have to be found to be retired.)
    async fn unsealed_objects(
        &self,
        leader: i32,
        max_bytes: u64,
        limit: usize,
    ) -> Result<UnsealedObjects>;
    /// ONE transaction: records the sealed objects and, for each new chunk
    /// whose replaced chunks all still exist, swaps them for it (a chunk
    /// whose partition or replaced chunks are gone is skipped). Outputs
    /// left without chunks are retired, and, if `retire_replaced`, the
    /// replaced objects left without chunks (a sealing cycle leaves that to
    /// one `retire_unreferenced` after its swaps: its write-ahead objects
    /// hold chunks of many partitions, and checking all of them in every
    /// swap made each swap hold the store's writer several times longer).
    /// Each output needs its upload intent. Returns, per object and chunk,
    /// whether it was applied.
    async fn replace_chunks(
        &self,
        objects: Vec<SealedObject>,
        retire_replaced: bool,
    ) -> Result<Vec<Vec<bool>>>;
    /// Retires those of these objects that no chunk references.
    async fn retire_unreferenced(&self, keys: Vec<String>) -> Result<()>;

    /// Writes a group's offsets in one transaction, as its coordinator at
    /// `coordinator_epoch` (`None`: no epoch known, nothing to fence on).
    /// Fails with `Fenced` if the group's stored state was written by a
    /// later coordinator (this broker was deposed), so a deposed
    /// coordinator cannot overwrite its successor's offsets. Returns, per
    /// offset, whether it was written: false if its partition no longer
    /// exists (its topic was deleted meanwhile).
    async fn commit_offsets(
        &self,
        group: &str,
        coordinator_epoch: Option<i32>,
        offsets: Vec<CommittedOffset>,
    ) -> Result<Vec<bool>>;
    async fn fetch_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>>;
    async fn delete_offsets(&self, group: &str, partitions: Vec<(TopicId, i32)>) -> Result<()>;
    /// Removes a group's offsets and its record.
    async fn delete_group(&self, group: &str) -> Result<()>;
    /// Remembers a group and its protocol type (so it is listed after a restart).
    async fn record_group(&self, group: &str, protocol_type: &str) -> Result<()>;
    /// `(group, protocol type)` of every group with a record or committed offsets.
    async fn stored_groups(&self) -> Result<Vec<(String, String)>>;
    /// Stores a group's membership (recording the group too) unless one
    /// at least as new, by `(coordinator_epoch, seq)`, is stored: a
    /// coordinator that lost the group cannot overwrite its successor's.
    /// Returns whether it was written.
    async fn put_group_state(
        &self,
        group: &str,
        protocol_type: &str,
        state: GroupStateRow,
    ) -> Result<bool>;
    /// A group's membership as its coordinator last stored it.
    async fn group_state(&self, group: &str) -> Result<Option<GroupStateRow>>;
    /// Deletes offsets committed before `before_ms` by groups not in
    /// `active` (Kafka's `offsets.retention.minutes` for empty groups);
    /// returns how many were deleted.
    async fn expire_offsets(&self, before_ms: i64, active: Vec<String>) -> Result<usize>;

    /// A producer id never handed out before (InitProducerId).
    async fn allocate_producer_id(&self) -> Result<i64>;
    /// Whether `producer_id` was handed out by `allocate_producer_id`.
    async fn producer_id_issued(&self, producer_id: i64) -> Result<bool>;
    /// Every stored idempotent producer state (loaded at startup).
    async fn producer_states(&self) -> Result<Vec<PartitionProducerState>>;
    /// Forgets producer states last written before `before_ms`
    /// (`producer.id.expiration.ms`), except those with an open
    /// transaction; returns how many.
    async fn expire_producers(&self, before_ms: i64) -> Result<usize>;

    /// Every stored transactional id with the offsets its ongoing
    /// transaction will commit (`(group, offset)`), loaded at startup.
    async fn transactions(
        &self,
    ) -> Result<Vec<(TransactionRecord, Vec<(String, CommittedOffset)>)>> {
        self.transactions_of(None).await
    }
    /// One transactional id as `transactions` gives it, if stored (a
    /// coordinator taking it over from another broker reads it).
    async fn transaction(
        &self,
        transactional_id: &str,
    ) -> Result<Option<(TransactionRecord, Vec<(String, CommittedOffset)>)>> {
        Ok(self
            .transactions_of(Some(transactional_id.to_string()))
            .await?
            .into_iter()
            .next())
    }
    /// Every stored transactional id, or only `only`.
    async fn transactions_of(
        &self,
        only: Option<String>,
    ) -> Result<Vec<(TransactionRecord, Vec<(String, CommittedOffset)>)>>;
    /// Stores a transactional id's record (insert or replace), unless the
    /// stored one was written under a newer coordinator epoch (`Fenced`).
    async fn put_transaction(&self, record: TransactionRecord) -> Result<()>;
    /// Stores offsets of `group` that the transactional id's ongoing
    /// transaction will commit (TxnOffsetCommit); partitions of deleted
    /// topics are skipped. `Fenced` if the id's record was written under a
    /// newer coordinator epoch than `coordinator_epoch`.
    async fn put_txn_offsets(
        &self,
        transactional_id: &str,
        group: &str,
        coordinator_epoch: i32,
        offsets: Vec<CommittedOffset>,
    ) -> Result<()>;
    /// ONE transaction: stores `record` (completed) and, if `commit`, makes
    /// the transaction's pending offsets their groups' committed offsets;
    /// the pending offsets are gone afterwards either way. Nothing of it
    /// is done if the stored record is of a newer coordinator epoch
    /// (`Fenced`).
    async fn complete_transaction(&self, record: TransactionRecord, commit: bool) -> Result<()>;
    /// Forgets transactional ids (expired) and their pending offsets.
    async fn delete_transactions(&self, ids: Vec<String>) -> Result<()>;
    /// Every partition's aborted transactions still within its log.
    async fn aborted_txns(&self) -> Result<Vec<(TopicId, i32, AbortedTxn)>>;

    /// SCRAM credentials of `users` (every user's when `None`), by user
    /// then mechanism.
    async fn scram_credentials(&self, users: Option<Vec<String>>) -> Result<Vec<ScramRecord>>;
    /// Stores a credential, replacing the user's one of that mechanism.
    async fn put_scram_credential(&self, record: ScramRecord) -> Result<()>;
    /// Deletes a user's credential of `mechanism`; false if there was none.
    async fn delete_scram_credential(&self, user: &str, mechanism: i8) -> Result<bool>;

    /// Every ACL binding.
    async fn acls(&self) -> Result<Vec<AclRecord>>;
    /// Adds bindings (one already stored is left as it is).
    async fn create_acls(&self, bindings: Vec<AclRecord>) -> Result<()>;
    /// Deletes these bindings; how many were stored.
    async fn delete_acls(&self, bindings: Vec<AclRecord>) -> Result<usize>;

    /// Every client quota.
    async fn client_quotas(&self) -> Result<Vec<QuotaRecord>>;
    /// Sets `set` (replacing values) and removes `remove` (entity, key), in
    /// one transaction.
    async fn alter_client_quotas(
        &self,
        set: Vec<QuotaRecord>,
        remove: Vec<(String, String)>,
    ) -> Result<()>;
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

const URL_FORMS: &str = "sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE";

/// Opens the store named by a metadata URL (`sqlite://PATH` or
/// `postgres://...`), migrating its schema to this build's.
pub async fn open(url: &str, call_timeout: Duration) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open(std::path::Path::new(path)).await?;
        return Ok(Arc::new(store));
    }
    if is_postgres(url) {
        return Ok(Arc::new(
            postgres::PostgresStore::open(url, call_timeout).await?,
        ));
    }
    anyhow::bail!(
        "unsupported metadata URL '{}': expected {URL_FORMS}",
        crate::config::redact_url(url)
    )
}

/// Opens the store named by a metadata URL for reading only (see
/// `sqlite::SqliteStore::open_read_only`): for tools that run beside a
/// broker, such as the Parquet export.
pub async fn open_read_only(url: &str) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open_read_only(std::path::Path::new(path)).await?;
        return Ok(Arc::new(store));
    }
    if is_postgres(url) {
        return Ok(Arc::new(
            postgres::PostgresStore::open_read_only(url).await?,
        ));
    }
    anyhow::bail!(
        "unsupported metadata URL '{}': expected {URL_FORMS}",
        crate::config::redact_url(url)
    )
}
