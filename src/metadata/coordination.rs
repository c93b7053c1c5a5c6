//! Rows of cluster coordination: brokers' registrations and leases, the
//! leadership moves the controller makes, groups' stored membership.

use super::TopicId;

/// A broker's registration: where clients and brokers reach it, and its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRecord {
    pub node_id: i32,
    /// The process (random per start): a restarted node takes its id over.
    pub boot: String,
    /// The advertised address of its inter-broker listener.
    pub host: String,
    pub port: i32,
    /// The advertised address of each of its listeners (empty in a row an
    /// older broker wrote: `host:port` then serves every listener).
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub lease_until_ms: i64,
    /// Stopping: the controller moves its partitions away.
    pub draining: bool,
}

impl BrokerRecord {
    /// Where a client connected to `listener` reaches this broker; `None`
    /// when it has no such listener (Kafka leaves it out of the answer).
    pub fn endpoint(&self, listener: &str) -> Option<(&str, i32)> {
        if self.endpoints.is_empty() {
            return Some((&self.host, self.port));
        }
        self.endpoints
            .iter()
            .find(|e| e.listener == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

/// A listener's advertised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: i32,
}

/// Endpoints as stored: `NAME://host:port,...` (Kafka's own notation).
pub fn encode_endpoints(endpoints: &[Endpoint]) -> String {
    endpoints
        .iter()
        .map(|e| {
            let port = u16::try_from(e.port).unwrap_or(0);
            format!(
                "{}://{}",
                e.listener,
                crate::config::join_host_port(&e.host, port)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Stored endpoints back; entries that do not parse are skipped.
pub fn decode_endpoints(stored: &str) -> Vec<Endpoint> {
    stored
        .split(',')
        .filter_map(|entry| {
            let (listener, addr) = entry.trim().split_once("://")?;
            let (host, port) = crate::config::split_host_port(addr)?;
            Some(Endpoint {
                listener: listener.to_string(),
                host,
                port: i32::from(port),
            })
        })
        .collect()
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
