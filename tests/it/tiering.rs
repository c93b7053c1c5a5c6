//! Tiered storage: write-ahead objects sealed into per-partition segments
//! and shared objects, with every record readable from its original offset,
//! before and after a restart, and the replaced objects collected.

use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::common::{TestBroker, eventually, files_under};

const BASE_TS: i64 = 1_700_000_000_000;

/// Chunk rows per partition of `topic`, from the metadata store.
fn chunk_rows(broker: &TestBroker, topic: &str) -> Vec<(i32, i64)> {
    let db = rusqlite::Connection::open(broker.data_dir.join("metadata.db")).expect("open db");
    let mut stmt = db
        .prepare(
            "SELECT c.partition, COUNT(*) FROM chunks c JOIN topics t ON t.topic_id = c.topic_id
             WHERE t.name = ?1 GROUP BY c.partition ORDER BY c.partition",
        )
        .expect("prepare");
    stmt.query_map([topic], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

fn objects_under(broker: &TestBroker, prefix: &str) -> usize {
    let dir = broker.objects_dir().join(prefix);
    if !dir.exists() {
        return 0;
    }
    files_under(&dir).len()
}

async fn produce(broker: &TestBroker, partition: i32, from: i64, count: i64, value_len: usize) {
    let producer = broker.producer(&[("linger.ms", "0")]);
    for i in from..from + count {
        let key = format!("k{partition}-{i}");
        let value = format!("{partition}:{i}:{}", "x".repeat(value_len));
        let record = FutureRecord::to("tier")
            .partition(partition)
            .key(&key)
            .payload(&value)
            .timestamp(BASE_TS + i * 1_000);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered");
    }
}

/// Every record of a partition, in order, exactly as produced.
fn check_partition(broker: &TestBroker, partition: i32, count: i64) {
    let records = broker.consume_all("tier", partition, Offset::Beginning);
    assert_eq!(records.len() as i64, count, "partition {partition}");
    for (i, r) in records.iter().enumerate() {
        let i = i as i64;
        assert_eq!(r.offset, i, "partition {partition}: offsets unchanged");
        assert_eq!(
            r.key.as_deref(),
            Some(format!("k{partition}-{i}").as_bytes())
        );
        let value = String::from_utf8(r.value.clone().expect("value")).expect("utf8");
        assert!(value.starts_with(&format!("{partition}:{i}:")), "{value}");
        assert_eq!(r.timestamp, Some(BASE_TS + i * 1_000));
    }
}

fn offset_for_time(broker: &TestBroker, partition: i32, timestamp: i64) -> Offset {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("consumer");
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset("tier", partition, Offset::Offset(timestamp))
        .expect("add");
    let found = consumer
        .offsets_for_times(query, Duration::from_secs(10))
        .expect("offsets for times");
    found.elements()[0].offset()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_bounds_rows_and_objects_and_keeps_every_record() {
    let mut broker = TestBroker::start(&[
        "--seal-interval-ms",
        "300",
        "--seal-own-segment-bytes",
        "100000",
        "--seal-segment-target-bytes",
        "200000",
        "--gc-sweep-interval-secs",
        "1",
        "--gc-delete-grace-secs",
        "1",
    ]);
    broker.create_topic("tier", 4).await;
    // Partition 0 gets enough data for its own segments (~600 KB, one
    // record per request, so one chunk per flush); the others a few
    // records each, packed into shared objects.
    let heavy = 600;
    let (p0, p1, p2) = tokio::join!(
        produce(&broker, 0, 0, heavy, 1_000),
        produce(&broker, 1, 0, 30, 10),
        produce(&broker, 2, 0, 30, 10)
    );
    let _ = (p0, p1, p2);

    // Sealed, and the write-ahead objects collected. Partition 0's ~600 KB:
    // segments of at least the 200 KB target, plus at most 3 smaller ones
    // per size class.
    eventually(
        Duration::from_secs(30),
        || {
            let rows = chunk_rows(&broker, "tier");
            objects_under(&broker, "wal") == 0
                && !rows.is_empty()
                && rows.iter().all(|(_, n)| *n <= 8)
        },
        || {
            format!(
                "not sealed: rows {:?}, {} write-ahead objects left\n{}",
                chunk_rows(&broker, "tier"),
                objects_under(&broker, "wal"),
                broker.log(1)
            )
        },
    )
    .await;
    // No cycle alone had 100 KB of partition 0: its segments are merges.
    assert!(
        objects_under(&broker, "seg") >= 1,
        "partition 0 has merged segments"
    );
    assert!(
        objects_under(&broker, "shr") >= 1,
        "small partitions share objects"
    );

    check_partition(&broker, 0, heavy);
    check_partition(&broker, 1, 30);
    check_partition(&broker, 2, 30);
    // Reads from the middle of a segment (through its sparse index), and
    // by timestamp.
    let middle = broker.consume_all("tier", 0, Offset::Offset(457));
    assert_eq!(middle.first().map(|r| r.offset), Some(457));
    assert_eq!(middle.len() as i64, heavy - 457);
    assert_eq!(
        offset_for_time(&broker, 0, BASE_TS + 321_500),
        Offset::Offset(322)
    );
    assert_eq!(
        offset_for_time(&broker, 1, BASE_TS + 7_000),
        Offset::Offset(7)
    );

    // The same after a crash and restart; then new writes are sealed too.
    broker.kill9();
    broker.restart();
    check_partition(&broker, 0, heavy);
    check_partition(&broker, 2, 30);
    produce(&broker, 3, 0, 40, 10).await;
    produce(&broker, 1, 30, 20, 10).await;
    eventually(
        Duration::from_secs(30),
        || objects_under(&broker, "wal") == 0,
        || "new writes not sealed".into(),
    )
    .await;
    check_partition(&broker, 1, 50);
    check_partition(&broker, 3, 40);
    assert_eq!(
        offset_for_time(&broker, 1, BASE_TS + 35_000),
        Offset::Offset(35)
    );
}
