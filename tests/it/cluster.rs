//! A real cluster on this machine: several `strata serve` processes sharing
//! one PostgreSQL metadata store and one S3 server (MinIO), driven by
//! librdkafka. Leadership is by lease: these brokers heartbeat every 200 ms
//! and lose their lease after 2 s of silence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{
    TestBroker, consume_until_end, eventually, free_port, fresh_postgres_url, http_request,
};
use crate::groups::{Counting, Member, Seen, member, partitioned};
use crate::s3::{S3Server, start_s3};

pub(crate) struct Cluster {
    pub(crate) s3: S3Server,
    pub(crate) metadata: String,
}

impl Cluster {
    pub(crate) fn new() -> Self {
        Cluster {
            s3: start_s3(&["cluster"]),
            metadata: fresh_postgres_url(),
        }
    }

    pub(crate) fn start(&self, node: i32) -> TestBroker {
        self.start_with(node, &[])
    }

    /// Node `node` with `extra` flags after the cluster's own.
    pub(crate) fn start_with(&self, node: i32, extra: &[&str]) -> TestBroker {
        self.start_env(node, extra, &[])
    }

    /// Node `node` with `extra` flags and environment variables.
    pub(crate) fn start_env(&self, node: i32, extra: &[&str], envs: &[(&str, &str)]) -> TestBroker {
        let mut args = self.s3.broker_args("s3://cluster/data");
        args.extend(
            [
                "--metadata",
                &self.metadata,
                "--node-id",
                &node.to_string(),
                "--rack",
                &format!("zone-{}", node % 3),
                "--heartbeat-interval-ms",
                "200",
                "--session-timeout-ms",
                "2000",
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestBroker::start_with_env(&args, envs)
    }
}

type Leaders = (BTreeMap<i32, i32>, BTreeSet<i32>);

/// Partition leaders of `topic` and the brokers, as `addr` describes them,
/// or the Metadata error (a broker that just died or is starting: callers
/// poll until the answer they wait for).
pub(crate) fn leaders(addr: &str, topic: &str) -> Result<Leaders, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("client");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let brokers = metadata.brokers().iter().map(|b| b.id()).collect();
    let leaders = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| (p.id(), p.leader()))
        .collect();
    Ok((leaders, brokers))
}

/// The leader of `partition` as `addr` describes it, if it answers.
fn leader_of(addr: &str, topic: &str, partition: i32) -> Option<i32> {
    leaders(addr, topic)
        .ok()
        .and_then(|(l, _)| l.get(&partition).copied())
}

/// Waits until `addr` lists `count` live brokers (its view of the
/// cluster), so that a topic created through it is spread over all of them.
pub(crate) async fn sees_brokers(addr: &str, count: usize) {
    let listed = || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", addr)
            .create()
            .expect("client");
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|m| m.brokers().len())
            .unwrap_or(0)
    };
    eventually(
        Duration::from_secs(20),
        || listed() == count,
        || format!("{addr} lists {} brokers, not {count}", listed()),
    )
    .await;
}

/// Partitions led per broker.
pub(crate) fn load(leaders: &BTreeMap<i32, i32>) -> BTreeMap<i32, usize> {
    let mut load = BTreeMap::new();
    for leader in leaders.values() {
        *load.entry(*leader).or_insert(0) += 1;
    }
    load
}

/// Waits until `addr` shows `topic`'s partitions spread evenly over exactly
/// `nodes`; returns how long it took.
pub(crate) async fn balanced_over(
    addr: &str,
    topic: &str,
    nodes: &[i32],
    partitions: usize,
) -> Duration {
    let began = Instant::now();
    let want: BTreeSet<i32> = nodes.iter().copied().collect();
    eventually(
        Duration::from_secs(20),
        || {
            let Ok((leaders, brokers)) = leaders(addr, topic) else {
                return false; // not answering yet: poll again
            };
            let load = load(&leaders);
            leaders.len() == partitions
                && brokers == want
                && load.keys().copied().collect::<BTreeSet<_>>() == want
                && load.values().max().copied().unwrap_or(0)
                    <= load.values().min().copied().unwrap_or(0) + 1
        },
        || format!("not balanced over {nodes:?}: {:?}", leaders(addr, topic)),
    )
    .await;
    began.elapsed()
}

/// Produces `prefix-<n>` values round robin over the partitions until
/// stopped; every acknowledged `(partition, offset, value)` is recorded.
pub(crate) fn start_producer(
    bootstrap: String,
    topic: &'static str,
    partitions: i32,
    stop: Arc<AtomicBool>,
    acked: Acks,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "120000")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("producer");
        let mut failed = 0;
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            let mut sends = Vec::new();
            for _ in 0..50 {
                let value = format!("v-{n}");
                let partition = (n % partitions as u64) as i32;
                n += 1;
                let producer = producer.clone();
                sends.push(tokio::spawn(async move {
                    let record = FutureRecord::<(), _>::to(topic)
                        .partition(partition)
                        .payload(&value);
                    producer
                        .send(record, Duration::from_secs(120))
                        .await
                        .map(|d| (d.partition, d.offset, value.clone()))
                }));
            }
            for send in sends {
                match send.await.expect("send task") {
                    Ok(ack) => acked.lock().expect("acks").push(ack),
                    Err((e, _)) => {
                        eprintln!("produce failed: {e}");
                        failed += 1;
                    }
                }
            }
            // Pacing: ~50 records per round, a steady load, not a flood.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failed
    })
}

pub(crate) type Acks = Arc<Mutex<Vec<(i32, i64, String)>>>;

/// Waits until `count` more records are acknowledged than now: the
/// producers are making progress.
pub(crate) async fn more_acks(acked: &Acks, count: usize) {
    let so_far = || acked.lock().expect("acks").len();
    let before = so_far();
    eventually(
        Duration::from_secs(60),
        || so_far() >= before + count,
        || format!("stalled at {} acks", so_far()),
    )
    .await;
}

/// Every acknowledged record is in its partition at its offset, once;
/// every partition's offsets are dense.
pub(crate) fn check_every_ack(
    addr: &str,
    topic: &str,
    partitions: i32,
    acked: &[(i32, i64, String)],
) {
    let mut stored: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut values = BTreeSet::new();
    for partition in 0..partitions {
        let records = consume_until_end(addr, topic, partition, Offset::Beginning);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                r.offset, i as i64,
                "partition {partition}: offsets are dense"
            );
            let value = String::from_utf8(r.value.clone().expect("value")).expect("utf8");
            assert!(values.insert(value.clone()), "{value} stored twice");
            stored.insert((partition, r.offset), value);
        }
    }
    for (partition, offset, value) in acked {
        assert_eq!(
            stored.get(&(*partition, *offset)),
            Some(value),
            "acknowledged {value} at {partition}/{offset}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_join_die_and_drain_under_load_without_losing_an_acknowledged_record() {
    const TOPIC: &str = "orders";
    const PARTITIONS: i32 = 12;
    let cluster = Cluster::new();
    let b1 = cluster.start(1);
    let mut b2 = cluster.start(2);
    let mut b3 = cluster.start(3);
    b1.create_topic(TOPIC, PARTITIONS).await;
    balanced_over(&b2.addr, TOPIC, &[1, 2, 3], PARTITIONS as usize).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let bootstrap = format!("{},{},{}", b1.addr, b2.addr, b3.addr);
    let producer = start_producer(
        bootstrap,
        TOPIC,
        PARTITIONS,
        Arc::clone(&stop),
        Arc::clone(&acked),
    );
    more_acks(&acked, 500).await;

    // Scale out: a fourth broker takes a fair share, no data copied.
    let b4 = cluster.start(4);
    let took = balanced_over(&b1.addr, TOPIC, &[1, 2, 3, 4], PARTITIONS as usize).await;
    eprintln!("scale-out: 4 brokers balanced {took:?} after the 4th started");
    more_acks(&acked, 500).await;

    // kill -9: the dead broker's partitions move once its lease expires.
    b2.kill9();
    let took = balanced_over(&b1.addr, TOPIC, &[1, 3, 4], PARTITIONS as usize).await;
    eprintln!("kill -9: partitions moved {took:?} after the kill (session timeout 2 s)");
    more_acks(&acked, 500).await;

    // SIGTERM: the broker hands its partitions over before it exits.
    let status = b3.terminate();
    assert!(
        status.success(),
        "a draining broker exits cleanly: {status}"
    );
    assert!(
        b3.log(1).contains("every partition handed over"),
        "{}",
        b3.log(1)
    );
    let took = balanced_over(&b4.addr, TOPIC, &[1, 4], PARTITIONS as usize).await;
    eprintln!("drain: balanced over the rest {took:?} after the broker exited");
    more_acks(&acked, 500).await;

    stop.store(true, Ordering::Release);
    let failed = producer.await.expect("producer task");
    assert_eq!(
        failed, 0,
        "deliveries failed (retriable errors are retried)"
    );
    let acked = acked.lock().expect("acks").clone();
    check_every_ack(&b1.addr, TOPIC, PARTITIONS, &acked);
    eprintln!("{} acknowledged records, all stored once", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_that_lost_its_lease_cannot_commit() {
    use kafka_protocol::messages::{ApiKey, ProduceResponse};
    const TOPIC: &str = "fenced";
    let cluster = Cluster::new();
    let b1 = cluster.start(1);
    let b2 = cluster.start(2);
    b1.create_topic(TOPIC, 4).await;
    balanced_over(&b1.addr, TOPIC, &[1, 2], 4).await;
    let (led, _) = leaders(&b1.addr, TOPIC).expect("metadata");
    let partition = *led
        .iter()
        .find(|(_, leader)| **leader == 2)
        .expect("broker 2 leads a partition")
        .0;

    // Broker 2 knows it leads the partition.
    eventually(
        Duration::from_secs(10),
        || leader_of(&b2.addr, TOPIC, partition) == Some(2),
        || format!("broker 2's view: {:?}", leaders(&b2.addr, TOPIC)),
    )
    .await;
    // A produce is on its way to broker 2 when it freezes (SIGSTOP).
    let mut raw = crate::bad_input::Raw::connect(&b2);
    let pid = b2.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    assert!(status.success());
    let request = crate::bad_input::produce_request(
        TOPIC,
        partition,
        crate::idempotence::producer_batch(-1, -1, 777, 1, false, false),
        -1,
    );
    let sent = std::thread::spawn(move || {
        let response: ProduceResponse = raw.call(ApiKey::Produce, 9, &request);
        response.responses[0].partition_responses[0].error_code
    });
    // Its lease expires; broker 1 takes the partition over.
    let moved = eventually(
        Duration::from_secs(20),
        || leader_of(&b1.addr, TOPIC, partition) == Some(1),
        || format!("partition not moved: {:?}", leaders(&b1.addr, TOPIC)),
    );
    moved.await;
    let status = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("kill -CONT");
    assert!(status.success());
    let code = sent.join().expect("produce thread");
    assert_eq!(code, 6, "NOT_LEADER_OR_FOLLOWER from the fenced broker");
    // Nothing of it landed: the partition is empty on its new leader.
    assert_eq!(b1.high_watermark(TOPIC, partition), 0);
    let records = consume_until_end(&b1.addr, TOPIC, partition, Offset::Beginning);
    assert!(records.is_empty(), "{records:?}");
}

/// The coordinator of `group` according to the broker at `broker`, or the
/// error code it answers (COORDINATOR_NOT_AVAILABLE while it moves).
pub(crate) fn coordinator(broker: &TestBroker, key: &str, key_type: i8) -> Result<i32, i16> {
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    use kafka_protocol::protocol::StrBytes;
    let mut raw = crate::bad_input::Raw::connect(broker);
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(key.to_string()))
        .with_key_type(key_type);
    let response: FindCoordinatorResponse = raw.call(ApiKey::FindCoordinator, 3, &request);
    match response.error_code {
        0 => Ok(response.node_id.0),
        code => Err(code),
    }
}

/// A group's coordinator dies with its broker (kill -9): the group moves
/// to another broker with its membership (generation, members,
/// assignments) and its members go on without a rebalance, reading every
/// record produced before and after. `protocol`: extra consumer settings
/// (`group.protocol=consumer` for KIP-848).
async fn coordinator_dies_under_a_group(group: &'static str, protocol: &[(&str, &str)]) {
    const TOPIC: &str = "events";
    let cluster = Cluster::new();
    let mut brokers = [cluster.start(1), cluster.start(2), cluster.start(3)];
    brokers[0].create_topic(TOPIC, 6).await;
    balanced_over(&brokers[0].addr, TOPIC, &[1, 2, 3], 6).await;
    // Every broker names the same coordinator.
    eventually(
        Duration::from_secs(10),
        || {
            let named: BTreeSet<Result<i32, i16>> =
                brokers.iter().map(|b| coordinator(b, group, 0)).collect();
            named.len() == 1 && named.iter().all(Result::is_ok)
        },
        || "brokers disagree on the coordinator".into(),
    )
    .await;
    let coordinator_node = coordinator(&brokers[0], group, 0).expect("a coordinator");

    let produce = |addr: String, from: usize, to: usize| async move {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("acks", "all")
            .create()
            .expect("producer");
        for i in from..to {
            let value = format!("e-{i}");
            producer
                .send(
                    FutureRecord::<(), _>::to(TOPIC).payload(&value),
                    Duration::from_secs(60),
                )
                .await
                .expect("delivered");
        }
    };
    let all: String = brokers
        .iter()
        .map(|b| b.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    produce(all.clone(), 0, 300).await;
    let seen: Vec<Seen> = (0..2).map(|_| Seen::default()).collect();
    let counting: Vec<Arc<Counting>> = (0..2).map(|_| Arc::default()).collect();
    let members: Vec<Member> = (0..2)
        .map(|i| {
            member(
                &all,
                group,
                TOPIC,
                protocol,
                Arc::clone(&seen[i]),
                Arc::clone(&counting[i]),
            )
        })
        .collect();
    let distinct = || {
        seen.iter()
            .flat_map(|s| s.lock().expect("seen").clone())
            .collect::<BTreeSet<String>>()
    };
    let shared = || {
        partitioned(&members.iter().map(Member::assigned).collect::<Vec<_>>(), 6)
            && members.iter().all(|m| !m.assigned().is_empty())
    };
    eventually(
        Duration::from_secs(60),
        || distinct().len() == 300 && shared(),
        || {
            format!(
                "{} of 300 consumed, assignments {:?}",
                distinct().len(),
                members.iter().map(Member::assigned).collect::<Vec<_>>()
            )
        },
    )
    .await;
    let rebalances = || {
        counting
            .iter()
            .map(|c| c.rebalances.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    };
    let before = rebalances();

    // The coordinator's broker dies; its partitions and the group move.
    // Brokers 1, 2, 3 are at 0, 1, 2.
    let dead = usize::try_from(coordinator_node - 1).expect("a node id from 1 to 3");
    brokers[dead].kill9();
    let alive: Vec<&TestBroker> = brokers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .map(|(_, b)| b)
        .collect();
    eventually(
        Duration::from_secs(20),
        || coordinator(alive[0], group, 0).is_ok_and(|named| named != coordinator_node),
        || "the coordinator did not move".into(),
    )
    .await;
    let rest = alive
        .iter()
        .map(|b| b.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    produce(rest, 300, 600).await;
    eventually(
        Duration::from_secs(60),
        || distinct().len() == 600,
        || format!("{} of 600 consumed", distinct().len()),
    )
    .await;
    // The new coordinator knows both members (it took the group over).
    let described = describe_group(alive[0], group);
    let after = rebalances();
    for member in members {
        member.stop();
    }
    let expected: BTreeSet<String> = (0..600).map(|i| format!("e-{i}")).collect();
    assert_eq!(distinct(), expected);
    assert_eq!(
        after, before,
        "the members rebalanced after their coordinator moved (rebalances per member)"
    );
    assert_eq!(described, 2, "members the new coordinator describes");
}

/// How many members the group's coordinator describes (DescribeGroups, or
/// ConsumerGroupDescribe for a KIP-848 group), asked through the Admin API
/// of librdkafka's Python binding.
fn describe_group(broker: &TestBroker, group: &str) -> usize {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\n\
             from confluent_kafka.admin import AdminClient\n\
             admin = AdminClient({'bootstrap.servers': sys.argv[1]})\n\
             d = admin.describe_consumer_groups([sys.argv[2]])[sys.argv[2]].result(timeout=20)\n\
             print(len(d.members))",
        ])
        .args([broker.addr.as_str(), group])
        .output()
        .expect("python3 with confluent-kafka (the test venv has it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a member count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_has_one_coordinator_and_follows_it_when_its_broker_dies() {
    coordinator_dies_under_a_group("readers", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip848_group_keeps_its_members_when_its_coordinator_dies() {
    coordinator_dies_under_a_group("readers-848", &[("group.protocol", "consumer")]).await;
}

/// The brokers of docker-compose.yml as it declares them: `(service, env)`.
fn compose_brokers() -> Vec<(String, BTreeMap<String, String>)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             doc = yaml.safe_load(open(sys.argv[1]))\n\
             print(json.dumps({n: {k: str(v) for k, v in s.get('environment', {}).items()}\n\
                               for n, s in doc['services'].items() if n.startswith('strata-')}))",
        ])
        .arg(format!("{root}/docker-compose.yml"))
        .output()
        .expect("python3 with PyYAML (the test venv has it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(&out.stdout).expect("json");
    parsed.into_iter().collect()
}

/// The healthcheck docker-compose.yml gives `service`, as Docker runs it:
/// the argv of a `CMD` test, or `/bin/sh -c` with a `CMD-SHELL` one (the
/// image's /bin/sh is Debian's dash, as this machine's is).
fn compose_healthcheck(service: &str) -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             doc = yaml.safe_load(open(sys.argv[1]))\n\
             print(json.dumps(doc['services'][sys.argv[2]]['healthcheck']['test']))",
        ])
        .arg(format!("{root}/docker-compose.yml"))
        .arg(service)
        .output()
        .expect("python3 with PyYAML (the test venv has it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let test: Vec<String> = serde_json::from_slice(&out.stdout).expect("json");
    match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
        other => panic!("{service}: healthcheck test {other:?} is neither CMD nor CMD-SHELL"),
    }
}

/// Runs `service`'s healthcheck with `env` (the image's `strata` is on
/// PATH there; here the one under test is); whether it passed.
fn healthcheck_passes(service: &str, env: &[(String, String)]) -> bool {
    let argv = compose_healthcheck(service);
    let bin_dir = std::path::Path::new(crate::common::STRATA)
        .parent()
        .expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// docker-compose.yml's topology, run as processes: its three brokers with
/// the environment it gives them, unmodified but for the addresses of
/// PostgreSQL and the S3 server (this test's own), on PostgreSQL and a real
/// S3 server, scraped like its Prometheus does. Each broker resolves names
/// as in its container: the services' names are this machine, and
/// `localhost` (the container itself) reaches no other broker. So brokers
/// reach each other only through their INTERNAL listener (`strata-N`),
/// clients on the host through EXTERNAL (`localhost:1909N`), and a
/// transaction over partitions led by all three brokers commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_topology_runs_as_processes() {
    let brokers = compose_brokers();
    assert_eq!(brokers.len(), 3, "{brokers:?}");
    let s3 = start_s3(&["strata"]);
    let metadata = fresh_postgres_url();
    let hosts_dir = tempfile::tempdir().expect("tempdir");
    let hosts = hosts_dir.path().join("hosts");
    let services: Vec<&str> = brokers.iter().map(|(s, _)| s.as_str()).collect();
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1 {} postgres minio\n192.0.2.1 localhost\n",
            services.join(" ")
        ),
    )
    .expect("hosts file");
    let listener = |env: &BTreeMap<String, String>, key: &str, name: &str| -> String {
        env[key]
            .split(',')
            .find_map(|e| e.strip_prefix(&format!("{name}://")))
            .unwrap_or_else(|| panic!("{key} has no {name} listener: {}", env[key]))
            .to_string()
    };
    let mut running = Vec::new();
    let mut http = Vec::new();
    let mut envs = Vec::new();
    for (service, compose_env) in &brokers {
        let mut env: Vec<(String, String)> = Vec::new();
        for (key, value) in compose_env {
            let value = match key.as_str() {
                // The services this test runs itself, on ports of its own.
                "STRATA_METADATA" => metadata.clone(),
                "STRATA_S3_ENDPOINT" => s3.endpoint.clone(),
                _ => value.clone(),
            };
            env.push((key.clone(), value));
        }
        assert!(
            compose_env["STRATA_OBJECT_STORE"].starts_with("s3://strata/"),
            "{service}: the bucket the compose file creates"
        );
        assert!(
            compose_env["STRATA_METADATA"].contains("@postgres:")
                && compose_env["STRATA_S3_ENDPOINT"].contains("//minio:"),
            "{service}: the compose file's own PostgreSQL and MinIO"
        );
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let broker = TestBroker::start_as_service(&pairs, &hosts, "EXTERNAL");
        let external = listener(compose_env, "STRATA_ADVERTISED_LISTENERS", "EXTERNAL");
        assert_eq!(broker.addr, external, "{service}: clients on the host");
        running.push(broker);
        let (_, port) = compose_env["STRATA_HTTP_ADDR"]
            .rsplit_once(':')
            .expect("HOST:PORT");
        http.push(format!("127.0.0.1:{port}"));
        envs.push((service.clone(), env));
    }
    // Each broker's healthcheck, exactly as the compose file states it,
    // passes once it serves (and fails against nothing listening).
    for (service, env) in &envs {
        eventually(
            Duration::from_secs(20),
            || healthcheck_passes(service, env),
            || format!("{service}: its compose healthcheck never passed"),
        )
        .await;
        let nothing_there = [(
            "STRATA_HTTP_ADDR".to_string(),
            format!("127.0.0.1:{}", crate::common::free_port()),
        )];
        assert!(
            !healthcheck_passes(service, &nothing_there),
            "{service}: the healthcheck passes with no broker behind it"
        );
    }
    sees_brokers(&running[0].addr, 3).await;
    running[0].create_topic("compose", 6).await;
    let nodes: Vec<i32> = brokers
        .iter()
        .map(|(_, env)| env["STRATA_NODE_ID"].parse().expect("node id"))
        .collect();
    balanced_over(&running[1].addr, "compose", &nodes, 6).await;
    // A client of each listener is told that listener's addresses (and
    // racks as the compose file sets them).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &running[2].addr)
        .create()
        .expect("client");
    let described = consumer
        .fetch_metadata(Some("compose"), Duration::from_secs(10))
        .expect("metadata");
    let told: BTreeSet<String> = described
        .brokers()
        .iter()
        .map(|b| format!("{}:{}", b.host(), b.port()))
        .collect();
    let external: BTreeSet<String> = brokers
        .iter()
        .map(|(_, env)| listener(env, "STRATA_ADVERTISED_LISTENERS", "EXTERNAL"))
        .collect();
    assert_eq!(
        told, external,
        "EXTERNAL clients are told EXTERNAL addresses"
    );
    let internal: BTreeSet<String> = brokers
        .iter()
        .map(|(_, env)| listener(env, "STRATA_ADVERTISED_LISTENERS", "INTERNAL"))
        .collect();
    let (_, internal_port) = listener(&brokers[0].1, "STRATA_LISTENERS", "INTERNAL")
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .expect("HOST:PORT");
    let mut raw = crate::bad_input::Raw::connect_to(&format!("127.0.0.1:{internal_port}"));
    let answer: kafka_protocol::messages::MetadataResponse = raw.call(
        kafka_protocol::messages::ApiKey::Metadata,
        12,
        &kafka_protocol::messages::MetadataRequest::default(),
    );
    let told: BTreeSet<String> = answer
        .brokers
        .iter()
        .map(|b| format!("{}:{}", b.host.as_str(), b.port))
        .collect();
    assert_eq!(
        told, internal,
        "INTERNAL clients are told INTERNAL addresses"
    );
    let racks: BTreeSet<Option<String>> = answer
        .brokers
        .iter()
        .map(|b| b.rack.as_ref().map(|r| r.to_string()))
        .collect();
    let configured: BTreeSet<Option<String>> = brokers
        .iter()
        .map(|(_, env)| env.get("STRATA_RACK").cloned())
        .collect();
    assert_eq!(racks, configured);
    // Produce through one broker, read through another.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &running[0].addr)
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..60 {
        let value = format!("c-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("compose").payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("delivered");
    }
    let mut consumed = 0;
    for partition in 0..6 {
        consumed +=
            consume_until_end(&running[1].addr, "compose", partition, Offset::Beginning).len();
    }
    assert_eq!(consumed, 60);
    // Transactions over partitions led by all three brokers: the
    // coordinator's markers and the leaders' checks with the coordinator
    // go between brokers, over INTERNAL.
    tokio::task::block_in_place(|| compose_transactions(&running));
    // What Prometheus scrapes.
    let mut led = 0;
    for addr in &http {
        let (status, body) = crate::common::http_request(addr, "GET", "/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("strata_cluster_brokers 3"), "{body}");
        led += body
            .lines()
            .find_map(|l| l.strip_prefix("strata_partitions_led "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .expect("strata_partitions_led");
    }
    assert!(
        led >= 6,
        "every partition of 'compose' is led somewhere: {led}"
    );
}

/// Commits three transactions and aborts one over the six partitions of
/// 'compose' (led by three brokers); read_committed consumers of another
/// broker see exactly the committed records.
fn compose_transactions(running: &[TestBroker]) {
    use crate::transactions::{T, read_all, send, txn_producer, values};
    use rdkafka::producer::Producer;
    let before: Vec<usize> = (0..6)
        .map(|p| read_all(&running[1], "compose", p, "read_committed").len())
        .collect();
    let producer = txn_producer(&running[2], "compose-txn", &[]);
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 6];
    for round in 0..4 {
        producer.begin_transaction().expect("begin");
        for p in 0..6 {
            let batch = values(&format!("t{round}-p{p}"), 3);
            send(&producer, "compose", p, &batch);
            if round != 2 {
                expected[p as usize].extend(batch);
            }
        }
        if round == 2 {
            producer.abort_transaction(T).expect("abort");
        } else {
            producer
                .commit_transaction(T)
                .expect("commit across brokers");
        }
    }
    for p in 0..6 {
        let read = read_all(&running[0], "compose", p, "read_committed");
        assert_eq!(
            read[before[p as usize]..],
            expected[p as usize],
            "partition {p}: the committed records only, in order"
        );
    }
}

/// A PostgreSQL server of its own (the shared test server serves every
/// other test at once), stopped on drop.
pub(crate) struct OwnPostgres {
    pub(crate) dir: tempfile::TempDir,
    port: u16,
    pub(crate) url: String,
}

impl OwnPostgres {
    fn script(dir: &std::path::Path, port: u16, args: &[&str]) -> std::process::Output {
        let out = std::process::Command::new(format!(
            "{}/scripts/postgres.sh",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .env("STRATA_PG_DIR", dir)
        .env("STRATA_TEST_PG_PORT", port.to_string())
        .output()
        .expect("scripts/postgres.sh");
        assert!(
            out.status.success(),
            "postgres.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::common::free_port();
        let out = Self::script(dir.path(), port, &["start"]);
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        OwnPostgres { dir, port, url }
    }

    /// Stops the server, waits `secs`, starts it again.
    pub(crate) fn restart(&self, secs: u32) {
        Self::script(self.dir.path(), self.port, &["restart", &secs.to_string()]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(format!(
            "{}/scripts/postgres.sh",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg("stop")
        .env("STRATA_PG_DIR", self.dir.path())
        .env("STRATA_TEST_PG_PORT", self.port.to_string())
        .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_pause_and_resume_across_a_postgresql_restart() {
    const TOPIC: &str = "through-outage";
    let postgres = OwnPostgres::start();
    let broker = TestBroker::start(&["--metadata", &postgres.url]);
    broker.create_topic(TOPIC, 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let producer = start_producer(
        broker.addr.clone(),
        TOPIC,
        4,
        Arc::clone(&stop),
        Arc::clone(&acked),
    );
    more_acks(&acked, 300).await;
    // Three seconds without the metadata store, under load.
    postgres.restart(3);
    more_acks(&acked, 300).await;
    stop_and_check_every_ack(
        producer,
        &stop,
        &acked,
        &broker.addr,
        TOPIC,
        4,
        "the restart",
    )
    .await;
}

/// Stops `producer` (started with `start_producer`), which must have had
/// no failed delivery, then checks that every record it had acknowledged
/// is stored once, in order (`what`: the fault it went through, for the
/// log).
pub(crate) async fn stop_and_check_every_ack(
    producer: tokio::task::JoinHandle<usize>,
    stop: &AtomicBool,
    acked: &Acks,
    addr: &str,
    topic: &str,
    partitions: i32,
    what: &str,
) {
    stop.store(true, Ordering::Release);
    let failed = producer.await.expect("producer task");
    assert_eq!(
        failed, 0,
        "deliveries failed (retriable errors are retried)"
    );
    let acked = acked.lock().expect("acks").clone();
    check_every_ack(addr, topic, partitions, &acked);
    eprintln!(
        "{} acknowledged records across {what}, all stored once",
        acked.len()
    );
}

/// A counter from a broker's /metrics (0 when absent).
pub(crate) fn metric(http: &str, name: &str) -> f64 {
    let (status, body) = http_request(http, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Produces `values` round robin over `partitions`, every one acknowledged.
async fn produce_values(addr: &str, topic: &str, partitions: i32, values: &[String]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let record: FutureRecord<'_, (), String> = FutureRecord::to(topic)
            .partition(i as i32 % partitions)
            .payload(value);
        pending.push(producer.send_result(record).expect("enqueue"));
    }
    for p in pending {
        p.await.expect("future").expect("delivered");
    }
}

/// Polls `consumer` until `want` values arrived (returned in arrival
/// order per partition), failing on any error.
fn consume_values(consumer: &BaseConsumer, want: usize) -> BTreeMap<i32, Vec<(i64, String)>> {
    use rdkafka::Message;
    let mut got: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.values().map(Vec::len).sum::<usize>() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} records read",
            got.values().map(Vec::len).sum::<usize>()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => panic!("consume error: {e}"),
            Some(Ok(m)) => {
                let value = String::from_utf8(m.payload().expect("value").to_vec()).expect("utf8");
                got.entry(m.partition())
                    .or_default()
                    .push((m.offset(), value));
            }
        }
    }
    got
}

/// A topic created through one broker is described by every other broker
/// at once, not only after it next follows the store (a heartbeat later):
/// an admin tool that creates through one address and describes through
/// another (a load balancer) never sees "unknown topic".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_through_one_broker_is_known_at_once_by_the_others() {
    let cluster = Cluster::new();
    let brokers = [cluster.start(1), cluster.start(2)];
    let both: BTreeSet<i32> = [1, 2].into();
    eventually(
        Duration::from_secs(20),
        || {
            brokers
                .iter()
                .all(|b| leaders(&b.addr, "not-yet").is_ok_and(|(_, live)| live == both))
        },
        || "both brokers register".to_string(),
    )
    .await;
    for round in 0..5 {
        let (create, ask) = (&brokers[round % 2], &brokers[(round + 1) % 2]);
        let topic = format!("created-{round}");
        create.create_topic(&topic, 4).await;
        let (described, _) = leaders(&ask.addr, &topic).expect("metadata");
        assert_eq!(
            described.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3],
            "{topic} as the other broker describes it right after its creation"
        );
        assert!(
            described.values().all(|leader| both.contains(leader)),
            "every partition of {topic} has a live leader: {described:?}"
        );
        // Its configs too (kafka-topics --describe, kafka-configs).
        let topic = format!("configured-{round}");
        create.create_topic(&topic, 1).await;
        let configs = ask
            .admin()
            .describe_configs(&[ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
            .await
            .expect("DescribeConfigs");
        let config = configs[0].as_ref().expect("the topic's configs");
        assert!(
            config.get("cleanup.policy").is_some(),
            "{topic}'s configs as the other broker describes them: {config:?}"
        );
    }
}

/// KIP-392: a consumer in zone-2 reads the partitions led by the brokers
/// of zones 0 and 1 from the zone-2 broker, which serves them from the
/// object store (sealed every 200 ms meanwhile, so its view follows
/// swapped chunk rows), and it keeps up with records produced while it
/// reads: every record once, in offset order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_from_the_broker_in_its_own_rack() {
    let cluster = Cluster::new();
    let mut brokers = Vec::new();
    let mut http = Vec::new();
    for node in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port());
        brokers
            .push(cluster.start_with(node, &["--http-addr", &addr, "--seal-interval-ms", "200"]));
        http.push(addr);
    }
    const PARTITIONS: i32 = 6;
    brokers[0].create_topic("racks", PARTITIONS).await;
    balanced_over(&brokers[1].addr, "racks", &[0, 1, 2], PARTITIONS as usize).await;
    let first: Vec<String> = (0..300).map(|i| format!("rack-{i}")).collect();
    produce_values(&brokers[0].addr, "racks", PARTITIONS, &first).await;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers[0].addr)
        .set("group.id", "strata-tests-unused")
        .set("enable.auto.commit", "false")
        .set("client.rack", "zone-2")
        .create()
        .expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset("racks", p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut got = consume_values(&consumer, 300);

    // Then records produced while it reads, after a few seal cycles.
    let second: Vec<String> = (300..600).map(|i| format!("rack-{i}")).collect();
    let producer_addr = brokers[1].addr.clone();
    let producing = tokio::spawn(async move {
        for chunk in second.chunks(50) {
            produce_values(&producer_addr, "racks", PARTITIONS, chunk).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    for (partition, records) in consume_values(&consumer, 300) {
        got.entry(partition).or_default().extend(records);
    }
    producing.await.expect("producer task");

    let mut values = BTreeSet::new();
    for (partition, records) in &got {
        let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
        let dense: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, dense,
            "partition {partition}: every offset once, in order"
        );
        values.extend(records.iter().map(|(_, v)| v.clone()));
    }
    let want: BTreeSet<String> = (0..600).map(|i| format!("rack-{i}")).collect();
    assert_eq!(values, want);

    // Zone 2 served the other zones' partitions; their leaders sent the
    // consumer there and served no partition they do not lead.
    let (leaders, _) = leaders(&brokers[2].addr, "racks").expect("metadata");
    assert_eq!(
        load(&leaders).len(),
        3,
        "every broker leads some: {leaders:?}"
    );
    assert!(metric(&http[2], "strata_fetch_replica_bytes_total") > 0.0);
    for node in [0, 1] {
        assert!(
            metric(&http[node], "strata_fetch_preferred_replica_total") > 0.0,
            "broker {node} sent the zone-2 consumer to zone 2"
        );
        assert_eq!(metric(&http[node], "strata_fetch_replica_bytes_total"), 0.0);
    }
}

/// Debian's libfaketime, preloaded, shifts a process's wall clock (not its
/// monotonic clock) by `offset`, e.g. "+30s".
fn shifted_clock(offset: &str) -> [(&'static str, String); 3] {
    const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: Debian's libfaketime package (./scripts/test.sh installs it)"
    );
    [
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

/// Leases are timed on the metadata store's clock: a broker whose clock
/// runs 30 s ahead (of a 2 s lease) neither sees the others' leases as
/// expired nor has its own seen as lasting 30 s too long; the cluster
/// stays balanced and stable, and a dead broker's partitions still move
/// after its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_timed_on_the_stores_clock_not_the_brokers() {
    const TOPIC: &str = "skewed";
    let cluster = Cluster::new();
    let ahead = shifted_clock("+30s");
    let ahead: Vec<(&str, &str)> = ahead.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut brokers = [
        cluster.start(1),
        cluster.start_env(2, &[], &ahead),
        cluster.start(3),
    ];
    brokers[0].create_topic(TOPIC, 6).await;
    // Every broker follows the store within a heartbeat.
    for b in &brokers {
        balanced_over(&b.addr, TOPIC, &[1, 2, 3], 6).await;
    }
    // Stable: watched over 3 s (15 heartbeats and lease renewals), every
    // broker describes the same leaders throughout.
    let settled = leaders(&brokers[0].addr, TOPIC).expect("leaders");
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        for b in &brokers {
            assert_eq!(
                leaders(&b.addr, TOPIC).expect("leaders"),
                settled,
                "leaders as broker at {} describes them, {:?} later",
                b.addr,
                watch.elapsed()
            );
        }
    }
    // The broker with the normal clock dies: its partitions move after its
    // lease, to the others, the one 30 s ahead included.
    brokers[0].kill9();
    let moved = balanced_over(&brokers[1].addr, TOPIC, &[2, 3], 6).await;
    eprintln!(
        "a broker's partitions moved {moved:?} after its kill -9, a survivor's clock 30 s ahead"
    );
    assert!(
        brokers[1].log(1).contains("leases follow the store"),
        "the broker 30 s ahead warned about its clock"
    );
}
