//! Configuration sections of the cluster and the background work: cluster
//! membership, garbage collection, retention and compaction, sealing, and
//! consumer groups (defaults and meanings: docs/configuration.md).

use serde::Deserialize;

/// Cluster membership: every broker holds a lease in the metadata store,
/// renewed by heartbeats; one of them (the controller) assigns partition
/// leadership over the brokers whose lease is live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `broker.rack`: this broker's rack or zone, given to clients in
    /// Metadata (rack-aware clients and tools read it).
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`: how often the lease is renewed (and
    /// leadership and topics re-read from the store).
    pub heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker whose lease was not renewed
    /// this long is dead, and its partitions move to live brokers.
    pub session_timeout_ms: u64,
    /// Kafka's `replica.selector.class` set to the rack-aware selector:
    /// a consumer that names its rack (`client.rack`) and fetches from a
    /// leader in another rack is sent to a broker in its own rack (KIP-392).
    pub rack_aware_fetch: bool,
    /// How often a broker serving a partition it does not lead re-reads
    /// that partition's new chunks from the store while consumers read it
    /// (how far such reads trail the leader).
    pub replica_refresh_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            rack: None,
            heartbeat_interval_ms: 1_000,
            session_timeout_ms: 6_000,
            rack_aware_fetch: true,
            replica_refresh_ms: 250,
        }
    }
}

/// Garbage collection: orphan objects (an upload intent recorded, the
/// object never committed) and retired objects (no chunk references them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// An upload intent renewed within this time is left alone (its PUT
    /// and commit may be under way in another process); a live broker
    /// renews its own every quarter of it (at most every minute).
    pub orphan_grace_secs: u64,
    /// A retired object is deleted this long after its last chunk moved
    /// away, so reads that looked it up just before still find it.
    pub delete_grace_secs: u64,
    /// Interval between sweeps; one sweep also runs at startup.
    pub sweep_interval_secs: u64,
    /// The listing pass deletes objects under `wal/`, `seg/` and `shr/`
    /// that no object row and no upload intent names, once last written
    /// this long ago (the backstop against leaks of any cause).
    pub unnamed_grace_secs: u64,
    /// Interval between listing passes (each lists the bucket's Strata
    /// keys once, a page at a time).
    pub list_interval_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            orphan_grace_secs: 600,
            delete_grace_secs: 120,
            sweep_interval_secs: 60,
            unnamed_grace_secs: 86_400,
            list_interval_secs: 3_600,
        }
    }
}

/// Retention and log compaction (run by the sealer, between its cycles).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanerConfig {
    /// How often partitions are checked for data past `retention.ms` or
    /// `retention.bytes` (`log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// How often compacted topics are checked for partitions to compact
    /// (`log.cleaner.backoff.ms`).
    pub backoff_ms: u64,
    /// Memory for one compaction pass's map of keys to their latest offset
    /// (`log.cleaner.dedupe.buffer.size`); a pass over more distinct keys
    /// stops where the map is full and the next pass goes on from there.
    pub dedupe_buffer_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            retention_check_interval_ms: 300_000,
            backoff_ms: 15_000,
            dedupe_buffer_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Sealing: write-ahead objects rewritten by partition into segments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    /// Longest time between sealing cycles: how long data stays in the
    /// write-ahead tier at most (plus one cycle) when less than a full
    /// cycle arrives in this time.
    pub interval_ms: u64,
    /// Write-ahead bytes one cycle reads (and holds in memory) at most; a
    /// cycle starts as soon as this much is pending. Under load, a
    /// partition's segment is its share of this.
    pub cycle_bytes: u64,
    /// A partition with at least this many bytes in a cycle gets its own
    /// segment object; smaller ones are packed into one shared object.
    pub own_segment_bytes: u64,
    /// Bytes of record batches between two entries of a segment's sparse
    /// index (Kafka's `index.interval.bytes`, coarser for object storage).
    pub index_interval_bytes: usize,
    /// Sealed chunks of a partition smaller than this are merged, four of
    /// one size class at a time, into larger segments.
    pub segment_target_bytes: u64,
}

impl Default for SealConfig {
    fn default() -> Self {
        Self {
            interval_ms: 30_000,
            cycle_bytes: 96 * 1024 * 1024,
            own_segment_bytes: 1024 * 1024,
            index_interval_bytes: 64 * 1024,
            segment_target_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Consumer groups (Kafka's broker config names in brackets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// Delay of the first rebalance of an empty group, so that members
    /// starting together land in one generation (`group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: u64,
    /// Smallest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub min_session_timeout_ms: i32,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub max_session_timeout_ms: i32,
    /// Committed offsets of a group without members expire after this (`offsets.retention.minutes`).
    pub offsets_retention_minutes: i64,
    /// Longest commit metadata string accepted (`offset.metadata.max.bytes`).
    pub offset_metadata_max_bytes: usize,
    /// KIP-848 groups: a member without a heartbeat for this long is removed
    /// (`group.consumer.session.timeout.ms`).
    pub consumer_session_timeout_ms: u64,
    /// KIP-848 groups: heartbeat interval given to members
    /// (`group.consumer.heartbeat.interval.ms`).
    pub consumer_heartbeat_interval_ms: i32,
    /// Partitions of the (empty, internal) `__consumer_offsets` topic
    /// (`offsets.topic.num.partitions`).
    pub offsets_topic_num_partitions: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention_minutes: 10_080,
            offset_metadata_max_bytes: 4096,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            offsets_topic_num_partitions: 50,
        }
    }
}
