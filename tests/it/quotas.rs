//! Client quotas, set and read with Kafka's `kafka-configs.sh` (the Java
//! admin client) and enforced on librdkafka clients: a producer held to its
//! `producer_byte_rate` by client id, a consumer to the default user's
//! `consumer_byte_rate`, each measured over a steady stretch after the
//! quota window's first burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::common::{TestBroker, free_port, http_request};

const PRODUCE_QUOTA: u64 = 1024 * 1024;
const FETCH_QUOTA: u64 = 512 * 1024;
const WARM_UP: Duration = Duration::from_secs(12);
const PRODUCE_MEASURED: Duration = Duration::from_secs(30);
const FETCH_MEASURED: Duration = Duration::from_secs(15);

fn kafka_configs(addr: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let (ok, text) =
        crate::sasl::kafka_tool("org.apache.kafka.tools.ConfigCommand", addr, dir, args);
    assert!(ok, "kafka-configs {args:?}: {text}");
    text
}

#[derive(Default)]
struct Delivered(Arc<AtomicU64>);

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            let bytes = message.payload().map_or(0, <[u8]>::len) as u64;
            self.0.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// Payload bytes a producer with `client_id` gets acknowledged per second,
/// sending as fast as it can, between `warm_up` and `warm_up + measured`.
fn produce_rate(
    addr: &str,
    client_id: &str,
    topic: &str,
    warm_up: Duration,
    measured: Duration,
) -> f64 {
    let delivered = Arc::new(AtomicU64::new(0));
    let producer: BaseProducer<Delivered> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("client.id", client_id)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("queue.buffering.max.kbytes", "2048")
        .create_with_context(Delivered(Arc::clone(&delivered)))
        .expect("producer");
    let value = vec![b'q'; 1024];
    let started = Instant::now();
    let mut at_warm_up = None;
    loop {
        let elapsed = started.elapsed();
        if at_warm_up.is_none() && elapsed >= warm_up {
            at_warm_up = Some((delivered.load(Ordering::Relaxed), Instant::now()));
        }
        if elapsed >= warm_up + measured {
            break;
        }
        match producer.send(BaseRecord::<(), _>::to(topic).payload(&value)) {
            Ok(()) => {}
            Err(_) => {
                producer.poll(Duration::from_millis(5));
            }
        }
        producer.poll(Duration::ZERO);
    }
    let (before, since) = at_warm_up.expect("warmed up");
    let bytes = delivered.load(Ordering::Relaxed) - before;
    // What is still queued is left unsent (a throttled client would wait).
    let _ = producer.flush(Duration::from_secs(1));
    bytes as f64 / since.elapsed().as_secs_f64()
}

/// Payload bytes a consumer with `client_id` reads per second from the
/// start of `topic`, between `warm_up` and `warm_up + measured`.
fn fetch_rate(
    addr: &str,
    client_id: &str,
    topic: &str,
    warm_up: Duration,
    measured: Duration,
) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("client.id", client_id)
        .set("group.id", format!("{client_id}-group"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&assignment).expect("assign");
    let started = Instant::now();
    let (mut read, mut at_warm_up) = (0u64, None);
    while started.elapsed() < warm_up + measured {
        if at_warm_up.is_none() && started.elapsed() >= warm_up {
            at_warm_up = Some((read, Instant::now()));
        }
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            read += message.payload().map_or(0, <[u8]>::len) as u64;
        }
    }
    let (before, since) = at_warm_up.expect("warmed up");
    (read - before) as f64 / since.elapsed().as_secs_f64()
}

fn throttled_ms(http: &str, quota: &str) -> u64 {
    let (_, body) = http_request(http, "GET", "/metrics");
    let prefix = format!("strata_quota_throttle_ms_total{{quota=\"{quota}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_from_kafka_configs_hold_clients_to_their_rates() {
    let http = format!("127.0.0.1:{}", free_port());
    let broker = TestBroker::start(&[
        "--listeners",
        "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "--sasl-bootstrap-user",
        "admin",
        "--sasl-bootstrap-password",
        "admin-secret",
        "--http-addr",
        &http,
    ]);
    let (plain, sasl) = (
        broker.listener_addr("PLAINTEXT"),
        broker.listener_addr("SASL_PLAINTEXT"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    broker.create_topic("limited", 1).await;
    broker.create_topic("stored", 1).await;

    // Set with Kafka's tool: a client id's produce rate, every user's
    // fetch rate, a request share; then read back.
    let produce_quota = format!("producer_byte_rate={PRODUCE_QUOTA}");
    kafka_configs(
        &sasl,
        dir.path(),
        &[
            "--alter",
            "--add-config",
            &produce_quota,
            "--entity-type",
            "clients",
            "--entity-name",
            "throttled",
        ],
    );
    let fetch_quota = format!("consumer_byte_rate={FETCH_QUOTA}");
    kafka_configs(
        &sasl,
        dir.path(),
        &[
            "--alter",
            "--add-config",
            &fetch_quota,
            "--entity-type",
            "users",
            "--entity-default",
        ],
    );
    kafka_configs(
        &sasl,
        dir.path(),
        &[
            "--alter",
            "--add-config",
            "request_percentage=0.001",
            "--entity-type",
            "clients",
            "--entity-name",
            "busy",
        ],
    );
    let described = kafka_configs(
        &sasl,
        dir.path(),
        &[
            "--describe",
            "--entity-type",
            "clients",
            "--entity-name",
            "throttled",
        ],
    );
    assert!(
        described.contains(&format!("producer_byte_rate={PRODUCE_QUOTA}")),
        "{described}"
    );
    let described = kafka_configs(
        &sasl,
        dir.path(),
        &["--describe", "--entity-type", "users", "--entity-default"],
    );
    assert!(
        described.contains(&format!("consumer_byte_rate={FETCH_QUOTA}")),
        "{described}"
    );
    // What Strata does not enforce is refused, saying so.
    let (ok, refused) = crate::sasl::kafka_tool(
        "org.apache.kafka.tools.ConfigCommand",
        &sasl,
        dir.path(),
        &[
            "--alter",
            "--add-config",
            "controller_mutation_rate=10",
            "--entity-type",
            "clients",
            "--entity-name",
            "x",
        ],
    );
    assert!(!ok && refused.contains("not supported"), "{refused}");

    // Data for the consumer, written by a client no quota names (and the
    // admin user's own client id: the default user quota is for fetches).
    let unthrottled = produce_rate(
        &plain,
        "filler",
        "stored",
        Duration::ZERO,
        Duration::from_secs(6),
    );
    assert!(
        unthrottled > 4.0 * PRODUCE_QUOTA as f64,
        "an unthrottled client is not held: {unthrottled:.0} B/s"
    );

    let producer = {
        let plain = plain.clone();
        std::thread::spawn(move || {
            produce_rate(&plain, "throttled", "limited", WARM_UP, PRODUCE_MEASURED)
        })
    };
    let consumer = {
        let plain = plain.clone();
        std::thread::spawn(move || fetch_rate(&plain, "reader", "stored", WARM_UP, FETCH_MEASURED))
    };
    let produced = producer.join().expect("producer");
    let fetched = consumer.join().expect("consumer");
    eprintln!(
        "producer_byte_rate {PRODUCE_QUOTA}: {produced:.0} B/s over {PRODUCE_MEASURED:?}; \
         consumer_byte_rate {FETCH_QUOTA}: {fetched:.0} B/s over {FETCH_MEASURED:?}; unthrottled {unthrottled:.0} B/s"
    );
    let ratio = produced / PRODUCE_QUOTA as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "produced at {ratio:.3}x its quota"
    );
    let ratio = fetched / FETCH_QUOTA as f64;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "fetched at {ratio:.3}x its quota"
    );
    assert!(throttled_ms(&http, "producer_byte_rate") > 0);
    assert!(throttled_ms(&http, "consumer_byte_rate") > 0);

    // request_percentage: a client id allowed 0.001 % of a thread is
    // throttled as soon as it sends anything.
    let busy = produce_rate(
        &plain,
        "busy",
        "limited",
        Duration::ZERO,
        Duration::from_secs(3),
    );
    assert!(busy >= 0.0);
    assert!(throttled_ms(&http, "request_percentage") > 0);

    // Removing a quota frees the client.
    kafka_configs(
        &sasl,
        dir.path(),
        &[
            "--alter",
            "--delete-config",
            "producer_byte_rate",
            "--entity-type",
            "clients",
            "--entity-name",
            "throttled",
        ],
    );
    let described = kafka_configs(
        &sasl,
        dir.path(),
        &["--describe", "--entity-type", "clients"],
    );
    assert!(!described.contains("producer_byte_rate"), "{described}");
}
