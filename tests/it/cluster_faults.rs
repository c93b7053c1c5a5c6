//! A cluster on PostgreSQL and MinIO when things go quiet or stop
//! answering: a broker that flushes rarely keeps the object keys it
//! reserved, nothing is left in the bucket that no metadata names, and a
//! frozen PostgreSQL fails requests within the store's bound instead of
//! stalling them, then recovers with every acknowledged record stored once;
//! a group coordinator deposed while frozen cannot overwrite its
//! successor's offsets. Also what a cluster describes of itself
//! (DescribeCluster).

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::cluster::{
    Cluster, OwnPostgres, balanced_over, more_acks, start_producer, stop_and_check_every_ack,
};
use crate::common::{TestBroker, consume_until_end, eventually, psql};
use crate::s3::start_s3;

/// The last lines of a broker's log (its first run).
fn log_tail(broker: &TestBroker) -> String {
    let log = broker.log(1);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Keys under the cluster's prefix in the bucket, relative to the prefix
/// (as the metadata names them).
fn bucket_keys(cluster: &Cluster) -> BTreeSet<String> {
    ["wal/", "seg/", "shr/"]
        .iter()
        .flat_map(|p| cluster.s3.list("cluster", &format!("data/{p}")))
        .filter_map(|k| k.strip_prefix("data/").map(str::to_string))
        .collect()
}

/// Keys an object row or an upload intent names.
fn named_keys(metadata: &str) -> BTreeSet<String> {
    psql(
        metadata,
        "SELECT object_key FROM objects UNION SELECT object_key FROM object_intents",
    )
    .into_iter()
    .filter_map(|row| row.into_iter().next())
    .collect()
}

/// A producer that does not retry: a failed flush is a failed delivery.
fn producer_without_retries(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("retries", "0")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Two brokers that each flush a few times a second, for five times the
/// orphan grace: far fewer flushes than the keys each reserves at once, so
/// the keys wait long past the grace. The controller's collector must not
/// doom the other broker's reserved keys (they are renewed), so no flush
/// fails; and every object in the bucket is named by a row or an intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_broker_keeps_its_reserved_keys_and_leaks_no_object() {
    const TOPIC: &str = "quiet";
    let cluster = Cluster::new();
    let gc = [
        "--gc-orphan-grace-secs",
        "3",
        "--gc-sweep-interval-secs",
        "1",
    ];
    let brokers = [cluster.start_with(1, &gc), cluster.start_with(2, &gc)];
    brokers[0].create_topic(TOPIC, 4).await;
    balanced_over(&brokers[0].addr, TOPIC, &[1, 2], 4).await;
    let bootstrap = format!("{},{}", brokers[0].addr, brokers[1].addr);
    let producer = producer_without_retries(&bootstrap);
    let mut failed = Vec::new();
    let rounds = 15;
    for round in 0..rounds {
        for partition in 0..4 {
            let value = format!("r{round}-p{partition}");
            let record = FutureRecord::<(), _>::to(TOPIC)
                .partition(partition)
                .payload(&value);
            if let Err((error, _)) = producer.send(record, Duration::from_secs(30)).await {
                failed.push(format!("{value}: {error}"));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        failed.is_empty(),
        "{} of {} produces failed (a broker's reserved keys were doomed?): {failed:?}\n{}",
        failed.len(),
        rounds * 4,
        brokers.iter().map(log_tail).collect::<Vec<_>>().join("\n")
    );
    for partition in 0..4 {
        let stored = consume_until_end(
            &brokers[1].addr,
            TOPIC,
            partition,
            rdkafka::Offset::Beginning,
        );
        assert_eq!(stored.len(), rounds, "partition {partition}");
    }
    // What an operator would see in the logs: flushes failing for keys
    // the collector doomed.
    for broker in &brokers {
        assert!(
            !broker.log(1).contains("has no live upload intent"),
            "a flush lost its reserved key to the collector:\n{}",
            log_tail(broker)
        );
    }
    let named = named_keys(&cluster.metadata);
    let unnamed: Vec<String> = bucket_keys(&cluster)
        .into_iter()
        .filter(|k| !named.contains(k))
        .collect();
    assert!(
        unnamed.is_empty(),
        "objects in the bucket that no row or intent names (leaked): {unnamed:?}"
    );
}

/// The listing pass deletes what nothing names under Strata's prefixes
/// (once past its grace), and nothing else: not the brokers' own objects,
/// not other keys in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_pass_deletes_objects_nothing_names_and_only_those() {
    const TOPIC: &str = "listed";
    let cluster = Cluster::new();
    let strays = [
        "data/wal/ab/0000000000001-00000000000000ab.wal",
        "data/seg/00000000-0000-0000-0000-000000000000/0/00000000000000000000-0000000000000001.seg",
        "data/shr/cd/0000000000001-00000000000000cd.shr",
    ];
    let kept = ["data/exports/report.parquet", "elsewhere/wal/x.wal"];
    for key in strays.iter().chain(&kept) {
        cluster.s3.put("cluster", key, "left behind");
    }
    let http = format!("127.0.0.1:{}", crate::common::free_port());
    let broker = cluster.start_with(
        1,
        &[
            "--http-addr",
            &http,
            "--gc-unnamed-grace-secs",
            "2",
            "--gc-list-interval-secs",
            "1",
            "--gc-sweep-interval-secs",
            "1",
        ],
    );
    broker.create_topic(TOPIC, 2).await;
    let producer = producer_without_retries(&broker.addr);
    for i in 0..20 {
        let value = format!("v{i}");
        let record = FutureRecord::<(), _>::to(TOPIC)
            .partition(i % 2)
            .payload(&value);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("delivered");
    }
    let gone = |key: &str| {
        let (dir, _) = key.rsplit_once('/').expect("a key with a directory");
        !cluster.s3.list("cluster", dir).iter().any(|k| k == key)
    };
    eventually(
        Duration::from_secs(30),
        || strays.iter().all(|k| gone(k)),
        || {
            format!(
                "strays left: {:?}\n{}",
                strays.iter().filter(|k| !gone(k)).collect::<Vec<_>>(),
                log_tail(&broker)
            )
        },
    )
    .await;
    // Two more passes (a LIST per prefix each) over the brokers' own
    // objects, older than the grace by now.
    const LISTS: &str = "strata_object_store_requests_total{op=\"list\"}";
    let lists = crate::cluster::metric(&http, LISTS);
    eventually(
        Duration::from_secs(30),
        || crate::cluster::metric(&http, LISTS) >= lists + 6.0,
        || {
            format!(
                "no more listing passes: {}",
                crate::cluster::metric(&http, LISTS)
            )
        },
    )
    .await;
    for key in kept {
        assert!(!gone(key), "{key} is not Strata's: it stays");
    }
    let in_bucket = bucket_keys(&cluster);
    let committed: Vec<String> = psql(&cluster.metadata, "SELECT object_key FROM objects")
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .collect();
    assert!(!committed.is_empty());
    for key in &committed {
        assert!(
            in_bucket.contains(key),
            "{key} is named by a row, yet was deleted"
        );
    }
}

/// Stops (SIGSTOP) or resumes (SIGCONT) every process of a PostgreSQL
/// server: the postmaster and its backends.
fn signal_postgres(postgres: &OwnPostgres, signal: &str) {
    let pid_file = postgres.dir.path().join("data/postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid")
        .lines()
        .next()
        .expect("pid line")
        .trim()
        .to_string();
    for args in [vec![signal, "-P", &pid], vec![signal, &pid]] {
        let cmd = if args.len() == 3 { "pkill" } else { "kill" };
        let _ = std::process::Command::new(cmd).args(&args).status();
    }
}

/// PostgreSQL frozen (its processes stopped, connections open and silent,
/// as in a failover or a dropped NAT entry) for longer than the store's
/// bound: a produce fails within the bound with a retriable error (not
/// when the client gives up), the broker recovers once the database
/// answers again, and every acknowledged record is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn produce_fails_within_the_bound_while_postgresql_is_frozen_then_recovers() {
    const TOPIC: &str = "frozen";
    let postgres = OwnPostgres::start();
    let s3 = start_s3(&["frozen"]);
    let mut args = s3.broker_args("s3://frozen/data");
    args.extend(
        [
            "--metadata",
            &postgres.url,
            "--metadata-timeout-ms",
            "2000",
            "--node-id",
            "1",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = TestBroker::start(&args);
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

    signal_postgres(&postgres, "-STOP");
    let frozen_at = Instant::now();
    // A produce that cannot commit fails with the broker's retriable
    // storage error; without a bound it would hang until the client's own
    // timeout (10 s here, longer than the freeze lasts at that point).
    let probe = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .create::<FutureProducer>()
        .expect("probe producer");
    // Its metadata first (the broker answers Metadata from memory).
    let _ = rdkafka::producer::Producer::client(&probe)
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5));
    let outcome = probe
        .send(
            FutureRecord::<(), _>::to(TOPIC)
                .partition(0)
                .payload("during the freeze"),
            Duration::from_secs(5),
        )
        .await;
    let failed_after = frozen_at.elapsed();
    // The freeze lasts 12 s in all.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(frozen_at.elapsed())).await;
    signal_postgres(&postgres, "-CONT");
    match outcome {
        Err((KafkaError::MessageProduction(code), _)) => assert!(
            matches!(
                code,
                RDKafkaErrorCode::KafkaStorageError | RDKafkaErrorCode::NotLeaderForPartition
            ),
            "the broker's retriable error, not the client's timeout: {code:?} after {failed_after:?}\n{}",
            log_tail(&broker)
        ),
        other => panic!(
            "a produce during the freeze should fail with the broker's error within its bound; \
             got {other:?} after {failed_after:?}\n{}",
            log_tail(&broker)
        ),
    }
    eprintln!("produce failed {failed_after:?} into the freeze (bound 2 s)");

    // Recovered: acks flow again.
    more_acks(&acked, 300).await;
    stop_and_check_every_ack(
        producer,
        &stop,
        &acked,
        &broker.addr,
        TOPIC,
        4,
        "the freeze",
    )
    .await;
}

/// DescribeCluster lists every live broker with its rack, as Metadata
/// does (confluent-kafka's `AdminClient.describe_cluster`), whichever
/// broker is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_lists_every_live_broker() {
    crate::common::require_python_module("confluent_kafka");
    let cluster = Cluster::new();
    let brokers = [cluster.start(1), cluster.start(2), cluster.start(3)];
    const SCRIPT: &str = r#"
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
described = admin.describe_cluster(request_timeout=10).result()
for node in sorted(described.nodes, key=lambda n: n.id):
    print(node.id, node.host, node.port, node.rack)
"#;
    for broker in &brokers {
        let want: Vec<String> = brokers
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let node = i as i32 + 1;
                let (host, port) = b.addr.rsplit_once(':').expect("host:port");
                format!("{node} {host} {port} zone-{}", node % 3)
            })
            .collect();
        let got = std::cell::RefCell::new(Vec::new());
        eventually(
            Duration::from_secs(20),
            || {
                let out = std::process::Command::new("python3")
                    .args(["-c", SCRIPT, &broker.addr])
                    .output()
                    .expect("python3");
                *got.borrow_mut() = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>();
                *got.borrow() == want
            },
            || {
                format!(
                    "DescribeCluster through {}: {:?}, want {want:?}",
                    broker.addr,
                    got.borrow()
                )
            },
        )
        .await;
    }
}

/// A consumer asking a broker for offsets past what it knows of a
/// partition another broker leads (here: on every fetch, as fast as it
/// can) costs at most one metadata store read per partition per
/// `cluster.replica_refresh_ms` (250 ms), not one per fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_past_a_replica_view_share_their_store_reads() {
    const TOPIC: &str = "coalesced";
    let cluster = Cluster::new();
    let http = format!("127.0.0.1:{}", crate::common::free_port());
    let brokers = [
        cluster.start(1),
        cluster.start_with(2, &["--http-addr", &http]),
    ];
    brokers[0].create_topic(TOPIC, 2).await;
    balanced_over(&brokers[1].addr, TOPIC, &[1, 2], 2).await;
    let (leaders, _) = crate::cluster::leaders(&brokers[1].addr, TOPIC).expect("metadata");
    // The partition broker 1 leads, read through broker 2.
    let partition = *leaders
        .iter()
        .find(|(_, leader)| **leader == 1)
        .expect("broker 1 leads one")
        .0;
    let producer = producer_without_retries(&brokers[0].addr);
    for i in 0..10 {
        producer
            .send(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(partition)
                    .payload(&format!("v{i}")),
                Duration::from_secs(30),
            )
            .await
            .expect("delivered");
    }
    let mut raw = crate::bad_input::Raw::connect(&brokers[1]);
    let (code, _, bytes) = crate::bad_input::fetch(&mut raw, TOPIC, partition, 0);
    assert_eq!(code, 0);
    assert!(bytes > 0, "the view loads and serves the records");
    let before = crate::cluster::metric(&http, "strata_replica_store_reads_total");
    let started = Instant::now();
    let mut fetches = 0;
    while started.elapsed() < Duration::from_millis(1_500) {
        // Past the high watermark: this broker cannot know it is wrong
        // without asking the store.
        crate::bad_input::fetch(&mut raw, TOPIC, partition, 1_000);
        fetches += 1;
    }
    let elapsed = started.elapsed();
    let reads = crate::cluster::metric(&http, "strata_replica_store_reads_total") - before;
    let allowed = (elapsed.as_millis() / 250) as f64 + 2.0;
    assert!(
        reads >= 1.0 && reads <= allowed,
        "{reads} store reads for {fetches} fetches in {elapsed:?} (at most {allowed})"
    );
    eprintln!("{fetches} fetches past the view in {elapsed:?}: {reads} store reads");
}

/// A classic group member's OffsetCommit (v7) of `offset` for partition 0.
fn member_commit(
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offset: i64,
) -> kafka_protocol::messages::OffsetCommitRequest {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_member_id(StrBytes::from_string(member.into()))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ])
}

fn commit_code(response: &kafka_protocol::messages::OffsetCommitResponse) -> i16 {
    response.topics[0].partitions[0].error_code
}

/// A coordinator deposed while frozen (SIGSTOP past its lease) cannot
/// write a group's offsets once its successor has taken the group over:
/// commits already queued on its socket when it wakes, processed before it
/// learns it lost the group, are refused by the store (NOT_COORDINATOR),
/// and the successor's offset stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_coordinator_cannot_overwrite_its_successors_offsets() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{
        ApiKey, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
        OffsetCommitResponse, SyncGroupRequest, SyncGroupResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    const GROUP: &str = "deposed";
    const TOPIC: &str = "deposed-in";
    const QUEUED: usize = 20;
    let cluster = Cluster::new();
    let brokers = [cluster.start(1), cluster.start(2)];
    crate::cluster::sees_brokers(&brokers[0].addr, 2).await;
    brokers[0].create_topic(TOPIC, 1).await;
    // Both brokers name the same coordinator for the group.
    eventually(
        Duration::from_secs(20),
        || {
            let named: BTreeSet<Result<i32, i16>> = brokers
                .iter()
                .map(|b| crate::cluster::coordinator(b, GROUP, 0))
                .collect();
            named.len() == 1 && named.iter().all(Result::is_ok)
        },
        || "brokers disagree on the coordinator".into(),
    )
    .await;
    let old_node = crate::cluster::coordinator(&brokers[0], GROUP, 0).expect("a coordinator");
    let (old, successor) = if old_node == 1 {
        (&brokers[0], &brokers[1])
    } else {
        (&brokers[1], &brokers[0])
    };
    // One member joins through the coordinator (classic protocol, long
    // session so it outlives the freeze) and commits offset 5.
    let mut to_old = crate::bad_input::Raw::connect(old);
    let join: JoinGroupResponse = to_old.call(
        ApiKey::JoinGroup,
        3,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
            .with_session_timeout_ms(60_000)
            .with_rebalance_timeout_ms(60_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(bytes::Bytes::from_static(b"\0\0\0\0\0\0")),
            ]),
    );
    assert_eq!(join.error_code, 0, "join");
    let member = join.member_id.to_string();
    let generation = join.generation_id;
    let sync: SyncGroupResponse = to_old.call(
        ApiKey::SyncGroup,
        3,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
            .with_generation_id(generation)
            .with_member_id(join.member_id.clone())
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(join.member_id.clone())
                    .with_assignment(bytes::Bytes::from_static(b"\0\0\0\0\0\0\0\0")),
            ]),
    );
    assert_eq!(sync.error_code, 0, "sync");
    let committed: OffsetCommitResponse = to_old.call(
        ApiKey::OffsetCommit,
        7,
        &member_commit(GROUP, &member, generation, TOPIC, 5),
    );
    assert_eq!(commit_code(&committed), 0, "the coordinator's own commit");

    // The coordinator freezes past its lease; the other broker takes the
    // group over (its __consumer_offsets partition) and the member goes on
    // there: its heartbeat makes the successor store the group under its
    // epoch, then it commits offset 10.
    let pid = old.pid().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    let successor_node = if old_node == 1 { 2 } else { 1 };
    eventually(
        Duration::from_secs(20),
        || crate::cluster::coordinator(successor, GROUP, 0) == Ok(successor_node),
        || "the group's coordination did not move".into(),
    )
    .await;
    let mut to_successor = crate::bad_input::Raw::connect(successor);
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member.clone()));
    let epoch_of_group = || {
        psql(
            &cluster.metadata,
            &format!("SELECT coordinator_epoch FROM groups WHERE group_id = '{GROUP}'"),
        )[0][0]
            .parse::<i32>()
            .expect("an epoch")
    };
    let old_epoch = epoch_of_group();
    eventually(
        Duration::from_secs(20),
        || {
            let beat: HeartbeatResponse = to_successor.call(ApiKey::Heartbeat, 3, &heartbeat);
            beat.error_code == 0 && epoch_of_group() > old_epoch
        },
        || "the successor did not take the group over".into(),
    )
    .await;
    let committed: OffsetCommitResponse = to_successor.call(
        ApiKey::OffsetCommit,
        7,
        &member_commit(GROUP, &member, generation, TOPIC, 10),
    );
    assert_eq!(commit_code(&committed), 0, "the successor's commit");

    // Commits of offset 3 wait on the frozen coordinator's socket; it
    // wakes and handles them, at first still believing it coordinates.
    for _ in 0..QUEUED {
        to_old.send(
            ApiKey::OffsetCommit,
            7,
            &member_commit(GROUP, &member, generation, TOPIC, 3),
        );
    }
    signal("-CONT");
    let codes: Vec<i16> = (0..QUEUED)
        .map(|_| commit_code(&to_old.receive::<OffsetCommitResponse>(ApiKey::OffsetCommit, 7)))
        .collect();
    assert!(
        codes.iter().all(|code| *code == 16),
        "every commit of the deposed coordinator is refused with NOT_COORDINATOR: {codes:?}"
    );
    let stored = psql(
        &cluster.metadata,
        &format!("SELECT committed_offset FROM group_offsets WHERE group_id = '{GROUP}'"),
    );
    assert_eq!(
        stored,
        vec![vec!["10".to_string()]],
        "the successor's offset stands"
    );
}
