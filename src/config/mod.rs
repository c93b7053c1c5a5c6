//! Broker configuration: a TOML file, then `STRATA_*` environment variables,
//! then command-line flags, each overriding the one before. Every key is listed
//! with its default in `docs/configuration.md`; unknown keys are an error so a
//! typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

mod listeners;
mod secret;
mod sections;
mod security;

pub use secret::{Secret, StoreUrl, redact_url};

pub use listeners::{ListenerSpec, SecurityProtocol, join_host_port, split_host_port};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The whole broker configuration, as read from the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding all local state: objects (embedded store), metadata, cache.
    pub data_dir: PathBuf,
    /// Address of a single Kafka listener named PLAINTEXT (shorthand for
    /// `listeners`); default `0.0.0.0:9092`.
    pub kafka_addr: Option<SocketAddr>,
    /// `host:port` given to clients of that listener; defaults to
    /// `kafka_addr` (with `0.0.0.0` replaced by `127.0.0.1`).
    pub advertised_addr: Option<String>,
    /// Kafka's `listeners`: `NAME://HOST:PORT,...`, each opened at once.
    pub listeners: Option<String>,
    /// Kafka's `advertised.listeners`: `NAME://HOST:PORT,...`, what clients
    /// of each listener are told (a listener not named here advertises its
    /// bind address).
    pub advertised_listeners: Option<String>,
    /// Kafka's `listener.security.protocol.map`: `NAME:PROTOCOL,...`.
    pub listener_security_protocol_map: Option<String>,
    /// Kafka's `inter.broker.listener.name`: the listener brokers use to
    /// reach each other.
    pub inter_broker_listener_name: Option<String>,
    /// `file:///path`, a plain path, or `s3://bucket/prefix`; default `<data_dir>/objects`.
    pub object_store: Option<String>,
    /// `sqlite:///path/to/file.db` or `postgres://user:password@host:port/db`;
    /// default `sqlite://<data_dir>/metadata.db`.
    pub metadata: Option<StoreUrl>,
    /// Bound of every call to a PostgreSQL metadata store, in milliseconds:
    /// from waiting for a connection to the last row. A call past it fails
    /// the request behind it with a retriable error.
    pub metadata_timeout_ms: u64,
    /// This broker's node id in Metadata responses.
    pub node_id: i32,
    /// Address of the HTTP endpoints (`/health`, `/metrics`); off when unset.
    pub http_addr: Option<SocketAddr>,
    /// A bearer token every HTTP endpoint but `/health` requires
    /// (`Authorization: Bearer TOKEN`); unset: no token needed.
    pub http_auth_token: Option<Secret>,
    pub s3: S3Config,
    pub wal: WalConfig,
    pub cache: CacheConfig,
    pub kafka: KafkaConfig,
    pub gc: GcConfig,
    pub cluster: ClusterConfig,
    pub seal: SealConfig,
    pub cleaner: CleanerConfig,
    pub groups: GroupConfig,
    pub tls: TlsConfig,
    pub sasl: SaslConfig,
    pub acl: AclConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            kafka_addr: None,
            advertised_addr: None,
            listeners: None,
            advertised_listeners: None,
            listener_security_protocol_map: None,
            inter_broker_listener_name: None,
            object_store: None,
            metadata: None,
            metadata_timeout_ms: 15_000,
            node_id: 0,
            http_addr: None,
            http_auth_token: None,
            s3: S3Config::default(),
            wal: WalConfig::default(),
            cache: CacheConfig::default(),
            kafka: KafkaConfig::default(),
            gc: GcConfig::default(),
            cluster: ClusterConfig::default(),
            seal: SealConfig::default(),
            cleaner: CleanerConfig::default(),
            groups: GroupConfig::default(),
            tls: TlsConfig::default(),
            sasl: SaslConfig::default(),
            acl: AclConfig::default(),
        }
    }
}

/// S3 connection settings. Unset fields fall back to the standard `AWS_*`
/// environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (MinIO on a private network).
    pub allow_http: Option<bool>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO needs.
    pub path_style: Option<bool>,
    /// CA certificates (a PEM bundle) an https endpoint may chain to,
    /// besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &secret::Hidden(&self.secret_access_key),
            )
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Default `wal.flush_interval_ms` with the embedded (local file) store.
pub const LOCAL_FLUSH_INTERVAL_MS: u64 = 3;
/// Default `wal.flush_interval_ms` with S3, where PUTs are billed.
pub const S3_FLUSH_INTERVAL_MS: u64 = 10;

/// The write buffer and its group commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Flush the buffer as one object once it holds this many bytes.
    pub flush_bytes: usize,
    /// Flushes below `flush_bytes` start at most this often, in milliseconds.
    /// Unset: [`LOCAL_FLUSH_INTERVAL_MS`] with the embedded store,
    /// [`S3_FLUSH_INTERVAL_MS`] with S3 (see [`Config::flush_interval`]).
    pub flush_interval_ms: Option<u64>,
    /// Flushes uploading at once; their commits still apply in order.
    pub max_inflight_flushes: usize,
    /// Produce requests wait once this many bytes are buffered or uploading.
    pub max_buffered_bytes: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            flush_bytes: 4 * 1024 * 1024,
            flush_interval_ms: None,
            max_inflight_flushes: 4,
            max_buffered_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The read cache (foyer hybrid: memory, then disk under `<data_dir>/cache`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub memory_bytes: usize,
    pub disk_bytes: usize,
    /// Objects are read and cached in blocks of this size.
    pub block_bytes: usize,
    /// Sealed chunks are read in windows of this size from their start: one
    /// GET each on a miss, the next one fetched ahead of the reader.
    pub read_ahead_bytes: usize,
    /// Aborted transactions each partition keeps in memory (the newest);
    /// read_committed reads of older data read theirs from the metadata store.
    pub aborted_txns_per_partition: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory_bytes: 128 * 1024 * 1024,
            disk_bytes: 1024 * 1024 * 1024,
            block_bytes: 1024 * 1024,
            read_ahead_bytes: 4 * 1024 * 1024,
            aborted_txns_per_partition: crate::storage::partition::DEFAULT_ABORTED_WINDOW,
        }
    }
}

/// Kafka protocol and topic defaults (Kafka's broker config names in brackets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Largest request frame accepted (`socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    /// Create unknown topics on Metadata/Produce (`auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics (`num.partitions`).
    pub default_partitions: i32,
    /// Default `max.message.bytes` of topics (`message.max.bytes`).
    pub message_max_bytes: i32,
    /// Default `retention.ms` of topics (`log.retention.ms`); -1 keeps data forever.
    pub retention_ms: i64,
    /// Default `retention.bytes` of topics' partitions (`log.retention.bytes`);
    /// -1: no size limit.
    pub retention_bytes: i64,
    /// Whether DeleteTopics is allowed (`delete.topic.enable`).
    pub delete_topic_enable: bool,
    /// Requests processed concurrently per connection (responses stay in order).
    pub max_inflight_per_connection: usize,
    /// Connections open at once, all listeners together (`max.connections`);
    /// one past it is closed at once. With several listeners, the
    /// inter-broker one is exempt (as in Kafka).
    pub max_connections: usize,
    /// Connections open at once from one IP address
    /// (`max.connections.per.ip`); unset: only `max_connections` bounds them.
    pub max_connections_per_ip: Option<usize>,
    /// `ADDRESS:COUNT,...` bounds for given addresses
    /// (`max.connections.per.ip.overrides`).
    pub max_connections_per_ip_overrides: String,
    /// A connection with no request for this long, and none pending, is
    /// closed (`connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// A response that cannot be written within this long closes its
    /// connection (a client that stopped reading).
    pub connection_write_timeout_ms: u64,
    /// Largest Fetch response, whatever the client asks (`fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    /// Bytes of requests being read and decoded at once, all connections
    /// together (`queued.max.request.bytes`): three quarters for Produce, a
    /// quarter for the other APIs.
    pub max_request_memory_bytes: usize,
    /// Bytes of Fetch responses being built or waiting to be written, all
    /// connections together.
    pub max_response_memory_bytes: usize,
    /// An idempotent producer's state in a partition is forgotten after this
    /// long without a write there (`producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// How often expired producer states are removed
    /// (`producer.id.expiration.check.interval.ms`).
    pub producer_id_expiration_check_interval_ms: u64,
    /// Longest transaction timeout a producer may ask for
    /// (`transaction.max.timeout.ms`).
    pub transaction_max_timeout_ms: i32,
    /// How often open transactions are checked against their timeout
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub transaction_abort_check_interval_ms: u64,
    /// A transactional id idle this long is forgotten
    /// (`transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: i64,
    /// How often idle transactional ids are looked for
    /// (`transaction.remove.expired.transaction.cleanup.interval.ms`).
    pub transactional_id_expiration_check_interval_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 100 * 1024 * 1024,
            auto_create_topics: true,
            default_partitions: 1,
            message_max_bytes: 1_048_588,
            retention_ms: 604_800_000,
            retention_bytes: -1,
            delete_topic_enable: true,
            max_inflight_per_connection: 128,
            max_connections: 10_000,
            max_connections_per_ip: None,
            max_connections_per_ip_overrides: String::new(),
            connections_max_idle_ms: 600_000,
            connection_write_timeout_ms: 60_000,
            fetch_max_bytes: 55 * 1024 * 1024,
            max_request_memory_bytes: 256 * 1024 * 1024,
            max_response_memory_bytes: 256 * 1024 * 1024,
            producer_id_expiration_ms: 86_400_000,
            producer_id_expiration_check_interval_ms: 600_000,
            transaction_max_timeout_ms: 900_000,
            transaction_abort_check_interval_ms: 10_000,
            transactional_id_expiration_ms: 604_800_000,
            transactional_id_expiration_check_interval_ms: 3_600_000,
        }
    }
}

pub use sections::{CleanerConfig, ClusterConfig, GcConfig, GroupConfig, SealConfig};
pub use security::{AclConfig, SaslConfig, TlsConfig};

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// How far apart flushes below `wal.flush_bytes` start. Unset, it
    /// depends on the store: on S3 every PUT is billed, so flushes start at
    /// most every 10 ms (100 PUTs/s); the embedded store's PUTs cost only an
    /// fsync, so flushes there start every 3 ms, which halves the median
    /// publish latency at moderate rates (docs/benchmarks.md).
    pub fn flush_interval(&self) -> Duration {
        let ms = self
            .wal
            .flush_interval_ms
            .unwrap_or(if self.object_store_is_s3() {
                S3_FLUSH_INTERVAL_MS
            } else {
                LOCAL_FLUSH_INTERVAL_MS
            });
        Duration::from_millis(ms)
    }

    fn object_store_is_s3(&self) -> bool {
        self.object_store
            .as_deref()
            .is_some_and(|url| url.starts_with("s3://"))
    }

    /// The object store URL, defaulting to a directory in the data dir.
    pub fn object_store_url(&self) -> String {
        self.object_store
            .clone()
            .unwrap_or_else(|| self.data_dir.join("objects").display().to_string())
    }

    /// The metadata URL, defaulting to a SQLite file in the data dir.
    pub fn metadata_url(&self) -> String {
        self.metadata
            .as_ref()
            .map(|url| url.0.clone())
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("metadata.db").display()))
    }

    /// Checks values that would make the broker misbehave rather than fail.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        let listeners = self.listeners()?;
        self.inter_broker_listener(&listeners)?;
        if let Some(token) = &self.http_auth_token
            && (token.0.len() < 16 || !token.0.bytes().all(|b| b.is_ascii_graphic()))
        {
            return invalid(
                "http_auth_token",
                "must be at least 16 printable characters, without spaces",
            );
        }
        if self.wal.flush_bytes == 0 {
            return invalid("wal.flush_bytes", "must be greater than 0");
        }
        if !(100..=3_600_000).contains(&self.metadata_timeout_ms) {
            return invalid(
                "metadata_timeout_ms",
                "must be between 100 and 3600000 (an hour)",
            );
        }
        if self.cluster.heartbeat_interval_ms == 0 {
            return invalid("cluster.heartbeat_interval_ms", "must be greater than 0");
        }
        if self.cluster.replica_refresh_ms == 0 {
            return invalid("cluster.replica_refresh_ms", "must be greater than 0");
        }
        if self.cluster.session_timeout_ms < 2 * self.cluster.heartbeat_interval_ms {
            return invalid(
                "cluster.session_timeout_ms",
                "must be at least twice cluster.heartbeat_interval_ms",
            );
        }
        if !(1..=64).contains(&self.wal.max_inflight_flushes) {
            return invalid("wal.max_inflight_flushes", "must be between 1 and 64");
        }
        if self.wal.max_buffered_bytes < self.wal.flush_bytes {
            return invalid("wal.max_buffered_bytes", "must be at least wal.flush_bytes");
        }
        if !(1..=1000).contains(&self.groups.offsets_topic_num_partitions) {
            return invalid(
                "groups.offsets_topic_num_partitions",
                "must be between 1 and 1000",
            );
        }
        if self.kafka.producer_id_expiration_ms < 1 {
            return invalid("kafka.producer_id_expiration_ms", "must be at least 1");
        }
        if self.kafka.producer_id_expiration_check_interval_ms < 1 {
            return invalid(
                "kafka.producer_id_expiration_check_interval_ms",
                "must be at least 1",
            );
        }
        if self.cache.block_bytes < 4096 {
            return invalid("cache.block_bytes", "must be at least 4096");
        }
        if self.cache.read_ahead_bytes < 4096 || self.cache.read_ahead_bytes > 256 * 1024 * 1024 {
            return invalid(
                "cache.read_ahead_bytes",
                "must be between 4096 and 268435456",
            );
        }
        if crate::broker::security::tls::ClientAuth::parse(&self.tls.client_auth).is_err() {
            return invalid("tls.client_auth", "must be none, requested or required");
        }
        if let Err(e) = crate::broker::security::principal::PrincipalMapper::parse(
            &self.tls.principal_mapping_rules,
        ) {
            return Err(ConfigError::Invalid {
                key: "tls.principal_mapping_rules",
                message: e,
            });
        }
        let mechanisms = self.sasl.mechanisms();
        if mechanisms.is_empty()
            || mechanisms
                .iter()
                .any(|m| !crate::broker::security::sasl::MECHANISMS.contains(&m.as_str()))
        {
            return invalid(
                "sasl.enabled_mechanisms",
                "must list some of SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN",
            );
        }
        if self.sasl.bootstrap_user.is_some() != self.sasl.bootstrap_password.is_some() {
            return invalid(
                "sasl.bootstrap_user",
                "needs sasl.bootstrap_password, and the other way round",
            );
        }
        if self.cache.aborted_txns_per_partition < 1 {
            return invalid("cache.aborted_txns_per_partition", "must be at least 1");
        }
        if self.kafka.default_partitions < 1 {
            return invalid("kafka.default_partitions", "must be at least 1");
        }
        if self.groups.min_session_timeout_ms < 1
            || self.groups.max_session_timeout_ms < self.groups.min_session_timeout_ms
        {
            return invalid(
                "groups.max_session_timeout_ms",
                "session timeouts must be positive with min <= max",
            );
        }
        if self.groups.consumer_heartbeat_interval_ms < 1
            || self.groups.consumer_heartbeat_interval_ms as u64
                >= self.groups.consumer_session_timeout_ms
        {
            return invalid(
                "groups.consumer_heartbeat_interval_ms",
                "must be positive and below groups.consumer_session_timeout_ms",
            );
        }
        if self.kafka.retention_bytes < -1 {
            return invalid(
                "kafka.retention_bytes",
                "must be -1 (no limit) or at least 0",
            );
        }
        if self.kafka.retention_ms < -1 {
            return invalid("kafka.retention_ms", "must be -1 (forever) or at least 0");
        }
        if self.cleaner.retention_check_interval_ms < 1 || self.cleaner.backoff_ms < 1 {
            return invalid(
                "cleaner.retention_check_interval_ms",
                "cleaner intervals must be at least 1 ms",
            );
        }
        if self.cleaner.dedupe_buffer_bytes < 64 * 1024 {
            return invalid("cleaner.dedupe_buffer_bytes", "must be at least 65536");
        }
        if self.groups.offsets_retention_minutes < 1 {
            return invalid("groups.offsets_retention_minutes", "must be at least 1");
        }
        if self.kafka.fetch_max_bytes < 1024 || self.kafka.fetch_max_bytes > i32::MAX as usize / 2 {
            return invalid(
                "kafka.fetch_max_bytes",
                "must be between 1024 and 1073741823",
            );
        }
        if self.kafka.max_request_memory_bytes < 1024 * 1024 {
            return invalid("kafka.max_request_memory_bytes", "must be at least 1048576");
        }
        if self.kafka.max_connections == 0 {
            return invalid("kafka.max_connections", "must be at least 1");
        }
        if let Err(message) =
            crate::broker::limits::parse_overrides(&self.kafka.max_connections_per_ip_overrides)
        {
            return invalid("kafka.max_connections_per_ip_overrides", &message);
        }
        if self.kafka.connections_max_idle_ms < 1_000 {
            return invalid("kafka.connections_max_idle_ms", "must be at least 1000");
        }
        if self.kafka.connection_write_timeout_ms < 1_000 {
            return invalid("kafka.connection_write_timeout_ms", "must be at least 1000");
        }
        if self.kafka.max_response_memory_bytes < 1024 * 1024 {
            return invalid(
                "kafka.max_response_memory_bytes",
                "must be at least 1048576",
            );
        }
        if self.kafka.max_inflight_per_connection == 0 {
            return invalid("kafka.max_inflight_per_connection", "must be at least 1");
        }
        if self.kafka.max_frame_bytes < 1024 || self.kafka.max_frame_bytes > i32::MAX as usize {
            return invalid(
                "kafka.max_frame_bytes",
                "must be between 1024 and 2147483647",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("data_dirr = \"/tmp\"").expect_err("typo");
        assert!(err.to_string().contains("data_dirr"));
        let cfg: Config = toml::from_str("[wal]\nflush_bytes = 1024\n").expect("valid");
        assert_eq!(cfg.wal.flush_bytes, 1024);
        assert_eq!(cfg.wal.flush_interval_ms, None);
    }

    #[test]
    fn flush_interval_defaults_by_store_and_can_be_set() {
        let ms = |cfg: &Config| cfg.flush_interval().as_millis();
        let mut cfg = Config::default();
        assert_eq!(ms(&cfg), 3, "embedded store by default");
        cfg.object_store = Some("file:///var/lib/strata/objects".into());
        assert_eq!(ms(&cfg), 3);
        cfg.object_store = Some("s3://bucket/prefix".into());
        assert_eq!(ms(&cfg), 10);
        cfg.wal.flush_interval_ms = Some(0);
        assert_eq!(ms(&cfg), 0, "an explicit value wins on S3");
        cfg.object_store = None;
        cfg.wal.flush_interval_ms = Some(25);
        assert_eq!(ms(&cfg), 25, "an explicit value wins on the embedded store");
    }
}
