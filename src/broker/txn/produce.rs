//! The produce side: partitions added to a transaction (explicitly, or
//! implicitly by a KIP-890 part 2 Produce), the check of every
//! transactional batch, and the offsets a group's pending transactions hold.

use super::*;

impl TxnCoordinator {
    /// Produce v12+ (KIP-890 part 2), before the request's batches are
    /// appended: the partitions its transactional batches go to that are
    /// not in their producer's transaction yet join it, ONE store for the
    /// whole request (`wanted`: `(producer id, epoch, topic, partition)`).
    /// Errors are left to each batch's own check.
    pub async fn add_request_partitions(
        &self,
        broker: &Broker,
        wanted: &[(i64, i16, TopicId, i32)],
    ) {
        let mut by_producer: HashMap<(i64, i16), Vec<(TopicId, i32)>> = HashMap::new();
        for &(pid, epoch, topic, partition) in wanted {
            if self.verify_produce(pid, epoch, topic, partition).is_err() {
                by_producer
                    .entry((pid, epoch))
                    .or_default()
                    .push((topic, partition));
            }
        }
        for ((pid, epoch), partitions) in by_producer {
            let id = self.ids.read().ok().and_then(|ids| ids.get(&pid).cloned());
            if let Some(id) = id {
                let _ = self
                    .add_partitions(broker, &id, pid, epoch, &partitions)
                    .await;
            }
        }
    }

    /// Produce v12+ (KIP-890 part 2): the producer's first batch in a
    /// partition adds the partition to its transaction (starting the
    /// transaction if none is ongoing), then the batch is checked as any.
    pub async fn add_partition_implicitly(
        &self,
        broker: &Broker,
        producer_id: i64,
        epoch: i16,
        topic: TopicId,
        partition: i32,
    ) -> Result<Arc<OpenTxn>, (ResponseError, String)> {
        match self.verify_produce(producer_id, epoch, topic, partition) {
            Ok(open) => return Ok(open),
            // A fenced incarnation's batch adds nothing.
            Err(fenced) if fenced.0 == ResponseError::InvalidProducerEpoch => return Err(fenced),
            Err(_) => {}
        }
        let id = self
            .ids
            .read()
            .ok()
            .and_then(|ids| ids.get(&producer_id).cloned());
        let Some(id) = id else {
            return Err((
                ResponseError::InvalidTxnState,
                format!("producer {producer_id} belongs to no transactional id"),
            ));
        };
        match self
            .add_partitions(broker, &id, producer_id, epoch, &[(topic, partition)])
            .await
        {
            Ok(()) => self.verify_produce(producer_id, epoch, topic, partition),
            Err(ResponseError::ProducerFenced) => Err((
                ResponseError::InvalidProducerEpoch,
                format!("producer {producer_id} epoch {epoch} is fenced"),
            )),
            Err(code) => Err((
                code,
                format!("cannot add partition {partition} to the transaction of '{id}'"),
            )),
        }
    }

    pub(super) fn note_pending(&self, group: &str, transactional_id: &str) {
        if let Ok(mut groups) = self.pending_groups.lock() {
            groups
                .entry(group.to_string())
                .or_default()
                .insert(transactional_id.to_string());
        }
    }

    pub(super) fn clear_pending(&self, entry: &TxnEntry) {
        if let Ok(mut groups) = self.pending_groups.lock() {
            for (group, _) in &entry.pending {
                if let Some(ids) = groups.get_mut(group) {
                    ids.remove(&entry.record.transactional_id);
                    if ids.is_empty() {
                        groups.remove(group);
                    }
                }
            }
        }
    }

    /// The partitions for which `group` has an offset in a transaction not
    /// decided yet (OffsetFetch's `require_stable`). Taken BEFORE the
    /// committed offsets are read: a transaction that completes in between
    /// is then reported unstable (the client asks again), never stale.
    /// In a cluster the transactions may be coordinated by other brokers
    /// (`in_cluster`): their pending offsets are read from the store.
    pub async fn pending_partitions(
        &self,
        group: &str,
        in_cluster: bool,
    ) -> HashSet<(TopicId, i32)> {
        let mut pending = HashSet::new();
        if in_cluster {
            match self.metadata.transactions().await {
                Ok(stored) => pending.extend(
                    stored
                        .iter()
                        .filter(|(record, _)| {
                            !matches!(
                                record.state,
                                TxnState::CompleteCommit | TxnState::CompleteAbort
                            )
                        })
                        .flat_map(|(_, offsets)| offsets)
                        .filter(|(g, _)| g == group)
                        .map(|(_, o)| (o.topic_id, o.partition)),
                ),
                Err(error) => {
                    tracing::warn!(%error, "cannot read pending transactional offsets");
                }
            }
        }
        let ids: Vec<String> = match self.pending_groups.lock() {
            Ok(groups) => match groups.get(group) {
                Some(ids) => ids.iter().cloned().collect(),
                None => return pending,
            },
            Err(_) => return pending,
        };
        for id in ids {
            if let Some(entry) = self.entry(&id) {
                let entry = entry.lock().await;
                pending.extend(
                    entry
                        .pending
                        .iter()
                        .filter(|(g, _)| g == group)
                        .map(|(_, o)| (o.topic_id, o.partition)),
                );
            }
        }
        pending
    }

    /// The ongoing transaction `producer_id` may write to `topic`/`partition`
    /// in at `epoch` (KIP-890 part 1), or the error Produce answers.
    pub fn verify_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: TopicId,
        partition: i32,
    ) -> Result<Arc<OpenTxn>, (ResponseError, String)> {
        let open = self
            .ongoing
            .read()
            .ok()
            .and_then(|o| o.get(&producer_id).map(Arc::clone));
        let current = self
            .epochs
            .read()
            .ok()
            .and_then(|e| e.get(&producer_id).copied());
        if let Some(current) = current
            && epoch < current
        {
            return Err((
                ResponseError::InvalidProducerEpoch,
                format!(
                    "producer {producer_id} wrote with epoch {epoch}; a newer incarnation has epoch {current}"
                ),
            ));
        }
        let Some(open) = open else {
            return Err((
                ResponseError::InvalidTxnState,
                format!("producer {producer_id} has no ongoing transaction"),
            ));
        };
        if epoch != open.epoch {
            return Err((
                ResponseError::InvalidProducerEpoch,
                format!(
                    "producer {producer_id} wrote with epoch {epoch}, its transaction has epoch {}",
                    open.epoch
                ),
            ));
        }
        if !open.contains(topic, partition) {
            return Err((
                ResponseError::InvalidTxnState,
                format!(
                    "partition {partition} was not added to the transaction of producer {producer_id} (AddPartitionsToTxn)"
                ),
            ));
        }
        Ok(open)
    }
}
