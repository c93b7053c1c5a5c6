//! The transaction coordinator: Kafka's transactions (KIP-98) for every
//! `transactional.id`, with its state in the metadata store.
//!
//! A transactional id holds a producer id and epoch. InitProducerId bumps
//! the epoch (aborting a transaction left open by the previous incarnation,
//! with markers at the new epoch, so that incarnation is fenced in every
//! partition it wrote to). A transaction goes Empty/Complete -> Ongoing
//! (AddPartitionsToTxn, AddOffsetsToTxn) -> PrepareCommit/PrepareAbort
//! (EndTxn, or the coordinator's timeout, which aborts at a bumped epoch) ->
//! CompleteCommit/CompleteAbort once a marker is in every partition of the
//! transaction and, on commit, its offsets (TxnOffsetCommit) are the
//! groups' committed offsets.
//!
//! Durability: every state change is stored before anything depends on it.
//! The Prepare state is stored before the first marker is written, so a
//! broker killed between markers writes them again when it starts (a
//! second marker for a transaction a partition already ended changes
//! nothing there); the Complete state and the offsets are stored in one
//! transaction. A transaction is therefore committed everywhere or aborted
//! everywhere.
//!
//! Markers are written through the write buffer like any batch, so a
//! marker is durable and ordered with the partition's data exactly like
//! the data itself. EndTxn answers once the transaction is complete.
//!
//! Produce (KIP-890 part 1): a transactional batch is accepted only in a
//! partition added to the producer's ongoing transaction at the batch's
//! epoch; the check is repeated under the write buffer's lock
//! ([`OpenTxn::is_open`]), so a batch that races the end of its
//! transaction either lands before the markers or is refused.
//!
//! Here: the state, InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn and
//! TxnOffsetCommit; `produce`: the produce-side checks and implicit adds;
//! `ending`: EndTxn and the markers; `background`: timeouts, idle ids,
//! metrics and the admin views.

mod background;
mod cluster;
mod ending;
mod init;
mod produce;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::metadata::{CommittedOffset, MetadataStore, TopicId, TransactionRecord, TxnState};
pub use crate::storage::txn::OpenTxn;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Coordinator settings (Kafka's broker config names in brackets).
#[derive(Debug, Clone, Copy)]
pub struct TxnSettings {
    /// Longest transaction timeout a producer may ask for
    /// (`transaction.max.timeout.ms`).
    pub max_timeout_ms: i32,
    /// How often open transactions are checked for their timeout
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub abort_check_interval: Duration,
    /// A transactional id idle this long with no open transaction is
    /// forgotten (`transactional.id.expiration.ms`).
    pub id_expiration_ms: i64,
    /// How often idle transactional ids are looked for
    /// (`transaction.remove.expired.transaction.cleanup.interval.ms`).
    pub id_expiration_check_interval: Duration,
}

/// One transactional id: its stored record, its transaction's pending
/// offsets (group -> offsets), and the view Produce checks.
struct TxnEntry {
    record: TransactionRecord,
    pending: Vec<(String, CommittedOffset)>,
    open: Option<Arc<OpenTxn>>,
    /// Forgotten (expired) while a request waited for the entry: that
    /// request must look the id up again.
    removed: bool,
    /// The coordinator epoch (leader epoch of the id's `__consumer_offsets`
    /// partition here) the entry was read from the store under; another
    /// one means another broker may have coordinated the id meanwhile, so
    /// the entry is read again (-1: not read under any yet).
    epoch: i32,
}

/// What DescribeTransactions and ListTransactions show of a transactional id.
#[derive(Debug, Clone)]
pub struct TxnView {
    pub record: TransactionRecord,
}

pub struct TxnCoordinator {
    metadata: Arc<dyn MetadataStore>,
    settings: TxnSettings,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TxnEntry>>>>,
    /// Ongoing transactions by producer id (what Produce checks).
    ongoing: RwLock<HashMap<i64, Arc<OpenTxn>>>,
    /// The current epoch of every transactional producer id, so a batch of
    /// an older incarnation is answered as fenced.
    epochs: RwLock<HashMap<i64, i16>>,
    /// The transactional id of every transactional producer id (Produce
    /// v12+ adds partitions to its transaction, KIP-890 part 2).
    ids: RwLock<HashMap<i64, String>>,
    /// Groups with offsets in an undecided transaction: group ->
    /// transactional ids (OffsetFetch's `require_stable`).
    pending_groups: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Serialises the creation of transactional ids.
    creating: tokio::sync::Mutex<()>,
    /// Transactions ended: committed, aborted (of which by the timeout).
    committed: AtomicU64,
    aborted: AtomicU64,
    timed_out: AtomicU64,
}

/// Kafka's error for a producer id that does not match the transactional id's.
const WRONG_PRODUCER: ResponseError = ResponseError::InvalidProducerIdMapping;

/// The answer to a failed write of `what` of a transactional id: a write
/// the store fenced (another broker took the id over under a newer
/// coordinator epoch) sends the client to look the coordinator up again.
fn stored_error(
    transactional_id: &str,
    what: &str,
    error: crate::metadata::MetadataError,
) -> ResponseError {
    if let crate::metadata::MetadataError::Fenced(reason) = &error {
        tracing::info!(transactional_id, %reason, "not storing {what}: another broker coordinates the id now");
        return ResponseError::NotCoordinator;
    }
    tracing::warn!(transactional_id, %error, "cannot store {what}");
    ResponseError::CoordinatorNotAvailable
}

impl TxnCoordinator {
    pub fn new(metadata: Arc<dyn MetadataStore>, settings: TxnSettings) -> Arc<Self> {
        Arc::new(Self {
            metadata,
            settings,
            entries: Mutex::default(),
            ongoing: RwLock::default(),
            epochs: RwLock::default(),
            ids: RwLock::default(),
            pending_groups: Mutex::default(),
            creating: tokio::sync::Mutex::new(()),
            committed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        })
    }

    /// Loads every stored transactional id (at startup, before serving).
    pub async fn load(&self) -> crate::metadata::Result<()> {
        let stored = self.metadata.transactions().await?;
        let mut entries = self.entries.lock().expect("coordinator lock");
        for (record, pending) in stored {
            let open = (record.state == TxnState::Ongoing).then(|| {
                OpenTxn::new(
                    record.producer_id,
                    record.producer_epoch,
                    &record.partitions,
                )
            });
            if let Some(open) = &open {
                self.ongoing
                    .write()
                    .expect("coordinator lock")
                    .insert(record.producer_id, Arc::clone(open));
            }
            for (group, _) in &pending {
                self.note_pending(group, &record.transactional_id);
            }
            self.note_epoch(&record);
            entries.insert(
                record.transactional_id.clone(),
                Arc::new(tokio::sync::Mutex::new(TxnEntry {
                    record,
                    pending,
                    open,
                    removed: false,
                    epoch: -1,
                })),
            );
        }
        Ok(())
    }

    fn entry(&self, transactional_id: &str) -> Option<Arc<tokio::sync::Mutex<TxnEntry>>> {
        self.entries
            .lock()
            .ok()?
            .get(transactional_id)
            .map(Arc::clone)
    }

    fn note_epoch(&self, record: &TransactionRecord) {
        if let Ok(mut epochs) = self.epochs.write() {
            epochs.insert(record.producer_id, record.producer_epoch);
        }
        if let Ok(mut ids) = self.ids.write()
            && !ids.contains_key(&record.producer_id)
        {
            ids.insert(record.producer_id, record.transactional_id.clone());
        }
    }

    async fn store(&self, record: &TransactionRecord) -> Result<(), ResponseError> {
        self.metadata
            .put_transaction(record.clone())
            .await
            .map_err(|e| stored_error(&record.transactional_id, "transaction state", e))?;
        self.note_epoch(record);
        Ok(())
    }

    /// Checks that `producer_id`/`epoch` are the transactional id's current
    /// ones, and that no transaction of it is still ending.
    async fn current(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<tokio::sync::OwnedMutexGuard<TxnEntry>, ResponseError> {
        let Some(mut entry) = self.locked(broker, transactional_id).await? else {
            return Err(WRONG_PRODUCER);
        };
        if entry.record.producer_id != producer_id {
            return Err(WRONG_PRODUCER);
        }
        if entry.record.producer_epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        self.finish_prepared(broker, &mut entry).await?;
        Ok(entry)
    }

    /// A transaction whose end was decided but not completed (a marker
    /// write failed, or the broker stopped) is completed first.
    async fn finish_prepared(
        &self,
        broker: &Broker,
        entry: &mut TxnEntry,
    ) -> Result<(), ResponseError> {
        match entry.record.state {
            TxnState::PrepareCommit => self.end(broker, entry, true, false).await,
            TxnState::PrepareAbort => self.end(broker, entry, false, false).await,
            _ => Ok(()),
        }
    }

    /// Starts a transaction if none is ongoing, so partitions or a group
    /// can join it: the state is stored before the caller relies on it.
    fn begin_if_needed(&self, entry: &mut TxnEntry) {
        if entry.record.state != TxnState::Ongoing {
            entry.record.state = TxnState::Ongoing;
            entry.record.partitions.clear();
            entry.record.groups.clear();
            entry.record.start_ms = now_ms();
        }
    }

    /// AddPartitionsToTxn: the partitions (all known to exist) join the
    /// producer's transaction, which starts if none is ongoing.
    pub async fn add_partitions(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(TopicId, i32)],
    ) -> Result<(), ResponseError> {
        let mut entry = self
            .current(broker, transactional_id, producer_id, epoch)
            .await?;
        let before = entry.record.clone();
        self.begin_if_needed(&mut entry);
        let mut added = false;
        for p in partitions {
            if !entry.record.partitions.contains(p) {
                entry.record.partitions.push(*p);
                added = true;
            }
        }
        if before.state == TxnState::Ongoing && !added {
            return Ok(());
        }
        self.store_change(&mut entry, before).await?;
        self.publish_open(&mut entry);
        Ok(())
    }

    /// Whether the partitions are already in the producer's ongoing
    /// transaction (AddPartitionsToTxn v4+ `verify_only`).
    pub async fn verify_partitions(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(TopicId, i32)],
    ) -> Result<Vec<bool>, ResponseError> {
        let entry = self
            .current(broker, transactional_id, producer_id, epoch)
            .await?;
        let ongoing = entry.record.state == TxnState::Ongoing;
        Ok(partitions
            .iter()
            .map(|p| ongoing && entry.record.partitions.contains(p))
            .collect())
    }

    /// Makes the entry's ongoing transaction (just stored) what Produce checks.
    fn publish_open(&self, entry: &mut TxnEntry) {
        let record = &entry.record;
        let current = entry
            .open
            .as_ref()
            .filter(|o| o.producer_id == record.producer_id && o.epoch == record.producer_epoch);
        match current {
            Some(open) => {
                open.add_partitions(record.partitions.iter().copied());
            }
            None => {
                let open = OpenTxn::new(
                    record.producer_id,
                    record.producer_epoch,
                    &record.partitions,
                );
                if let Ok(mut ongoing) = self.ongoing.write() {
                    ongoing.insert(record.producer_id, Arc::clone(&open));
                }
                entry.open = Some(open);
            }
        }
    }

    /// AddOffsetsToTxn: `group`'s offsets will be committed with the
    /// transaction.
    pub async fn add_offsets(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), ResponseError> {
        let mut entry = self
            .current(broker, transactional_id, producer_id, epoch)
            .await?;
        if entry.record.state == TxnState::Ongoing && entry.record.groups.iter().any(|g| g == group)
        {
            return Ok(());
        }
        self.add_group(&mut entry, group).await
    }

    /// Adds `group` to the entry's transaction (starting one if none is
    /// ongoing), stored before Produce or TxnOffsetCommit rely on it.
    async fn add_group(&self, entry: &mut TxnEntry, group: &str) -> Result<(), ResponseError> {
        let before = entry.record.clone();
        self.begin_if_needed(entry);
        entry.record.groups.push(group.to_string());
        self.store_change(entry, before).await?;
        self.publish_open(entry);
        Ok(())
    }

    /// Stores the entry's changed record; if that fails, the record is put
    /// back as it was (`before`), so memory never runs ahead of the store.
    async fn store_change(
        &self,
        entry: &mut TxnEntry,
        before: TransactionRecord,
    ) -> Result<(), ResponseError> {
        entry.record.updated_ms = now_ms();
        let record = entry.record.clone();
        if let Err(error) = self.store(&record).await {
            entry.record = before;
            return Err(error);
        }
        Ok(())
    }

    /// TxnOffsetCommit: offsets of `group` (added with AddOffsetsToTxn, or
    /// by this request itself if `implicit`: v5+, KIP-890 part 2) that
    /// become its committed offsets when the transaction commits. The
    /// group's own fencing (generation, member) is the caller's.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_offsets(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<CommittedOffset>,
        implicit: bool,
    ) -> Result<(), ResponseError> {
        let mut entry = self
            .current(broker, transactional_id, producer_id, epoch)
            .await?;
        let added = entry.record.state == TxnState::Ongoing
            && entry.record.groups.iter().any(|g| g == group);
        if !added && implicit {
            self.add_group(&mut entry, group).await?;
        } else if !added {
            return Err(ResponseError::InvalidTxnState);
        }
        self.metadata
            .put_txn_offsets(
                transactional_id,
                group,
                entry.record.coordinator_epoch,
                offsets.clone(),
            )
            .await
            .map_err(|e| stored_error(transactional_id, "transactional offsets", e))?;
        for offset in offsets {
            entry.pending.retain(|(g, o)| {
                !(g == group && o.topic_id == offset.topic_id && o.partition == offset.partition)
            });
            entry.pending.push((group.to_string(), offset));
        }
        self.note_pending(group, transactional_id);
        Ok(())
    }
}
