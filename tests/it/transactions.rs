//! Transactions with librdkafka's transactional producer (through the
//! `rdkafka` crate): commits and aborts as read_committed and
//! read_uncommitted consumers see them, the last stable offset, zombie
//! fencing, the coordinator's timeout, offsets committed in a transaction,
//! and transaction state across kill -9.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::TestBroker;

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

const T: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn txn_producer(broker: &TestBroker, id: &str, extra: &[(&str, &str)]) -> TxnProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.addr)
        .set("transactional.id", id)
        .set("linger.ms", "5");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let producer: TxnProducer = config.create().expect("producer");
    producer.init_transactions(T).expect("init transactions");
    producer
}

/// Sends `values` (keyed by themselves) to `topic`/`partition` and waits
/// until every one is acknowledged.
fn send(producer: &TxnProducer, topic: &str, partition: i32, values: &[String]) {
    for v in values {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key(v.as_bytes())
                    .payload(v.as_bytes()),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    producer.flush(T).expect("flush");
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Every value in `topic`/`partition` a consumer at `isolation` reads from
/// the start, until it has seen the end of what it may read.
fn read_all(broker: &TestBroker, topic: &str, partition: i32, isolation: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "txn-tests-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("offset");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "read timed out after {out:?}");
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => panic!("consume error: {e}"),
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into())
            }
        }
    }
    out
}

/// `(low, high)` as a consumer at `isolation` sees them (ListOffsets): for
/// read_committed the high end is the last stable offset.
fn watermarks(broker: &TestBroker, topic: &str, partition: i32, isolation: &str) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    consumer
        .fetch_watermarks(topic, partition, T)
        .expect("watermarks")
}

fn committed_offset(broker: &TestBroker, group: &str, topic: &str, partition: i32) -> Offset {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer.committed_offsets(tpl, T).expect("committed");
    committed
        .find_partition(topic, partition)
        .expect("partition")
        .offset()
}

fn is_fenced(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => {
            e.is_fatal()
                || matches!(
                    e.code(),
                    RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
                )
        }
        _ => false,
    }
}

/// Committed transactions are read by everyone; an aborted one only by
/// read_uncommitted consumers; an open one holds read_committed consumers
/// (and their end offset) at its first offset until it commits.
#[test]
fn read_committed_sees_commits_only_and_stops_at_open_transactions() {
    let broker = TestBroker::start(&[]);
    runtime().block_on(broker.create_topic("txn-basic", 2));
    let producer = txn_producer(&broker, "basic", &[]);

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-basic", 0, &values("a", 10));
    send(&producer, "txn-basic", 1, &values("a1", 4));
    producer.commit_transaction(T).expect("commit");

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-basic", 0, &values("b", 5));
    producer.abort_transaction(T).expect("abort");

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-basic", 0, &values("c", 3));
    producer.commit_transaction(T).expect("commit");

    let committed: Vec<String> = values("a", 10).into_iter().chain(values("c", 3)).collect();
    assert_eq!(
        read_all(&broker, "txn-basic", 0, "read_committed"),
        committed
    );
    let everything: Vec<String> = values("a", 10)
        .into_iter()
        .chain(values("b", 5))
        .chain(values("c", 3))
        .collect();
    assert_eq!(
        read_all(&broker, "txn-basic", 0, "read_uncommitted"),
        everything,
        "the aborted records are in the log (a read_uncommitted consumer sees them)"
    );
    assert_eq!(
        read_all(&broker, "txn-basic", 1, "read_committed"),
        values("a1", 4)
    );

    // An open transaction: its records are durable (the high watermark is
    // past them) but the last stable offset stays at its first record.
    let (_, before) = watermarks(&broker, "txn-basic", 0, "read_uncommitted");
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-basic", 0, &values("d", 4));
    let (_, hw) = watermarks(&broker, "txn-basic", 0, "read_uncommitted");
    let (_, lso) = watermarks(&broker, "txn-basic", 0, "read_committed");
    assert_eq!(hw, before + 4, "the open transaction's records are written");
    assert_eq!(
        lso, before,
        "the last stable offset is the open transaction's first offset"
    );
    assert_eq!(
        read_all(&broker, "txn-basic", 0, "read_committed"),
        committed
    );
    producer.commit_transaction(T).expect("commit");
    let (_, lso) = watermarks(&broker, "txn-basic", 0, "read_committed");
    assert_eq!(
        lso,
        hw + 1,
        "committed: stable up to and including the marker"
    );
    let all: Vec<String> = committed.into_iter().chain(values("d", 4)).collect();
    assert_eq!(read_all(&broker, "txn-basic", 0, "read_committed"), all);
}

/// A second producer with the same transactional.id fences the first: the
/// first one's open transaction is aborted, and it can neither write nor
/// commit afterwards.
#[test]
fn a_new_incarnation_fences_the_old_one() {
    let broker = TestBroker::start(&[]);
    runtime().block_on(broker.create_topic("txn-zombie", 1));
    let zombie = txn_producer(&broker, "zombie", &[]);
    zombie.begin_transaction().expect("begin");
    send(&zombie, "txn-zombie", 0, &values("zombie", 3));

    let fresh = txn_producer(&broker, "zombie", &[]);
    fresh.begin_transaction().expect("begin");
    send(&fresh, "txn-zombie", 0, &values("fresh", 2));
    fresh.commit_transaction(T).expect("commit");

    // The zombie wakes up: its commit is refused as fenced.
    let late = zombie
        .send(
            BaseRecord::<(), str>::to("txn-zombie")
                .partition(0)
                .payload("late"),
        )
        .map_err(|(e, _)| e);
    let _ = zombie.flush(Duration::from_secs(10));
    let commit = zombie.commit_transaction(T);
    assert!(
        late.is_err() || commit.is_err(),
        "the fenced producer still committed"
    );
    if let Err(error) = &commit {
        assert!(is_fenced(error), "expected a fencing error, got {error}");
    }
    assert_eq!(
        read_all(&broker, "txn-zombie", 0, "read_committed"),
        values("fresh", 2),
        "nothing of the fenced producer is committed"
    );
    let uncommitted = read_all(&broker, "txn-zombie", 0, "read_uncommitted");
    assert!(
        uncommitted.starts_with(&values("zombie", 3)),
        "the zombie's records were written, then aborted: {uncommitted:?}"
    );
    assert!(!uncommitted.contains(&"late".to_string()));
}

/// A transaction its producer leaves open is aborted by the coordinator
/// after `transaction.timeout.ms`: read_committed consumers move on.
#[test]
fn the_coordinator_aborts_a_transaction_past_its_timeout() {
    let broker =
        TestBroker::start_configured("[kafka]\ntransaction_abort_check_interval_ms = 200\n", &[]);
    runtime().block_on(broker.create_topic("txn-timeout", 1));
    let stalled = txn_producer(&broker, "stalled", &[("transaction.timeout.ms", "1500")]);
    stalled.begin_transaction().expect("begin");
    send(&stalled, "txn-timeout", 0, &values("stalled", 3));
    let (_, hw) = watermarks(&broker, "txn-timeout", 0, "read_uncommitted");
    assert_eq!(watermarks(&broker, "txn-timeout", 0, "read_committed").1, 0);
    let deadline = Instant::now() + T;
    loop {
        let (_, lso) = watermarks(&broker, "txn-timeout", 0, "read_committed");
        if lso > hw {
            break; // the abort marker is in
        }
        assert!(
            Instant::now() < deadline,
            "the transaction was never aborted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(read_all(&broker, "txn-timeout", 0, "read_committed").is_empty());
    // The producer that let it time out is fenced (epoch bumped).
    let commit = stalled.commit_transaction(T);
    assert!(commit.is_err(), "a timed-out transaction committed");
}

/// Offsets sent to a transaction become the group's committed offsets
/// when it commits, and are dropped when it aborts.
#[test]
fn offsets_commit_with_the_transaction_only() {
    let broker = TestBroker::start(&[]);
    let rt = runtime();
    rt.block_on(broker.create_topic("txn-in", 1));
    rt.block_on(broker.create_topic("txn-out", 1));
    let producer = txn_producer(&broker, "copier", &[]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "copiers")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer.group_metadata().expect("group metadata");
    let offsets = |offset: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("txn-in", 0, Offset::Offset(offset))
            .expect("offset");
        tpl
    };

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-out", 0, &values("x", 2));
    producer
        .send_offsets_to_transaction(&offsets(7), &metadata, T)
        .expect("send offsets");
    producer.commit_transaction(T).expect("commit");
    assert_eq!(
        committed_offset(&broker, "copiers", "txn-in", 0),
        Offset::Offset(7)
    );

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-out", 0, &values("y", 2));
    producer
        .send_offsets_to_transaction(&offsets(9), &metadata, T)
        .expect("send offsets");
    producer.abort_transaction(T).expect("abort");
    assert_eq!(
        committed_offset(&broker, "copiers", "txn-in", 0),
        Offset::Offset(7),
        "an aborted transaction's offsets are not committed"
    );
    assert_eq!(
        read_all(&broker, "txn-out", 0, "read_committed"),
        values("x", 2)
    );
}

/// kill -9 with a transaction open, and again after an abort: the
/// coordinator's state and each partition's aborted ranges come back, the
/// producer finishes its transaction, read_committed stays exact.
#[test]
fn transactions_survive_kill_9() {
    let mut broker = TestBroker::start(&[]);
    runtime().block_on(broker.create_topic("txn-crash", 1));
    let producer = txn_producer(&broker, "crash", &[]);
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-crash", 0, &values("aborted", 3));
    producer.abort_transaction(T).expect("abort");

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-crash", 0, &values("open", 3));
    broker.restart_same_port();
    // The open transaction is still open after the restart ...
    let (_, hw) = watermarks(&broker, "txn-crash", 0, "read_uncommitted");
    assert_eq!(hw, 7, "3 aborted + marker + 3 open");
    assert_eq!(watermarks(&broker, "txn-crash", 0, "read_committed").1, 4);
    // ... and the producer commits it.
    send(&producer, "txn-crash", 0, &values("more", 2));
    producer
        .commit_transaction(T)
        .expect("commit after restart");
    broker.restart_same_port();
    let expected: Vec<String> = values("open", 3)
        .into_iter()
        .chain(values("more", 2))
        .collect();
    assert_eq!(
        read_all(&broker, "txn-crash", 0, "read_committed"),
        expected,
        "the aborted range is remembered across restarts"
    );
}
