//! Group membership in the metadata store, so a group's next coordinator
//! (its `__consumer_offsets` partition moved: a broker died, drained or a
//! new one took a share; or this broker restarted) takes it over as it was,
//! as Kafka's coordinators reload groups from `__consumer_offsets`: same
//! generation, members, leader and assignments. Members heartbeat on
//! without rejoining, and their commits pass the generation check.
//!
//! - A classic group is written when it is Stable or Empty (after the
//!   leader's SyncGroup, a static member's replacement, the last member's
//!   departure); a rebalance in progress leaves the last stable state
//!   stored, so members caught in one rejoin the new coordinator as known
//!   members. A KIP-848 group is written whenever its epochs or a member's
//!   assignment change.
//! - Writes are ordered by `(coordinator epoch, sequence)`: the epoch is the
//!   leader epoch of the group's `__consumer_offsets` partition here, so a
//!   coordinator that lost the group (paused, or slow to learn of the move)
//!   can no longer overwrite its successor's state; a broker writes a group
//!   it takes over at once under its own epoch.
//! - A group is (re)read before a membership request when this broker holds
//!   no copy of it under the current epoch; sessions restart at that moment.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

use super::GroupCoordinator;
use super::consumer::{ConsumerGroup, ConsumerMember, TopicPartition, compile_subscription};
use super::state::{Group, GroupState, Member};
use crate::metadata::{GroupStateRow, TopicId};

/// The stored form (JSON), one per group.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Snapshot {
    Classic(ClassicSnapshot),
    Consumer(ConsumerSnapshot),
}

#[derive(Serialize, Deserialize)]
struct ClassicSnapshot {
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order (the next leader is the first of them).
    members: Vec<ClassicMember>,
}

#[derive(Serialize, Deserialize)]
struct ClassicMember {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Hex)>,
    assignment: Hex,
    supports_skip_assignment: bool,
}

#[derive(Serialize, Deserialize)]
struct ConsumerSnapshot {
    group_epoch: i32,
    assignment_epoch: i32,
    assignor: String,
    members: Vec<ConsumerMemberSnapshot>,
    target: Vec<(String, Vec<(String, i32)>)>,
    topics_seen: Vec<(String, Option<(String, i32)>)>,
}

#[derive(Serialize, Deserialize)]
struct ConsumerMemberSnapshot {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    epoch: i32,
    previous_epoch: i32,
    subscribed: Vec<String>,
    regex: Option<String>,
    regex_matches: Vec<String>,
    rebalance_timeout_ms: u64,
    assigned: Vec<(String, i32)>,
    revoking: Vec<(String, i32)>,
}

/// Bytes as a hex string in JSON.
struct Hex(Bytes);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(self.0.len() * 2);
        for byte in self.0.iter() {
            text.push(char::from(DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd hex length"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hex"))
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(|bytes| Hex(Bytes::from(bytes)))
    }
}

fn partitions_out(set: &BTreeSet<TopicPartition>) -> Vec<(String, i32)> {
    set.iter().map(|(t, p)| (t.0.to_string(), *p)).collect()
}

fn topic_id(text: &str) -> Result<TopicId, String> {
    uuid::Uuid::parse_str(text)
        .map(TopicId)
        .map_err(|e| format!("bad topic id {text}: {e}"))
}

fn partitions_in(list: Vec<(String, i32)>) -> Result<BTreeSet<TopicPartition>, String> {
    list.into_iter()
        .map(|(t, p)| Ok((topic_id(&t)?, p)))
        .collect()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl ClassicSnapshot {
    fn of(group: &Group) -> Self {
        let members = group
            .join_order
            .iter()
            .filter_map(|id| group.members.get(id))
            .chain(
                // Members missing from the join order (none expected).
                group
                    .members
                    .values()
                    .filter(|m| !group.join_order.contains(&m.id)),
            )
            .map(|m| ClassicMember {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: millis(m.session_timeout),
                rebalance_timeout_ms: millis(m.rebalance_timeout),
                protocols: m
                    .protocols
                    .iter()
                    .map(|(name, metadata)| (name.clone(), Hex(metadata.clone())))
                    .collect(),
                assignment: Hex(m.assignment.clone()),
                supports_skip_assignment: m.supports_skip_assignment,
            })
            .collect();
        ClassicSnapshot {
            generation: group.generation,
            protocol_type: group.protocol_type.clone(),
            protocol: group.protocol.clone(),
            leader: group.leader.clone(),
            members,
        }
    }

    /// The group as stored: Stable with its members (their sessions start
    /// now), or Empty.
    fn restore(self, id: &str, now: Instant) -> Group {
        let mut group = Group::new(id);
        group.generation = self.generation;
        group.protocol_type = self.protocol_type;
        group.protocol = self.protocol;
        for m in self.members {
            group.add_member(Member {
                id: m.id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout: Duration::from_millis(m.session_timeout_ms),
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                protocols: m.protocols.into_iter().map(|(n, h)| (n, h.0)).collect(),
                assignment: m.assignment.0,
                last_heartbeat: now,
                awaiting_join: None,
                awaiting_sync: None,
                joined: false,
                supports_skip_assignment: m.supports_skip_assignment,
            });
        }
        group.leader = self.leader.filter(|l| group.members.contains_key(l));
        if !group.members.is_empty() {
            group.state = GroupState::Stable;
            if group.leader.is_none() {
                group.leader = group.join_order.first().cloned();
            }
        }
        group
    }
}

impl ConsumerSnapshot {
    fn of(group: &ConsumerGroup) -> Self {
        ConsumerSnapshot {
            group_epoch: group.group_epoch,
            assignment_epoch: group.assignment_epoch,
            assignor: group.assignor.clone(),
            members: group
                .members
                .values()
                .map(|m| ConsumerMemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    subscribed: m.subscribed.clone(),
                    regex: m.regex.as_ref().map(|(text, _)| text.clone()),
                    regex_matches: m.regex_matches.clone(),
                    rebalance_timeout_ms: millis(m.rebalance_timeout),
                    assigned: partitions_out(&m.assigned),
                    revoking: partitions_out(&m.revoking),
                })
                .collect(),
            target: group
                .target
                .iter()
                .map(|(member, set)| (member.clone(), partitions_out(set)))
                .collect(),
            topics_seen: group
                .topics_seen
                .iter()
                .map(|(name, seen)| (name.clone(), seen.map(|(t, n)| (t.0.to_string(), n))))
                .collect(),
        }
    }

    fn restore(self, id: &str, now: Instant) -> Result<ConsumerGroup, String> {
        let mut group = ConsumerGroup::new(id);
        group.group_epoch = self.group_epoch;
        group.assignment_epoch = self.assignment_epoch;
        group.assignor = self.assignor;
        for m in self.members {
            let regex = match m.regex {
                Some(text) => {
                    let compiled = compile_subscription(&text)?;
                    Some((text, compiled))
                }
                None => None,
            };
            let rebalance_timeout = Duration::from_millis(m.rebalance_timeout_ms);
            let revoking = partitions_in(m.revoking)?;
            let member = ConsumerMember {
                id: m.id.clone(),
                instance_id: m.instance_id,
                rack_id: m.rack_id,
                client_id: m.client_id,
                client_host: m.client_host,
                epoch: m.epoch,
                previous_epoch: m.previous_epoch,
                subscribed: m.subscribed,
                regex,
                regex_matches: m.regex_matches,
                rebalance_timeout,
                assigned: partitions_in(m.assigned)?,
                revoke_deadline: (!revoking.is_empty()).then(|| now + rebalance_timeout),
                revoking,
                last_heartbeat: now,
                // The next heartbeat response carries the whole assignment.
                last_sent: None,
            };
            group.members.insert(m.id, member);
        }
        for (member, set) in self.target {
            group.target.insert(member, partitions_in(set)?);
        }
        for (name, seen) in self.topics_seen {
            let seen = match seen {
                Some((t, n)) => Some((topic_id(&t)?, n)),
                None => None,
            };
            group.topics_seen.insert(name, seen);
        }
        Ok(group)
    }
}

/// What a classic group's stored form depends on (a Stable or Empty group).
fn classic_fingerprint(group: &Group) -> u64 {
    let mut hasher = DefaultHasher::new();
    (group.state == GroupState::Stable).hash(&mut hasher);
    group.generation.hash(&mut hasher);
    group.protocol.hash(&mut hasher);
    group.leader.hash(&mut hasher);
    for m in group.members.values() {
        (&m.id, &m.instance_id, &m.assignment, &m.protocols).hash(&mut hasher);
    }
    hasher.finish() | 1
}

fn consumer_fingerprint(group: &ConsumerGroup) -> u64 {
    let mut hasher = DefaultHasher::new();
    (group.group_epoch, group.assignment_epoch, &group.assignor).hash(&mut hasher);
    for m in group.members.values() {
        (&m.id, m.epoch, m.previous_epoch, &m.assigned, &m.revoking).hash(&mut hasher);
        (&m.subscribed, m.regex.as_ref().map(|(text, _)| text)).hash(&mut hasher);
        (&m.regex_matches, &m.instance_id).hash(&mut hasher);
    }
    group.target.hash(&mut hasher);
    group.topics_seen.hash(&mut hasher);
    hasher.finish() | 1
}

/// A group read from the store.
enum Loaded {
    Classic(Group),
    Consumer(ConsumerGroup),
}

fn decode(id: &str, row: &GroupStateRow, now: Instant) -> Result<Loaded, String> {
    let snapshot: Snapshot = serde_json::from_slice(&row.state).map_err(|e| e.to_string())?;
    Ok(match snapshot {
        Snapshot::Classic(s) => Loaded::Classic(s.restore(id, now)),
        Snapshot::Consumer(s) => Loaded::Consumer(s.restore(id, now)?),
    })
}

impl GroupCoordinator {
    /// The epoch under which this broker coordinates `group_id` and stores
    /// its membership: `None` when nothing is stored (no `__consumer_offsets`
    /// yet) or another broker coordinates it.
    pub(super) fn storing_epoch(&self, group_id: &str) -> Option<i32> {
        (self.epoch_of)(group_id).filter(|epoch| *epoch >= 0)
    }

    /// Whether this broker's copy of the group (if any) is the current one.
    fn current(
        classic: &HashMap<String, Group>,
        consumer: &HashMap<String, ConsumerGroup>,
        group_id: &str,
        epoch: i32,
    ) -> bool {
        classic
            .get(group_id)
            .map(|g| g.coordinator_epoch)
            .or_else(|| consumer.get(group_id).map(|g| g.coordinator_epoch))
            == Some(epoch)
    }

    /// Before a membership request: reads the group from the store if this
    /// broker took its coordination over since it last held it (a stale
    /// copy is dropped; clients waiting on it get an error and retry).
    pub async fn load(&self, group_id: &str) -> Result<(), ResponseError> {
        let Some(epoch) = self.storing_epoch(group_id) else {
            return Ok(());
        };
        if Self::current(&self.lock(), &self.lock_consumer(), group_id, epoch) {
            return Ok(());
        }
        let row = self.metadata.group_state(group_id).await.map_err(|error| {
            tracing::warn!(group = %group_id, %error, "cannot read the group's membership");
            ResponseError::CoordinatorLoadInProgress
        })?;
        if self.storing_epoch(group_id) != Some(epoch) {
            return Err(ResponseError::NotCoordinator);
        }
        let now = Instant::now();
        let loaded = row.and_then(|row| match decode(group_id, &row, now) {
            Ok(loaded) => Some(loaded),
            Err(error) => {
                tracing::warn!(group = %group_id, %error, "stored membership unreadable: the group starts empty");
                None
            }
        });
        let mut classic = self.lock();
        let mut consumer = self.lock_consumer();
        if Self::current(&classic, &consumer, group_id, epoch) {
            return Ok(());
        }
        // A copy made before `__consumer_offsets` existed is the group.
        let unstored = |e: i32| e < 0;
        if loaded.is_none()
            && (classic
                .get(group_id)
                .is_some_and(|g| unstored(g.coordinator_epoch))
                || consumer
                    .get(group_id)
                    .is_some_and(|g| unstored(g.coordinator_epoch)))
        {
            if let Some(group) = classic.get_mut(group_id) {
                group.coordinator_epoch = epoch;
                self.persist_classic(group);
            }
            if let Some(group) = consumer.get_mut(group_id) {
                group.coordinator_epoch = epoch;
                self.persist_consumer(group);
            }
            return Ok(());
        }
        classic.remove(group_id);
        consumer.remove(group_id);
        match loaded {
            Some(Loaded::Classic(mut group)) => {
                tracing::info!(group = %group_id, generation = group.generation, members = group.members.len(), "took the group over from the store");
                group.coordinator_epoch = epoch;
                self.persist_classic(&mut group);
                classic.insert(group_id.to_string(), group);
            }
            Some(Loaded::Consumer(mut group)) => {
                tracing::info!(group = %group_id, epoch = group.group_epoch, members = group.members.len(), "took the group over from the store");
                group.coordinator_epoch = epoch;
                self.persist_consumer(&mut group);
                consumer.insert(group_id.to_string(), group);
            }
            None => {}
        }
        Ok(())
    }

    /// Writes a classic group's membership if it is Stable or Empty and
    /// changed since it was last written (the write runs in the background,
    /// ordered in the store by its sequence).
    pub(super) fn persist_classic(&self, group: &mut Group) {
        if group.coordinator_epoch < 0
            || !matches!(group.state, GroupState::Stable | GroupState::Empty)
        {
            return;
        }
        let fingerprint = classic_fingerprint(group);
        if fingerprint == group.persisted {
            return;
        }
        group.persisted = fingerprint;
        let snapshot = Snapshot::Classic(ClassicSnapshot::of(group));
        let protocol_type = group.protocol_type.clone().unwrap_or_default();
        self.write(&group.id, protocol_type, group.coordinator_epoch, &snapshot);
    }

    pub(super) fn persist_consumer(&self, group: &mut ConsumerGroup) {
        if group.coordinator_epoch < 0 {
            return;
        }
        let fingerprint = consumer_fingerprint(group);
        if fingerprint == group.persisted {
            return;
        }
        group.persisted = fingerprint;
        let snapshot = Snapshot::Consumer(ConsumerSnapshot::of(group));
        self.write(
            &group.id,
            "consumer".into(),
            group.coordinator_epoch,
            &snapshot,
        );
    }

    fn write(&self, group: &str, protocol_type: String, epoch: i32, snapshot: &Snapshot) {
        let state = match serde_json::to_vec(snapshot) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%group, %error, "cannot encode the group's membership");
                return;
            }
        };
        let row = GroupStateRow {
            coordinator_epoch: epoch,
            seq: self.write_seq.fetch_add(1, Ordering::Relaxed) + 1,
            state,
        };
        let metadata = std::sync::Arc::clone(&self.metadata);
        let group = group.to_string();
        tokio::spawn(async move {
            match metadata.put_group_state(&group, &protocol_type, row).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(%group, "a newer coordinator stored the group: not written")
                }
                Err(error) => tracing::warn!(%group, %error, "cannot store the group's membership"),
            }
        });
    }
}

#[cfg(test)]
#[path = "stored_tests.rs"]
mod tests;
