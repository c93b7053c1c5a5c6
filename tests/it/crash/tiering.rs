//! `kill -9` while the broker seals, merges, compacts and collects garbage,
//! on the embedded store and on S3 (MinIO) over HTTP: no acknowledged record
//! is lost or moved, nothing half-written is visible, no chunk row points at
//! a missing object, and nothing is left in the store for good.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};

use super::{PARTITIONS, index_key, payload, produce_until, record_ack, verify};
use crate::common::{TestBroker, committed, committed_beyond, eventually};
use crate::store::Store;

/// The compacted topic of the tiering crash test, and its keys: record `i`
/// updates key `i % KEYS` (which stays in one partition, `i % PARTITIONS`).
const COMPACTED: &str = "crash-compacted";
const KEYS: u64 = 64;

fn update_key(i: u64) -> String {
    format!("key{}", i % KEYS)
}

/// Every record of the compacted topic is whole and where it belongs; every
/// acknowledged record is there at its offset, unless compaction replaced it
/// with a later record of its key, which is then there (acknowledged or not:
/// a stored record whose acknowledgement the crash cut off supersedes too).
/// Returns the number of records stored.
fn verify_compacted(broker: &TestBroker, acked: &BTreeMap<(i32, i64), u64>) -> usize {
    let mut stored = 0;
    for partition in 0..PARTITIONS {
        let records = broker.consume_all(COMPACTED, partition, Offset::Beginning);
        // Offset -> index, and each key's last offset in the log.
        let mut present = BTreeMap::new();
        let mut last_of_key: BTreeMap<String, i64> = BTreeMap::new();
        for record in &records {
            let value = String::from_utf8(record.value.clone().expect("every record has a value"))
                .expect("utf-8 value");
            let index: u64 = value
                .strip_prefix("record-")
                .and_then(|v| v.split('-').next())
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("{COMPACTED} {partition}/{}: {value}", record.offset));
            assert_eq!(
                value,
                payload(index),
                "{COMPACTED}: record {index} is whole, byte for byte"
            );
            let key = update_key(index);
            assert_eq!(
                record.key.as_deref(),
                Some(key.as_bytes()),
                "record {index}"
            );
            assert_eq!(
                (index % PARTITIONS as u64) as i32,
                partition,
                "record {index} in the right partition"
            );
            if let Some((previous, _)) = present.last_key_value() {
                assert!(
                    record.offset > *previous,
                    "{COMPACTED} {partition}: offsets increase ({previous}, then {})",
                    record.offset
                );
            }
            present.insert(record.offset, index);
            last_of_key.insert(key, record.offset);
        }
        for ((p, offset), index) in acked.range((partition, i64::MIN)..(partition + 1, i64::MIN)) {
            match present.get(offset) {
                Some(found) => assert_eq!(
                    found, index,
                    "{COMPACTED} {p}/{offset}: record {index} was acknowledged there, {found} is there"
                ),
                None => {
                    let key = update_key(*index);
                    let last = last_of_key.get(&key).copied();
                    assert!(
                        last.is_some_and(|last| last > *offset),
                        "{COMPACTED}: acknowledged record {index} at {p}/{offset} is missing and no \
                         later record of {key} replaces it (the last one is at {last:?})"
                    );
                }
            }
        }
        stored += records.len();
    }
    stored
}

/// Every object some chunk row references.
fn referenced_objects(broker: &TestBroker) -> BTreeSet<String> {
    broker
        .metadata_rows("SELECT DISTINCT object_key FROM chunks")
        .into_iter()
        .map(|mut r| r.swap_remove(0))
        .collect()
}

/// What the metadata store says about `key` (for failure messages).
fn describe_object(broker: &TestBroker, key: &str) -> String {
    let intent = broker.metadata_rows(&format!(
        "SELECT owner, created_ms, doomed FROM object_intents WHERE object_key = '{key}'"
    ));
    let object = broker.metadata_rows(&format!(
        "SELECT retired_ms FROM objects WHERE object_key = '{key}'"
    ));
    format!(
        "{key} (intent (owner, created_ms, doomed): {intent:?}, objects.retired_ms: {object:?})"
    )
}

/// With the broker stopped: no chunk row references an object that is not
/// in the store.
fn no_chunk_references_a_missing_object(store: &Store, broker: &TestBroker, when: &str) {
    let keys = store.keys(broker);
    let missing: Vec<String> = referenced_objects(broker)
        .into_iter()
        .filter(|key| !keys.contains(key))
        .collect();
    assert!(
        missing.is_empty(),
        "{when}: chunk rows reference objects missing from the store: {missing:?}"
    );
}

/// Waits until every object in the store is referenced by a chunk row: what
/// a crash left (orphans of earlier processes) and what sealing, merging and
/// compaction replaced is deleted once its grace has passed; nothing leaks.
async fn no_object_leaked(store: &Store, broker: &TestBroker) {
    let unreferenced = || -> Vec<String> {
        let referenced = referenced_objects(broker);
        store
            .keys(broker)
            .into_iter()
            .filter(|key| !referenced.contains(key))
            .collect()
    };
    eventually(
        Duration::from_secs(30),
        || unreferenced().is_empty(),
        || {
            let leaked: Vec<String> = unreferenced()
                .iter()
                .map(|key| describe_object(broker, key))
                .collect();
            format!(
                "objects no chunk references are still in the store after every grace: {leaked:#?}"
            )
        },
    )
    .await;
}

/// Broker work, by the log line each piece ends with (debug level, which the
/// tests run at); a kill lands in whatever runs after the last one.
const TIER_WORK: [(&str, &str); 5] = [
    ("sealed write-ahead objects", "sealing"),
    ("merged sealed chunks", "merging"),
    ("compacted", "compaction"),
    ("object sweep done", "gc sweep"),
    ("deleting orphan object", "orphan deletion"),
];

/// kill -9, at varied moments, a broker under produce load that seals,
/// merges, compacts and collects garbage all the time. After each crash:
/// no chunk row references a missing object; after each restart every
/// acknowledged record is where it was acknowledged (the normal topic:
/// dense offsets, exact bytes; the compacted topic: each acknowledged record
/// or a later one of its key), nothing half-written is visible. At the end,
/// nothing is left in the store that no chunk references.
async fn kill_9_during_tiering(store: Store) {
    // Sealing every 200 ms, segments of their own from 16 kB and merges up
    // to 300 kB, so a few seconds of load make several cycles and merges
    // (S3 is slower than the embedded store: fewer cycles there); a
    // compaction pass every second (more often leaves S3 few seal cycles);
    // garbage collection every second with 1-2 s graces.
    let mut broker = store.start_broker(&[
        "--seal-interval-ms",
        "200",
        "--seal-own-segment-bytes",
        "16000",
        "--seal-segment-target-bytes",
        "300000",
        "--cleaner-backoff-ms",
        "1000",
        "--retention-check-interval-ms",
        "300",
        "--gc-sweep-interval-secs",
        "1",
        "--gc-delete-grace-secs",
        "1",
        "--gc-orphan-grace-secs",
        "2",
    ]);
    broker.create_topic("crash", PARTITIONS).await;
    let topic = NewTopic::new(COMPACTED, PARTITIONS, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("min.cleanable.dirty.ratio", "0.01");
    for result in broker
        .admin()
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create topics")
    {
        result.expect("compacted topic created");
    }

    let (mut acked_normal, mut acked_compacted) = (BTreeMap::new(), BTreeMap::new());
    // Indexes of the compacted topic's records start far from the normal
    // topic's, so a record cannot be mistaken for the other.
    let (mut next, mut next_compacted) = (0u64, 1_000_000_000u64);
    let mut work_seen = BTreeSet::new();
    // Kills at varied moments: some soon after a start (startup GC sweep,
    // the first cycles over a backlog), some after seconds of load.
    for (round, load_ms) in [1500u64, 400, 2300, 900, 3100, 4000]
        .into_iter()
        .enumerate()
    {
        let stop = Arc::new(AtomicBool::new(false));
        let normal = produce_until(
            broker.addr.clone(),
            ("crash", index_key),
            1000,
            next,
            Arc::clone(&stop),
        );
        let compacted = produce_until(
            broker.addr.clone(),
            (COMPACTED, update_key),
            1000,
            next_compacted,
            Arc::clone(&stop),
        );
        let addr = broker.addr.clone();
        let floors = (
            committed(&addr, "crash", PARTITIONS).await,
            committed(&addr, COMPACTED, PARTITIONS).await,
        );
        let kill = async {
            // The load runs for `load_ms` once this start took writes.
            committed_beyond(&addr, "crash", PARTITIONS, floors.0).await;
            committed_beyond(&addr, COMPACTED, PARTITIONS, floors.1).await;
            tokio::time::sleep(Duration::from_millis(load_ms)).await;
            broker.kill9();
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, Ordering::Relaxed);
        };
        let ((acked, last), (acked_c, last_c), ()) = tokio::join!(normal, compacted, kill);
        assert!(
            !acked.is_empty() && !acked_c.is_empty(),
            "round {round}: records were acknowledged before the kill"
        );
        for (position, index) in acked {
            record_ack(&mut acked_normal, position, index);
        }
        for (position, index) in acked_c {
            record_ack(&mut acked_compacted, position, index);
        }
        (next, next_compacted) = (last, last_c);

        let log = broker.log(round + 1);
        let mut done: Vec<String> = Vec::new();
        for (line, work) in TIER_WORK {
            let count = log.lines().filter(|l| l.contains(line)).count();
            if count > 0 {
                work_seen.insert(work);
                done.push(format!("{work} {count}"));
            }
        }
        let last_work = log
            .lines()
            .rev()
            .find_map(|l| TIER_WORK.iter().find(|(line, _)| l.contains(line)))
            .map_or("none", |(_, work)| *work);
        eprintln!(
            "round {round} on {}: kill -9 after {load_ms} ms of load; log lines: {}; the last one before the kill: {last_work}",
            store.name(),
            done.join(", ")
        );

        no_chunk_references_a_missing_object(&store, &broker, &format!("after kill {round}"));
        broker.restart();
        let stored = verify(&broker, &acked_normal);
        assert!(stored >= acked_normal.len());
        verify_compacted(&broker, &acked_compacted);
    }
    for (_, work) in TIER_WORK {
        assert!(
            work_seen.contains(work),
            "no {work} happened in the killed runs: the kills did not exercise it (seen: {work_seen:?})"
        );
    }

    // Quiet now: everything is sealed, merged and compacted; what the
    // crashes left and what was replaced is collected.
    no_object_leaked(&store, &broker).await;
    verify(&broker, &acked_normal);
    let stored = verify_compacted(&broker, &acked_compacted);
    let high_watermarks: i64 = (0..PARTITIONS)
        .map(|p| broker.high_watermark(COMPACTED, p))
        .sum();
    eprintln!(
        "{}: {} acknowledged records in the normal topic, {} in the compacted one ({stored} kept of {high_watermarks})",
        store.name(),
        acked_normal.len(),
        acked_compacted.len()
    );
    assert!(
        (stored as i64) < high_watermarks,
        "compaction removed records ({stored} kept of {high_watermarks})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_sealing_compaction_and_gc_loses_nothing() {
    kill_9_during_tiering(Store::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_sealing_compaction_and_gc_loses_nothing_on_s3() {
    kill_9_during_tiering(Store::s3()).await;
}
