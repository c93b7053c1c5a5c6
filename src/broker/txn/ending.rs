//! Ending a transaction: EndTxn, and the markers written into every
//! partition before the Complete state is stored.

use super::*;

impl TxnCoordinator {
    /// EndTxn: commits or aborts the producer's ongoing transaction; returns
    /// the producer id and epoch to go on with. With `bump` (v5+, KIP-890
    /// part 2) the epoch is bumped first and the markers carry the new one,
    /// so no late batch of this transaction can land in the next; a retry
    /// with the previous epoch of an end already done succeeds.
    pub async fn end_txn(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        bump: bool,
    ) -> Result<(i64, i16), ResponseError> {
        let Some(mut entry) = self.locked(broker, transactional_id).await? else {
            return Err(WRONG_PRODUCER);
        };
        let current = (entry.record.producer_id, entry.record.producer_epoch);
        let previous = (
            entry.record.last_producer_id,
            entry.record.last_producer_epoch,
        );
        let done = if commit {
            (TxnState::PrepareCommit, TxnState::CompleteCommit)
        } else {
            (TxnState::PrepareAbort, TxnState::CompleteAbort)
        };
        if bump && (producer_id, epoch) == previous && (producer_id, epoch) != current {
            // A retry of an end that bumped the epoch: finish it if needed.
            let state = entry.record.state;
            if state == done.0 {
                self.end(broker, &mut entry, commit, false).await?;
            } else if state != done.1 {
                return Err(ResponseError::InvalidTxnState);
            }
            return Ok((entry.record.producer_id, entry.record.producer_epoch));
        }
        if entry.record.producer_id != producer_id {
            return Err(WRONG_PRODUCER);
        }
        if entry.record.producer_epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        match (entry.record.state, commit) {
            (TxnState::Ongoing, _) => self.end(broker, &mut entry, commit, bump).await?,
            // A retry of an end that is under way or done: finish it.
            (state, _) if state == done.0 => self.end(broker, &mut entry, commit, false).await?,
            (state, _) if state == done.1 && !bump => {}
            // KIP-890 part 2: aborting with nothing ongoing still bumps the
            // epoch (a client recovering from an abortable error).
            (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort, false)
                if bump =>
            {
                // As an abort of an empty transaction, so that a retry with
                // the previous epoch finds it done.
                let before = entry.record.clone();
                if let Err(error) = self.bump_epoch(&mut entry, false).await {
                    entry.record = before;
                    return Err(error);
                }
                entry.record.state = TxnState::CompleteAbort;
                entry.record.partitions.clear();
                entry.record.groups.clear();
                entry.record.start_ms = -1;
                self.store_change(&mut entry, before).await?;
            }
            _ => return Err(ResponseError::InvalidTxnState),
        }
        Ok((entry.record.producer_id, entry.record.producer_epoch))
    }

    /// Ends the entry's transaction: stores the decision, writes a marker
    /// into each of its partitions, then stores the completion (with the
    /// offsets, on commit). A failure leaves the decision stored, to be
    /// finished by a retry, the next request for this id or the
    /// coordinator's background pass.
    /// `bump`: the epoch is bumped first (with the decision), so the
    /// markers fence every batch of the ending transaction still on its way.
    pub(super) async fn end(
        &self,
        broker: &Broker,
        entry: &mut TxnEntry,
        commit: bool,
        bump: bool,
    ) -> Result<(), ResponseError> {
        let prepare = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if entry.record.state != prepare {
            let before = entry.record.clone();
            if bump && let Err(error) = self.bump_epoch(entry, true).await {
                entry.record = before;
                return Err(error);
            }
            entry.record.state = prepare;
            self.store_change(entry, before).await?;
        }
        // From here on no batch of this transaction is accepted.
        if let Some(open) = entry.open.take() {
            open.close();
            if let Ok(mut ongoing) = self.ongoing.write()
                && ongoing
                    .get(&open.producer_id)
                    .is_some_and(|o| Arc::ptr_eq(o, &open))
            {
                ongoing.remove(&open.producer_id);
            }
        }
        let record = entry.record.clone();
        let mut tickets = Vec::with_capacity(record.partitions.len());
        // Partitions led elsewhere get their markers from their leaders.
        let mut remote = Vec::new();
        for &(topic, partition) in &record.partitions {
            let Some(log) = broker
                .catalog
                .by_id(topic)
                .and_then(|t| t.partition(partition).cloned())
            else {
                continue; // deleted with its topic
            };
            if log.leader_id() != broker.node_id {
                remote.push((topic, partition, log.leader_id()));
                continue;
            }
            match broker
                .writer
                .append_marker(&log, record.producer_id, record.producer_epoch, commit)
                .await
            {
                Ok(ticket) => tickets.push((topic, partition, ticket)),
                Err(error) => {
                    tracing::warn!(transactional_id = %record.transactional_id, %topic, partition, %error, "cannot write a transaction marker; the transaction stays prepared");
                    return Err(ResponseError::ConcurrentTransactions);
                }
            }
        }
        if !remote.is_empty() {
            self.write_remote_markers(broker, &record, commit, &remote)
                .await?;
        }
        for (topic, partition, ticket) in tickets {
            match ticket.committed().await {
                Ok(_) | Err(crate::storage::wal::AppendError::TopicDeleted) => {}
                Err(error) => {
                    tracing::warn!(transactional_id = %record.transactional_id, %topic, partition, %error, "a transaction marker was not written; the transaction stays prepared");
                    return Err(ResponseError::ConcurrentTransactions);
                }
            }
        }
        let mut done = record;
        done.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        done.updated_ms = now_ms();
        if done.producer_epoch == i16::MAX {
            // Markers at the last epoch: the id is spent.
            self.replace_id(&mut done)
                .await
                .map_err(|_| ResponseError::ConcurrentTransactions)?;
        }
        self.metadata
            .complete_transaction(done.clone(), commit)
            .await
            .map_err(|e| match e {
                crate::metadata::MetadataError::Fenced(_) => {
                    super::stored_error(&done.transactional_id, "the end of a transaction", e)
                }
                e => {
                    tracing::warn!(transactional_id = %done.transactional_id, error = %e, "cannot store the end of a transaction; it stays prepared");
                    ResponseError::ConcurrentTransactions
                }
            })?;
        self.clear_pending(entry);
        entry.pending.clear();
        entry.record = done;
        self.note_epoch(&entry.record);
        if commit {
            self.committed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.aborted.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(transactional_id = %entry.record.transactional_id, producer_id = entry.record.producer_id, epoch = entry.record.producer_epoch, commit, partitions = entry.record.partitions.len(), "transaction ended");
        Ok(())
    }
}
