//! The broker: a Kafka listener, one task per connection, one handler file
//! per Kafka API, over the storage and metadata layers.
//!
//! `Broker::start` wires everything: metadata store, object store, cache,
//! leadership of every partition (bumping epochs, fencing any earlier
//! process), the write buffer's flusher, the object sweeper and the listener.

mod authz;
pub mod cluster;
mod connection;
mod dispatch;
pub mod group;
mod handlers;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod peers;
pub mod quotas;
pub mod replicas;
pub mod security;
pub mod topic_configs;
pub mod topics;
pub mod txn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metadata::{self, MetadataStore};
use crate::storage::cache::BlockCache;
use crate::storage::catalog::{Catalog, TopicState};
use crate::storage::cleaner::CleanerSettings;
use crate::storage::gc::Collector;
use crate::storage::intents::Intents;
use crate::storage::object::ObjectStorage;
use crate::storage::partition::{PartitionLog, aborted_window, set_aborted_window};
use crate::storage::sealer::{SealBacklog, Sealer, SealerConfig};
use crate::storage::wal::{FlushSettings, WalWriter};

pub struct Broker {
    pub config: Config,
    pub cluster_id: String,
    pub node_id: i32,
    /// This broker's registration and its view of the cluster.
    pub cluster: Arc<cluster::Membership>,
    /// The listeners this broker serves, as configured.
    pub listeners: Vec<Arc<Listener>>,
    /// The listener other brokers reach this one on.
    pub inter_broker_listener: String,
    /// TLS of the SSL listeners (`None` without one).
    pub tls: Option<Arc<security::tls::TlsServer>>,
    /// SASL mechanisms the SASL listeners offer (`sasl.enabled_mechanisms`).
    pub sasl_mechanisms: Arc<[String]>,
    /// ACLs, as last read from the store.
    pub authorizer: Arc<security::acl::Authorizer>,
    pub metadata: Arc<dyn MetadataStore>,
    pub storage: ObjectStorage,
    pub cache: Arc<BlockCache>,
    pub catalog: Arc<Catalog>,
    pub writer: Arc<WalWriter>,
    pub groups: Arc<group::GroupCoordinator>,
    /// Transaction coordinator of every transactional id.
    pub txn: Arc<txn::TxnCoordinator>,
    /// Budget of request bytes being read and decoded (all connections).
    /// Client quotas, re-read with the ACLs (see quotas.rs).
    pub quotas: quotas::Quotas,
    /// Request, response and decompression budgets (see memory.rs).
    pub memory: memory::Budgets,
    /// Connections open, bounded (max_connections and per IP).
    pub connections: Arc<limits::ConnectionLimits>,
    /// Serialises topic creation and deletion.
    pub admin_lock: tokio::sync::Mutex<()>,
    /// Request latency per Kafka API.
    pub requests: metrics::RequestMetrics,
    /// Connections to the other brokers (transaction markers and checks).
    pub peers: peers::Peers,
    /// Connection reader tasks (decode, dispatch); see `connection`.
    pub readers: TaskTracker,
    /// Connection writer tasks (responses in request order).
    pub responders: TaskTracker,
}

/// A listener this broker serves: what clients connected to it are told.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub protocol: crate::config::SecurityProtocol,
    pub local_addr: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// A running broker; dropping it does not stop it, `shutdown` does.
pub struct RunningBroker {
    pub broker: Arc<Broker>,
    pub local_addr: SocketAddr,
    shutdown: CancellationToken,
    /// Cancelled when another process took this broker's node id over.
    fenced: CancellationToken,
    /// Stops the write buffer's flusher (after its final flush); cancelled
    /// only once no connection reads requests any more.
    flusher_shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// How long shutdown waits for connections to stop reading, and then to
/// write the responses they owe.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl RunningBroker {
    /// Stops accepting and reading requests, lets every append already
    /// admitted reach the final flush, writes the responses owed (Produce
    /// acks included), then stops background tasks.
    pub async fn shutdown(self) {
        let broker = &self.broker;
        if !self.fenced.is_cancelled() {
            drain(broker).await;
        }
        self.shutdown.cancel();
        broker.readers.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, broker.readers.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still reading after {DRAIN_TIMEOUT:?}; flushing anyway");
        }
        self.flusher_shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        broker.responders.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, broker.responders.wait())
            .await
            .is_err()
        {
            tracing::warn!("responses still pending after {DRAIN_TIMEOUT:?}; closing");
        }
        if let Err(error) = self.broker.cache.close().await {
            tracing::warn!(%error, "closing the cache failed");
        }
        tracing::info!(
            object_store = %self.broker.storage.metrics().summary(),
            "broker stopped"
        );
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Cancelled when another process registered this broker's node id
    /// (this one must stop: its writes are fenced).
    pub fn fenced_token(&self) -> CancellationToken {
        self.fenced.clone()
    }
}

impl Broker {
    pub async fn start(config: Config) -> anyhow::Result<RunningBroker> {
        config.validate()?;
        set_aborted_window(config.cache.aborted_txns_per_partition);
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let metadata = metadata::open(
            &config.metadata_url(),
            Duration::from_millis(config.metadata_timeout_ms),
        )
        .await?;
        let cluster_id = metadata.cluster_id().await?;
        if let (Some(user), Some(password)) =
            (&config.sasl.bootstrap_user, &config.sasl.bootstrap_password)
        {
            security::scram::bootstrap_user(metadata.as_ref(), user, password).await?;
        }
        let storage = ObjectStorage::open(&config.object_store_url(), &config.s3)?;
        let cache = Arc::new(
            BlockCache::open(
                &config.cache,
                &config.data_dir.join("cache"),
                storage.clone(),
            )
            .await?,
        );
        let specs = config.listeners()?;
        let inter_broker_listener = config.inter_broker_listener(&specs)?;
        let tls = if specs.iter().any(|s| {
            matches!(
                s.protocol,
                crate::config::SecurityProtocol::Ssl | crate::config::SecurityProtocol::SaslSsl
            )
        }) {
            Some(security::tls::TlsServer::load(&config.tls)?)
        } else {
            None
        };
        let mut sockets = Vec::with_capacity(specs.len());
        for spec in &specs {
            let bind = spec.bind_addr();
            let socket = TcpListener::bind(&bind)
                .await
                .with_context(|| format!("cannot listen on {bind} (listener {})", spec.name))?;
            let local_addr = socket.local_addr()?;
            // Port 0 binds an ephemeral port; advertise the real one.
            let (host, port) = spec.advertised_for(local_addr);
            let listener = Arc::new(Listener {
                name: spec.name.clone(),
                protocol: spec.protocol,
                local_addr,
                advertised_host: host,
                advertised_port: i32::from(port),
            });
            sockets.push((socket, listener));
        }
        let listeners: Vec<Arc<Listener>> = sockets.iter().map(|(_, l)| Arc::clone(l)).collect();
        let local_addr = listeners
            .first()
            .map(|l| l.local_addr)
            .context("no listener configured")?;
        let endpoints: Vec<crate::metadata::Endpoint> = listeners
            .iter()
            .map(|l| crate::metadata::Endpoint {
                listener: l.name.clone(),
                host: l.advertised_host.clone(),
                port: l.advertised_port,
            })
            .collect();
        let inter_broker = endpoints
            .iter()
            .find(|e| e.listener == inter_broker_listener)
            .cloned()
            .context("the inter-broker listener is not one of the listeners")?;
        // Register with a lease; bumping the epochs of the partitions this
        // node leads fences any earlier process still holding the old ones.
        let membership = Arc::new(cluster::Membership::new(
            config.node_id,
            inter_broker.host,
            inter_broker.port,
            endpoints,
            config.cluster.rack.clone(),
            Duration::from_millis(config.cluster.heartbeat_interval_ms),
            Duration::from_millis(config.cluster.session_timeout_ms),
        ));
        cluster::join(metadata.as_ref(), &membership).await?;
        let catalog = Catalog::default();
        for record in metadata.list_topics().await? {
            let mut partitions = Vec::new();
            let commits = crate::storage::partition::topic_commits();
            for p in metadata.partitions(record.id).await? {
                if p.leader_id != config.node_id {
                    partitions.push(cluster::remote_partition(record.id, &p, &commits));
                    continue;
                }
                let chunks = metadata.chunks(record.id, p.partition).await?;
                let log = PartitionLog::new(
                    record.id,
                    p.partition,
                    p.leader_epoch,
                    p.log_start_offset,
                    p.high_watermark,
                    chunks,
                    Arc::clone(&commits),
                );
                log.set_clean_offset(p.clean_offset);
                log.set_leader(p.leader_id, p.leader_epoch);
                partitions.push(Arc::new(log));
            }
            catalog.insert(TopicState { record, partitions });
        }
        for stored in metadata.producer_states().await? {
            if let Some(log) = catalog
                .by_id(stored.topic_id)
                .and_then(|topic| topic.partition(stored.partition).cloned())
            {
                log.apply_producers(std::slice::from_ref(&stored.state));
            }
        }
        // The newest aborted transactions of each partition this broker
        // leads (older ones are read from the store when a read reaches them).
        for topic in catalog.all() {
            for log in &topic.partitions {
                if log.leader_id() == config.node_id {
                    let newest = metadata
                        .recent_aborted(log.topic_id, log.partition, aborted_window())
                        .await?;
                    log.load_aborted(&newest);
                }
            }
        }
        let kafka = &config.kafka;
        let txn = txn::TxnCoordinator::new(
            Arc::clone(&metadata),
            txn::TxnSettings {
                max_timeout_ms: kafka.transaction_max_timeout_ms,
                abort_check_interval: Duration::from_millis(
                    kafka.transaction_abort_check_interval_ms.max(1),
                ),
                id_expiration_ms: kafka.transactional_id_expiration_ms,
                id_expiration_check_interval: Duration::from_millis(
                    kafka.transactional_id_expiration_check_interval_ms.max(1),
                ),
            },
        );
        txn.load().await?;
        // This process, as the owner of the upload intents it records.
        let boot: u64 = rand::random();
        let intents = Intents::new(
            format!("{}:{boot:016x}", config.node_id),
            Arc::clone(&metadata),
        );
        let seal_backlog = SealBacklog::new(config.seal.cycle_bytes);
        let writer = WalWriter::new(
            FlushSettings {
                flush_bytes: config.wal.flush_bytes,
                flush_interval: config.flush_interval(),
                max_inflight: config.wal.max_inflight_flushes,
                max_buffered_bytes: config.wal.max_buffered_bytes,
            },
            storage.clone(),
            Arc::clone(&metadata),
            Arc::clone(&cache),
            Arc::clone(&intents),
            Arc::clone(&seal_backlog),
        );
        let (catalog, node_id) = (Arc::new(catalog), config.node_id);
        let authorizer = Arc::new(security::acl::Authorizer::new(
            config.acl.enabled,
            &config.acl.super_users,
            config.acl.allow_everyone_if_no_acl_found,
        ));
        authorizer.set_bindings(metadata.acls().await?);
        let client_quotas = quotas::Quotas::default();
        client_quotas.set(metadata.client_quotas().await?);
        // Other brokers are reached over TLS when the inter-broker listener is SSL.
        let peer_tls = tls.clone().filter(|_| {
            specs.iter().any(|s| {
                s.name == inter_broker_listener
                    && s.protocol == crate::config::SecurityProtocol::Ssl
            })
        });
        let broker = Arc::new(Broker {
            node_id: config.node_id,
            cluster: membership,
            cluster_id,
            listeners,
            inter_broker_listener,
            tls,
            sasl_mechanisms: config.sasl.mechanisms().into(),
            authorizer: Arc::clone(&authorizer),
            metadata: Arc::clone(&metadata),
            storage: storage.clone(),
            cache,
            catalog: Arc::clone(&catalog),
            writer: Arc::clone(&writer),
            groups: group::GroupCoordinator::new(
                Arc::clone(&metadata),
                config.groups.clone(),
                Box::new(move |group: &str| coordinator_epoch(&catalog, node_id, group)),
            ),
            txn,
            admin_lock: tokio::sync::Mutex::new(()),
            requests: metrics::RequestMetrics::default(),
            peers: peers::Peers::new(config.node_id, peer_tls),
            readers: TaskTracker::new(),
            responders: TaskTracker::new(),
            quotas: client_quotas,
            memory: memory::Budgets::new(
                config.kafka.max_request_memory_bytes,
                config.kafka.max_response_memory_bytes,
                config.kafka.fetch_max_bytes,
            ),
            connections: Arc::new(limits::ConnectionLimits::new(&config.kafka)),
            config,
        });
        let shutdown = CancellationToken::new();
        let fenced = CancellationToken::new();
        let flusher_shutdown = CancellationToken::new();
        let collector = Collector {
            storage,
            metadata,
            intents,
            node: broker.config.node_id,
            orphan_grace: Duration::from_secs(broker.config.gc.orphan_grace_secs),
            delete_grace: Duration::from_secs(broker.config.gc.delete_grace_secs),
            controller: Arc::clone(&broker.cluster.controller),
            unnamed_grace: Duration::from_secs(broker.config.gc.unnamed_grace_secs),
            list_interval: Duration::from_secs(broker.config.gc.list_interval_secs.max(1)),
        };
        // Live keys are renewed four times per grace period (at most a
        // minute apart), so another broker's collector never dooms them.
        let renew_every = (Duration::from_secs(broker.config.gc.orphan_grace_secs) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        let seal = &broker.config.seal;
        let sealer = Sealer {
            storage: broker.storage.clone(),
            metadata: Arc::clone(&broker.metadata),
            cache: Arc::clone(&broker.cache),
            catalog: Arc::clone(&broker.catalog),
            intents: Arc::clone(&collector.intents),
            node_id: broker.node_id,
            config: SealerConfig {
                seal_interval: Duration::from_millis(seal.interval_ms.max(1)),
                seal_cycle_bytes: seal.cycle_bytes.max(1),
                own_segment_bytes: seal.own_segment_bytes,
                index_interval_bytes: seal.index_interval_bytes,
                segment_target_bytes: seal.segment_target_bytes,
            },
            cleaner: CleanerSettings {
                policy: {
                    let kafka = broker.config.kafka.clone();
                    Arc::new(move |topic: &crate::metadata::TopicRecord| {
                        topic_configs::cleanup_policy(&topic.configs, &kafka)
                    })
                },
                retention_check_interval: Duration::from_millis(
                    broker.config.cleaner.retention_check_interval_ms.max(1),
                ),
                backoff: Duration::from_millis(broker.config.cleaner.backoff_ms.max(1)),
                dedupe_buffer_bytes: broker.config.cleaner.dedupe_buffer_bytes,
            },
            backlog: seal_backlog,
        };
        let sweep_every = Duration::from_secs(broker.config.gc.sweep_interval_secs.max(1));
        let mut tasks = vec![
            tokio::spawn(writer.run(flusher_shutdown.clone())),
            tokio::spawn(Arc::clone(&collector.intents).run_renewal(renew_every, shutdown.clone())),
            tokio::spawn(collector.run(sweep_every, shutdown.clone())),
            tokio::spawn(sealer.run(shutdown.clone())),
            tokio::spawn(Arc::clone(&broker.groups).run(shutdown.clone())),
            tokio::spawn(expire_producers(Arc::clone(&broker), shutdown.clone())),
            tokio::spawn(cluster::run(
                Arc::clone(&broker),
                shutdown.clone(),
                fenced.clone(),
            )),
            tokio::spawn(replicas::run(Arc::clone(&broker), shutdown.clone())),
            tokio::spawn(Arc::clone(&broker.txn).run(Arc::clone(&broker), shutdown.clone())),
        ];
        tasks.push(tokio::spawn(refresh_acls(
            Arc::clone(&broker),
            shutdown.clone(),
        )));
        if let Some(tls) = &broker.tls {
            tasks.push(tokio::spawn(Arc::clone(tls).run_reload(shutdown.clone())));
        }
        for (socket, listener) in sockets {
            tasks.push(tokio::spawn(connection::accept_loop(
                Arc::clone(&broker),
                socket,
                listener,
                shutdown.clone(),
            )));
        }
        if let Some(addr) = broker.config.http_addr {
            let (bound, task) =
                crate::http::serve(Arc::clone(&broker), addr, shutdown.clone()).await?;
            // Tests and scripts wait for this line to know the port.
            eprintln!("strata http listening on {bound}");
            tasks.push(task);
        }
        tracing::info!(
            addr = %local_addr,
            objects = broker.storage.description(),
            topics = broker.catalog.all().len(),
            flush_interval_ms = broker.config.flush_interval().as_millis() as u64,
            "strata broker started"
        );
        Ok(RunningBroker {
            broker,
            local_addr,
            shutdown,
            fenced,
            flusher_shutdown,
            tasks,
        })
    }
}

/// Re-reads the ACLs and client quotas every `acl.refresh_interval_ms`
/// until `shutdown`.
async fn refresh_acls(broker: Arc<Broker>, shutdown: CancellationToken) {
    let every = Duration::from_millis(broker.config.acl.refresh_interval_ms.max(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        broker.refresh_acls().await;
    }
}

impl Broker {
    /// Re-reads the ACLs and client quotas from the store (a failure
    /// keeps the last ones).
    pub async fn refresh_acls(&self) {
        match self.metadata.acls().await {
            Ok(bindings) => self.authorizer.set_bindings(bindings),
            Err(error) => {
                tracing::warn!(%error, "cannot read the ACLs; enforcing the last ones read")
            }
        }
        match self.metadata.client_quotas().await {
            Ok(quotas) => self.quotas.set(quotas),
            Err(error) => {
                tracing::warn!(%error, "cannot read the client quotas; enforcing the last ones read")
            }
        }
    }

    /// The coordinator of a group or transactional id, as in Kafka: the
    /// leader of the `__consumer_offsets` partition the key hashes to (so
    /// coordinators spread and move with partition leadership). `None`
    /// while that is unknown or its leader's lease is running out.
    pub fn coordinator_for(&self, key: &str) -> Option<crate::metadata::BrokerRecord> {
        let topic = self.catalog.by_name(topics::OFFSETS_TOPIC)?;
        let count = topic.partitions.len().max(1) as u32;
        let partition = (crc32c::crc32c(key.as_bytes()) % count) as i32;
        let leader = topic.partition(partition)?.leader_id();
        self.cluster
            .live()
            .into_iter()
            .find(|b| b.node_id == leader)
    }

    /// Live brokers as clients of `listener` reach them: each one's
    /// address on that listener; brokers without it are left out (as
    /// Kafka leaves them out of Metadata).
    pub fn live_on(&self, listener: &str) -> Vec<crate::metadata::BrokerRecord> {
        self.cluster
            .live()
            .into_iter()
            .filter_map(|mut b| {
                let (host, port) = b.endpoint(listener).map(|(h, p)| (h.to_string(), p))?;
                (b.host, b.port) = (host, port);
                Some(b)
            })
            .collect()
    }

    /// The coordinator epoch of `key` here: the leader epoch of the
    /// `__consumer_offsets` partition it hashes to if this broker leads it,
    /// else -1; `None` before that topic exists (one broker, which
    /// coordinates everything).
    pub fn coordinator_epoch(&self, key: &str) -> Option<i32> {
        coordinator_epoch(&self.catalog, self.node_id, key)
    }

    /// Whether this broker coordinates `key` (else requests for it get
    /// NOT_COORDINATOR and the client looks the coordinator up again).
    /// Before `__consumer_offsets` exists (no FindCoordinator yet) a
    /// broker alone takes the request; in a cluster it waits to learn of
    /// the topic (another broker may have created it and coordinate the key).
    pub fn coordinates(&self, key: &str) -> bool {
        if self.catalog.by_name(topics::OFFSETS_TOPIC).is_none() {
            return self.cluster.live().len() <= 1;
        }
        self.coordinator_for(key)
            .is_some_and(|b| b.node_id == self.node_id)
    }
}

/// `Broker::coordinator_epoch` of broker `node_id` over its catalog.
fn coordinator_epoch(catalog: &Catalog, node_id: i32, key: &str) -> Option<i32> {
    let topic = catalog.by_name(topics::OFFSETS_TOPIC)?;
    let count = topic.partitions.len().max(1) as u32;
    let log = topic.partition((crc32c::crc32c(key.as_bytes()) % count) as i32)?;
    Some(if log.leader_id() == node_id {
        log.leader_epoch()
    } else {
        -1
    })
}

/// How long a stopping broker waits for the controller to move its
/// partitions away before it stops anyway.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(15);

/// A clean stop in a cluster: marked draining, the broker keeps serving
/// while the controller moves its partitions to other brokers (clients
/// follow them on NOT_LEADER_OR_FOLLOWER), then deregisters. Alone, there
/// is nobody to hand over to: it stops at once.
async fn drain(broker: &Arc<Broker>) {
    let others = broker
        .cluster
        .live()
        .iter()
        .any(|b| b.node_id != broker.node_id && !b.draining);
    if others {
        broker.cluster.set_draining();
        let deadline = tokio::time::Instant::now() + HANDOFF_TIMEOUT;
        // Heartbeats paced every 200 ms: each tells the controller this
        // broker drains and reads back which partitions it still leads.
        let mut pace = tokio::time::interval(Duration::from_millis(200));
        loop {
            pace.tick().await;
            if let Err(error) = cluster::heartbeat(broker).await {
                tracing::warn!(%error, "heartbeat while draining failed");
            }
            let led = broker
                .catalog
                .all()
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter(|log| log.leader_id() == broker.node_id)
                .count();
            if led == 0 {
                tracing::info!("every partition handed over");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    led,
                    "partitions not handed over in {HANDOFF_TIMEOUT:?}; stopping"
                );
                break;
            }
        }
    }
    let membership = &broker.cluster;
    // From here on a heartbeat that finds no row is this deregistration,
    // not another process taking the node id over.
    membership.set_draining();
    if let Err(error) = broker
        .metadata
        .deregister_broker(membership.node_id, &membership.boot)
        .await
    {
        tracing::warn!(%error, "cannot deregister");
    }
}

/// Forgets idempotent producers silent for `producer.id.expiration.ms`, in
/// memory and in the metadata store, every
/// `producer.id.expiration.check.interval.ms`.
async fn expire_producers(broker: Arc<Broker>, shutdown: CancellationToken) {
    let kafka = &broker.config.kafka;
    let every = Duration::from_millis(kafka.producer_id_expiration_check_interval_ms);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let before_ms = now_ms.saturating_sub(kafka.producer_id_expiration_ms);
        let mut forgotten = 0;
        for topic in broker.catalog.all() {
            for log in &topic.partitions {
                forgotten += log.expire_producers(before_ms);
            }
        }
        match broker.metadata.expire_producers(before_ms).await {
            Ok(rows) => {
                if forgotten > 0 || rows > 0 {
                    tracing::info!(forgotten, rows, "expired idempotent producer states");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot expire producer states"),
        }
    }
}
