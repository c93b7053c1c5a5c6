//! Tiered storage: write-ahead objects sealed into per-partition segments
//! and shared objects, with every record readable from its original offset,
//! before and after a restart, and the replaced objects collected. Each test
//! runs on the embedded store and on S3 (MinIO) over HTTP.

use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::common::{TestBroker, eventually};
use crate::store::Store;

const BASE_TS: i64 = 1_700_000_000_000;

/// Chunk rows per partition of `topic`, from the metadata store.
fn chunk_rows(broker: &TestBroker, topic: &str) -> Vec<(i32, i64)> {
    broker
        .metadata_rows(&format!(
            "SELECT c.partition, COUNT(*) FROM chunks c JOIN topics t ON t.topic_id = c.topic_id
             WHERE t.name = '{topic}' GROUP BY c.partition ORDER BY c.partition"
        ))
        .into_iter()
        .map(|r| {
            (
                r[0].parse().expect("partition"),
                r[1].parse().expect("count"),
            )
        })
        .collect()
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
    sealing_bounds_rows_and_objects(Store::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_bounds_rows_and_objects_and_keeps_every_record_on_s3() {
    sealing_bounds_rows_and_objects(Store::s3()).await;
}

async fn sealing_bounds_rows_and_objects(store: Store) {
    let mut broker = store.start_broker(&[
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

    // Sealed, and the write-ahead objects collected. Partition 0's ~600 KB
    // (600 write-ahead chunks): at most 3 segments of at least the 200 KB
    // target, plus at most 12 smaller ones (the sealer's MAX_SMALL_CHUNKS).
    eventually(
        Duration::from_secs(30),
        || {
            let rows = chunk_rows(&broker, "tier");
            store.count(&broker, "wal/") == 0
                && !rows.is_empty()
                && rows.iter().all(|(_, n)| *n <= 15)
        },
        || {
            format!(
                "not sealed: rows {:?}, {} write-ahead objects left; partition 0's chunks \
                 (bytes, object): {:?}\n{}",
                chunk_rows(&broker, "tier"),
                store.count(&broker, "wal/"),
                extents(&broker, "tier", 0),
                broker.log(1)
            )
        },
    )
    .await;
    // Whether partition 0's small chunks were merged yet depends on the
    // sizes its cycles happened to seal (merges are asserted in the sealer's
    // unit tests and by the tiering crash test); its rows are bounded above.
    assert!(
        store.count(&broker, "shr/") >= 1,
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
        || store.count(&broker, "wal/") == 0,
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

fn metric(http: &str, name: &str) -> u64 {
    let (_, body) = crate::common::http_request(http, "GET", "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Partition `partition`'s chunks: `(data + index bytes, object key)`.
fn extents(broker: &TestBroker, topic: &str, partition: i32) -> Vec<(u64, String)> {
    broker
        .metadata_rows(&format!(
            "SELECT c.byte_len + c.index_len, c.object_key FROM chunks c
             JOIN topics t ON t.topic_id = c.topic_id
             WHERE t.name = '{topic}' AND c.partition = {partition} ORDER BY c.base_offset"
        ))
        .into_iter()
        .map(|r| (r[0].parse().expect("bytes"), r[1].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_catch_up_reads_its_own_partition_in_4_mib_gets() {
    cold_catch_up(Store::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_catch_up_reads_its_own_partition_in_4_mib_gets_on_s3() {
    cold_catch_up(Store::s3()).await;
}

async fn cold_catch_up(store: Store) {
    let http = format!("127.0.0.1:{}", crate::common::free_port());
    let mut broker = store.start_broker(&[
        "--http-addr",
        &http,
        "--seal-interval-ms",
        "300",
        "--seal-own-segment-bytes",
        "1000000",
        "--seal-segment-target-bytes",
        "8000000",
        "--gc-sweep-interval-secs",
        "1",
        "--gc-delete-grace-secs",
        "1",
    ]);
    broker.create_topic("cold", 3).await;
    // ~12 MB in partition 0, a little in the two others (shared objects).
    let producer = broker.producer(&[("linger.ms", "20"), ("compression.type", "none")]);
    let value = "v".repeat(1_000);
    for round in 0..12 {
        let keys: Vec<String> = (0..1_000).map(|i| format!("{round}-{i}")).collect();
        let sends: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let partition = if i % 100 == 0 {
                    1 + (i / 100 % 2) as i32
                } else {
                    0
                };
                producer.send(
                    FutureRecord::to("cold")
                        .partition(partition)
                        .key(key)
                        .payload(&value),
                    Duration::from_secs(30),
                )
            })
            .collect();
        for delivered in futures::future::join_all(sends).await {
            delivered.expect("delivered");
        }
    }
    eventually(
        Duration::from_secs(60),
        || store.count(&broker, "wal/") == 0,
        || {
            format!(
                "not sealed: {} write-ahead objects\n{}",
                store.count(&broker, "wal/"),
                broker.log(1)
            )
        },
    )
    .await;
    // Merges of the sealed chunks may still follow: take the extents once
    // two reads half a second apart agree.
    let mut own = extents(&broker, "cold", 0);
    let settle = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = extents(&broker, "cold", 0);
        if again == own {
            break;
        }
        assert!(std::time::Instant::now() < settle, "merges never settled");
        own = again;
    }
    let own_bytes: u64 = own.iter().map(|(len, _)| len).sum();
    let window = 4 * 1024 * 1024u64;
    // One GET per 4 MiB window; a chunk's last window takes its rest.
    let max_gets: u64 = own.iter().map(|(len, _)| (len / window).max(1)).sum();

    // Cold: a restart with the cache emptied (the embedded store keeps
    // fetched blocks in memory only, S3's also go to disk).
    broker.kill9();
    store.drop_cache(&broker);
    broker.restart();
    let gets = "strata_object_store_requests_total{op=\"get\"} ";
    let got = "strata_object_store_bytes_total{op=\"get\"} ";
    let (gets_before, bytes_before) = (metric(&http, gets), metric(&http, got));
    let records = broker.consume_all("cold", 0, Offset::Beginning);
    assert_eq!(records.len(), 11_880);
    let (get_count, get_bytes) = (
        metric(&http, gets) - gets_before,
        metric(&http, got) - bytes_before,
    );
    eprintln!(
        "cold catch-up ({}): {} chunks, {own_bytes} bytes, {get_count} GETs, {get_bytes} bytes fetched",
        store.name(),
        own.len()
    );
    assert!(
        get_bytes <= own_bytes,
        "only partition 0's bytes are fetched: {get_bytes} > {own_bytes}"
    );
    assert!(
        get_count <= max_gets,
        "one GET per 4 MiB window of each chunk at most: {get_count} > {max_gets} ({} chunks)",
        own.len()
    );
    assert!(
        get_bytes >= own_bytes * 9 / 10,
        "it was read from the store"
    );
}

/// Under load sealing runs on volume, not on the clock: with an hour-long
/// interval, every full `seal.cycle_bytes` of write-ahead data is sealed as
/// soon as it is pending, each partition's share of a cycle becomes one
/// segment (no small remainders), and less than one cycle stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycles_are_sealed_as_soon_as_they_are_pending() {
    const CYCLE: u64 = 1 << 20;
    let broker = Store::embedded().start_broker(&[
        "--seal-interval-ms",
        "3600000",
        "--seal-cycle-bytes",
        &CYCLE.to_string(),
        "--seal-own-segment-bytes",
        "50000",
        "--seal-segment-target-bytes",
        "50000",
    ]);
    broker.create_topic("tier", 4).await;
    // ~6 MB over 4 partitions, interleaved as a busy topic's would be, in
    // write-ahead objects much smaller than a cycle.
    let producer = broker.producer(&[("linger.ms", "5"), ("compression.type", "none")]);
    let value = "v".repeat(1_000);
    let per_partition = 1_500;
    for _ in 0..per_partition / 10 {
        let sends: Vec<_> = (0..40)
            .map(|i| {
                producer.send(
                    FutureRecord::<(), _>::to("tier")
                        .partition(i % 4)
                        .payload(&value),
                    Duration::from_secs(30),
                )
            })
            .collect();
        for delivered in futures::future::join_all(sends).await {
            delivered.expect("delivered");
        }
    }
    let unsealed = |broker: &TestBroker| -> u64 {
        (0..4)
            .flat_map(|p| extents(broker, "tier", p))
            .filter(|(_, key)| key.starts_with("wal/"))
            .map(|(bytes, _)| bytes)
            .sum()
    };
    eventually(
        Duration::from_secs(30),
        || unsealed(&broker) < CYCLE,
        || {
            format!(
                "{} write-ahead bytes still unsealed, more than one cycle\n{}",
                unsealed(&broker),
                broker.log(1)
            )
        },
    )
    .await;
    for partition in 0..4 {
        let sealed: Vec<u64> = extents(&broker, "tier", partition)
            .into_iter()
            .filter(|(_, key)| !key.starts_with("wal/"))
            .map(|(bytes, _)| bytes)
            .collect();
        // A quarter of a 1 MiB cycle each (262 KB), less at most one
        // write-ahead object's share; a remainder cycle would leave much
        // smaller ones.
        assert!(
            sealed.len() >= 4 && sealed.iter().all(|b| *b >= 200_000),
            "partition {partition}: sealed chunk sizes {sealed:?}"
        );
        assert_eq!(
            broker
                .consume_all("tier", partition, Offset::Beginning)
                .len(),
            per_partition as usize,
            "partition {partition}"
        );
    }
}
