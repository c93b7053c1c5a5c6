//! Transactions in a cluster: a transaction's partitions are led by every
//! broker while one broker coordinates it, so markers reach the other
//! leaders (WriteTxnMarkers), leaders check transactional batches with the
//! coordinator, and the coordination moves with its `__consumer_offsets`
//! partition when its broker dies.

use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use crate::cluster::{Cluster, balanced_over, coordinator, leaders, load, sees_brokers};
use crate::common::TestBroker;
use crate::transactions::{
    KillOnDrop, T, copied_in_order, copier_input, java_classpath, last_progress, read_all, runtime,
    send, txn_producer, values,
};

/// The coordinator `broker` names for a transactional id, once it names
/// one (a broker learns of a new `__consumer_offsets` at its next
/// heartbeat).
fn coordinator_of(broker: &TestBroker, transactional_id: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match coordinator(broker, transactional_id, 1) {
            Ok(node) => return node,
            Err(code) => assert!(
                Instant::now() < deadline,
                "no coordinator for {transactional_id}: error {code}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// librdkafka's transactional producer (Produce below v12: leaders verify
/// each transaction's partitions with the coordinator) commits and aborts
/// transactions over six partitions led by three brokers: read_committed
/// consumers of any broker see exactly the committed records, in order.
#[test]
fn transactions_span_partitions_led_by_every_broker() {
    const PARTITIONS: i32 = 6;
    let cluster = Cluster::new();
    let brokers: Vec<TestBroker> = (0..3).map(|n| cluster.start(n)).collect();
    let rt = runtime();
    rt.block_on(sees_brokers(&brokers[0].addr, 3));
    rt.block_on(brokers[0].create_topic("spread", PARTITIONS));
    rt.block_on(balanced_over(
        &brokers[1].addr,
        "spread",
        &[0, 1, 2],
        PARTITIONS as usize,
    ));
    let producer = txn_producer(&brokers[2], "spread-txn", &[]);
    let coordinator_node = coordinator_of(&brokers[0], "spread-txn");
    let (led, _) = leaders(&brokers[0].addr, "spread").expect("metadata");
    assert!(
        led.values().any(|leader| *leader != coordinator_node),
        "some partitions are led by another broker than the coordinator {coordinator_node}: {led:?}"
    );
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS as usize];
    for round in 0..10 {
        producer.begin_transaction().expect("begin");
        for p in 0..PARTITIONS {
            let batch = values(&format!("r{round}-p{p}"), 5);
            send(&producer, "spread", p, &batch);
            if round % 4 != 3 {
                expected[p as usize].extend(batch);
            }
        }
        if round % 4 == 3 {
            producer.abort_transaction(T).expect("abort");
        } else {
            producer.commit_transaction(T).expect("commit");
        }
    }
    for p in 0..PARTITIONS {
        for broker in [&brokers[0], &brokers[2]] {
            assert_eq!(
                read_all(broker, "spread", p, "read_committed"),
                expected[p as usize],
                "partition {p}: committed records only, in order"
            );
        }
        assert_eq!(
            read_all(&brokers[1], "spread", p, "read_uncommitted").len(),
            50,
            "partition {p}: aborted records are in the log"
        );
    }
}

/// The Java client's exactly-once copier (tests/java/src/TxnCopier.java,
/// KIP-890 part 2: Produce v12 adds partitions through their leaders)
/// copies a topic spread over three brokers, and the broker coordinating
/// its transactional id is killed -9 midway: the coordination moves with
/// its `__consumer_offsets` partition, the new coordinator reads the id
/// from the store, and the output holds every input record exactly once,
/// in order per key, for read_committed consumers.
#[test]
fn an_exactly_once_copier_survives_its_coordinators_broker_dying() {
    const TOTAL: usize = 6_000;
    const PARTITIONS: i32 = 6;
    const KEYS: usize = 48;
    let classpath = java_classpath("TxnCopier");
    let cluster = Cluster::new();
    let mut brokers: Vec<TestBroker> = (0..3).map(|n| cluster.start(n)).collect();
    let rt = runtime();
    // Both topics spread over all three from their creation: leadership
    // is balanced over all partitions of all topics, not per topic, so a
    // topic created while one broker was not seen yet could stay uneven.
    rt.block_on(sees_brokers(&brokers[0].addr, 3));
    rt.block_on(brokers[0].create_topic("copy-in", PARTITIONS));
    rt.block_on(brokers[0].create_topic("copy-out", PARTITIONS));
    rt.block_on(balanced_over(
        &brokers[1].addr,
        "copy-out",
        &[0, 1, 2],
        PARTITIONS as usize,
    ));
    rt.block_on(copier_input(&brokers[0], TOTAL, PARTITIONS, KEYS));

    let bootstrap = brokers
        .iter()
        .map(|b| b.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let scratch = tempfile::tempdir().expect("tempdir");
    let progress = scratch.path().join("progress");
    let mut copier = KillOnDrop(
        std::process::Command::new("java")
            .args(["-Xmx512m", "-cp", &classpath, "TxnCopier"])
            .args([
                bootstrap.as_str(),
                "copy-in",
                "copy-out",
                "copiers",
                "the-copier",
                &TOTAL.to_string(),
                progress.to_str().expect("utf-8 path"),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the Java copier"),
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    while last_progress(&progress) < 1_500 {
        if let Some(status) = copier.0.try_wait().expect("copier status") {
            panic!("the copier exited early with {status}");
        }
        assert!(Instant::now() < deadline, "the copier stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let doomed = coordinator_of(&brokers[0], "the-copier");
    let (led, _) = leaders(&brokers[0].addr, "copy-out").expect("metadata");
    assert_eq!(load(&led).len(), 3, "every broker leads output partitions");
    brokers[doomed as usize].kill9();
    let survivor = (doomed as usize + 1) % 3;
    let status = loop {
        if let Some(status) = copier.0.try_wait().expect("copier status") {
            break status;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(120),
            "the copier did not finish after broker {doomed} died (progress {})",
            last_progress(&progress)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the copier finished: {status}");
    let moved = coordinator_of(&brokers[survivor], "the-copier");
    assert_ne!(moved, doomed, "the coordination moved to a live broker");

    let mut committed = Vec::new();
    for p in 0..PARTITIONS {
        committed.extend(copied_in_order(&brokers[survivor], p));
    }
    assert_eq!(
        committed.len(),
        TOTAL,
        "every input record once in the output"
    );
}

/// A transaction's offsets committed through the group's coordinator
/// while another broker coordinates the transaction (TxnOffsetCommit is
/// handed to it): a stable OffsetFetch at the group's coordinator answers
/// UNSTABLE_OFFSET_COMMIT until the transaction commits, then the offset.
#[test]
fn transactional_offsets_through_another_brokers_group_coordinator() {
    let cluster = Cluster::new();
    let brokers: Vec<TestBroker> = (0..3).map(|n| cluster.start(n)).collect();
    let rt = runtime();
    rt.block_on(brokers[0].create_topic("stable", 1));
    // Every broker knows the topic (from its next heartbeat on).
    for broker in &brokers {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !leaders(&broker.addr, "stable").is_ok_and(|(l, _)| l.len() == 1) {
            assert!(
                Instant::now() < deadline,
                "{} does not know the topic",
                broker.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let txn_node = coordinator_of(&brokers[0], "offsets");
    // Every broker names the same coordinators (each learns of the new
    // __consumer_offsets at its next heartbeat).
    for broker in &brokers {
        assert_eq!(coordinator_of(broker, "offsets"), txn_node);
    }
    // A group another broker coordinates.
    let (group, group_node) = (0..200)
        .map(|i| format!("stable-group-{i}"))
        .find_map(|g| {
            let node = coordinator_of(&brokers[0], &g);
            (node != txn_node).then_some((g, node))
        })
        .expect("a group coordinated by another broker");
    let mut at_txn = crate::bad_input::Raw::connect(&brokers[txn_node as usize]);
    let mut at_group = crate::bad_input::Raw::connect(&brokers[group_node as usize]);
    crate::transactions::stable_offsets_scenario(&mut at_txn, &mut at_group, &group);
}
