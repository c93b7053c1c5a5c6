//! Cluster membership and partition leadership.
//!
//! Every broker registers in the metadata store with a lease and renews it
//! each heartbeat. The broker holding the controller lease assigns
//! partition leadership over the brokers whose lease is live and that are
//! not draining: a dead broker's partitions go to the least loaded live
//! ones, and partitions move from the most to the least loaded until no
//! two brokers differ by more than one. Every move bumps the partition's
//! leader epoch in the store, so the previous leader's commits are fenced
//! from that moment. Each heartbeat, every broker also re-reads topics and
//! leadership from the store: it loads the state of partitions it gained
//! (from the store: no data is copied) and stops serving those it lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::metadata::{
    BrokerRecord, LeaderMove, MetadataStore, PartitionRecord, TopicId, TopicRecord,
};
use crate::storage::catalog::TopicState;
use crate::storage::partition::PartitionLog;

/// This process's membership: its registration and what it last read of
/// the cluster.
pub struct Membership {
    pub node_id: i32,
    /// Random per process: a restarted node takes its id over.
    pub boot: String,
    host: String,
    port: i32,
    endpoints: Vec<crate::metadata::Endpoint>,
    rack: Option<String>,
    session: Duration,
    heartbeat: Duration,
    draining: AtomicBool,
    /// Whether this process held the controller lease at its last heartbeat
    /// (it alone runs the object collector).
    pub controller: Arc<AtomicBool>,
    /// Live brokers as of the last heartbeat, by node id.
    live: RwLock<Vec<BrokerRecord>>,
    /// The metadata store's clock minus this broker's, as last measured.
    skew_ms: AtomicI64,
}

/// A clock difference with the store worth a warning (leases are timed on
/// the store's clock either way).
const CLOCK_WARNING_MS: i64 = 1_000;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Membership {
    pub fn new(
        node_id: i32,
        host: String,
        port: i32,
        endpoints: Vec<crate::metadata::Endpoint>,
        rack: Option<String>,
        heartbeat: Duration,
        session: Duration,
    ) -> Self {
        let boot = format!("{:016x}", rand::random::<u64>());
        Self {
            node_id,
            boot,
            host,
            port,
            endpoints,
            rack,
            session,
            heartbeat,
            draining: AtomicBool::new(false),
            controller: Arc::new(AtomicBool::new(false)),
            live: RwLock::new(Vec::new()),
            skew_ms: AtomicI64::new(0),
        }
    }

    /// The time on the metadata store's clock, as last measured against
    /// this broker's: what leases are timed with.
    pub fn now(&self) -> i64 {
        now_ms() + self.skew_ms.load(Ordering::Acquire)
    }

    /// Measures the store's clock against this broker's (half the round
    /// trip taken as the read's moment) and times leases on it from now on.
    pub async fn sync_clock(&self, metadata: &dyn MetadataStore) -> anyhow::Result<()> {
        let sent = now_ms();
        let store = metadata.clock_ms().await?;
        let received = now_ms();
        let skew = store - (sent + (received - sent) / 2);
        let before = self.skew_ms.swap(skew, Ordering::AcqRel);
        if skew.abs() >= CLOCK_WARNING_MS && (skew - before).abs() >= CLOCK_WARNING_MS {
            tracing::warn!(
                skew_ms = skew,
                "this broker's clock differs from the metadata store's; leases follow the store's"
            );
        }
        Ok(())
    }

    /// This broker's registration with a lease from `now_ms`.
    pub fn record(&self, now_ms: i64) -> BrokerRecord {
        BrokerRecord {
            node_id: self.node_id,
            boot: self.boot.clone(),
            host: self.host.clone(),
            port: self.port,
            endpoints: self.endpoints.clone(),
            rack: self.rack.clone(),
            lease_until_ms: now_ms + self.session.as_millis() as i64,
            draining: self.draining.load(Ordering::Acquire),
        }
    }

    /// Live brokers as last read (this one alone before the first read).
    pub fn live(&self) -> Vec<BrokerRecord> {
        let live = self.live.read().map(|l| l.clone()).unwrap_or_default();
        if live.is_empty() {
            vec![self.record(self.now())]
        } else {
            live
        }
    }

    pub fn is_live(&self, node_id: i32) -> bool {
        self.live().iter().any(|b| b.node_id == node_id)
    }

    /// Brokers that take new partitions: live and not draining.
    pub fn candidates(&self) -> Vec<i32> {
        self.live()
            .iter()
            .filter(|b| !b.draining)
            .map(|b| b.node_id)
            .collect()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn set_live(&self, live: Vec<BrokerRecord>) {
        if let Ok(mut slot) = self.live.write() {
            *slot = live;
        }
    }
}

/// Registers this broker (taking its node id over from any earlier
/// process) and fences that process: the partitions the node leads get a
/// new leader epoch.
pub async fn join(metadata: &dyn MetadataStore, membership: &Membership) -> anyhow::Result<()> {
    membership.sync_clock(metadata).await?;
    metadata
        .register_broker(membership.record(membership.now()))
        .await?;
    metadata.claim_own_partitions(membership.node_id).await?;
    let now = membership.now();
    let live = metadata.live_brokers(now).await?;
    membership.set_live(live);
    let controller = metadata
        .try_controller(
            membership.node_id,
            &membership.boot,
            now,
            now + membership.session.as_millis() as i64,
        )
        .await?;
    membership.controller.store(controller, Ordering::Release);
    Ok(())
}

/// Heartbeats until `shutdown`; a broker whose node id another process took
/// over stops (`fenced` is cancelled).
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken, fenced: CancellationToken) {
    let mut ticker = tokio::time::interval(broker.cluster.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match heartbeat(&broker).await {
            Ok(true) => {}
            // A draining broker deregisters before its background tasks
            // stop: its row is gone, nobody took its node id over.
            Ok(false) if broker.cluster.is_draining() => return,
            Ok(false) => {
                tracing::error!(
                    node_id = broker.node_id,
                    "another process registered this node id; stopping"
                );
                fenced.cancel();
                return;
            }
            Err(error) => tracing::warn!(%error, "cluster heartbeat failed; retrying"),
        }
    }
}

/// One heartbeat: renew the lease, read the live brokers, act as the
/// controller if this broker holds its lease, then follow the store.
/// Returns false if this process lost its node id.
pub async fn heartbeat(broker: &Arc<Broker>) -> anyhow::Result<bool> {
    let membership = &broker.cluster;
    membership.sync_clock(broker.metadata.as_ref()).await?;
    let now = membership.now();
    if !broker.metadata.renew_lease(membership.record(now)).await? {
        return Ok(false);
    }
    let live = broker.metadata.live_brokers(now).await?;
    membership.set_live(live.clone());
    let lease_until = now + membership.session.as_millis() as i64;
    let controller = broker
        .metadata
        .try_controller(membership.node_id, &membership.boot, now, lease_until)
        .await?;
    membership.controller.store(controller, Ordering::Release);
    if controller {
        rebalance(broker, &live, now).await?;
    }
    sync(broker).await?;
    Ok(true)
}

/// The controller's leadership moves for `partitions` over `candidates`:
/// partitions of brokers that are not candidates go to the least loaded
/// candidates, then partitions move from the most to the least loaded
/// until no two differ by more than one.
pub fn plan_moves(
    partitions: &[(TopicId, PartitionRecord)],
    candidates: &[i32],
) -> Vec<LeaderMove> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let mut load: BTreeMap<i32, Vec<(TopicId, i32, i32, i32)>> =
        candidates.iter().map(|c| (*c, Vec::new())).collect();
    let mut orphans = Vec::new();
    for (topic, p) in partitions {
        let entry = (*topic, p.partition, p.leader_id, p.leader_epoch);
        match load.get_mut(&p.leader_id) {
            Some(owned) => owned.push(entry),
            None => orphans.push(entry),
        }
    }
    let mut moves = Vec::new();
    let least = |load: &BTreeMap<i32, Vec<_>>| {
        load.iter()
            .min_by_key(|(node, owned)| (owned.len(), **node))
            .map(|(node, _)| *node)
    };
    for (topic, partition, from, epoch) in orphans {
        let Some(to) = least(&load) else { break };
        moves.push(LeaderMove {
            topic_id: topic,
            partition,
            from,
            epoch,
            to,
        });
        if let Some(owned) = load.get_mut(&to) {
            // Moved already: never picked again for a balancing move.
            owned.insert(0, (topic, partition, to, -1));
        }
    }
    while let Some((&max_node, max_owned)) = load
        .iter()
        .max_by_key(|(node, owned)| (owned.len(), std::cmp::Reverse(**node)))
    {
        let Some(min_node) = least(&load) else { break };
        let (max_len, min_len) = (max_owned.len(), load[&min_node].len());
        if max_len <= min_len + 1 {
            break;
        }
        let Some(owned) = load.get_mut(&max_node) else {
            break;
        };
        let Some((topic, partition, from, epoch)) = owned.pop() else {
            break;
        };
        if epoch < 0 {
            break; // only fresh assignments left on it: nothing to balance
        }
        moves.push(LeaderMove {
            topic_id: topic,
            partition,
            from,
            epoch,
            to: min_node,
        });
        if let Some(owned) = load.get_mut(&min_node) {
            owned.insert(0, (topic, partition, min_node, -1));
        }
    }
    moves
}

async fn rebalance(broker: &Arc<Broker>, live: &[BrokerRecord], now: i64) -> anyhow::Result<()> {
    let candidates: Vec<i32> = live
        .iter()
        .filter(|b| !b.draining)
        .map(|b| b.node_id)
        .collect();
    let partitions = broker.metadata.all_partitions().await?;
    let moves = plan_moves(&partitions, &candidates);
    if moves.is_empty() {
        return Ok(());
    }
    let membership = &broker.cluster;
    let applied = broker
        .metadata
        .move_leaders(membership.node_id, &membership.boot, now, moves.clone())
        .await?;
    let done = applied.iter().filter(|a| **a).count();
    tracing::info!(
        moves = moves.len(),
        applied = done,
        brokers = ?candidates,
        "controller moved partition leadership"
    );
    Ok(())
}

/// Follows the store: topics created, grown, reconfigured or deleted by
/// any broker, and partitions this broker gained (loaded from the store)
/// or lost (no longer served).
pub async fn sync(broker: &Arc<Broker>) -> anyhow::Result<()> {
    // Serialised with this broker's own topic changes.
    let _guard = broker.admin_lock.lock().await;
    let topics = broker.metadata.list_topics().await?;
    let mut partitions: HashMap<TopicId, Vec<PartitionRecord>> = HashMap::new();
    for (topic, record) in broker.metadata.all_partitions().await? {
        partitions.entry(topic).or_default().push(record);
    }
    let mut present = HashSet::new();
    for record in topics {
        present.insert(record.id);
        let stored = partitions.remove(&record.id).unwrap_or_default();
        sync_topic(broker, record, stored).await?;
    }
    for topic in broker.catalog.all() {
        if !present.contains(&topic.record.id) {
            broker.catalog.remove(topic.record.id);
            broker.writer.forget_topic(topic.record.id);
            tracing::info!(topic = %topic.record.name, "topic deleted by another broker");
        }
    }
    Ok(())
}

/// The topic named `name`: as this broker knows it or, when it was created
/// through another broker since this one last followed the store
/// ([`sync`]), as the store has it (known here from then on), so that a
/// client asking for it here right after its creation finds it; `None` if
/// it does not exist.
pub async fn sync_named(broker: &Broker, name: &str) -> anyhow::Result<Option<Arc<TopicState>>> {
    if let Some(topic) = broker.catalog.by_name(name) {
        return Ok(Some(topic));
    }
    let _guard = broker.admin_lock.lock().await;
    sync_named_locked(broker, name).await
}

/// [`sync_named`] for a caller holding the broker's `admin_lock`.
pub async fn sync_named_locked(
    broker: &Broker,
    name: &str,
) -> anyhow::Result<Option<Arc<TopicState>>> {
    if let Some(topic) = broker.catalog.by_name(name) {
        return Ok(Some(topic));
    }
    let Some(record) = broker.metadata.topic_by_name(name).await? else {
        return Ok(None);
    };
    let stored = broker.metadata.partitions(record.id).await?;
    sync_topic(broker, record, stored).await?;
    Ok(broker.catalog.by_name(name))
}

async fn sync_topic(
    broker: &Broker,
    record: TopicRecord,
    stored: Vec<PartitionRecord>,
) -> anyhow::Result<()> {
    let me = broker.node_id;
    let existing = broker.catalog.by_id(record.id);
    let commits = existing
        .as_ref()
        .and_then(|t| t.partitions.first().map(|p| p.topic_commits()))
        .unwrap_or_else(crate::storage::partition::topic_commits);
    let mut logs: Vec<Arc<PartitionLog>> = existing
        .as_ref()
        .map(|t| t.partitions.clone())
        .unwrap_or_default();
    let mut changed = existing.as_ref().is_none_or(|t| t.record != record);
    for p in &stored {
        let index = usize::try_from(p.partition).unwrap_or(usize::MAX);
        let current = logs.get(index).cloned();
        let gained = p.leader_id == me
            && current
                .as_ref()
                .is_none_or(|log| log.leader_id() != me || log.leader_epoch() != p.leader_epoch);
        let log = if gained {
            broker.writer.forget_partition(record.id, p.partition);
            let log = load_partition(broker.metadata.as_ref(), record.id, p, &commits).await?;
            if current.is_some() {
                tracing::info!(topic = %record.name, partition = p.partition, epoch = p.leader_epoch, "took partition leadership");
            }
            log
        } else if let Some(log) = current {
            if p.leader_id == me {
                continue; // led here already, at this epoch
            }
            if log.leader_id() == me {
                // Lost: the log gives way to a stub, so that nothing here
                // (sealer, cleaner, reads) works on its chunks any more.
                log.set_leader(p.leader_id, p.leader_epoch);
                broker.writer.forget_partition(record.id, p.partition);
                tracing::info!(topic = %record.name, partition = p.partition, leader = p.leader_id, "partition leadership moved away");
                remote_partition(record.id, p, &commits)
            } else {
                if log.leader_id() != p.leader_id || log.leader_epoch() != p.leader_epoch {
                    log.set_leader(p.leader_id, p.leader_epoch);
                }
                continue;
            }
        } else {
            remote_partition(record.id, p, &commits)
        };
        changed = true;
        if index < logs.len() {
            logs[index] = log;
        } else if index == logs.len() {
            logs.push(log);
        } else {
            anyhow::bail!("partitions of {} out of order in the store", record.name);
        }
    }
    if changed {
        broker.catalog.insert(TopicState {
            record,
            partitions: logs,
        });
    }
    Ok(())
}

/// A partition this broker leads, with its state from the store.
pub async fn load_partition(
    metadata: &dyn MetadataStore,
    topic: TopicId,
    p: &PartitionRecord,
    commits: &Arc<tokio::sync::watch::Sender<u64>>,
) -> anyhow::Result<Arc<PartitionLog>> {
    let chunks = metadata.chunks(topic, p.partition).await?;
    let (producers, aborted) = metadata
        .partition_state(
            topic,
            p.partition,
            crate::storage::partition::aborted_window(),
        )
        .await?;
    let log = PartitionLog::new(
        topic,
        p.partition,
        p.leader_epoch,
        p.log_start_offset,
        p.high_watermark,
        chunks,
        Arc::clone(commits),
    );
    log.set_clean_offset(p.clean_offset);
    log.apply_producers(&producers);
    log.load_aborted(&aborted);
    log.set_leader(p.leader_id, p.leader_epoch);
    Ok(Arc::new(log))
}

/// A partition another broker leads: known for Metadata, not served.
pub fn remote_partition(
    topic: TopicId,
    p: &PartitionRecord,
    commits: &Arc<tokio::sync::watch::Sender<u64>>,
) -> Arc<PartitionLog> {
    let log = PartitionLog::new(
        topic,
        p.partition,
        p.leader_epoch,
        p.log_start_offset,
        p.high_watermark,
        Vec::new(),
        Arc::clone(commits),
    );
    log.set_leader(p.leader_id, p.leader_epoch);
    Arc::new(log)
}

/// Cluster gauges for /metrics.
pub fn render_prometheus(broker: &Broker) -> String {
    use crate::storage::metrics::render_value;
    let mut out = String::new();
    render_value(
        &mut out,
        "strata_cluster_brokers",
        "gauge",
        "Brokers whose lease is live, as of this broker's last heartbeat.",
        broker.cluster.live().len() as u64,
    );
    let led = broker
        .catalog
        .all()
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter(|log| log.leader_id() == broker.node_id)
        .count();
    render_value(
        &mut out,
        "strata_partitions_led",
        "gauge",
        "Partitions this broker leads.",
        led as u64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions(leaders: &[i32]) -> Vec<(TopicId, PartitionRecord)> {
        let topic = TopicId(uuid::Uuid::nil());
        leaders
            .iter()
            .enumerate()
            .map(|(i, leader)| {
                (
                    topic,
                    PartitionRecord {
                        partition: i as i32,
                        leader_id: *leader,
                        leader_epoch: 3,
                        log_start_offset: 0,
                        high_watermark: 0,
                        clean_offset: 0,
                    },
                )
            })
            .collect()
    }

    fn after(parts: &[(TopicId, PartitionRecord)], moves: &[LeaderMove]) -> BTreeMap<i32, usize> {
        let mut leaders: Vec<i32> = parts.iter().map(|(_, p)| p.leader_id).collect();
        for m in moves {
            assert_eq!(
                leaders[m.partition as usize], m.from,
                "moves start from the stored leader"
            );
            leaders[m.partition as usize] = m.to;
        }
        let mut load = BTreeMap::new();
        for l in leaders {
            *load.entry(l).or_insert(0) += 1;
        }
        load
    }

    #[test]
    fn a_new_broker_takes_a_fair_share_and_nothing_else_moves() {
        let parts = partitions(
            &[0; 16]
                .iter()
                .chain(&[1; 16])
                .chain(&[2; 16])
                .copied()
                .collect::<Vec<_>>(),
        );
        let moves = plan_moves(&parts, &[0, 1, 2, 3]);
        assert_eq!(moves.len(), 12, "{moves:?}");
        assert!(moves.iter().all(|m| m.to == 3));
        assert_eq!(
            after(&parts, &moves),
            BTreeMap::from([(0, 12), (1, 12), (2, 12), (3, 12)])
        );
    }

    #[test]
    fn a_dead_brokers_partitions_spread_over_the_live_ones() {
        let parts = partitions(&[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
        let moves = plan_moves(&parts, &[0, 1]);
        assert!(moves.iter().all(|m| m.from == 2));
        assert_eq!(after(&parts, &moves), BTreeMap::from([(0, 5), (1, 5)]));
        // Balanced already: nothing moves.
        assert!(plan_moves(&partitions(&[0, 1, 0, 1, 0]), &[0, 1]).is_empty());
        // Nobody to take them: nothing moves.
        assert!(plan_moves(&parts, &[]).is_empty());
    }
}
