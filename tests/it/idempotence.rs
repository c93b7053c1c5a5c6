//! The idempotent producer, tested the way it breaks: a producer with
//! `enable.idempotence=true` keeps sending while the broker is killed with
//! `-9` and restarted on the same port, several times. Its retries of
//! batches the dead broker had already committed must get their original
//! offsets back; nothing may be written twice. Afterwards every
//! acknowledged record is stored exactly once, at the offset it was
//! acknowledged with, in send order per partition, and the whole topic
//! holds no duplicate at all. Also: Kafka's sequence errors on raw frames.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::Offset;
use rdkafka::producer::FutureRecord;

use crate::common::{TestBroker, committed_beyond};

const TOPIC: &str = "idem";
const PARTITIONS: i32 = 3;

/// Sends records numbered from 0 until `stop`, then waits for every
/// delivery. Returns `(partition, offset) -> index` of the acknowledged ones
/// and how many failed for good.
async fn produce_idempotent(
    addr: String,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<(i32, i64), u64>, usize) {
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        // Long enough to ride out every restart: a record fails only if the
        // broker never comes back.
        .set("message.timeout.ms", "60000")
        .set("reconnect.backoff.max.ms", "200")
        .create()
        .expect("idempotent producer");
    let mut pending = FuturesUnordered::new();
    let mut acked = BTreeMap::new();
    let mut failed = 0;
    let mut settle = |index: u64, result, acked: &mut BTreeMap<(i32, i64), u64>| match result {
        Ok(Ok(delivery)) => {
            let delivery: rdkafka::producer::future_producer::Delivery = delivery;
            let previous = acked.insert((delivery.partition, delivery.offset), index);
            assert!(
                previous.is_none(),
                "offset {}/{} acknowledged for records {previous:?} and {index}",
                delivery.partition,
                delivery.offset
            );
        }
        _ => failed += 1,
    };
    let mut index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..20 {
            let key = index.to_string();
            let value = format!("value-{index}");
            let record = FutureRecord::to(TOPIC)
                .partition((index % PARTITIONS as u64) as i32)
                .key(&key)
                .payload(&value);
            match producer.send_result(record) {
                Ok(delivery) => pending.push(async move { (index, delivery.await) }),
                Err(_) => break, // local queue full: pace down
            }
            index += 1;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        while let Some(Some((i, result))) = futures::FutureExt::now_or_never(pending.next()) {
            settle(i, result, &mut acked);
        }
    }
    while let Some((i, result)) = pending.next().await {
        settle(i, result, &mut acked);
    }
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_across_kill_9_writes_every_record_once() {
    let mut broker = TestBroker::start(&[]);
    broker.create_topic(TOPIC, PARTITIONS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(produce_idempotent(broker.addr.clone(), Arc::clone(&stop)));
    let mut floor = 0;
    for _ in 0..4 {
        // Kill once the producer has got well going since the last start.
        floor = committed_beyond(&broker.addr, TOPIC, PARTITIONS, floor + 2_000).await;
        // SIGKILL mid-stream, then the same address again: the running
        // producer reconnects and retries what it was not answered.
        tokio::task::block_in_place(|| broker.restart_same_port());
    }
    // Writes go on after the last restart before the producer stops.
    committed_beyond(&broker.addr, TOPIC, PARTITIONS, floor + 2_000).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = producing.await.expect("producer task");
    assert_eq!(
        failed, 0,
        "no record failed for good: the broker always came back"
    );
    assert!(
        acked.len() > 1000,
        "the producer got going: {} acked",
        acked.len()
    );

    let mut seen: HashMap<u64, (i32, i64)> = HashMap::new();
    let mut duplicates = Vec::new();
    for partition in 0..PARTITIONS {
        let records = broker.consume_all(TOPIC, partition, Offset::Beginning);
        let mut last_index = None;
        for (position, record) in records.iter().enumerate() {
            assert_eq!(record.offset, position as i64, "offsets are dense");
            let index: u64 = String::from_utf8_lossy(record.key.as_deref().expect("key"))
                .parse()
                .expect("numeric key");
            assert_eq!(
                record.value.as_deref(),
                Some(format!("value-{index}").as_bytes())
            );
            if let Some(first) = seen.insert(index, (partition, record.offset)) {
                duplicates.push((index, first, (partition, record.offset)));
            }
            assert!(
                last_index < Some(index),
                "partition {partition} keeps send order: {index} after {last_index:?} at {}",
                record.offset
            );
            last_index = Some(index);
        }
    }
    assert!(
        duplicates.is_empty(),
        "{} records stored twice, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    for ((partition, offset), index) in &acked {
        assert_eq!(
            seen.get(index),
            Some(&(*partition, *offset)),
            "acknowledged record {index} is stored where it was acknowledged"
        );
    }
    // Every record was acknowledged, and what is stored is exactly that.
    assert_eq!(
        seen.len(),
        acked.len(),
        "stored records = acknowledged records"
    );
    let restarts = (1..=5)
        .filter(|n| broker.log(*n).contains("strata broker started"))
        .count();
    assert_eq!(restarts, 5, "the broker really restarted four times");
}

/// One batch of `count` records from producer `(id, epoch)` starting at
/// sequence `first_seq`.
pub(crate) fn producer_batch(
    id: i64,
    epoch: i16,
    first_seq: i32,
    count: usize,
    transactional: bool,
    control: bool,
) -> bytes::Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional,
            control,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(bytes::Bytes::from(format!("s{}", first_seq + i as i32))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

/// `(error code, base offset)` of a one-partition produce.
fn produce(raw: &mut crate::bad_input::Raw, topic: &str, records: bytes::Bytes) -> (i16, i64) {
    use kafka_protocol::messages::{ApiKey, ProduceResponse};
    let response: ProduceResponse = raw.call(
        ApiKey::Produce,
        9,
        &crate::bad_input::produce_request(topic, 0, records, -1),
    );
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

pub(crate) fn init_producer_id(
    raw: &mut crate::bad_input::Raw,
    transactional_id: Option<&str>,
    known: (i64, i16),
) -> (i16, i64, i16) {
    use kafka_protocol::messages::{
        ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    let request = InitProducerIdRequest::default()
        .with_transactional_id(
            transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
        )
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(known.0))
        .with_producer_epoch(known.1);
    let response: InitProducerIdResponse = raw.call(ApiKey::InitProducerId, 4, &request);
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

/// Kafka's error codes for the idempotent producer, on raw frames, and the
/// state surviving a kill -9.
#[test]
fn sequence_and_epoch_errors_are_kafkas_and_state_survives_a_crash() {
    const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    const INVALID_PRODUCER_EPOCH: i16 = 47;
    const INVALID_TXN_STATE: i16 = 48;
    const INVALID_RECORD: i16 = 87;
    let mut broker = TestBroker::start(&[]);
    let mut raw = crate::bad_input::Raw::connect(&broker);
    assert_eq!(crate::bad_input::create_topic(&mut raw, "seq", &[]), 0);
    let (error, id, epoch) = init_producer_id(&mut raw, None, (-1, -1));
    assert_eq!((error, epoch), (0, 0));
    assert!(id >= 0);
    let (_, other, _) = init_producer_id(&mut raw, None, (-1, -1));
    assert_ne!(other, id, "every producer gets its own id");

    let first = producer_batch(id, 0, 0, 3, false, false);
    assert_eq!(produce(&mut raw, "seq", first.clone()), (0, 0));
    // A retry of the same batch: success, with its original offset.
    assert_eq!(produce(&mut raw, "seq", first.clone()), (0, 0));
    assert_eq!(
        broker.high_watermark("seq", 0),
        3,
        "the retry wrote nothing"
    );
    // A gap in the sequence.
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(id, 0, 5, 1, false, false)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(id, 0, 3, 2, false, false)),
        (0, 3)
    );
    // KIP-360: the same producer id with the next epoch; the old epoch is fenced.
    assert_eq!(init_producer_id(&mut raw, None, (id, 0)), (0, id, 1));
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(id, 1, 0, 2, false, false)),
        (0, 5)
    );
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(id, 0, 5, 1, false, false)).0,
        INVALID_PRODUCER_EPOCH
    );
    // Clients may not write control batches, nor transactional ones
    // outside a transaction.
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(other, 0, 0, 1, false, true)).0,
        INVALID_RECORD
    );
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(other, 0, 0, 1, true, false)).0,
        INVALID_TXN_STATE
    );
    // A transactional id gets a producer id of its own at epoch 0.
    let (code, txn_producer, epoch) = init_producer_id(&mut raw, Some("txn-app"), (-1, -1));
    assert_eq!((code, epoch), (0, 0));
    assert!(txn_producer > other);
    assert_eq!(broker.high_watermark("seq", 0), 7);

    // After a crash the state is back: a retry of the last batch is still
    // recognised, and the sequence goes on from it.
    broker.kill9();
    broker.restart();
    let mut raw = crate::bad_input::Raw::connect(&broker);
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(id, 1, 0, 2, false, false)),
        (0, 5)
    );
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(id, 1, 3, 1, false, false)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        produce(&mut raw, "seq", producer_batch(id, 1, 2, 1, false, false)),
        (0, 7)
    );
    let (_, after_restart, _) = init_producer_id(&mut raw, None, (-1, -1));
    assert!(after_restart > other, "producer ids are never reused");
    assert_eq!(broker.high_watermark("seq", 0), 8);
}

/// A child process killed when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines in `path` (0 if it does not exist yet).
fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// The Java client's idempotent producer with its default settings
/// (tests/java/src/IdempotentLoad.java) across thirteen kill -9s: every
/// acknowledged record stored exactly once, in send order per partition.
#[test]
fn java_idempotent_producer_across_kill_9_writes_every_record_once() {
    const COUNT: usize = 150_000;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("target/java/classes/IdempotentLoad.class")
            .is_file(),
        "the Java test programs are missing: run ./scripts/test.sh (scripts/java-deps.sh)"
    );
    let classpath = format!(
        "{}/target/java/lib/*:{}/target/java/classes",
        root.display(),
        root.display()
    );
    let mut broker = TestBroker::start(&[]);
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(broker.create_topic("java-idem", PARTITIONS));
    let scratch = tempfile::tempdir().expect("tempdir");
    let acked_file = scratch.path().join("acked");
    let java = |args: &[&str]| {
        let mut command = std::process::Command::new("java");
        command
            .args(["-Xmx512m", "-cp", &classpath, "IdempotentLoad"])
            .args(args);
        command
    };
    let producer = java(&[
        "produce",
        &broker.addr,
        "java-idem",
        &PARTITIONS.to_string(),
        &COUNT.to_string(),
        acked_file.to_str().expect("utf-8 path"),
    ])
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("start the Java producer");
    let mut producer = KillOnDrop(producer);
    let producer = &mut producer.0;
    // Kill the broker whenever the producer has got this far, so every kill
    // lands mid-stream whatever the machine's speed. Many kills: a batch
    // committed but not yet acknowledged when the broker dies (what the
    // duplicate detection is for) is a narrow window each time.
    for threshold in (1..=13).map(|n| n * 10_000) {
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        while count_lines(&acked_file) < threshold {
            if let Some(status) = producer.try_wait().expect("producer status") {
                panic!("the Java producer exited early with {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Java producer stalled below {threshold} acknowledged records"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker.restart_same_port();
    }
    let status = producer.wait().expect("Java producer");
    assert!(
        status.success(),
        "every record acknowledged, none failed: {status}"
    );

    let out_file = scratch.path().join("consumed");
    let status = java(&[
        "consume",
        &broker.addr,
        "java-idem",
        &PARTITIONS.to_string(),
        out_file.to_str().expect("utf-8 path"),
    ])
    .status()
    .expect("Java consumer");
    assert!(
        status.success(),
        "the Java consumer read the topic: {status}"
    );
    let consumed = std::fs::read_to_string(&out_file).expect("consumed records");
    let mut seen = vec![0u32; COUNT];
    let mut last_in_partition: HashMap<i32, u64> = HashMap::new();
    for line in consumed.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [partition, offset, value] = fields[..] else {
            panic!("unexpected consumer line '{line}'");
        };
        let partition: i32 = partition.parse().expect("partition");
        let seq: u64 = value.parse().expect("numeric value");
        assert_eq!(
            seq % PARTITIONS as u64,
            partition as u64,
            "{seq} in its partition"
        );
        seen[seq as usize] += 1;
        if let Some(previous) = last_in_partition.insert(partition, seq) {
            assert!(
                previous < seq,
                "partition {partition} keeps send order: {seq} after {previous} at {offset}"
            );
        }
    }
    let duplicates = seen.iter().filter(|n| **n > 1).count();
    let missing = seen.iter().filter(|n| **n == 0).count();
    assert_eq!(duplicates, 0, "records stored more than once");
    assert_eq!(missing, 0, "acknowledged records missing");
    assert_eq!(
        count_lines(&acked_file),
        COUNT,
        "every record was acknowledged once"
    );
}

/// Producers of one partition as DescribeProducers reports them:
/// `(producer id, epoch, last sequence)`.
fn describe_producers(raw: &mut crate::bad_input::Raw, topic: &str) -> Vec<(i64, i32, i32)> {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::{
        ApiKey, DescribeProducersRequest, DescribeProducersResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let response: DescribeProducersResponse = raw.call(
        ApiKey::DescribeProducers,
        0,
        &DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(vec![0]),
        ]),
    );
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition
        .active_producers
        .iter()
        .map(|p| (p.producer_id.0, p.producer_epoch, p.last_sequence))
        .collect()
}

/// Producer state is bounded: a producer silent for
/// `producer.id.expiration.ms` is forgotten, in memory and in the metadata
/// store (it stays forgotten after a restart), and may then start over.
#[test]
fn silent_producers_expire() {
    let mut broker = TestBroker::start_configured(
        "[kafka]\nproducer_id_expiration_ms = 1500\nproducer_id_expiration_check_interval_ms = 200\n",
        &[],
    );
    let mut raw = crate::bad_input::Raw::connect(&broker);
    assert_eq!(crate::bad_input::create_topic(&mut raw, "expiry", &[]), 0);
    let (_, id, _) = init_producer_id(&mut raw, None, (-1, -1));
    let batch = producer_batch(id, 0, 0, 4, false, false);
    assert_eq!(produce(&mut raw, "expiry", batch.clone()), (0, 0));
    assert_eq!(describe_producers(&mut raw, "expiry"), vec![(id, 0, 3)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !describe_producers(&mut raw, "expiry").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the producer state never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.kill9();
    broker.restart();
    let mut raw = crate::bad_input::Raw::connect(&broker);
    assert!(
        describe_producers(&mut raw, "expiry").is_empty(),
        "expired in the metadata store too"
    );
    // Forgotten: the same batch is new data now, as on Kafka.
    assert_eq!(produce(&mut raw, "expiry", batch), (0, 4));
}
