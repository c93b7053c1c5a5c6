//! Rows of cluster coordination: brokers' registrations and leases, the
//! leadership moves the controller makes, groups' stored membership.

use super::TopicId;

/// A broker's registration: where clients reach it, and its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRecord {
    pub node_id: i32,
    /// The process (random per start): a restarted node takes its id over.
    pub boot: String,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub lease_until_ms: i64,
    /// Stopping: the controller moves its partitions away.
    pub draining: bool,
}

/// A leadership move the controller computed from `(from, epoch)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderMove {
    pub topic_id: TopicId,
    pub partition: i32,
    pub from: i32,
    pub epoch: i32,
    pub to: i32,
}

/// A group's membership as its coordinator stored it: `state` is the
/// coordinator's encoding, opaque to the store; `(coordinator_epoch, seq)`
/// orders the writes (the epoch of the `__consumer_offsets` partition the
/// coordinator led, then its own sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStateRow {
    pub coordinator_epoch: i32,
    pub seq: i64,
    pub state: Vec<u8>,
}
