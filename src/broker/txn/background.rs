//! The coordinator's background work (timeouts, idle ids), its metrics and
//! its view for the admin APIs.

use super::*;

impl TxnCoordinator {
    /// The coordinator's Prometheus metrics.
    pub fn render_prometheus(&self) -> String {
        use crate::storage::metrics::{render_header, render_value};
        let mut out = String::new();
        render_header(
            &mut out,
            "strata_transactions_ended_total",
            "counter",
            "Transactions ended since start, by result.",
        );
        for (result, count) in [("commit", &self.committed), ("abort", &self.aborted)] {
            out.push_str(&format!(
                "strata_transactions_ended_total{{result=\"{result}\"}} {}\n",
                count.load(Ordering::Relaxed)
            ));
        }
        render_value(
            &mut out,
            "strata_transactions_timed_out_total",
            "counter",
            "Transactions aborted by the coordinator past their transaction.timeout.ms.",
            self.timed_out.load(Ordering::Relaxed),
        );
        let ongoing = self.ongoing.read().map(|o| o.len()).unwrap_or(0);
        render_value(
            &mut out,
            "strata_transactions_ongoing",
            "gauge",
            "Transactions open now (their partitions hold read_committed consumers back).",
            ongoing as u64,
        );
        let ids = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        render_value(
            &mut out,
            "strata_transactional_ids",
            "gauge",
            "Transactional ids the coordinator keeps (expired after transactional.id.expiration.ms).",
            ids as u64,
        );
        out
    }

    /// Every transactional id, for DescribeTransactions / ListTransactions.
    pub async fn views(&self, ids: Option<&[String]>) -> Vec<(String, Option<TxnView>)> {
        let wanted: Vec<(String, Option<Arc<tokio::sync::Mutex<TxnEntry>>>)> = match ids {
            Some(ids) => ids.iter().map(|id| (id.clone(), self.entry(id))).collect(),
            None => {
                let entries = match self.entries.lock() {
                    Ok(entries) => entries,
                    Err(_) => return Vec::new(),
                };
                let mut all: Vec<_> = entries
                    .iter()
                    .map(|(id, e)| (id.clone(), Some(Arc::clone(e))))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }
        };
        let mut views = Vec::with_capacity(wanted.len());
        for (id, entry) in wanted {
            let view = match entry {
                Some(entry) => Some(TxnView {
                    record: entry.lock().await.record.clone(),
                }),
                None => None,
            };
            views.push((id, view));
        }
        views
    }

    /// Background work until `shutdown`: finishes transactions left
    /// prepared (at startup, after a failed marker write), aborts those
    /// past their timeout at a bumped epoch, forgets idle transactional ids.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>, shutdown: CancellationToken) {
        let mut checks = tokio::time::interval(self.settings.abort_check_interval);
        let mut expiry = tokio::time::interval(self.settings.id_expiration_check_interval);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick of each is immediate: prepared transactions are
        // finished as soon as the broker runs.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = checks.tick() => self.check_timeouts(&broker).await,
                _ = expiry.tick() => self.expire_ids(&broker).await,
            }
        }
    }

    /// Finishes prepared transactions and aborts timed-out ones, of the ids
    /// this broker coordinates; they are looked for in the store, where an
    /// id whose coordination moved here is too.
    pub(super) async fn check_timeouts(&self, broker: &Broker) {
        let now = now_ms();
        let due = |record: &TransactionRecord| match record.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => true,
            TxnState::Ongoing => record.start_ms + i64::from(record.timeout_ms) < now,
            _ => false,
        };
        let stored = match self.metadata.transactions().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read transactions to check their timeouts");
                return;
            }
        };
        let ids: Vec<String> = stored
            .into_iter()
            .map(|(record, _)| record)
            .filter(|record| due(record) && broker.coordinates(&record.transactional_id))
            .map(|record| record.transactional_id)
            .collect();
        for id in ids {
            // Read again from the store if this broker just took it over.
            let mut entry = match self.locked(broker, &id).await {
                Ok(Some(entry)) => entry,
                Ok(None) | Err(_) => continue,
            };
            let result = match entry.record.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    self.finish_prepared(broker, &mut entry).await
                }
                TxnState::Ongoing if due(&entry.record) => {
                    tracing::info!(transactional_id = %entry.record.transactional_id, timeout_ms = entry.record.timeout_ms, "aborting a transaction past its timeout");
                    // As Kafka: at a bumped epoch, so the producer that let
                    // it time out is fenced.
                    self.timed_out.fetch_add(1, Ordering::Relaxed);
                    self.end(broker, &mut entry, false, true).await
                }
                _ => Ok(()),
            };
            if let Err(error) = result {
                tracing::warn!(transactional_id = %entry.record.transactional_id, ?error, "transaction not finished; retrying later");
            }
        }
    }

    /// Forgets idle transactional ids this broker coordinates (in the
    /// store too); those another broker coordinates are only dropped from
    /// memory (what this broker held of them is stale).
    pub(super) async fn expire_ids(&self, broker: &Broker) {
        let before = now_ms() - self.settings.id_expiration_ms;
        let mut forgotten = 0usize;
        let ids: Vec<String> = self
            .entries
            .lock()
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            if !broker.coordinates(&id) {
                self.drop_stale(&id).await;
                continue;
            }
            // Checked and forgotten under the entry's lock, so a request
            // for the id cannot slip in between.
            let mut entry = match self.locked(broker, &id).await {
                Ok(Some(entry)) => entry,
                Ok(None) | Err(_) => continue,
            };
            let idle = matches!(
                entry.record.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            );
            if entry.removed || !idle || entry.record.updated_ms >= before {
                continue;
            }
            let id = entry.record.transactional_id.clone();
            if let Err(error) = self.metadata.delete_transactions(vec![id.clone()]).await {
                tracing::warn!(%error, "cannot forget an idle transactional id");
                return;
            }
            // Requests waiting for this entry look the id up again.
            entry.removed = true;
            if let Ok(mut entries) = self.entries.lock() {
                entries.remove(&id);
            }
            if let Ok(mut epochs) = self.epochs.write() {
                epochs.retain(|pid, _| {
                    *pid != entry.record.producer_id && *pid != entry.record.last_producer_id
                });
            }
            if let Ok(mut ids) = self.ids.write() {
                ids.retain(|_, txn_id| *txn_id != id);
            }
            forgotten += 1;
        }
        if forgotten > 0 {
            tracing::info!(count = forgotten, "forgot idle transactional ids");
        }
    }
}
