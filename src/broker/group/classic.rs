//! The classic group protocol on the coordinator: JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup and the fencing of OffsetCommit. Each call takes the
//! groups lock once, changes the state machine in `state.rs`, and returns at
//! once or with a receiver the client's task waits on.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use super::state::{Group, GroupState, JoinResult, Member, SyncResult};
use super::{GroupCoordinator, JoinRequest, Pending, new_member_id};

impl GroupCoordinator {
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
        // The classic map's lock is taken first and held while the member
        // joins: a KIP-848 heartbeat takes it too before creating its group,
        // so one group id never ends up with members of both protocols.
        let mut groups = self.lock();
        if self
            .lock_consumer()
            .get(&req.group_id)
            .is_some_and(|g| !g.members.is_empty())
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let new_group = !groups.contains_key(&req.group_id);
        let group = groups.entry(req.group_id.clone()).or_insert_with(|| {
            let mut group = Group::new(&req.group_id);
            group.coordinator_epoch = self.storing_epoch(&req.group_id).unwrap_or(-1);
            group
        });
        if !group.accepts(&req.protocol_type, &req.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            member_id = new_member_id(&req.client_id);
            match &req.instance_id {
                Some(instance) if group.static_members.contains_key(instance) => {
                    let result = self.rejoin_static(group, req, member_id, now);
                    self.persist_classic(group);
                    return result;
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
        // The first member sets the group's protocol type; it is stored
        // (below) so the group is listed with it after its members leave or
        // the broker restarts. A new group's first JoinGroup usually only
        // gets MEMBER_ID_REQUIRED, so "new group" is not the moment.
        let first_member = group.members.is_empty();
        if first_member {
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
        if new_group || first_member {
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
        let was_leader = group.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
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
            let mut result = group.current_join_result(&member_id, req.supports_skip_assignment);
            // Before KIP-814 (JoinGroup v9) a leader told it leads would run
            // its assignor over an empty member list: as Kafka, name the old
            // leader id instead so the member just syncs its assignment.
            if was_leader && !req.supports_skip_assignment {
                result.leader = old_id.clone();
            }
            return Pending::Ready(result);
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
                    self.persist_classic(group);
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
            self.persist_classic(group);
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
        // A KIP-848 group with members owns its commits; an empty one does
        // not stand in the way of classic members or simple commits.
        if let Some(result) = self.with_consumer_group(group_id, |g| {
            (!g.members.is_empty()).then(|| g.validate_commit(member_id, generation))
        }) && let Some(result) = result
        {
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
}
