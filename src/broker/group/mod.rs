//! The classic group coordinator: every consumer group of this broker, in
//! memory, with committed offsets in the metadata store.
//!
//! All state changes happen under one mutex, never held across an await; a
//! client waiting in JoinGroup or SyncGroup holds a oneshot receiver. A
//! ticker (every 100 ms) expires sessions and completes rebalances whose
//! deadline passed. Membership is stored (`stored.rs`): the group's next
//! coordinator, or this broker after a restart, takes it over as it was.

mod classic;
pub mod consumer;
pub mod state;
mod stored;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use self::consumer::{ConsumerGroup, Heartbeat, HeartbeatResult};
use self::state::{Group, GroupState};
use crate::config::GroupConfig;
use crate::metadata::MetadataStore;
use crate::metadata::TopicId;

/// A JoinGroup as the coordinator needs it.
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// JoinGroup v9+ (KIP-814).
    pub supports_skip_assignment: bool,
}

pub enum Pending<T> {
    Ready(T),
    Waiting(oneshot::Receiver<T>),
}

impl<T> Pending<T> {
    pub async fn wait(self, on_drop: T) -> T {
        match self {
            Pending::Ready(value) => value,
            Pending::Waiting(rx) => rx.await.unwrap_or(on_drop),
        }
    }
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// `(member id, instance id, client id, host, metadata, assignment)`
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// KIP-848 groups; lock after `groups` when both are needed.
    consumer_groups: Mutex<HashMap<String, ConsumerGroup>>,
    metadata: Arc<dyn MetadataStore>,
    config: GroupConfig,
    /// This broker's coordinator epoch of a group (`Broker::coordinator_epoch`).
    epoch_of: EpochOf,
    /// Orders this broker's membership writes under one coordinator epoch.
    write_seq: AtomicI64,
}

/// A group's coordinator epoch on this broker: `None` before
/// `__consumer_offsets` exists, -1 where another broker coordinates it.
pub type EpochOf = Box<dyn Fn(&str) -> Option<i32> + Send + Sync>;

fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

impl GroupCoordinator {
    pub fn new(
        metadata: Arc<dyn MetadataStore>,
        config: GroupConfig,
        epoch_of: EpochOf,
    ) -> Arc<Self> {
        // Sequences start at the clock, in microseconds: a restarted broker
        // writing under an epoch it held before still writes after itself.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2))
            .unwrap_or(0);
        Arc::new(GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            consumer_groups: Mutex::new(HashMap::new()),
            metadata,
            config,
            epoch_of,
            write_seq: AtomicI64::new(clock),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        // A panic while holding the lock would be a bug; keep serving.
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_consumer(&self) -> MutexGuard<'_, HashMap<String, ConsumerGroup>> {
        self.consumer_groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn heartbeat_interval_ms(&self) -> i32 {
        self.config.consumer_heartbeat_interval_ms
    }

    /// A KIP-848 ConsumerGroupHeartbeat.
    pub fn consumer_heartbeat(
        &self,
        group_id: &str,
        heartbeat: Heartbeat,
        resolve: &dyn Fn(&str) -> Option<(TopicId, i32)>,
        all_topics: &dyn Fn() -> Vec<String>,
    ) -> HeartbeatResult {
        if group_id.is_empty() {
            return HeartbeatResult {
                error: Some((
                    ResponseError::InvalidGroupId,
                    "the group id is empty".into(),
                )),
                ..HeartbeatResult::default()
            };
        }
        // Held until the heartbeat is done (lock order: classic, then
        // consumer): a classic JoinGroup cannot add a member meanwhile.
        let classic = self.lock();
        if classic.get(group_id).is_some_and(|g| !g.members.is_empty()) {
            return HeartbeatResult {
                error: Some((
                    ResponseError::GroupIdNotFound,
                    "a classic group with members already uses this id".into(),
                )),
                ..HeartbeatResult::default()
            };
        }
        let mut groups = self.lock_consumer();
        let new_group = !groups.contains_key(group_id);
        let group = groups.entry(group_id.to_string()).or_insert_with(|| {
            let mut group = ConsumerGroup::new(group_id);
            group.coordinator_epoch = self.storing_epoch(group_id).unwrap_or(-1);
            group
        });
        let result = group.heartbeat(heartbeat, Instant::now(), resolve, all_topics);
        self.persist_consumer(group);
        drop(groups);
        drop(classic);
        if new_group && result.error.is_none() {
            self.remember(group_id, "consumer");
        }
        result
    }

    /// Runs `f` on a KIP-848 group, if there is one.
    pub fn with_consumer_group<T>(
        &self,
        group_id: &str,
        f: impl FnOnce(&ConsumerGroup) -> T,
    ) -> Option<T> {
        self.lock_consumer().get(group_id).map(f)
    }

    fn remember(&self, group: &str, protocol_type: &str) {
        let metadata = Arc::clone(&self.metadata);
        let (group, protocol_type) = (group.to_string(), protocol_type.to_string());
        tokio::spawn(async move {
            if let Err(error) = metadata.record_group(&group, &protocol_type).await {
                tracing::warn!(%group, %error, "cannot record group");
            }
        });
    }

    pub fn view(&self, group_id: &str) -> Option<GroupView> {
        let groups = self.lock();
        let group = groups.get(group_id)?;
        let protocol = group.protocol.clone().unwrap_or_default();
        let show_members = group.state != GroupState::PreparingRebalance;
        Some(GroupView {
            group_id: group.id.clone(),
            state: group.state.name(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: if group.state == GroupState::Stable
                || group.state == GroupState::CompletingRebalance
            {
                protocol.clone()
            } else {
                String::new()
            },
            members: group
                .members
                .values()
                .filter(|_| show_members)
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        m.metadata_for(&protocol),
                        if group.state == GroupState::Stable {
                            m.assignment.clone()
                        } else {
                            Bytes::new()
                        },
                    )
                })
                .collect(),
        })
    }

    /// `(group, protocol type, state)` of every group in memory.
    pub fn live_groups(&self) -> BTreeMap<String, (String, &'static str)> {
        self.live_groups_typed()
            .into_iter()
            .map(|(id, (protocol_type, state, _))| (id, (protocol_type, state)))
            .collect()
    }

    /// `group -> (protocol type, state, group type)`, the group type being
    /// "classic" or "consumer" (KIP-848), as ListGroups v5 reports it.
    pub fn live_groups_typed(&self) -> BTreeMap<String, (String, &'static str, &'static str)> {
        let mut all: BTreeMap<String, (String, &'static str, &'static str)> = self
            .lock()
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    (
                        g.protocol_type.clone().unwrap_or_default(),
                        g.state.name(),
                        "classic",
                    ),
                )
            })
            .collect();
        for g in self.lock_consumer().values() {
            if !g.members.is_empty() || !all.contains_key(&g.id) {
                all.insert(
                    g.id.clone(),
                    ("consumer".to_string(), g.state(), "consumer"),
                );
            }
        }
        all
    }

    /// Whether the group has members (DeleteGroups and OffsetDelete refuse then).
    pub fn has_members(&self, group_id: &str) -> bool {
        self.lock()
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
            || self
                .with_consumer_group(group_id, |g| !g.members.is_empty())
                .unwrap_or(false)
    }

    /// Topics the members subscribe to (consumer protocol), for OffsetDelete.
    pub fn subscribed_topics(&self, group_id: &str) -> Vec<String> {
        if let Some(topics) = self.with_consumer_group(group_id, |g| {
            let mut topics: Vec<String> = g
                .members
                .values()
                .flat_map(|m| m.subscribed.clone())
                .collect();
            topics.sort();
            topics.dedup();
            topics
        }) && !topics.is_empty()
        {
            return topics;
        }
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return Vec::new();
        };
        let protocol = group.protocol.clone().unwrap_or_default();
        let mut topics: Vec<String> = group
            .members
            .values()
            .flat_map(|m| {
                crate::protocol::consumer::subscription_topics(&m.metadata_for(&protocol))
                    .unwrap_or_default()
            })
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Forgets an empty group (DeleteGroups).
    pub fn forget(&self, group_id: &str) {
        let mut groups = self.lock();
        if groups.get(group_id).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group_id);
        }
        let mut consumer = self.lock_consumer();
        if consumer.get(group_id).is_some_and(|g| g.members.is_empty()) {
            consumer.remove(group_id);
        }
    }

    /// Ticks until shutdown: session expiry, rebalance deadlines, offset expiry.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_expiry = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.cancelled() => return,
            }
            self.tick(Instant::now());
            if last_expiry.elapsed() >= Duration::from_secs(60) {
                last_expiry = Instant::now();
                self.expire_offsets().await;
            }
        }
    }

    fn tick(&self, now: Instant) {
        // Copies of groups another broker now coordinates are dropped
        // unwritten: their members moved on to it.
        let stale = |id: &str, epoch: i32| epoch >= 0 && (self.epoch_of)(id) != Some(epoch);
        let session = Duration::from_millis(self.config.consumer_session_timeout_ms);
        let mut consumer_groups = self.lock_consumer();
        consumer_groups.retain(|id, g| !stale(id, g.coordinator_epoch));
        for group in consumer_groups.values_mut() {
            let expired = group.expired(now, session);
            for id in &expired {
                tracing::info!(group = %group.id, member = %id, "consumer group member expired");
                group.remove(id);
            }
            if !expired.is_empty() {
                self.persist_consumer(group);
            }
        }
        // Empty groups live on in the metadata store (listed as Empty).
        consumer_groups.retain(|_, g| !g.members.is_empty());
        drop(consumer_groups);
        let mut groups = self.lock();
        groups.retain(|id, g| !stale(id, g.coordinator_epoch));
        for group in groups.values_mut() {
            let before = (group.state, group.generation);
            let expired = group.expired_members(now);
            for id in &expired {
                tracing::info!(group = %group.id, member = %id, "member session expired");
                group.remove_member(id);
            }
            let session_floor =
                Duration::from_millis(self.config.min_session_timeout_ms.max(0) as u64);
            group
                .pending
                .retain(|_, since| now.duration_since(*since) < session_floor * 10);
            if !expired.is_empty() {
                group.after_departure(now);
            }
            group.maybe_complete_join(now);
            if !expired.is_empty() || (group.state, group.generation) != before {
                self.persist_classic(group);
            }
        }
        groups.retain(|_, g| {
            !(g.state == GroupState::Empty && g.members.is_empty() && g.pending.is_empty())
        });
    }

    async fn expire_offsets(&self) {
        let retention_ms = self.config.offsets_retention_minutes.saturating_mul(60_000);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut active: Vec<String> = self
            .lock()
            .values()
            .filter(|g| !g.members.is_empty())
            .map(|g| g.id.clone())
            .collect();
        active.extend(
            self.lock_consumer()
                .values()
                .filter(|g| !g.members.is_empty())
                .map(|g| g.id.clone()),
        );
        match self
            .metadata
            .expire_offsets(now_ms - retention_ms, active)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired committed offsets of empty groups"),
            Err(error) => tracing::warn!(%error, "offset expiry failed"),
        }
    }
}
