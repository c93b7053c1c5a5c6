//! The coordinator in a cluster. A transactional id is coordinated by the
//! leader of the `__consumer_offsets` partition it hashes to, so its
//! coordination moves with that partition:
//!
//! - a broker that takes an id over reads its record (and pending offsets)
//!   from the store before acting on it: the entry remembers the coordinator
//!   epoch it was read under (`locked`), and an id another broker created
//!   is adopted from the store;
//! - markers for partitions other brokers lead are written by those
//!   leaders (WriteTxnMarkers), as Kafka's coordinators do;
//! - a leader that is not the coordinator checks a transactional batch
//!   with the coordinator (AddPartitionsToTxn v4: `verify_only`, or adding
//!   the partition for KIP-890 part 2 producers) and keeps the answer as
//!   the producer's open transaction here until its marker arrives.

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId, WriteTxnMarkersRequest,
};

use super::*;
use crate::broker::handlers::str_bytes;

/// The versions this broker sends to its peers (they support them).
const ADD_PARTITIONS_VERSION: i16 = 4;
const WRITE_MARKERS_VERSION: i16 = 1;

impl TxnCoordinator {
    /// The entry of `transactional_id`, locked, if the id exists; one
    /// forgotten while this waited for its lock is looked up again. In a
    /// cluster the entry is (re)read from the store first when this broker
    /// took the id's coordination since it last read it (see `cluster`).
    pub(super) async fn locked(
        &self,
        broker: &Broker,
        transactional_id: &str,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<TxnEntry>>, ResponseError> {
        let epoch = broker.coordinator_epoch(transactional_id);
        if epoch == Some(-1) {
            // Another broker coordinates it: what this one holds is stale.
            return Err(ResponseError::NotCoordinator);
        }
        loop {
            let entry = match self.entry(transactional_id) {
                Some(entry) => entry,
                None if epoch.is_some() => match self.adopt(transactional_id).await? {
                    Some(entry) => entry,
                    None => return Ok(None),
                },
                None => return Ok(None),
            };
            let mut entry = entry.lock_owned().await;
            if entry.removed {
                continue;
            }
            if let Some(epoch) = epoch
                && entry.epoch != epoch
            {
                if !self.reload(&mut entry).await? {
                    continue; // gone from the store: looked up again
                }
                // Claimed under this epoch at once: a coordinator that lost
                // the id can no longer overwrite it, nor commit its offsets.
                if entry.record.coordinator_epoch != epoch {
                    entry.record.coordinator_epoch = epoch;
                    self.store(&entry.record).await?;
                }
                entry.epoch = epoch;
            }
            return Ok(Some(entry));
        }
    }

    /// An id another coordinator stored, read from the store (`epoch`: the
    /// coordinator epoch it is read under); `None` if it is not stored.
    pub(super) async fn adopt(
        &self,
        transactional_id: &str,
    ) -> Result<Option<Arc<tokio::sync::Mutex<TxnEntry>>>, ResponseError> {
        let Some((record, pending)) =
            self.metadata
                .transaction(transactional_id)
                .await
                .map_err(|e| {
                    tracing::warn!(transactional_id, error = %e, "cannot read a transactional id");
                    ResponseError::CoordinatorNotAvailable
                })?
        else {
            return Ok(None);
        };
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        // Read again under the lock by `locked` (its epoch is unset).
        let entry = entries
            .entry(transactional_id.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(TxnEntry {
                    record,
                    pending,
                    open: None,
                    removed: false,
                    epoch: -1,
                }))
            });
        Ok(Some(Arc::clone(entry)))
    }

    /// Reads the entry's id from the store again (the entry is locked);
    /// false if the id is no longer stored (it is forgotten here too).
    pub(super) async fn reload(&self, entry: &mut TxnEntry) -> Result<bool, ResponseError> {
        let id = entry.record.transactional_id.clone();
        let stored = self.metadata.transaction(&id).await.map_err(|e| {
            tracing::warn!(transactional_id = %id, error = %e, "cannot read a transactional id");
            ResponseError::CoordinatorNotAvailable
        })?;
        // What this broker held of it is stale: its open transaction view
        // and pending offsets go, the store's replace them.
        if let Some(open) = entry.open.take() {
            self.close_open(&open);
        }
        self.clear_pending(entry);
        let Some((record, pending)) = stored else {
            entry.removed = true;
            if let Ok(mut entries) = self.entries.lock() {
                entries.remove(&id);
            }
            return Ok(false);
        };
        for (group, _) in &pending {
            self.note_pending(group, &id);
        }
        entry.record = record;
        entry.pending = pending;
        self.note_epoch(&entry.record);
        if entry.record.state == TxnState::Ongoing {
            self.publish_open(entry);
        }
        Ok(true)
    }

    /// Drops this broker's copy of an id another broker coordinates.
    pub(super) async fn drop_stale(&self, transactional_id: &str) {
        let Some(entry) = self.entry(transactional_id) else {
            return;
        };
        let mut entry = entry.lock().await;
        if entry.removed {
            return;
        }
        entry.removed = true;
        if let Some(open) = entry.open.take() {
            self.close_open(&open);
        }
        self.clear_pending(&entry);
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(transactional_id);
        }
    }

    /// Closes an open transaction view and stops Produce from seeing it.
    fn close_open(&self, open: &Arc<OpenTxn>) {
        open.close();
        if let Ok(mut ongoing) = self.ongoing.write()
            && ongoing
                .get(&open.producer_id)
                .is_some_and(|o| Arc::ptr_eq(o, open))
        {
            ongoing.remove(&open.producer_id);
        }
    }

    /// WriteTxnMarkers from the coordinator: the producer's transaction
    /// ends in the partitions this broker leads, so nothing more of it is
    /// accepted here (a batch racing the marker lands before it or is
    /// refused, checked under the write buffer's lock).
    pub fn close_remote(&self, producer_id: i64) {
        let open = self
            .ongoing
            .read()
            .ok()
            .and_then(|o| o.get(&producer_id).map(Arc::clone));
        if let Some(open) = open {
            self.close_open(&open);
        }
    }

    /// A transactional batch this broker leads the partition of, for an id
    /// another broker coordinates: the coordinator confirms the partition
    /// is in the producer's ongoing transaction (or adds it, `add`), and the
    /// answer is kept as the producer's open transaction here.
    #[allow(clippy::too_many_arguments)]
    pub async fn ask_coordinator(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        topic: (TopicId, &str),
        partition: i32,
        add: bool,
    ) -> Result<Arc<OpenTxn>, (ResponseError, String)> {
        let unavailable = |why: String| (ResponseError::NotEnoughReplicas, why);
        let Some(coordinator) = broker.coordinator_for(transactional_id) else {
            return Err(unavailable(format!(
                "the coordinator of '{transactional_id}' is not available"
            )));
        };
        let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(str_bytes(transactional_id.to_string())))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch)
                .with_verify_only(!add)
                .with_topics(vec![
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(str_bytes(topic.1.to_string())))
                        .with_partitions(vec![partition]),
                ]),
        ]);
        let response = broker
            .peers
            .call(&coordinator, ADD_PARTITIONS_VERSION, &request)
            .await
            .map_err(|e| unavailable(format!("cannot reach the transaction coordinator: {e:#}")))?;
        let code = if response.error_code != 0 {
            response.error_code
        } else {
            response
                .results_by_transaction
                .iter()
                .flat_map(|t| &t.topic_results)
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|code| *code != 0)
                .unwrap_or(0)
        };
        match ResponseError::try_from_code(code) {
            None => {}
            Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch) => {
                return Err((
                    ResponseError::InvalidProducerEpoch,
                    format!("producer {producer_id} epoch {epoch} is fenced"),
                ));
            }
            Some(
                error @ (ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
                | ResponseError::ConcurrentTransactions),
            ) => {
                return Err(unavailable(format!(
                    "the transaction coordinator answered {error:?}"
                )));
            }
            Some(error) => {
                return Err((
                    ResponseError::InvalidTxnState,
                    format!(
                        "partition {partition} is not in the transaction of producer {producer_id} ({error:?})"
                    ),
                ));
            }
        }
        if let Ok(mut epochs) = self.epochs.write() {
            let known = epochs.entry(producer_id).or_insert(epoch);
            *known = (*known).max(epoch);
        }
        let mut ongoing = self
            .ongoing
            .write()
            .map_err(|_| unavailable("coordinator state poisoned".into()))?;
        let open = match ongoing.get(&producer_id) {
            Some(open) if open.epoch == epoch && open.is_open() => {
                open.add_partitions([(topic.0, partition)]);
                Arc::clone(open)
            }
            _ => {
                let open = OpenTxn::new(producer_id, epoch, &[(topic.0, partition)]);
                ongoing.insert(producer_id, Arc::clone(&open));
                open
            }
        };
        Ok(open)
    }

    /// Writes the markers of `record`'s transaction into `partitions`,
    /// which other brokers lead, through those leaders; every one must be
    /// written (or its topic gone) for the transaction to complete.
    pub(super) async fn write_remote_markers(
        &self,
        broker: &Broker,
        record: &TransactionRecord,
        commit: bool,
        partitions: &[(TopicId, i32, i32)],
    ) -> Result<(), ResponseError> {
        let mut by_leader: HashMap<i32, HashMap<String, Vec<i32>>> = HashMap::new();
        for &(topic, partition, leader) in partitions {
            let Some(state) = broker.catalog.by_id(topic) else {
                continue; // deleted with its topic
            };
            by_leader
                .entry(leader)
                .or_default()
                .entry(state.record.name.clone())
                .or_default()
                .push(partition);
        }
        let live = broker.cluster.live();
        let calls = by_leader.into_iter().map(|(leader, topics)| {
            let peer = live.iter().find(|b| b.node_id == leader).cloned();
            let request = WriteTxnMarkersRequest::default().with_markers(vec![
                WritableTxnMarker::default()
                    .with_producer_id(ProducerId(record.producer_id))
                    .with_producer_epoch(record.producer_epoch)
                    .with_transaction_result(commit)
                    .with_coordinator_epoch(0)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(name, partitions)| {
                                WritableTxnMarkerTopic::default()
                                    .with_name(TopicName(str_bytes(name)))
                                    .with_partition_indexes(partitions)
                            })
                            .collect(),
                    ),
            ]);
            async move {
                let Some(peer) = peer else {
                    return Err(format!("broker {leader} is not live"));
                };
                let response = broker
                    .peers
                    .call(&peer, WRITE_MARKERS_VERSION, &request)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let failed: Vec<String> = response
                    .markers
                    .iter()
                    .flat_map(|m| &m.topics)
                    .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
                    .filter(|(_, p)| {
                        p.error_code != 0
                            && p.error_code != ResponseError::UnknownTopicOrPartition.code()
                    })
                    .map(|(t, p)| {
                        format!("{}-{}: error {}", &*t.name, p.partition_index, p.error_code)
                    })
                    .collect();
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "broker {leader} did not write markers: {}",
                        failed.join(", ")
                    ))
                }
            }
        });
        for result in futures::future::join_all(calls).await {
            if let Err(error) = result {
                tracing::warn!(transactional_id = %record.transactional_id, %error, "transaction markers not written; the transaction stays prepared");
                return Err(ResponseError::ConcurrentTransactions);
            }
        }
        Ok(())
    }
}
