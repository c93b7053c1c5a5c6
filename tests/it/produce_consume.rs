//! Produce and consume with librdkafka and kcat: every ack level, every
//! codec, keys, null values and headers, reading from any offset, ListOffsets,
//! long-polling fetches and the size limits.

use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::common::{Consumed, TestBroker, consume_until_end, free_port, http_request};

fn expected(i: usize) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let key = (!i.is_multiple_of(7)).then(|| format!("key-{i}").into_bytes());
    // Every 11th record has a null value (a tombstone).
    let value = (i % 11 != 5).then(|| format!("value {i} {}", "x".repeat(i % 300)).into_bytes());
    (key, value)
}

async fn produce_numbered(
    broker: &TestBroker,
    topic: &str,
    count: usize,
    config: &[(&str, &str)],
) -> Vec<i64> {
    let producer = broker.producer(config);
    let mut deliveries = Vec::new();
    for i in 0..count {
        let (key, value) = expected(i);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "index",
                value: Some(&i.to_string()),
            })
            .insert(Header::<&[u8]> {
                key: "empty",
                value: None,
            });
        let mut record: FutureRecord<'_, Vec<u8>, Vec<u8>> =
            FutureRecord::to(topic).partition(0).headers(headers);
        if let Some(k) = &key {
            record = record.key(k);
        }
        if let Some(v) = &value {
            record = record.payload(v);
        }
        deliveries.push(producer.send_result(record).expect("enqueue"));
    }
    let mut offsets = Vec::new();
    for d in deliveries {
        let delivery = d.await.expect("delivery future").expect("delivered");
        offsets.push(delivery.offset);
    }
    offsets
}

fn assert_numbered(records: &[Consumed], count: usize) {
    assert_eq!(records.len(), count, "record count");
    for (i, r) in records.iter().enumerate() {
        let (key, value) = expected(i);
        assert_eq!(r.offset, i as i64, "offsets are dense from 0");
        assert_eq!(r.key, key, "key of record {i}");
        assert_eq!(r.value, value, "value of record {i}");
        assert_eq!(
            r.headers,
            vec![
                ("index".to_string(), Some(i.to_string().into_bytes())),
                ("empty".to_string(), None)
            ],
            "headers of record {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_and_ack_level_round_trips() {
    let broker = TestBroker::start(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        for acks in ["0", "1", "all"] {
            let topic = format!("rt-{codec}-{acks}");
            broker.create_topic(&topic, 1).await;
            let offsets = produce_numbered(
                &broker,
                &topic,
                250,
                &[
                    ("compression.type", codec),
                    ("acks", acks),
                    ("batch.num.messages", "40"),
                ],
            )
            .await;
            if acks != "0" {
                let expected: Vec<i64> = (0..250).collect();
                assert_eq!(offsets, expected, "acked offsets for {topic}");
            }
            // acks=0 is fire-and-forget: wait until the broker made it all visible.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while broker.high_watermark(&topic, 0) < 250 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{topic} never reached 250 records"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let records = broker.consume_all(&topic, 0, Offset::Beginning);
            assert_numbered(&records, 250);
        }
    }
    // Everything survives a restart, byte for byte.
    let mut broker = broker;
    broker.restart();
    for codec in ["none", "zstd"] {
        let records = broker.consume_all(&format!("rt-{codec}-all"), 0, Offset::Beginning);
        assert_numbered(&records, 250);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_any_offset_and_lists_offsets() {
    let broker = TestBroker::start(&[]);
    broker.create_topic("offsets", 1).await;
    let producer = broker.producer(&[("linger.ms", "0")]);
    let base_ts = 1_700_000_000_000i64;
    for i in 0..100i64 {
        let value = format!("v{i}");
        let record: FutureRecord<'_, (), String> = FutureRecord::to("offsets")
            .partition(0)
            .payload(&value)
            .timestamp(base_ts + i * 1000);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered");
    }
    let from_50 = broker.consume_all("offsets", 0, Offset::Offset(50));
    assert_eq!(from_50.first().map(|r| r.offset), Some(50));
    assert_eq!(from_50.len(), 50);
    assert_eq!(from_50[0].value.as_deref(), Some(&b"v50"[..]));
    assert_eq!(from_50[0].timestamp, Some(base_ts + 50_000));

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks("offsets", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (0, 100));
    let lookup = |ts: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("offsets", 0, Offset::Offset(ts))
            .expect("tpl");
        let found = consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .expect("offsets for times");
        found.elements()[0].offset()
    };
    assert_eq!(lookup(base_ts + 30_000), Offset::Offset(30));
    assert_eq!(
        lookup(base_ts + 30_500),
        Offset::Offset(31),
        "first record at or after the time"
    );
    assert_eq!(lookup(base_ts - 1), Offset::Offset(0));
    assert_eq!(
        lookup(base_ts + 1_000_000),
        Offset::End,
        "no record that late"
    );
}

/// A consumer long-polls all `partitions` of a topic from their end with a
/// 30 s fetch wait; once the broker reports the fetch waiting, one record is
/// written to the last partition. The waiting fetch must be woken by the
/// commit: the reader gives up after 15 s, long before the wait would run out
/// by itself.
async fn long_poll_is_woken_by_a_commit(partitions: i32) {
    let http = format!("127.0.0.1:{}", free_port());
    let broker = TestBroker::start(&["--http-addr", &http]);
    let topic = format!("tail{partitions}");
    broker.create_topic(&topic, partitions).await;
    let addr = broker.addr.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader_topic = topic.clone();
    let reader = std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("group.id", "unused")
            .set("fetch.wait.max.ms", "30000")
            // No group coordinator yet: auto-commit would make close() wait for one.
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&reader_topic, p, Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        // A first empty poll: the fetch is on its way to the broker.
        let _ = consumer.poll(Duration::from_millis(500));
        let _ = ready_tx.send(());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                use rdkafka::message::Message;
                let m = message.expect("message");
                return Some((m.partition(), m.payload().map(|p| p.to_vec())));
            }
        }
        None
    });
    tokio::task::spawn_blocking(move || ready_rx.recv())
        .await
        .expect("join")
        .expect("reader started");
    wait_for_a_waiting_fetch(&http).await;
    let producer = broker.producer(&[]);
    let record: FutureRecord<'_, (), str> = FutureRecord::to(&topic)
        .partition(partitions - 1)
        .payload("late arrival");
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("delivered");
    let got = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    assert_eq!(
        got,
        Some((partitions - 1, Some(b"late arrival".to_vec()))),
        "the waiting fetch over {partitions} partitions was not woken by the commit"
    );
}

/// Waits until the broker's `strata_fetch_waiting` gauge shows a Fetch
/// long-polling.
async fn wait_for_a_waiting_fetch(http: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let http = http.to_string();
        let (_, metrics) =
            tokio::task::spawn_blocking(move || http_request(&http, "GET", "/metrics"))
                .await
                .expect("join");
        let waiting = metrics
            .lines()
            .find_map(|l| l.strip_prefix("strata_fetch_waiting "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Fetch was long-polling at the broker within 15 s:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_polls_until_data_arrives() {
    long_poll_is_woken_by_a_commit(1).await;
}

/// Over 32 partitions a fetch waits on the topic's commit signal instead of
/// one watch per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_over_many_partitions_long_polls_until_data_arrives() {
    long_poll_is_woken_by_a_commit(40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_up_to_the_limit() {
    let broker = TestBroker::start(&[]);
    broker.create_topic("big", 1).await;
    let producer = broker.producer(&[("message.max.bytes", "10000000"), ("linger.ms", "0")]);
    let near_limit = vec![7u8; 1_000_000];
    let record: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to("big").payload(&near_limit);
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("1 MB record fits");
    assert_eq!(delivery.offset, 0);
    let too_big = vec![8u8; 2_000_000];
    let record: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to("big").payload(&too_big);
    let err = producer
        .send(record, Duration::from_secs(10))
        .await
        .expect_err("2 MB is over max.message.bytes");
    assert_eq!(
        err.0,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    let records = consume_until_end(&broker.addr, "big", 0, Offset::Beginning);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_ref().map(Vec::len), Some(1_000_000));
}

fn kcat(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed by the test command (scripts/test.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("kcat output");
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes() {
    let broker = TestBroker::start(&[]);
    let input: String = (0..500).map(|i| format!("k{i}:hello {i}\n")).collect();
    // Auto-created on first use.
    kcat(
        &["-b", &broker.addr, "-P", "-t", "kc", "-K:", "-z", "snappy"],
        &input,
    );
    let out = kcat(
        &[
            "-b",
            &broker.addr,
            "-C",
            "-t",
            "kc",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %k %s\n",
        ],
        "",
    );
    let expected: String = (0..500).map(|i| format!("{i} k{i} hello {i}\n")).collect();
    assert_eq!(out, expected);
    let tail = kcat(
        &[
            "-b",
            &broker.addr,
            "-C",
            "-t",
            "kc",
            "-o",
            "-2",
            "-e",
            "-f",
            "%o %s\n",
        ],
        "",
    );
    assert_eq!(tail, "498 hello 498\n499 hello 499\n");
}
