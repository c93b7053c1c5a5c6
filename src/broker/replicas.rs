//! Reads from any broker. Every acknowledged byte is in the object store
//! and every chunk row in the metadata store, so a broker serves Fetch for
//! partitions it does not lead from the store's view of them: the first
//! read loads the partition's chunk index, and while consumers keep
//! reading, the index follows the store every `cluster.replica_refresh_ms`
//! (the new chunks only; all of it every 30 s, so that rows replaced by
//! sealing, merging or compaction are followed well within the collector's
//! grace period). A view nobody read for a minute is dropped, so memory is
//! bounded by what consumers read here.
//!
//! With `cluster.rack_aware_fetch` the leader sends a consumer that names
//! its rack to a broker of that rack (KIP-392's preferred read replica).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Broker;
use super::cluster::now_ms;
use crate::metadata::{BrokerRecord, PartitionRecord, TopicId};
use crate::storage::partition::{PartitionLog, StoreView};

/// The whole index is re-read this often while a view is read.
const FULL_SYNC_EVERY_MS: i64 = 30_000;
/// A view not read for this long is dropped.
const IDLE_AFTER_MS: i64 = 60_000;

/// Brings `log`, a partition this broker does not lead, up to the store,
/// whose partition row `record` was read just before. Reads only what
/// changed unless `force_full`, the view was never loaded, or its last
/// full read is 30 s old.
pub async fn refresh(
    broker: &Broker,
    log: &PartitionLog,
    record: &PartitionRecord,
    force_full: bool,
) -> anyhow::Result<()> {
    let _one_at_a_time = log.replica_refresh_lock().await;
    refresh_locked(broker, log, record, force_full).await
}

/// `refresh`, with the view's refresh lock held by the caller.
async fn refresh_locked(
    broker: &Broker,
    log: &PartitionLog,
    record: &PartitionRecord,
    force_full: bool,
) -> anyhow::Result<()> {
    let now = now_ms();
    log.replica_checked(now);
    let synced = log.replica_synced_ms();
    let full = force_full || synced == 0 || now - synced >= FULL_SYNC_EVERY_MS;
    if !full
        && record.high_watermark <= log.high_watermark()
        && record.log_start_offset <= log.log_start_offset()
    {
        return Ok(());
    }
    let from = if full { i64::MIN } else { log.high_watermark() };
    let chunks = broker
        .metadata
        .chunks_from(log.topic_id, log.partition, from)
        .await?;
    let (producers, aborted) = broker
        .metadata
        .partition_state(
            log.topic_id,
            log.partition,
            crate::storage::partition::aborted_window(),
        )
        .await?;
    log.follow(StoreView {
        full,
        chunks,
        log_start: record.log_start_offset,
        high_watermark: record.high_watermark,
        producers,
        aborted,
        now_ms: now,
    });
    Ok(())
}

/// Refreshes one partition before a read: its view was never loaded, the
/// read asks past what this broker knows, or an object it named is gone.
/// Reads past the view are coalesced: consumers asking past the high
/// watermark on every fetch (a consumer ahead of this broker, a tail read
/// right after the leader's commit) cause at most one store read per
/// `cluster.replica_refresh_ms` per partition, shared by every fetch
/// waiting on it; the fetches then long-poll as usual, and the background
/// follow brings the new data.
pub async fn refresh_now(
    broker: &Broker,
    log: &PartitionLog,
    force_full: bool,
) -> anyhow::Result<()> {
    let coalesce = broker.config.cluster.replica_refresh_ms.max(1) as i64;
    let fresh = || !force_full && now_ms() - log.replica_checked_ms() < coalesce;
    if fresh() {
        return Ok(());
    }
    // Fetches that found the view stale together wait here for one read.
    let _one_at_a_time = log.replica_refresh_lock().await;
    if fresh() {
        return Ok(());
    }
    broker.requests.replica_store_read();
    let record = broker
        .metadata
        .partitions(log.topic_id)
        .await?
        .into_iter()
        .find(|p| p.partition == log.partition)
        .ok_or_else(|| anyhow::anyhow!("partition {} is not in the store", log.partition))?;
    refresh_locked(broker, log, &record, force_full).await
}

/// Keeps the views consumers read here fresh, one store read per topic
/// per round, and drops idle ones.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let every = Duration::from_millis(broker.config.cluster.replica_refresh_ms.max(1));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = now_ms();
        let mut active: HashMap<TopicId, Vec<Arc<PartitionLog>>> = HashMap::new();
        for topic in broker.catalog.all() {
            for log in &topic.partitions {
                if log.leader_id() == broker.node_id || log.replica_synced_ms() == 0 {
                    continue;
                }
                if now - log.replica_last_read_ms() > IDLE_AFTER_MS {
                    log.forget_replica();
                } else {
                    active
                        .entry(log.topic_id)
                        .or_default()
                        .push(Arc::clone(log));
                }
            }
        }
        for (topic, logs) in active {
            let records = match broker.metadata.partitions(topic).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(%error, "cannot read partitions to follow; retrying");
                    continue;
                }
            };
            for log in logs {
                let Some(record) = records.iter().find(|p| p.partition == log.partition) else {
                    continue;
                };
                if let Err(error) = refresh(&broker, &log, record, false).await {
                    tracing::warn!(%error, partition = log.partition, "cannot follow a partition read here; retrying");
                }
            }
        }
    }
}

/// KIP-392: the broker a consumer in `client_rack` should fetch
/// `partition` from, when the leader (this broker) is in another rack and
/// a live broker of that rack can serve it; spread over that rack's brokers
/// by partition.
pub fn preferred_read_replica(
    broker: &Broker,
    live: &[BrokerRecord],
    client_rack: &str,
    topic: TopicId,
    partition: i32,
) -> Option<i32> {
    if !broker.config.cluster.rack_aware_fetch
        || client_rack.is_empty()
        || broker.config.cluster.rack.as_deref() == Some(client_rack)
    {
        return None;
    }
    let mut in_rack: Vec<i32> = live
        .iter()
        .filter(|b| !b.draining && b.rack.as_deref() == Some(client_rack))
        .map(|b| b.node_id)
        .collect();
    if in_rack.is_empty() {
        return None;
    }
    in_rack.sort_unstable();
    let spread = (topic.0.as_u128() as u64 as usize).wrapping_add(partition.max(0) as usize);
    Some(in_rack[spread % in_rack.len()])
}
