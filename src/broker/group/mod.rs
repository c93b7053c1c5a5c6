//! The classic group coordinator: every consumer group of this broker, in
//! memory, with committed offsets in the metadata store.
//!
//! All state changes happen under one mutex, never held across an await; a
//! client waiting in JoinGroup or SyncGroup holds a oneshot receiver. A
//! ticker (every 100 ms) expires sessions and completes rebalances whose
//! deadline passed. Membership does not survive a restart: members get
//! UNKNOWN_MEMBER_ID and rejoin, and their committed offsets are intact.

pub mod consumer;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use self::consumer::{ConsumerGroup, Heartbeat, HeartbeatResult};
use self::state::{Group, GroupState, JoinResult, Member, SyncResult};
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
}

fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

impl GroupCoordinator {
    pub fn new(metadata: Arc<dyn MetadataStore>, config: GroupConfig) -> Arc<Self> {
        Arc::new(GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            consumer_groups: Mutex::new(HashMap::new()),
            metadata,
            config,
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
        if self
            .lock()
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
        {
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
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| ConsumerGroup::new(group_id));
        let result = group.heartbeat(heartbeat, Instant::now(), resolve);
        drop(groups);
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

    pub fn join(&self, req: JoinRequest) -> Pending<JoinResult> {
        let now = Instant::now();
        let fail = |code| Pending::Ready(JoinResult::error(code, &req.member_id));
        if req.group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        let session = req.session_timeout_ms;
        if session < self.config.min_session_timeout_ms
            || session > self.config.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if self
            .lock_consumer()
            .get(&req.group_id)
            .is_some_and(|g| !g.members.is_empty())
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let mut groups = self.lock();
        let new_group = !groups.contains_key(&req.group_id);
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id));
        if !group.accepts(&req.protocol_type, &req.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            member_id = new_member_id(&req.client_id);
            match &req.instance_id {
                Some(instance) if group.static_members.contains_key(instance) => {
                    return self.rejoin_static(group, req, member_id, now);
                }
                Some(_) => {}
                None if req.require_known_member_id => {
                    group.pending.insert(member_id.clone(), now);
                    return Pending::Ready(JoinResult::error(
                        ResponseError::MemberIdRequired,
                        &member_id,
                    ));
                }
                None => {}
            }
        } else {
            if let Some(instance) = &req.instance_id
                && group
                    .static_members
                    .get(instance)
                    .is_some_and(|m| *m != member_id)
            {
                return fail(ResponseError::FencedInstanceId);
            }
            if !group.members.contains_key(&member_id) && !group.pending.contains_key(&member_id) {
                return fail(ResponseError::UnknownMemberId);
            }
        }
        let (tx, rx) = oneshot::channel();
        let known = group
            .members
            .get(&member_id)
            .map(|m| m.protocols == req.protocols);
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        match (group.state, known) {
            // A known follower with unchanged protocols lost its response:
            // answer with the current generation, no rebalance.
            (GroupState::Stable | GroupState::CompletingRebalance, Some(true)) if !is_leader => {
                if let Some(member) = group.members.get_mut(&member_id) {
                    member.last_heartbeat = now;
                }
                return Pending::Ready(group.current_join_result(&member_id, false));
            }
            _ => {}
        }
        let previous_assignment = group
            .members
            .get(&member_id)
            .map(|m| m.assignment.clone())
            .unwrap_or_default();
        if let Some(mut old) = group.members.remove(&member_id)
            && let Some(stale) = old.awaiting_join.take()
        {
            let _ = stale.send(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
        }
        if group.members.is_empty() {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        group.add_member(Member {
            id: member_id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout: Duration::from_millis(session as u64),
            rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(session) as u64),
            protocols: req.protocols,
            assignment: previous_assignment,
            last_heartbeat: now,
            awaiting_join: Some(tx),
            awaiting_sync: None,
            joined: true,
            supports_skip_assignment: req.supports_skip_assignment,
        });
        let initial_delay = Duration::from_millis(self.config.initial_rebalance_delay_ms);
        group.prepare_rebalance(now, initial_delay);
        group.maybe_complete_join(now);
        let protocol_type = group.protocol_type.clone().unwrap_or_default();
        drop(groups);
        if new_group {
            self.remember(&req.group_id, &protocol_type);
        }
        Pending::Waiting(rx)
    }

    /// KIP-345: a static member rejoining with a new member id replaces its
    /// old one; in a stable group with unchanged protocols, no rebalance.
    fn rejoin_static(
        &self,
        group: &mut Group,
        req: JoinRequest,
        member_id: String,
        now: Instant,
    ) -> Pending<JoinResult> {
        let instance = req.instance_id.clone().unwrap_or_default();
        let old_id = group
            .static_members
            .get(&instance)
            .cloned()
            .unwrap_or_default();
        let Some(mut old) = group.members.remove(&old_id) else {
            group.static_members.remove(&instance);
            return Pending::Ready(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
        };
        group
            .join_order
            .iter_mut()
            .filter(|id| **id == old_id)
            .for_each(|id| *id = member_id.clone());
        if let Some(tx) = old.awaiting_join.take() {
            let _ = tx.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(tx) = old.awaiting_sync.take() {
            let _ = tx.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        if group.leader.as_deref() == Some(old_id.as_str()) {
            group.leader = Some(member_id.clone());
        }
        let unchanged = old.protocols == req.protocols;
        old.id = member_id.clone();
        old.client_id = req.client_id;
        old.client_host = req.client_host;
        old.last_heartbeat = now;
        old.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        old.protocols = req.protocols;
        group.static_members.insert(instance, member_id.clone());
        if group.state == GroupState::Stable && unchanged {
            group.members.insert(member_id.clone(), old);
            return Pending::Ready(
                group.current_join_result(&member_id, req.supports_skip_assignment),
            );
        }
        let (tx, rx) = oneshot::channel();
        old.awaiting_join = Some(tx);
        group.members.insert(member_id, old);
        group.prepare_rebalance(now, Duration::ZERO);
        group.maybe_complete_join(now);
        Pending::Waiting(rx)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Pending<SyncResult> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Pending::Ready(SyncResult::error(ResponseError::UnknownMemberId));
        };
        if let Err(code) = group.validate_member(member_id, instance_id, generation) {
            return Pending::Ready(SyncResult::error(code));
        }
        if protocol_type.is_some_and(|t| Some(t) != group.protocol_type.as_deref())
            || protocol_name.is_some_and(|p| Some(p) != group.protocol.as_deref())
        {
            return Pending::Ready(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        let now = Instant::now();
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        match group.state {
            GroupState::Empty => Pending::Ready(SyncResult::error(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                Pending::Ready(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let assignment = group
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Pending::Ready(SyncResult {
                    error: 0,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    assignment,
                })
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(member) = group.members.get_mut(member_id) {
                    member.awaiting_sync = Some(tx);
                }
                if group.leader.as_deref() == Some(member_id) {
                    group.complete_sync(assignments);
                }
                Pending::Waiting(rx)
            }
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        group.validate_member(member_id, instance_id, generation)?;
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_heartbeat = Instant::now();
        }
        match group.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Removes members; `(member id, instance id)` each, answered in order
    /// (`None`: removed).
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        let now = Instant::now();
        let mut results = Vec::with_capacity(members.len());
        let mut departed = false;
        for (member_id, instance_id) in members {
            let target = match instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    Some(current) if member_id.is_empty() || current == member_id => {
                        Some(current.clone())
                    }
                    Some(_) => {
                        results.push(Some(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => None,
                },
                None => Some(member_id.clone()),
            };
            match target {
                Some(id) if group.remove_member(&id) => {
                    departed = true;
                    results.push(None);
                }
                _ => results.push(Some(ResponseError::UnknownMemberId)),
            }
        }
        if departed {
            group.after_departure(now);
        }
        Ok(results)
    }

    /// Fencing for OffsetCommit. `Ok(())` lets the commit through.
    pub fn validate_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(result) = self.with_consumer_group(group_id, |g| {
            if g.members.is_empty() && generation < 0 {
                Ok(())
            } else {
                g.validate_commit(member_id, generation)
            }
        }) {
            return result;
        }
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            // A group nobody joined: simple commits (generation -1) only.
            return if generation < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        group.validate_member(member_id, instance_id, generation)?;
        // As Kafka: members may commit while a rebalance is being prepared
        // (they commit what they are about to give up), not between the
        // join and the sync of a new generation.
        match group.state {
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Notes a heartbeat for a member that committed.
    pub fn touch(&self, group_id: &str, member_id: &str) {
        if let Some(member) = self
            .lock_consumer()
            .get_mut(group_id)
            .and_then(|g| g.members.get_mut(member_id))
        {
            member.last_heartbeat = Instant::now();
        }
        if let Some(member) = self
            .lock()
            .get_mut(group_id)
            .and_then(|g| g.members.get_mut(member_id))
        {
            member.last_heartbeat = Instant::now();
        }
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
        let mut all: BTreeMap<String, (String, &'static str)> = self
            .lock()
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    (g.protocol_type.clone().unwrap_or_default(), g.state.name()),
                )
            })
            .collect();
        for g in self.lock_consumer().values() {
            if !g.members.is_empty() || !all.contains_key(&g.id) {
                all.insert(g.id.clone(), ("consumer".to_string(), g.state()));
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
        let session = Duration::from_millis(self.config.consumer_session_timeout_ms);
        for group in self.lock_consumer().values_mut() {
            for id in group.expired(now, session) {
                tracing::info!(group = %group.id, member = %id, "consumer group member expired");
                group.remove(&id);
            }
        }
        let mut groups = self.lock();
        for group in groups.values_mut() {
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
        }
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
