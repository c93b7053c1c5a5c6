//! InitProducerId with a transactional id, and the producer epoch bumps
//! it and the ending of transactions make (KIP-360, KIP-890).

use super::*;

/// The epoch a bump moves to, if the producer id has one left. A producer
/// uses epochs up to `i16::MAX - 1`; markers may be written at `i16::MAX`
/// (`for_markers`), after which the id is replaced (as Kafka does).
fn bumped(record: &TransactionRecord, for_markers: bool) -> Option<i16> {
    let last = if for_markers { i16::MAX } else { i16::MAX - 1 };
    (record.producer_epoch < last).then_some(record.producer_epoch + 1)
}

impl TxnCoordinator {
    /// InitProducerId with a transactional id: `(producer id, epoch)`.
    /// `known`: the id and epoch the producer holds (KIP-360), if any.
    pub async fn init_producer_id(
        &self,
        broker: &Broker,
        transactional_id: &str,
        timeout_ms: i32,
        known: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        if timeout_ms <= 0 || timeout_ms > self.settings.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let mut entry = match self.locked(broker, transactional_id).await? {
            Some(entry) => entry,
            None => {
                // One creation at a time, so two first InitProducerIds of an
                // id cannot store two different producer ids.
                let _creating = self.creating.lock().await;
                match self.locked(broker, transactional_id).await? {
                    Some(entry) => entry,
                    None => {
                        // A producer id the producer holds (KIP-360) for an
                        // id the coordinator forgot (expired) is no reason
                        // to refuse: the id starts over, as in Kafka.
                        let producer_id =
                            self.metadata.allocate_producer_id().await.map_err(|e| {
                                tracing::warn!(error = %e, "cannot allocate a producer id");
                                ResponseError::CoordinatorNotAvailable
                            })?;
                        let coordinator_epoch =
                            broker.coordinator_epoch(transactional_id).unwrap_or(-1);
                        let record = TransactionRecord {
                            transactional_id: transactional_id.to_string(),
                            producer_id,
                            producer_epoch: 0,
                            last_producer_id: -1,
                            last_producer_epoch: -1,
                            timeout_ms,
                            state: TxnState::Empty,
                            partitions: Vec::new(),
                            groups: Vec::new(),
                            start_ms: -1,
                            updated_ms: now_ms(),
                            coordinator_epoch,
                        };
                        self.store(&record).await?;
                        let entry = Arc::new(tokio::sync::Mutex::new(TxnEntry {
                            record,
                            pending: Vec::new(),
                            open: None,
                            removed: false,
                            epoch: coordinator_epoch,
                        }));
                        self.entries
                            .lock()
                            .map_err(|_| ResponseError::CoordinatorNotAvailable)?
                            .insert(transactional_id.to_string(), entry);
                        return Ok((producer_id, 0));
                    }
                }
            }
        };
        self.finish_prepared(broker, &mut entry).await?;
        let record = &entry.record;
        if let Some((id, epoch)) = known {
            if (id, epoch) == (record.last_producer_id, record.last_producer_epoch)
                && record.state != TxnState::Ongoing
            {
                // A retry of the bump that produced the current epoch.
                return Ok((record.producer_id, record.producer_epoch));
            }
            if id != record.producer_id {
                return Err(WRONG_PRODUCER);
            }
            if epoch != record.producer_epoch {
                return Err(ResponseError::ProducerFenced);
            }
        }
        let rollback = if entry.record.state == TxnState::Ongoing {
            // The previous incarnation left a transaction open: abort it at
            // the next epoch, which fences it in every partition it wrote
            // to; the new incarnation goes on with that epoch.
            self.end(broker, &mut entry, false, true).await?;
            entry.record.clone()
        } else {
            let before = entry.record.clone();
            if let Err(error) = self.bump_epoch(&mut entry, false).await {
                entry.record = before;
                return Err(error);
            }
            before
        };
        entry.record.timeout_ms = timeout_ms;
        self.store_change(&mut entry, rollback).await?;
        Ok((entry.record.producer_id, entry.record.producer_epoch))
    }

    /// The next epoch (or a new producer id at the last epoch), in memory;
    /// stored by the caller's next store. `for_markers`: the bump fences
    /// the transaction being ended, whose markers must carry the producer id
    /// the partitions know; at the last epoch they are written at
    /// `i16::MAX` and the id is replaced once they are in
    /// (in `end`).
    pub(super) async fn bump_epoch(
        &self,
        entry: &mut TxnEntry,
        for_markers: bool,
    ) -> Result<(), ResponseError> {
        let (previous_id, previous_epoch) = (entry.record.producer_id, entry.record.producer_epoch);
        match bumped(&entry.record, for_markers) {
            Some(epoch) => entry.record.producer_epoch = epoch,
            None => self.replace_id(&mut entry.record).await?,
        }
        entry.record.last_producer_id = previous_id;
        entry.record.last_producer_epoch = previous_epoch;
        Ok(())
    }

    /// A new producer id at epoch 0 for `record` (in memory). The old id's
    /// epoch stays known, so its late batches are still refused as fenced.
    pub(super) async fn replace_id(
        &self,
        record: &mut TransactionRecord,
    ) -> Result<(), ResponseError> {
        let id = self.metadata.allocate_producer_id().await.map_err(|e| {
            tracing::warn!(error = %e, "cannot allocate a producer id");
            ResponseError::CoordinatorNotAvailable
        })?;
        record.producer_id = id;
        record.producer_epoch = 0;
        Ok(())
    }
}
