//! KIP-848 consumer groups (`group.protocol=consumer`): the coordinator owns
//! the assignment. Members heartbeat with their epoch and owned partitions;
//! the group epoch bumps on any membership, subscription or topic change; a
//! server-side assignor computes the target assignment for that epoch; each
//! member reconciles towards its target incrementally:
//!
//! 1. partitions it owns but should not are revoked first (its epoch stays);
//! 2. once its heartbeat shows them released, it moves to the target epoch
//!    and receives the target partitions that no other member still holds.
//!
//! So a partition is never owned by two members at once. Fencing: an unknown
//! member id gets UNKNOWN_MEMBER_ID, an epoch that is neither the current nor
//! the previous one gets FENCED_MEMBER_EPOCH; both make the client rejoin.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;

use crate::metadata::TopicId;

pub type TopicPartition = (TopicId, i32);

/// Server-side assignors, by the names clients ask for.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub subscribed: Vec<String>,
    /// A broker-resolved subscription (KIP-848 `subscribed_topic_regex`):
    /// the expression as sent, compiled to match whole topic names.
    pub regex: Option<(String, regex::Regex)>,
    /// The topics `regex` matched when last resolved, sorted.
    pub regex_matches: Vec<String>,
    pub rebalance_timeout: Duration,
    /// What this member was told to own.
    pub assigned: BTreeSet<TopicPartition>,
    /// Taken away from it, not yet confirmed released.
    pub revoking: BTreeSet<TopicPartition>,
    pub revoke_deadline: Option<Instant>,
    pub last_heartbeat: Instant,
    /// (epoch, partitions) last sent, so unchanged assignments are not resent.
    pub last_sent: Option<(i32, BTreeSet<TopicPartition>)>,
}

impl ConsumerMember {
    /// Every topic the member subscribes to: by name and by expression.
    pub fn topics(&self) -> impl Iterator<Item = &String> {
        self.subscribed.iter().chain(self.regex_matches.iter())
    }
}

/// Compiles a KIP-848 subscription expression (RE2 syntax, as Kafka's
/// RE2/J) to match whole topic names, as Kafka does.
pub(super) fn compile_subscription(expression: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{expression})$"))
        .map_err(|e| format!("invalid regular expression '{expression}': {e}"))
}

#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// Partition counts of subscribed topics when the target was computed.
    pub topics_seen: BTreeMap<String, Option<(TopicId, i32)>>,
    /// As in the classic `Group`: the coordinator epoch this broker holds
    /// the group under (-1: not stored) and the fingerprint last written.
    pub coordinator_epoch: i32,
    pub persisted: u64,
}

/// A heartbeat as the coordinator needs it.
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed: Option<Vec<String>>,
    /// `None`: unchanged; an empty string: no regular expression.
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<BTreeSet<TopicPartition>>,
}

#[derive(Debug, Default)]
pub struct HeartbeatResult {
    pub error: Option<(ResponseError, String)>,
    pub member_id: String,
    pub member_epoch: i32,
    /// `Some` when the assignment changed since the last response.
    pub assignment: Option<BTreeSet<TopicPartition>>,
}

impl ConsumerGroup {
    pub fn new(id: &str) -> Self {
        ConsumerGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            assignor: ASSIGNORS[0].to_string(),
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            topics_seen: BTreeMap::new(),
            coordinator_epoch: -1,
            persisted: 0,
        }
    }

    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch < self.assignment_epoch || !m.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub fn remove(&mut self, member_id: &str) -> bool {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.group_epoch += 1;
            true
        } else {
            false
        }
    }

    /// Handles one heartbeat; `resolve` maps a topic name to (id, partitions).
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now: Instant,
        resolve: &dyn Fn(&str) -> Option<(TopicId, i32)>,
        all_topics: &dyn Fn() -> Vec<String>,
    ) -> HeartbeatResult {
        let fail = |code: ResponseError, message: &str| HeartbeatResult {
            error: Some((code, message.to_string())),
            ..HeartbeatResult::default()
        };
        if let Some(assignor) = &hb.server_assignor
            && !ASSIGNORS.contains(&assignor.as_str())
        {
            return fail(
                ResponseError::UnsupportedAssignor,
                "supported assignors: uniform, range",
            );
        }
        let member_id = match hb.member_epoch {
            -1 | -2 => {
                self.remove(&hb.member_id);
                return HeartbeatResult {
                    member_id: hb.member_id,
                    member_epoch: hb.member_epoch,
                    ..HeartbeatResult::default()
                };
            }
            0 => {
                let id = if hb.member_id.is_empty() {
                    uuid::Uuid::new_v4().simple().to_string()
                } else {
                    hb.member_id.clone()
                };
                if let Some(instance) = &hb.instance_id {
                    let previous: Vec<String> = self
                        .members
                        .values()
                        .filter(|m| m.instance_id.as_ref() == Some(instance) && m.id != id)
                        .map(|m| m.id.clone())
                        .collect();
                    for old in previous {
                        self.remove(&old);
                    }
                }
                if self.members.get(&id).is_none_or(|m| m.epoch != 0) {
                    self.remove(&id);
                    self.members.insert(
                        id.clone(),
                        ConsumerMember {
                            id: id.clone(),
                            instance_id: hb.instance_id.clone(),
                            rack_id: hb.rack_id.clone(),
                            client_id: hb.client_id.clone(),
                            client_host: hb.client_host.clone(),
                            epoch: 0,
                            previous_epoch: -1,
                            subscribed: Vec::new(),
                            regex: None,
                            regex_matches: Vec::new(),
                            rebalance_timeout: Duration::from_millis(
                                hb.rebalance_timeout_ms.max(0) as u64,
                            ),
                            assigned: BTreeSet::new(),
                            revoking: BTreeSet::new(),
                            revoke_deadline: None,
                            last_heartbeat: now,
                            last_sent: None,
                        },
                    );
                    self.group_epoch += 1;
                }
                id
            }
            epoch => {
                let Some(member) = self.members.get(&hb.member_id) else {
                    return fail(
                        ResponseError::UnknownMemberId,
                        "unknown member: rejoin with epoch 0",
                    );
                };
                if epoch != member.epoch && epoch != member.previous_epoch {
                    return fail(
                        ResponseError::FencedMemberEpoch,
                        "stale member epoch: rejoin with epoch 0",
                    );
                }
                hb.member_id.clone()
            }
        };
        let mut bump = false;
        if let Some(member) = self.members.get_mut(&member_id) {
            member.last_heartbeat = now;
            if hb.rebalance_timeout_ms > 0 {
                member.rebalance_timeout = Duration::from_millis(hb.rebalance_timeout_ms as u64);
            }
            if let Some(mut topics) = hb.subscribed.clone() {
                topics.sort();
                topics.dedup();
                if topics != member.subscribed {
                    member.subscribed = topics;
                    bump = true;
                }
            }
            if let Some(expression) = &hb.subscribed_regex
                && member.regex.as_ref().map(|(e, _)| e) != Some(expression)
            {
                member.regex = if expression.is_empty() {
                    None
                } else {
                    match compile_subscription(expression) {
                        Ok(compiled) => Some((expression.clone(), compiled)),
                        Err(message) => {
                            return fail(ResponseError::InvalidRegularExpression, &message);
                        }
                    }
                };
                bump = true;
            }
            if let Some(owned) = &hb.owned {
                member.revoking.retain(|p| owned.contains(p));
                if member.revoking.is_empty() {
                    member.revoke_deadline = None;
                }
            }
        }
        if let Some(assignor) = hb.server_assignor
            && assignor != self.assignor
        {
            self.assignor = assignor;
            bump = true;
        }
        // Regular expressions are resolved against the topics that exist
        // now: a topic created or deleted since changes the target.
        if self.members.values().any(|m| m.regex.is_some()) {
            let names = all_topics();
            for member in self.members.values_mut() {
                let matches: Vec<String> = match &member.regex {
                    Some((_, compiled)) => {
                        let mut found: Vec<String> = names
                            .iter()
                            .filter(|n| compiled.is_match(n))
                            .cloned()
                            .collect();
                        found.sort();
                        found
                    }
                    None => Vec::new(),
                };
                if matches != member.regex_matches {
                    member.regex_matches = matches;
                    bump = true;
                }
            }
        }
        // Topic creation, deletion or growth changes the target too.
        let topics: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.topics().cloned())
            .collect();
        let seen: BTreeMap<String, Option<(TopicId, i32)>> =
            topics.iter().map(|t| (t.clone(), resolve(t))).collect();
        if seen != self.topics_seen {
            self.topics_seen = seen;
            bump = true;
        }
        if bump {
            self.group_epoch += 1;
        }
        if self.assignment_epoch < self.group_epoch {
            self.target = assign(
                &self.assignor,
                &self.members,
                &self.topics_seen,
                &self.target,
            );
            self.assignment_epoch = self.group_epoch;
        }
        self.reconcile(&member_id, now);
        let Some(member) = self.members.get_mut(&member_id) else {
            return fail(ResponseError::UnknownMemberId, "member vanished");
        };
        let current = (member.epoch, member.assigned.clone());
        // Resend when the last answer may have been lost: the member is on
        // another epoch, reports other partitions, or sent a full request.
        let maybe_lost = hb.member_epoch != member.epoch
            || hb
                .owned
                .as_ref()
                .is_some_and(|owned| *owned != member.assigned)
            || hb.subscribed.is_some();
        let assignment = if maybe_lost || member.last_sent.as_ref() != Some(&current) {
            member.last_sent = Some(current.clone());
            Some(current.1)
        } else {
            None
        };
        HeartbeatResult {
            error: None,
            member_id,
            member_epoch: member.epoch,
            assignment,
        }
    }

    /// Moves one member a step towards its target (see the module header).
    fn reconcile(&mut self, member_id: &str, now: Instant) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()).copied())
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        let revoke: BTreeSet<TopicPartition> =
            member.assigned.difference(&target).copied().collect();
        if !revoke.is_empty() {
            member.assigned.retain(|p| target.contains(p));
            member.revoking.extend(revoke);
            member.revoke_deadline = Some(now + member.rebalance_timeout);
            return;
        }
        if !member.revoking.is_empty() {
            return;
        }
        let free: Vec<TopicPartition> = target
            .iter()
            .filter(|p| !member.assigned.contains(p) && !held_by_others.contains(p))
            .copied()
            .collect();
        member.assigned.extend(free);
        if member.epoch < assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
    }

    /// Members to drop: session expired, or revocation overdue.
    pub fn expired(&self, now: Instant, session: Duration) -> Vec<String> {
        self.members
            .values()
            .filter(|m| {
                now.duration_since(m.last_heartbeat) > session
                    || m.revoke_deadline.is_some_and(|d| now > d)
            })
            .map(|m| m.id.clone())
            .collect()
    }

    /// Whether `member_id` at `epoch` may commit offsets.
    pub fn validate_commit(&self, member_id: &str, epoch: i32) -> Result<(), ResponseError> {
        let member = self
            .members
            .get(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if epoch != member.epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }
}

/// Computes the target assignment. "uniform" keeps partitions with their
/// current owner up to a fair share, then gives the rest to the least loaded
/// subscriber; "range" gives each subscriber a contiguous range per topic.
fn assign(
    assignor: &str,
    members: &BTreeMap<String, ConsumerMember>,
    topics: &BTreeMap<String, Option<(TopicId, i32)>>,
    previous: &BTreeMap<String, BTreeSet<TopicPartition>>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|id| (id.clone(), BTreeSet::new()))
        .collect();
    let subscribers = |topic: &str| -> Vec<&String> {
        members
            .values()
            .filter(|m| m.topics().any(|t| t == topic))
            .map(|m| &m.id)
            .collect()
    };
    if assignor == "range" {
        for (name, resolved) in topics {
            let Some((id, count)) = resolved else {
                continue;
            };
            let subs = subscribers(name);
            if subs.is_empty() {
                continue;
            }
            let n = subs.len() as i32;
            let (per, extra) = (count / n, count % n);
            let mut next = 0;
            for (i, member) in subs.iter().enumerate() {
                let take = per + i32::from((i as i32) < extra);
                for p in next..next + take {
                    out.entry((*member).clone()).or_default().insert((*id, p));
                }
                next += take;
            }
        }
        return out;
    }
    let all: Vec<(TopicPartition, Vec<&String>)> = topics
        .iter()
        .filter_map(|(name, resolved)| resolved.map(|(id, count)| (name, id, count)))
        .flat_map(|(name, id, count)| {
            let subs = subscribers(name);
            (0..count).map(move |p| ((id, p), subs.clone()))
        })
        .filter(|(_, subs)| !subs.is_empty())
        .collect();
    let quota = all.len().div_ceil(members.len().max(1));
    let mut unassigned = Vec::new();
    for (partition, subs) in &all {
        let sticky = previous
            .iter()
            .find(|(owner, set)| set.contains(partition) && subs.contains(owner))
            .map(|(owner, _)| owner.clone());
        match sticky {
            Some(owner) if out.get(&owner).is_some_and(|s| s.len() < quota) => {
                out.entry(owner).or_default().insert(*partition);
            }
            _ => unassigned.push((*partition, subs)),
        }
    }
    for (partition, subs) in unassigned {
        if let Some(owner) = subs
            .iter()
            .min_by_key(|id| (out.get(**id).map_or(0, BTreeSet::len), (**id).clone()))
        {
            out.entry((*owner).clone()).or_default().insert(partition);
        }
    }
    out
}

#[cfg(test)]
#[path = "consumer_tests.rs"]
mod tests;
