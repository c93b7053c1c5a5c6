//! One classic consumer group's state machine, as Kafka's group coordinator
//! runs it: Empty -> PreparingRebalance -> CompletingRebalance -> Stable, with
//! joins held until every member has rejoined (or the rebalance timeout
//! passed), the leader's SyncGroup distributing assignments, and fencing by
//! generation, member id and static instance id.
//!
//! Nothing in here blocks or does I/O: waiting clients hold a oneshot
//! receiver whose sender lives in the member entry.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup caller gets back (error code 0 or a failure).
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// `(member id, instance id, metadata)`; only the leader gets them.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(code: ResponseError, member_id: &str) -> Self {
        JoinResult {
            error: code.code(),
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinResult::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(code: ResponseError) -> Self {
        SyncResult {
            error: code.code(),
            ..SyncResult::default()
        }
    }
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    pub awaiting_join: Option<oneshot::Sender<JoinResult>>,
    pub awaiting_sync: Option<oneshot::Sender<SyncResult>>,
    /// Joined (or rejoined) in the current rebalance round.
    pub joined: bool,
    pub supports_skip_assignment: bool,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// Ordered by member id; `join_order` keeps who came first (leader choice).
    pub members: BTreeMap<String, Member>,
    pub join_order: Vec<String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined yet (KIP-394).
    pub pending: HashMap<String, Instant>,
    /// Static instance id -> member id (KIP-345).
    pub static_members: HashMap<String, String>,
    pub rebalance_deadline: Option<Instant>,
    pub initial_delay_until: Option<Instant>,
    /// The coordinator epoch this broker holds the group under (-1: not
    /// stored, before `__consumer_offsets` exists); see `stored.rs`.
    pub coordinator_epoch: i32,
    /// Fingerprint of the membership last written to the store.
    pub persisted: u64,
}

impl Group {
    pub fn new(id: &str) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            join_order: Vec::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            coordinator_epoch: -1,
            persisted: 0,
        }
    }

    /// Protocols every member supports, in the order of `candidate`'s preference.
    fn common_protocols<'a>(&'a self, candidate: &'a [(String, Bytes)]) -> Vec<&'a str> {
        candidate
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == name))
            })
            .collect()
    }

    /// Whether a joining member's protocols fit the group.
    pub fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && !self.common_protocols(protocols).is_empty()
    }

    /// Kafka's protocol selection: each member votes for its most preferred
    /// protocol among those all members support; the most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates = self.common_protocols(&first.protocols);
        let mut best: Option<(&str, usize)> = None;
        for candidate in &candidates {
            let votes = self
                .members
                .values()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(p, _)| p.as_str())
                        .find(|p| candidates.contains(p))
                        == Some(*candidate)
                })
                .count();
            if best.is_none_or(|(_, most)| votes > most) {
                best = Some((candidate, votes));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    pub fn add_member(&mut self, member: Member) {
        if let Some(instance) = &member.instance_id {
            self.static_members
                .insert(instance.clone(), member.id.clone());
        }
        self.pending.remove(&member.id);
        if !self.join_order.contains(&member.id) {
            self.join_order.push(member.id.clone());
        }
        self.members.insert(member.id.clone(), member);
    }

    /// Removes a member, answering its outstanding join or sync with
    /// UNKNOWN_MEMBER_ID. Returns whether it existed.
    pub fn remove_member(&mut self, member_id: &str) -> bool {
        let Some(mut member) = self.members.remove(member_id) else {
            return false;
        };
        self.join_order.retain(|id| id != member_id);
        if let Some(instance) = &member.instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        if let Some(tx) = member.awaiting_join.take() {
            let _ = tx.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
        }
        if let Some(tx) = member.awaiting_sync.take() {
            let _ = tx.send(SyncResult::error(ResponseError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        true
    }

    /// Starts (or keeps) a rebalance: everyone must rejoin before the deadline.
    pub fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for the leader's assignment must rejoin instead.
            for member in self.members.values_mut() {
                if let Some(tx) = member.awaiting_sync.take() {
                    let _ = tx.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        if self.state != GroupState::PreparingRebalance {
            for member in self.members.values_mut() {
                member.joined = member.awaiting_join.is_some();
            }
            let timeout = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or(Duration::ZERO);
            self.rebalance_deadline = Some(now + timeout);
            self.initial_delay_until = (self.state == GroupState::Empty
                && !initial_delay.is_zero())
            .then(|| now + initial_delay.min(timeout));
            self.state = GroupState::PreparingRebalance;
        }
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// Completes the join phase when everyone rejoined or the deadline
    /// passed (dropping members who did not rejoin).
    pub fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = self.rebalance_deadline.is_some_and(|d| now >= d);
        let delay_over = self.initial_delay_until.is_none_or(|d| now >= d);
        let everyone_in = self.all_joined() && delay_over;
        if !(deadline_passed || everyone_in) {
            return;
        }
        let stragglers: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in stragglers {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.join_order.first().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            member.last_heartbeat = now;
            member.joined = false;
            if let Some(tx) = member.awaiting_join.take() {
                let _ = tx.send(JoinResult {
                    error: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: member.id.clone(),
                    members: if member.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                });
            }
        }
    }

    /// The join response for a member of a group that is not rebalancing.
    pub fn current_join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: Some(protocol.clone()),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader && skip_assignment {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: is_leader && skip_assignment,
        }
    }

    /// The leader's assignments arrived: the group is stable.
    pub fn complete_sync(&mut self, assignments: Vec<(String, Bytes)>) {
        let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
        for member in self.members.values_mut() {
            member.assignment = by_member.remove(&member.id).unwrap_or_default();
            if let Some(tx) = member.awaiting_sync.take() {
                let _ = tx.send(SyncResult {
                    error: 0,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: member.assignment.clone(),
                });
            }
        }
        self.state = GroupState::Stable;
    }

    /// Checks a (member id, instance id, generation) triple as Kafka fences
    /// heartbeats, syncs and commits.
    pub fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id
            && let Some(current) = self.static_members.get(instance)
            && current != member_id
        {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Members whose session ran out (not counting those waiting in a join).
    pub fn expired_members(&self, now: Instant) -> Vec<String> {
        self.members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && now.duration_since(m.last_heartbeat) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect()
    }

    /// After members left or expired: rebalance the rest, or become empty.
    pub fn after_departure(&mut self, now: Instant) {
        if self.members.is_empty() && self.state != GroupState::PreparingRebalance {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            self.rebalance_deadline = None;
            return;
        }
        self.prepare_rebalance(now, Duration::ZERO);
        self.maybe_complete_join(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> (Member, oneshot::Receiver<JoinResult>) {
        let (tx, rx) = oneshot::channel();
        let m = Member {
            id: id.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            assignment: Bytes::new(),
            last_heartbeat: Instant::now(),
            awaiting_join: Some(tx),
            awaiting_sync: None,
            joined: true,
            supports_skip_assignment: false,
        };
        (m, rx)
    }

    #[test]
    fn join_completes_when_all_rejoin_and_picks_a_common_protocol() {
        let now = Instant::now();
        let mut group = Group::new("g");
        group.protocol_type = Some("consumer".into());
        let (a, mut rx_a) = member("a", &["roundrobin", "range"]);
        group.add_member(a);
        group.prepare_rebalance(now, Duration::ZERO);
        let (b, mut rx_b) = member("b", &["range", "roundrobin"]);
        assert!(group.accepts("consumer", &b.protocols));
        group.add_member(b);
        group.maybe_complete_join(now);
        assert_eq!(group.state, GroupState::CompletingRebalance);
        assert_eq!(group.generation, 1);
        let a = rx_a.try_recv().expect("a answered");
        let b = rx_b.try_recv().expect("b answered");
        assert_eq!(a.leader, "a");
        assert_eq!(a.members.len(), 2, "the leader sees every member");
        assert!(b.members.is_empty());
        assert_eq!(a.protocol_name, b.protocol_name);
        let (c, _) = member("c", &["sticky"]);
        assert!(
            !group.accepts("consumer", &c.protocols),
            "no common protocol"
        );
        assert!(!group.accepts("connect", &[("range".into(), Bytes::new())]));
    }

    #[test]
    fn stragglers_are_dropped_at_the_deadline_and_fencing_holds() {
        let now = Instant::now();
        let mut group = Group::new("g");
        group.protocol_type = Some("consumer".into());
        let (a, _rx) = member("a", &["range"]);
        group.add_member(a);
        group.prepare_rebalance(now, Duration::ZERO);
        group.maybe_complete_join(now);
        group.complete_sync(vec![("a".into(), Bytes::from_static(b"all"))]);
        assert_eq!(group.state, GroupState::Stable);
        // b joins: a must rejoin but never does.
        let (b, mut rx_b) = member("b", &["range"]);
        group.add_member(b);
        group.prepare_rebalance(now, Duration::ZERO);
        group.maybe_complete_join(now);
        assert_eq!(group.state, GroupState::PreparingRebalance, "waits for a");
        group.maybe_complete_join(now + Duration::from_secs(31));
        assert_eq!(group.state, GroupState::CompletingRebalance);
        assert!(!group.members.contains_key("a"), "a was dropped");
        assert_eq!(rx_b.try_recv().expect("b answered").leader, "b");
        assert_eq!(
            group.validate_member("a", None, 2),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            group.validate_member("b", None, 1),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(group.validate_member("b", None, 2), Ok(()));
    }
}
