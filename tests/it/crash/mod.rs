//! Crash safety: `kill -9` under produce load, restart, and every
//! acknowledged record is there at the same offset, byte for byte; offsets are
//! dense and nothing unacknowledged is half visible. Also: orphan objects left
//! by a crash are swept, committed ones are kept. `tiering`: the same under
//! sealing, merging, compaction and garbage collection, on both stores.

mod tiering;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::Offset;
use rdkafka::producer::FutureRecord;

use crate::common::{TestBroker, committed, committed_beyond, eventually, files_under};

pub(super) const PARTITIONS: i32 = 4;

pub(super) fn payload(i: u64) -> String {
    format!("record-{i}-{}", "p".repeat((i % 200) as usize))
}

/// The key of record `i` in topic `crash`: its index.
pub(super) fn index_key(i: u64) -> String {
    i.to_string()
}

/// Produces record `i` (key `key_of(i)`, value `payload(i)`, partition
/// `i % PARTITIONS`) to `topic` as fast as librdkafka takes it until `stop`,
/// then waits for every delivery report (a record not acknowledged within
/// `message_timeout_ms` fails). Returns the acknowledged
/// `(partition, offset) -> index` and the next unused index.
pub(super) async fn produce_until(
    addr: String,
    (topic, key_of): (&'static str, fn(u64) -> String),
    message_timeout_ms: u64,
    first: u64,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<(i32, i64), u64>, u64) {
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", message_timeout_ms.to_string())
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let mut pending = FuturesUnordered::new();
    let mut acked = BTreeMap::new();
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..20 {
            let key = key_of(i);
            let value = payload(i);
            let record = FutureRecord::to(topic)
                .partition((i % PARTITIONS as u64) as i32)
                .key(&key)
                .payload(&value);
            match producer.send_result(record) {
                Ok(delivery) => pending.push(async move { (i, delivery.await) }),
                Err(_) => break, // local queue full: pace down
            }
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        while let Some(Some((index, result))) = futures::FutureExt::now_or_never(pending.next()) {
            if let Ok(Ok(delivery)) = result {
                record_ack(&mut acked, (delivery.partition, delivery.offset), index);
            }
        }
    }
    while let Some((index, result)) = pending.next().await {
        if let Ok(Ok(delivery)) = result {
            record_ack(&mut acked, (delivery.partition, delivery.offset), index);
        }
    }
    (acked, i)
}

/// Two different records acknowledged at one offset is a lost write.
pub(super) fn record_ack(acked: &mut BTreeMap<(i32, i64), u64>, position: (i32, i64), index: u64) {
    if let Some(earlier) = acked.insert(position, index) {
        panic!("records {earlier} and {index} were both acknowledged at {position:?}");
    }
}

/// Checks the whole topic against what was acknowledged; returns the
/// number of records stored.
pub(super) fn verify(broker: &TestBroker, acked: &BTreeMap<(i32, i64), u64>) -> usize {
    let mut stored = 0;
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for partition in 0..PARTITIONS {
        let records = broker.consume_all("crash", partition, Offset::Beginning);
        for (position, record) in records.iter().enumerate() {
            assert_eq!(
                record.offset, position as i64,
                "offsets of partition {partition} are dense"
            );
            let key = String::from_utf8(record.key.clone().expect("every record has a key"))
                .expect("utf-8 key");
            let index: u64 = key.parse().expect("numeric key");
            assert_eq!(
                (index % PARTITIONS as u64) as i32,
                partition,
                "record {index} in the right partition"
            );
            assert_eq!(
                record.value.as_deref(),
                Some(payload(index).as_bytes()),
                "record {index} is whole, byte for byte"
            );
            if !seen.insert(index) {
                duplicates += 1;
            }
        }
        for ((p, offset), index) in acked.range((partition, i64::MIN)..(partition + 1, i64::MIN)) {
            let record = records.get(*offset as usize).unwrap_or_else(|| {
                panic!("acknowledged record {index} at {p}/{offset} is missing")
            });
            assert_eq!(
                record.key.as_deref(),
                Some(index.to_string().as_bytes()),
                "acked {p}/{offset}"
            );
        }
        stored += records.len();
    }
    // Unacknowledged resends may duplicate; acknowledged records never move.
    eprintln!(
        "verified {stored} stored records, {} acknowledged, {duplicates} duplicates",
        acked.len()
    );
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_record() {
    let mut broker = TestBroker::start(&[]);
    broker.create_topic("crash", PARTITIONS).await;
    let mut all_acked = BTreeMap::new();
    let mut next = 0u64;
    for round in 0..3u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let producing = produce_until(
            broker.addr.clone(),
            ("crash", index_key),
            3000,
            next,
            Arc::clone(&stop),
        );
        let kill = async {
            tokio::time::sleep(Duration::from_millis(1200 + 400 * round)).await;
            // SIGKILL while the producer is still sending.
            broker.kill9();
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, Ordering::Relaxed);
        };
        let ((acked, last), ()) = tokio::join!(producing, kill);
        assert!(
            !acked.is_empty(),
            "round {round}: some records were acknowledged before the kill"
        );
        for (position, index) in acked {
            assert!(
                all_acked.insert(position, index).is_none(),
                "offset {position:?} acknowledged twice"
            );
        }
        next = last;
        broker.restart();
        let stored = verify(&broker, &all_acked);
        assert!(stored >= all_acked.len());
    }
}

/// The object store fails for a while under load, with several flushes
/// uploading at once (the default): every flush in flight fails, offsets
/// restart from what was committed, and once the store is back the broker
/// takes writes again. Nothing acknowledged is lost or moved, offsets stay
/// dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_outage_under_load_loses_no_acknowledged_record() {
    let broker = TestBroker::start(&["--wal-flush-interval-ms", "2"]);
    broker.create_topic("crash", PARTITIONS).await;
    let wal = broker.data_dir.join("objects").join("wal");
    let saved = broker.data_dir.join("objects").join("wal.saved");
    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_until(
        broker.addr.clone(),
        ("crash", index_key),
        3000,
        0,
        Arc::clone(&stop),
    );
    let addr = broker.addr.clone();
    let outage = async {
        // Load is getting through before the store goes away.
        committed_beyond(&addr, "crash", PARTITIONS, 0).await;
        // A file where the objects' directory was: every PUT fails, uploads
        // in flight included. Held longer than the retry layer's whole budget
        // (10 attempts, backoff capped at 2 s: at most ~6.5 s), so flushes
        // really fail; the duration is the point here, not a wait.
        std::fs::rename(&wal, &saved).expect("move the objects away");
        std::fs::write(&wal, b"not a directory").expect("block the path");
        tokio::time::sleep(Duration::from_millis(7500)).await;
        std::fs::remove_file(&wal).expect("unblock");
        std::fs::rename(&saved, &wal).expect("move the objects back");
        // The same producer's writes are committed again.
        let at_restore = committed(&addr, "crash", PARTITIONS).await;
        committed_beyond(&addr, "crash", PARTITIONS, at_restore).await;
        stop.store(true, Ordering::Relaxed);
    };
    let ((acked, _), ()) = tokio::join!(producing, outage);
    assert!(!acked.is_empty(), "records were acknowledged");
    let stored = verify(&broker, &acked);
    assert!(stored >= acked.len());
    let log = broker.log(1);
    assert!(
        log.contains("flush failed"),
        "the outage made flushes fail:\n{log}"
    );
    // Writes work again after the outage.
    let producer = broker.producer(&[]);
    let record: FutureRecord<'_, str, str> = FutureRecord::to("crash")
        .partition(0)
        .key("after")
        .payload("after");
    let offset = producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("a write after the outage is acknowledged")
        .offset;
    let stored_p0 = broker.consume_all("crash", 0, Offset::Beginning);
    assert_eq!(
        stored_p0.last().map(|r| r.offset),
        Some(offset),
        "it lands right after what was stored, without a gap"
    );
}

/// Garbage collection deletes only what this store's writers announced:
/// an object with an upload intent of an earlier (crashed) process and no
/// commit is deleted; an object nobody announced (another broker's, say) is
/// kept; committed objects are kept until nothing references them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_announced_orphans_only_and_keeps_committed_objects() {
    let mut broker = TestBroker::start(&[
        "--gc-sweep-interval-secs",
        "1",
        "--gc-delete-grace-secs",
        "0",
        "--seal-interval-ms",
        "3600000",
    ]);
    broker.create_topic("gc", 1).await;
    let producer = broker.producer(&[]);
    for i in 0..50 {
        let value = format!("v{i}");
        let record: FutureRecord<'_, (), String> = FutureRecord::to("gc").payload(&value);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered");
    }
    broker.kill9();
    let committed_before = files_under(&broker.objects_dir());
    assert!(!committed_before.is_empty());
    // What a crash between an intent, its PUT and its commit leaves behind:
    // an intent of an earlier process of this node (0), and its object.
    let orphan_key = "wal/ab/0000000000001-00000000deadbeef.wal";
    let orphan = broker.objects_dir().join(orphan_key);
    std::fs::create_dir_all(orphan.parent().expect("parent")).expect("mkdir");
    std::fs::write(&orphan, b"uploaded but never committed").expect("write orphan");
    broker.metadata_rows(&format!(
        "INSERT INTO object_intents (object_key, owner, created_ms) VALUES ('{orphan_key}', '0:dead', 0)"
    ));
    // An object no writer of this store announced.
    let foreign = broker
        .objects_dir()
        .join("wal/cd/0000000000002-00000000cafef00d.wal");
    std::fs::create_dir_all(foreign.parent().expect("parent")).expect("mkdir");
    std::fs::write(&foreign, b"another broker's object").expect("write foreign");

    broker.restart();
    eventually(
        Duration::from_secs(20),
        || !orphan.exists(),
        || format!("orphan not swept:\n{}", broker.log(2)),
    )
    .await;
    assert!(
        foreign.exists(),
        "an object nobody announced is never deleted"
    );
    for path in &committed_before {
        assert!(
            path.exists(),
            "committed object {} was kept",
            path.display()
        );
    }
    let records = broker.consume_all("gc", 0, Offset::Beginning);
    assert_eq!(records.len(), 50);
    assert_eq!(records[49].value.as_deref(), Some(&b"v49"[..]));

    // Deleting the topic retires its objects; the next sweeps delete them.
    broker
        .admin()
        .delete_topics(&["gc"], &rdkafka::admin::AdminOptions::new())
        .await
        .expect("delete");
    eventually(
        Duration::from_secs(20),
        || !committed_before.iter().any(|p| p.exists()),
        || "objects of the deleted topic not swept".into(),
    )
    .await;
    assert!(foreign.exists(), "still kept");
}

/// SIGTERM while a producer is sending: the broker stops reading requests,
/// flushes what it admitted, writes the answers it owes, and exits with
/// success; every acknowledged record is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_exits_cleanly() {
    let mut broker = TestBroker::start(&[]);
    broker.create_topic("crash", PARTITIONS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(produce_until(
        broker.addr.clone(),
        ("crash", index_key),
        3000,
        0,
        Arc::clone(&stop),
    ));
    committed_beyond(&broker.addr, "crash", PARTITIONS, 2_000).await;
    let status = tokio::task::block_in_place(|| broker.terminate());
    stop.store(true, Ordering::Relaxed);
    let (acked, _) = producing.await.expect("producer");
    assert!(status.success(), "SIGTERM exits with success, got {status}");
    let log = broker.log(1);
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("still reading") && !log.contains("still pending"),
        "the drain finished in time:\n{log}"
    );
    assert!(!acked.is_empty());
    broker.restart();
    let stored = verify(&broker, &acked);
    assert!(stored >= acked.len());
}
