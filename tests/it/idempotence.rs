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

use crate::common::TestBroker;

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
    for round in 0..4u64 {
        tokio::time::sleep(Duration::from_millis(900 + 300 * round)).await;
        // SIGKILL mid-stream, then the same address again: the running
        // producer reconnects and retries what it was not answered.
        tokio::task::block_in_place(|| broker.restart_same_port());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
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
