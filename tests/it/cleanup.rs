//! Retention, DeleteRecords and log compaction, as a Kafka user sees them
//! (earliest offsets, what a consumer from the beginning reads) and as the
//! operator sees them (chunk rows and objects actually removed). Each test
//! runs on the embedded store and on S3 (MinIO) over HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::common::{Consumed, TestBroker, eventually};
use crate::store::Store;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn start_broker(store: &Store) -> TestBroker {
    store.start_broker(&[
        "--seal-interval-ms",
        "200",
        "--retention-check-interval-ms",
        "300",
        "--cleaner-backoff-ms",
        "300",
        "--gc-sweep-interval-secs",
        "1",
        "--gc-delete-grace-secs",
        "1",
    ])
}

async fn create(broker: &TestBroker, name: &str, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    for result in broker
        .admin()
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create topics")
    {
        result.expect("topic created");
    }
}

/// `(base offset, last offset, object key)` of each chunk row of partition 0.
fn chunks(broker: &TestBroker, topic: &str) -> Vec<(i64, i64, String)> {
    broker
        .metadata_rows(&format!(
            "SELECT c.base_offset, c.last_offset, c.object_key FROM chunks c
             JOIN topics t ON t.topic_id = c.topic_id
             WHERE t.name = '{topic}' AND c.partition = 0 ORDER BY c.base_offset"
        ))
        .into_iter()
        .map(|r| {
            (
                r[0].parse().expect("base"),
                r[1].parse().expect("last"),
                r[2].clone(),
            )
        })
        .collect()
}

/// Produces `(key, value, timestamp)` records in order, all at once (so
/// they travel in one batch and land in one chunk).
async fn produce(broker: &TestBroker, topic: &str, records: &[(String, Option<String>, i64)]) {
    let producer = broker.producer(&[("linger.ms", "100")]);
    let sends = records.iter().map(|(key, value, timestamp)| {
        let mut record = FutureRecord::to(topic)
            .partition(0)
            .key(key)
            .timestamp(*timestamp);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer.send(record, Duration::from_secs(10))
    });
    for delivered in futures::future::join_all(sends).await {
        delivered.expect("delivered");
    }
}

fn values(n: std::ops::Range<i64>, timestamp: i64) -> Vec<(String, Option<String>, i64)> {
    n.map(|i| {
        (
            format!("k{i}"),
            Some(format!("v{i}:{}", "x".repeat(1_000))),
            timestamp,
        )
    })
    .collect()
}

/// Waits until every write-ahead object of the store is sealed and gone.
async fn sealed(store: &Store, broker: &TestBroker) {
    eventually(
        Duration::from_secs(30),
        || store.count(broker, "wal/") == 0,
        || format!("write-ahead objects left: {:?}", store.keys(broker)),
    )
    .await;
}

fn low_watermark(broker: &TestBroker, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("consumer");
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks")
        .0
}

/// Only objects some chunk references remain (after the delete grace).
async fn no_unreferenced_objects(store: &Store, broker: &TestBroker) {
    let referenced = || -> BTreeSet<String> {
        broker
            .metadata_rows("SELECT DISTINCT object_key FROM chunks")
            .into_iter()
            .map(|mut r| r.swap_remove(0))
            .collect()
    };
    eventually(
        Duration::from_secs(30),
        || store.keys(broker) == referenced(),
        || {
            format!(
                "objects {:?} vs referenced {:?}",
                store.keys(broker),
                referenced()
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_and_by_size_removes_whole_old_chunks_and_their_objects() {
    retention_by_time_and_by_size(Store::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_and_by_size_removes_whole_old_chunks_and_their_objects_on_s3() {
    retention_by_time_and_by_size(Store::s3()).await;
}

async fn retention_by_time_and_by_size(store: Store) {
    let broker = start_broker(&store);
    let now = now_ms();
    // By time: 30 records two hours old, sealed into their own chunk, then
    // 30 recent ones.
    create(&broker, "by-time", &[("retention.ms", "3600000")]).await;
    produce(&broker, "by-time", &values(0..30, now - 7_200_000)).await;
    // On a LogAppendTime topic what counts is the broker's time, not the
    // producer's: these records are new.
    let append_time = [
        ("retention.ms", "3600000"),
        ("message.timestamp.type", "LogAppendTime"),
    ];
    create(&broker, "append-time", &append_time).await;
    produce(&broker, "append-time", &values(0..30, now - 7_200_000)).await;
    sealed(&store, &broker).await;
    produce(&broker, "by-time", &values(30..60, now)).await;
    // By size: three sealed rounds of ~31 KB; no limit at first.
    create(&broker, "by-size", &[]).await;
    for round in 0..3 {
        produce(
            &broker,
            "by-size",
            &values(round * 30..round * 30 + 30, now),
        )
        .await;
        sealed(&store, &broker).await;
    }
    assert_eq!(low_watermark(&broker, "by-size"), 0);
    assert_eq!(chunks(&broker, "by-size").len(), 3, "one chunk per round");

    eventually(
        Duration::from_secs(30),
        || low_watermark(&broker, "by-time") == 30,
        || format!("by-time chunks {:?}", chunks(&broker, "by-time")),
    )
    .await;
    let left = broker.consume_all("by-time", 0, Offset::Beginning);
    assert_eq!(
        left.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (30..60).collect::<Vec<_>>()
    );
    assert!(
        chunks(&broker, "by-time")
            .iter()
            .all(|(base, ..)| *base >= 30)
    );
    assert_eq!(low_watermark(&broker, "append-time"), 0);
    assert_eq!(
        broker
            .consume_all("append-time", 0, Offset::Beginning)
            .len(),
        30
    );

    // retention.bytes set on the live topic: keep at least 40,000 bytes of
    // ~93,000 -> the oldest round goes, the other two stay.
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("by-size")).set("retention.bytes", "40000");
    for result in broker
        .admin()
        .alter_configs(&[alter], &AdminOptions::new())
        .await
        .expect("alter configs")
    {
        result.expect("altered");
    }
    eventually(
        Duration::from_secs(30),
        || low_watermark(&broker, "by-size") == 30,
        || format!("by-size chunks {:?}", chunks(&broker, "by-size")),
    )
    .await;
    assert_eq!(chunks(&broker, "by-size").len(), 2);
    let left = broker.consume_all("by-size", 0, Offset::Beginning);
    assert_eq!(left.first().map(|r| r.offset), Some(30));
    assert_eq!(left.len(), 60);
    // The removed chunks' objects are deleted; nothing else is.
    no_unreferenced_objects(&store, &broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_removes_the_chunks_below_the_new_log_start() {
    delete_records_below_the_log_start(Store::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_removes_the_chunks_below_the_new_log_start_on_s3() {
    delete_records_below_the_log_start(Store::s3()).await;
}

async fn delete_records_below_the_log_start(store: Store) {
    let mut broker = start_broker(&store);
    let now = now_ms();
    create(&broker, "trim", &[]).await;
    for round in 0..3 {
        produce(&broker, "trim", &values(round * 20..round * 20 + 20, now)).await;
        sealed(&store, &broker).await;
    }
    assert_eq!(chunks(&broker, "trim").len(), 3);
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("trim", 0, Offset::Offset(45))
        .expect("offset");
    let result = broker
        .admin()
        .delete_records(&offsets, &AdminOptions::new())
        .await
        .expect("delete records");
    assert_eq!(result.elements()[0].offset(), Offset::Offset(45));
    // At once: the two chunks wholly below 45 are gone from the store.
    assert_eq!(
        chunks(&broker, "trim")
            .iter()
            .map(|(base, last, _)| (*base, *last))
            .collect::<Vec<_>>(),
        vec![(40, 59)]
    );
    no_unreferenced_objects(&store, &broker).await;
    let left = broker.consume_all("trim", 0, Offset::Beginning);
    assert_eq!(left.first().map(|r| r.offset), Some(45));
    assert_eq!(left.len(), 15);
    // And after a restart.
    broker.kill9();
    broker.restart();
    assert_eq!(low_watermark(&broker, "trim"), 45);
    assert_eq!(broker.consume_all("trim", 0, Offset::Beginning).len(), 15);
}

/// Ten rounds of updates to 20 keys; in the last round keys 0..5 get a
/// tombstone. Returns each key's last `(offset, value)`.
async fn produce_updates(
    broker: &TestBroker,
    topic: &str,
    from_round: i64,
    rounds: i64,
    first_offset: i64,
) -> BTreeMap<String, (i64, Option<String>)> {
    let mut latest = BTreeMap::new();
    let mut records = Vec::new();
    let mut offset = first_offset;
    for round in from_round..from_round + rounds {
        for key in 0..20 {
            let tombstone = round == from_round + rounds - 1 && key < 5;
            let value = (!tombstone).then(|| format!("key{key}-round{round}"));
            latest.insert(format!("key{key}"), (offset, value.clone()));
            records.push((format!("key{key}"), value, now_ms()));
            offset += 1;
        }
    }
    produce(broker, topic, &records).await;
    latest
}

fn as_map(records: &[Consumed]) -> BTreeMap<String, (i64, Option<String>)> {
    records
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().expect("key")).expect("utf8"),
                (
                    r.offset,
                    r.value.clone().map(|v| String::from_utf8(v).expect("utf8")),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
    compaction_keeps_the_latest_per_key(Store::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_record_per_key_at_its_offset_on_s3() {
    compaction_keeps_the_latest_per_key(Store::s3()).await;
}

async fn compaction_keeps_the_latest_per_key(store: Store) {
    let mut broker = start_broker(&store);
    // Two topics alike but for how long tombstones are kept.
    let compacted = [
        ("cleanup.policy", "compact"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ];
    create(&broker, "keep-tombstones", &compacted).await;
    let quick = [compacted[0], compacted[1], ("delete.retention.ms", "0")];
    create(&broker, "drop-tombstones", &quick).await;
    for (topic, keep) in [("keep-tombstones", true), ("drop-tombstones", false)] {
        let latest = produce_updates(&broker, topic, 0, 10, 0).await;
        assert_eq!(broker.high_watermark(topic, 0), 200);
        // Compacted: exactly one record per key, the latest, at its offset.
        // Tombstones stay until a later pass finds them older than
        // delete.retention.ms (here: the default day, or 0, when they may
        // already be gone if the tail was compacted in a second pass).
        let done = |records: &[Consumed]| {
            let seen = as_map(records);
            records.len() == seen.len()
                && seen.iter().all(|(k, v)| latest.get(k) == Some(v))
                && latest
                    .iter()
                    .all(|(k, v)| (v.1.is_none() && !keep) || seen.contains_key(k))
        };
        eventually(
            Duration::from_secs(30),
            || done(&broker.consume_all(topic, 0, Offset::Beginning)),
            || {
                format!(
                    "{topic} not compacted: {:?}",
                    as_map(&broker.consume_all(topic, 0, Offset::Beginning))
                )
            },
        )
        .await;
    }

    // More updates to keys 10..20; the next pass drops tombstones whose
    // delete.retention.ms has passed.
    broker.kill9();
    broker.restart();
    for topic in ["keep-tombstones", "drop-tombstones"] {
        let mut records = Vec::new();
        for key in 10..20 {
            records.push((
                format!("key{key}"),
                Some(format!("key{key}-late")),
                now_ms(),
            ));
        }
        produce(&broker, topic, &records).await;
    }
    let expected = |keep_tombstones: bool| {
        let mut want: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
        for key in 0..20 {
            let entry = match key {
                0..5 => (180 + key, None),
                5..10 => (180 + key, Some(format!("key{key}-round9"))),
                _ => (200 + key - 10, Some(format!("key{key}-late"))),
            };
            if entry.1.is_some() || keep_tombstones {
                want.insert(format!("key{key}"), entry);
            }
        }
        want
    };
    for (topic, keep) in [("keep-tombstones", true), ("drop-tombstones", false)] {
        let want = expected(keep);
        // Compacted again: the latest values (which the map shows before
        // any pass too) and no older record of a key left (which only a
        // pass over the new, sealed records removes).
        eventually(
            Duration::from_secs(30),
            || {
                let records = broker.consume_all(topic, 0, Offset::Beginning);
                as_map(&records) == want && records.len() == want.len()
            },
            || {
                let records = broker.consume_all(topic, 0, Offset::Beginning);
                format!(
                    "{topic}: {} records, latest per key {:?}",
                    records.len(),
                    as_map(&records)
                )
            },
        )
        .await;
        assert_eq!(broker.high_watermark(topic, 0), 210, "{topic}");
    }
    // Reading from inside a compacted gap starts at the next kept record.
    let from_gap = broker.consume_all("keep-tombstones", 0, Offset::Offset(3));
    assert_eq!(from_gap.first().map(|r| r.offset), Some(180));
    // And all of it survives a restart.
    broker.kill9();
    broker.restart();
    assert_eq!(
        as_map(&broker.consume_all("drop-tombstones", 0, Offset::Beginning)),
        expected(false)
    );
    // A compacted topic refuses records without a key, as Kafka does.
    let producer = broker.producer(&[("linger.ms", "0")]);
    let refused = producer
        .send(
            FutureRecord::<(), str>::to("keep-tombstones")
                .partition(0)
                .payload("no key"),
            Duration::from_secs(10),
        )
        .await;
    match refused {
        Err((rdkafka::error::KafkaError::MessageProduction(code), _)) => {
            assert_eq!(code, rdkafka::types::RDKafkaErrorCode::InvalidRecord);
        }
        other => panic!("a keyless record on a compacted topic: {other:?}"),
    }
    assert_eq!(broker.high_watermark("keep-tombstones", 0), 210);
}
