//! `strata serve`: builds the configuration (file, then `STRATA_*`
//! environment, then flags) and runs the broker until Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;

use super::store::StoreArgs;
use crate::broker::Broker;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address of a single Kafka listener named PLAINTEXT (shorthand for
    /// --listeners) [default: 0.0.0.0:9092].
    #[arg(long, env = "STRATA_KAFKA_ADDR", value_name = "HOST:PORT")]
    pub kafka_addr: Option<SocketAddr>,
    /// Address given to clients of that listener [default: the listener
    /// address, 127.0.0.1 for 0.0.0.0].
    #[arg(long, env = "STRATA_ADVERTISED_ADDR", value_name = "HOST:PORT")]
    pub advertised_addr: Option<String>,
    /// Kafka listeners, each opened at once (Kafka's `listeners`), for
    /// example INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092.
    #[arg(long, env = "STRATA_LISTENERS", value_name = "NAME://HOST:PORT,...")]
    pub listeners: Option<String>,
    /// What clients of each listener are told (Kafka's
    /// `advertised.listeners`) [default: each listener's address].
    #[arg(
        long,
        env = "STRATA_ADVERTISED_LISTENERS",
        value_name = "NAME://HOST:PORT,..."
    )]
    pub advertised_listeners: Option<String>,
    /// Security protocol of each listener (Kafka's
    /// `listener.security.protocol.map`) [default: PLAINTEXT:PLAINTEXT,
    /// SSL:SSL, SASL_PLAINTEXT:SASL_PLAINTEXT, SASL_SSL:SASL_SSL].
    #[arg(
        long,
        env = "STRATA_LISTENER_SECURITY_PROTOCOL_MAP",
        value_name = "NAME:PROTOCOL,..."
    )]
    pub listener_security_protocol_map: Option<String>,
    /// The listener brokers reach each other on (Kafka's
    /// `inter.broker.listener.name`) [default: PLAINTEXT, or the only listener].
    #[arg(long, env = "STRATA_INTER_BROKER_LISTENER_NAME", value_name = "NAME")]
    pub inter_broker_listener_name: Option<String>,
    /// TLS certificate chain of the SSL listeners, leaf first (PEM).
    #[arg(long, env = "STRATA_TLS_CERT_FILE", value_name = "PATH")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// Private key of that certificate (PEM).
    #[arg(long, env = "STRATA_TLS_KEY_FILE", value_name = "PATH")]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// CA certificates client certificates (and other brokers'
    /// certificates) must chain to (PEM).
    #[arg(long, env = "STRATA_TLS_CA_FILE", value_name = "PATH")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Kafka's `ssl.client.auth`: none, requested or required [default: none].
    #[arg(long, env = "STRATA_TLS_CLIENT_AUTH", value_name = "MODE")]
    pub tls_client_auth: Option<String>,
    /// Kafka's `ssl.principal.mapping.rules` [default: DEFAULT].
    #[arg(long, env = "STRATA_TLS_PRINCIPAL_MAPPING_RULES", value_name = "RULES")]
    pub tls_principal_mapping_rules: Option<String>,
    /// How often the TLS files are checked for changes [default: 5000].
    #[arg(long, env = "STRATA_TLS_RELOAD_INTERVAL_MS", value_name = "MS")]
    pub tls_reload_interval_ms: Option<u64>,
    /// SASL mechanisms of the SASL listeners (`sasl.enabled.mechanisms`)
    /// [default: SCRAM-SHA-256,SCRAM-SHA-512; PLAIN may be added].
    #[arg(long, env = "STRATA_SASL_ENABLED_MECHANISMS", value_name = "LIST")]
    pub sasl_enabled_mechanisms: Option<String>,
    /// A user created at start (SCRAM-SHA-256 and -512) if it has no
    /// credentials yet, with --sasl-bootstrap-password: the first admin.
    #[arg(long, env = "STRATA_SASL_BOOTSTRAP_USER", value_name = "NAME")]
    pub sasl_bootstrap_user: Option<String>,
    /// The bootstrap user's password (prefer the environment variable).
    #[arg(
        long,
        env = "STRATA_SASL_BOOTSTRAP_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub sasl_bootstrap_password: Option<String>,
    /// Enforce ACLs (Kafka's authorizer) [default: false].
    #[arg(long, env = "STRATA_ACL_ENABLED", value_name = "BOOL")]
    pub acl_enabled: Option<bool>,
    /// Principals allowed everything, `;`-separated (Kafka's `super.users`),
    /// for example User:admin;User:CN=broker.
    #[arg(long, env = "STRATA_SUPER_USERS", value_name = "PRINCIPALS")]
    pub super_users: Option<String>,
    /// A resource no ACL names is open to everyone (Kafka's
    /// `allow.everyone.if.no.acl.found`) [default: false].
    #[arg(
        long,
        env = "STRATA_ALLOW_EVERYONE_IF_NO_ACL_FOUND",
        value_name = "BOOL"
    )]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// Address for HTTP /health and /metrics (Prometheus) [default: off].
    #[arg(long, env = "STRATA_HTTP_ADDR", value_name = "HOST:PORT")]
    pub http_addr: Option<SocketAddr>,
    /// A bearer token required by every HTTP endpoint but /health
    /// (prefer the environment variable) [default: none required].
    #[arg(
        long,
        env = "STRATA_HTTP_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub http_auth_token: Option<String>,
    /// This broker's node id, unique in the cluster [default: 0].
    #[arg(long, env = "STRATA_NODE_ID")]
    pub node_id: Option<i32>,
    /// This broker's rack or zone (`broker.rack`), given to clients in Metadata.
    #[arg(long, env = "STRATA_RACK")]
    pub rack: Option<String>,
    /// Lease renewal interval in a cluster (`broker.heartbeat.interval.ms`) [default: 1000].
    #[arg(long, env = "STRATA_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// A broker silent this long loses its lease and partitions
    /// (`broker.session.timeout.ms`) [default: 6000].
    #[arg(long, env = "STRATA_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub session_timeout_ms: Option<u64>,
    /// Flush the write buffer at this many bytes [default: 4194304].
    #[arg(long, env = "STRATA_WAL_FLUSH_BYTES", value_name = "BYTES")]
    pub wal_flush_bytes: Option<usize>,
    /// Start flushes of the write buffer at most this often; 0 flushes as
    /// soon as there is data and an upload slot [default: 3 with the
    /// embedded store, 10 with s3://].
    #[arg(long, env = "STRATA_WAL_FLUSH_INTERVAL_MS", value_name = "MS")]
    pub wal_flush_interval_ms: Option<u64>,
    /// Flushes uploading at once (commits stay in order) [default: 4].
    #[arg(long, env = "STRATA_WAL_MAX_INFLIGHT_FLUSHES", value_name = "N")]
    pub wal_max_inflight_flushes: Option<usize>,
    /// Create unknown topics on first use [default: true].
    #[arg(long, env = "STRATA_AUTO_CREATE_TOPICS", value_name = "BOOL")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics [default: 1].
    #[arg(long, env = "STRATA_DEFAULT_PARTITIONS", value_name = "N")]
    pub default_partitions: Option<i32>,
    /// Connections open at once (`max.connections`; with several listeners
    /// the inter-broker one is exempt) [default: 10000].
    #[arg(long, env = "STRATA_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections open at once from one IP address
    /// (`max.connections.per.ip`) [default: no bound but --max-connections].
    #[arg(long, env = "STRATA_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Per-address bounds, ADDRESS:COUNT,... (`max.connections.per.ip.overrides`).
    #[arg(
        long,
        env = "STRATA_MAX_CONNECTIONS_PER_IP_OVERRIDES",
        value_name = "LIST"
    )]
    pub max_connections_per_ip_overrides: Option<String>,
    /// Close connections idle this long (`connections.max.idle.ms`) [default: 600000].
    #[arg(long, env = "STRATA_CONNECTIONS_MAX_IDLE_MS", value_name = "MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// Close a connection whose response is not taken within this long
    /// [default: 60000].
    #[arg(long, env = "STRATA_CONNECTION_WRITE_TIMEOUT_MS", value_name = "MS")]
    pub connection_write_timeout_ms: Option<u64>,
    /// Bound of every PostgreSQL metadata call, in milliseconds; a call past
    /// it fails its request with a retriable error [default: 15000].
    #[arg(long, env = "STRATA_METADATA_TIMEOUT_MS", value_name = "MS")]
    pub metadata_timeout_ms: Option<u64>,
    /// Grace period before an uncommitted object is deleted, in seconds [default: 600].
    #[arg(long, env = "STRATA_GC_ORPHAN_GRACE_SECS", value_name = "SECS")]
    pub gc_orphan_grace_secs: Option<u64>,
    /// Grace period before an object no chunk references any more is
    /// deleted, in seconds [default: 120].
    #[arg(long, env = "STRATA_GC_DELETE_GRACE_SECS", value_name = "SECS")]
    pub gc_delete_grace_secs: Option<u64>,
    /// Time between garbage collection sweeps, in seconds [default: 60].
    #[arg(long, env = "STRATA_GC_SWEEP_INTERVAL_SECS", value_name = "SECS")]
    pub gc_sweep_interval_secs: Option<u64>,
    /// Objects under wal/, seg/ and shr/ that no metadata row or upload
    /// intent names are deleted once last written this long ago, in seconds
    /// [default: 86400].
    #[arg(long, env = "STRATA_GC_UNNAMED_GRACE_SECS", value_name = "SECS")]
    pub gc_unnamed_grace_secs: Option<u64>,
    /// Time between passes that list the bucket for objects nothing names,
    /// in seconds [default: 3600].
    #[arg(long, env = "STRATA_GC_LIST_INTERVAL_SECS", value_name = "SECS")]
    pub gc_list_interval_secs: Option<u64>,
    /// Seal write-ahead objects into per-partition segments at least this
    /// often (and whenever seal.cycle_bytes of them are pending) [default: 30000].
    #[arg(long, env = "STRATA_SEAL_INTERVAL_MS", value_name = "MS")]
    pub seal_interval_ms: Option<u64>,
    /// Write-ahead bytes one sealing cycle takes (and holds in memory) at
    /// most; a cycle starts as soon as this much is pending [default: 100663296].
    #[arg(long, env = "STRATA_SEAL_CYCLE_BYTES", value_name = "BYTES")]
    pub seal_cycle_bytes: Option<u64>,
    /// A partition with at least this many bytes in a sealing cycle gets its
    /// own segment object; smaller ones share one [default: 1048576].
    #[arg(long, env = "STRATA_SEAL_OWN_SEGMENT_BYTES", value_name = "BYTES")]
    pub seal_own_segment_bytes: Option<u64>,
    /// Sealed chunks smaller than this (or than a topic's segment.bytes)
    /// are merged into larger segments [default: 4194304].
    #[arg(long, env = "STRATA_SEAL_SEGMENT_TARGET_BYTES", value_name = "BYTES")]
    pub seal_segment_target_bytes: Option<u64>,
    /// Check partitions for data past retention.ms / retention.bytes this
    /// often (log.retention.check.interval.ms) [default: 300000].
    #[arg(long, env = "STRATA_RETENTION_CHECK_INTERVAL_MS", value_name = "MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// Check compacted topics for partitions to compact this often
    /// (log.cleaner.backoff.ms) [default: 15000].
    #[arg(long, env = "STRATA_CLEANER_BACKOFF_MS", value_name = "MS")]
    pub cleaner_backoff_ms: Option<u64>,
}

impl ServeArgs {
    /// The configuration file (if any) with the flags and environment on top.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config = self.store.base_config()?;
        macro_rules! set {
            ($flag:expr => $($field:tt)+) => {
                if let Some(value) = $flag {
                    config.$($field)+ = value;
                }
            };
        }
        set!(self.kafka_addr.map(Some) => kafka_addr);
        set!(self.advertised_addr.map(Some) => advertised_addr);
        set!(self.listeners.map(Some) => listeners);
        set!(self.advertised_listeners.map(Some) => advertised_listeners);
        set!(self.listener_security_protocol_map.map(Some) => listener_security_protocol_map);
        set!(self.inter_broker_listener_name.map(Some) => inter_broker_listener_name);
        set!(self.tls_cert_file.map(Some) => tls.cert_file);
        set!(self.tls_key_file.map(Some) => tls.key_file);
        set!(self.tls_ca_file.map(Some) => tls.ca_file);
        set!(self.tls_client_auth => tls.client_auth);
        set!(self.tls_principal_mapping_rules => tls.principal_mapping_rules);
        set!(self.tls_reload_interval_ms => tls.reload_interval_ms);
        set!(self.sasl_enabled_mechanisms => sasl.enabled_mechanisms);
        set!(self.sasl_bootstrap_user.map(Some) => sasl.bootstrap_user);
        set!(self.sasl_bootstrap_password.map(Some) => sasl.bootstrap_password);
        set!(self.acl_enabled => acl.enabled);
        set!(self.super_users => acl.super_users);
        set!(self.allow_everyone_if_no_acl_found => acl.allow_everyone_if_no_acl_found);
        set!(self.node_id => node_id);
        set!(self.rack.map(Some) => cluster.rack);
        set!(self.heartbeat_interval_ms => cluster.heartbeat_interval_ms);
        set!(self.session_timeout_ms => cluster.session_timeout_ms);
        set!(self.http_addr.map(Some) => http_addr);
        set!(self.http_auth_token.clone().map(|t| Some(crate::config::Secret(t))) => http_auth_token);
        set!(self.wal_flush_bytes => wal.flush_bytes);
        set!(self.wal_flush_interval_ms.map(Some) => wal.flush_interval_ms);
        set!(self.wal_max_inflight_flushes => wal.max_inflight_flushes);
        set!(self.auto_create_topics => kafka.auto_create_topics);
        set!(self.default_partitions => kafka.default_partitions);
        set!(self.max_connections => kafka.max_connections);
        set!(self.max_connections_per_ip.map(Some) => kafka.max_connections_per_ip);
        set!(self.max_connections_per_ip_overrides.clone() => kafka.max_connections_per_ip_overrides);
        set!(self.connections_max_idle_ms => kafka.connections_max_idle_ms);
        set!(self.connection_write_timeout_ms => kafka.connection_write_timeout_ms);
        set!(self.metadata_timeout_ms => metadata_timeout_ms);
        set!(self.gc_orphan_grace_secs => gc.orphan_grace_secs);
        set!(self.gc_delete_grace_secs => gc.delete_grace_secs);
        set!(self.gc_sweep_interval_secs => gc.sweep_interval_secs);
        set!(self.gc_unnamed_grace_secs => gc.unnamed_grace_secs);
        set!(self.gc_list_interval_secs => gc.list_interval_secs);
        set!(self.seal_interval_ms => seal.interval_ms);
        set!(self.seal_cycle_bytes => seal.cycle_bytes);
        set!(self.seal_own_segment_bytes => seal.own_segment_bytes);
        set!(self.seal_segment_target_bytes => seal.segment_target_bytes);
        set!(self.retention_check_interval_ms => cleaner.retention_check_interval_ms);
        set!(self.cleaner_backoff_ms => cleaner.backoff_ms);
        config.validate()?;
        Ok(config)
    }
}

/// Raises the soft limit of open files to the hard one (as Go's runtime
/// and many servers do), so max_connections is the bound that matters; warns
/// when even the hard limit is below it.
fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut raised = limit;
    raised.current = limit.maximum;
    if raised.current != limit.current && setrlimit(Resource::Nofile, raised).is_ok() {
        tracing::debug!(from = ?limit.current, to = ?raised.current, "raised the open files limit");
    } else {
        raised = limit;
    }
    // Files beside sockets: the cache, the store, listeners, peers.
    let wanted = max_connections as u64 + 1_024;
    if let Some(current) = raised.current
        && current < wanted
    {
        tracing::warn!(
            open_files_limit = current,
            max_connections,
            "the open files limit is below max_connections + 1024: raise it (ulimit -n, LimitNOFILE) or lower kafka.max_connections"
        );
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    raise_open_files_limit(config.kafka.max_connections);
    let running = Broker::start(config)
        .await
        .context("cannot start the broker")?;
    for listener in &running.broker.listeners {
        eprintln!(
            "strata listener {} on {} advertised as {}",
            listener.name,
            listener.local_addr,
            crate::config::join_host_port(
                &listener.advertised_host,
                u16::try_from(listener.advertised_port).unwrap_or(0)
            )
        );
    }
    // Tests and scripts wait for this line (after the listeners' lines)
    // to know the port.
    eprintln!("strata listening on {}", running.local_addr);
    let fenced = running.fenced_token();
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = fenced.cancelled() => {}
    }
    tracing::info!("shutting down: flushing the write buffer");
    running.shutdown().await;
    if fenced.is_cancelled() {
        anyhow::bail!("another process registered this broker's node id");
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
