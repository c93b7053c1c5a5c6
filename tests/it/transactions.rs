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

pub(crate) type TxnProducer = ThreadedProducer<DefaultProducerContext>;

pub(crate) const T: Duration = Duration::from_secs(30);

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) fn txn_producer(broker: &TestBroker, id: &str, extra: &[(&str, &str)]) -> TxnProducer {
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
pub(crate) fn send(producer: &TxnProducer, topic: &str, partition: i32, values: &[String]) {
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

pub(crate) fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Every value in `topic`/`partition` a consumer at `isolation` reads from
/// the start, until it has seen the end of what it may read.
pub(crate) fn read_all(
    broker: &TestBroker,
    topic: &str,
    partition: i32,
    isolation: &str,
) -> Vec<String> {
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
    let http = format!("127.0.0.1:{}", crate::common::free_port());
    let broker = TestBroker::start_configured(
        "[kafka]\ntransaction_abort_check_interval_ms = 200\n",
        &["--http-addr", &http],
    );
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
    let (status, metrics) = crate::common::http_request(&http, "GET", "/metrics");
    assert_eq!(status, 200);
    for line in [
        "strata_transactions_timed_out_total 1",
        "strata_transactions_ended_total{result=\"abort\"} 1",
        "strata_transactions_ended_total{result=\"commit\"} 0",
        "strata_transactions_ongoing 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
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

/// Lines of a progress file: the last number written (0 if none yet).
pub(crate) fn last_progress(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0)
}

/// A child process killed when the test ends, passed or failed.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The classpath of the Java test programs (tests/java, built by
/// scripts/java-deps.sh), which must hold `program`.
pub(crate) fn java_classpath(program: &str) -> String {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join(format!("target/java/classes/{program}.class"))
            .is_file(),
        "the Java test programs are missing: run ./scripts/test.sh (scripts/java-deps.sh)"
    );
    format!(
        "{}/target/java/lib/*:{}/target/java/classes",
        root.display(),
        root.display()
    )
}

/// What read_committed consumers read of `copy-out` partition `p`, each
/// key's sequence numbers going up by one (in order, none twice).
pub(crate) fn copied_in_order(broker: &TestBroker, p: i32) -> Vec<String> {
    let values = read_all(broker, "copy-out", p, "read_committed");
    let mut next: std::collections::HashMap<String, u64> = Default::default();
    for v in &values {
        let (key, seq) = v.split_once(':').expect("key:seq");
        let seq: u64 = seq.parse().expect("seq");
        let expected = next.entry(key.to_string()).or_insert(0);
        assert_eq!(
            seq, *expected,
            "partition {p}: {key} out of order or repeated"
        );
        *expected += 1;
    }
    values
}

/// The copier tests' input in `copy-in`: `keys` keys, each with
/// increasing sequence numbers (`k3:000012`), a key's records in one
/// partition.
pub(crate) async fn copier_input(broker: &TestBroker, total: usize, partitions: i32, keys: usize) {
    let input: rdkafka::producer::FutureProducer = broker.producer(&[("linger.ms", "20")]);
    let sends = (0..total).map(|i| {
        let key = format!("k{}", i % keys);
        let value = format!("{key}:{:06}", i / keys);
        let partition = (i % keys) as i32 % partitions;
        let input = &input;
        async move {
            input
                .send(
                    rdkafka::producer::FutureRecord::to("copy-in")
                        .partition(partition)
                        .key(&key)
                        .payload(&value),
                    T,
                )
                .await
                .expect("input record");
        }
    });
    futures::future::join_all(sends).await;
}

/// The Java client's exactly-once copier (tests/java/src/TxnCopier.java:
/// read_committed consumer, transactional producer, offsets committed in
/// the transaction, every 7th transaction aborted on purpose) copies a
/// topic while the broker is killed -9 three times and the copier itself
/// once: the output holds every input record exactly once, in order per
/// key, for read_committed consumers; read_uncommitted ones also see the
/// aborted copies.
#[test]
fn java_transactional_copier_across_kill_9_copies_every_record_once() {
    const TOTAL: usize = 20_000;
    const PARTITIONS: i32 = 4;
    const KEYS: usize = 64;
    let classpath = java_classpath("TxnCopier");
    let mut broker = TestBroker::start(&[]);
    let rt = runtime();
    rt.block_on(broker.create_topic("copy-in", PARTITIONS));
    rt.block_on(broker.create_topic("copy-out", PARTITIONS));

    // The input: KEYS keys, each with increasing sequence numbers, a key's
    // records in one partition.
    rt.block_on(copier_input(&broker, TOTAL, PARTITIONS, KEYS));

    let scratch = tempfile::tempdir().expect("tempdir");
    // Restarts keep the port, so the copiers reconnect to the same address.
    let addr = broker.addr.clone();
    let copier = |n: usize| {
        let progress = scratch.path().join(format!("progress-{n}"));
        let child = std::process::Command::new("java")
            .args(["-Xmx512m", "-cp", &classpath, "TxnCopier"])
            .args([
                addr.as_str(),
                "copy-in",
                "copy-out",
                "copiers",
                "the-copier",
                &TOTAL.to_string(),
                progress.to_str().expect("utf-8 path"),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the Java copier");
        (KillOnDrop(child), progress)
    };
    let wait_for = |progress: &std::path::Path, child: &mut KillOnDrop, at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(240);
        while last_progress(progress) < at_least {
            if let Some(status) = child.0.try_wait().expect("copier status") {
                panic!("the copier exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the copier stalled below {at_least} records"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let (mut first, progress) = copier(1);
    wait_for(&progress, &mut first, 2_000);
    broker.restart_same_port();
    wait_for(&progress, &mut first, 6_000);
    // The copier dies mid-transaction; its successor (same
    // transactional.id) aborts what it left open and goes on from the
    // committed offsets.
    drop(first);
    let (mut second, progress) = copier(2);
    wait_for(&progress, &mut second, 2_000);
    broker.restart_same_port();
    assert_eq!(broker.addr, addr);
    wait_for(&progress, &mut second, 6_000);
    broker.restart_same_port();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = second.0.try_wait().expect("copier status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the copier did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the copier finished: {status}");

    let mut committed = Vec::new();
    let mut uncommitted = 0usize;
    for p in 0..PARTITIONS {
        committed.extend(copied_in_order(&broker, p));
        uncommitted += read_all(&broker, "copy-out", p, "read_uncommitted").len();
    }
    assert_eq!(
        committed.len(),
        TOTAL,
        "every input record once in the output"
    );
    let distinct: std::collections::HashSet<&String> = committed.iter().collect();
    assert_eq!(distinct.len(), TOTAL, "no record copied twice");
    assert!(
        uncommitted > TOTAL,
        "aborted copies are in the log ({uncommitted} records for read_uncommitted)"
    );
}

/// Kafka Streams (from Maven) with `processing.guarantee=exactly_once_v2`:
/// a word count (tests/java/src/StreamsCount.java, with a repartition and a
/// changelog topic) killed -9 mid-stream and started again: every word's
/// count ends exact and never goes past it in the committed output.
#[test]
fn kafka_streams_exactly_once_v2_counts_exactly_across_kill_9() {
    const WORDS: usize = 30;
    const EACH: usize = 400;
    let classpath = java_classpath("StreamsCount");
    let broker = TestBroker::start_configured("[groups]\ninitial_rebalance_delay_ms = 300\n", &[]);
    let rt = runtime();
    rt.block_on(broker.create_topic("words", 3));
    rt.block_on(broker.create_topic("counts", 3));
    let input: rdkafka::producer::FutureProducer = broker.producer(&[("linger.ms", "20")]);
    // Half the words before the first instance, half after the kill.
    let produce = |from: usize, to: usize| {
        rt.block_on(async {
            let sends = (from..to).map(|i| {
                let word = format!("w{:02}", i % WORDS);
                let key = i.to_string();
                let input = &input;
                async move {
                    input
                        .send(
                            rdkafka::producer::FutureRecord::to("words")
                                .key(&key)
                                .payload(&word),
                            T,
                        )
                        .await
                        .expect("input record");
                }
            });
            futures::future::join_all(sends).await;
        })
    };
    let total = WORDS * EACH;
    produce(0, total / 2);

    let state = tempfile::tempdir().expect("state dir");
    let start = || {
        KillOnDrop(
            std::process::Command::new("java")
                .args(["-Xmx512m", "-cp", &classpath, "StreamsCount"])
                .args([
                    broker.addr.as_str(),
                    "wordcount",
                    "words",
                    "counts",
                    state.path().to_str().expect("utf-8 path"),
                    "exactly_once_v2",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start Kafka Streams"),
        )
    };
    let output: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "wordcount-checker")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("counts", p, Offset::Beginning)
            .expect("offset");
    }
    output.assign(&tpl).expect("assign");
    let mut counts: std::collections::HashMap<String, u64> = Default::default();
    let mut updates = 0usize;
    let mut watch = |until: &dyn Fn(&std::collections::HashMap<String, u64>, usize) -> bool,
                     app: &mut KillOnDrop| {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !until(&counts, updates) {
            if let Some(status) = app.0.try_wait().expect("streams status") {
                panic!("Kafka Streams exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the counts stalled at {counts:?}"
            );
            let Some(message) = output.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.expect("output record");
            let word = String::from_utf8_lossy(message.key().unwrap_or_default()).to_string();
            let count: u64 = String::from_utf8_lossy(message.payload().unwrap_or_default())
                .parse()
                .expect("a count");
            assert!(
                count <= EACH as u64,
                "{word} counted {count} times, it occurs {EACH} times: a record was counted twice"
            );
            let seen = counts.entry(word.clone()).or_insert(0);
            assert!(
                count >= *seen,
                "{word}'s count went back from {seen} to {count}"
            );
            *seen = count;
            updates += 1;
        }
    };
    let mut app = start();
    // Kill it once some counts are out, while it is still working.
    watch(&|counts, _| counts.values().sum::<u64>() >= 1_500, &mut app);
    drop(app);
    produce(total / 2, total);
    let mut app = start();
    watch(
        &|counts, _| counts.len() == WORDS && counts.values().all(|c| *c == EACH as u64),
        &mut app,
    );
    assert!(updates > WORDS, "the counts were updated as they went");
}

/// `strata export parquet` exports committed data only: aborted records
/// are skipped, and sealed chunks at or above an open transaction wait for
/// a later run (read back with pyarrow and duckdb).
#[test]
fn export_skips_aborted_records_and_waits_for_open_transactions() {
    crate::common::require_python_module("pyarrow");
    crate::common::require_python_module("duckdb");
    let broker = TestBroker::start(&["--seal-interval-ms", "200"]);
    runtime().block_on(broker.create_topic("txn-export", 1));
    let producer = txn_producer(&broker, "exporter", &[]);
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-export", 0, &values("kept", 5));
    producer.commit_transaction(T).expect("commit");
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-export", 0, &values("aborted", 4));
    producer.abort_transaction(T).expect("abort");
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-export", 0, &values("open", 3));

    let sealed =
        || broker.metadata_rows("SELECT COUNT(*) FROM chunks WHERE index_len = 0")[0][0] == "0";
    let export = |dir: &std::path::Path| -> serde_json::Value {
        let out = std::process::Command::new(crate::common::STRATA)
            .args(["export", "parquet", "txn-export", "--to"])
            .arg(dir)
            .arg("--data-dir")
            .arg(&broker.data_dir)
            .args(broker.metadata_args())
            .env("RUST_LOG", "warn")
            .env_remove("STRATA_CONFIG")
            .output()
            .expect("run strata export");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("summary")
    };
    let read_values = |dir: &std::path::Path| -> Vec<String> {
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/clients/read_parquet.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(dir.join("txn-export"))
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        read["pyarrow"]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                let hex = r[5].as_str().expect("value");
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect();
                String::from_utf8(bytes).expect("utf-8")
            })
            .collect()
    };
    let deadline = Instant::now() + T;
    while !sealed() {
        assert!(Instant::now() < deadline, "never sealed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let first = export(dir.path());
    assert!(
        first["unstable_chunks"].as_u64() >= Some(1),
        "the chunk with the open transaction waits: {first}"
    );
    let exported = if first["files_written"].as_u64() > Some(0) {
        read_values(dir.path())
    } else {
        Vec::new()
    };
    assert!(
        exported.iter().all(|v| v.starts_with("kept")),
        "only committed records: {exported:?}"
    );
    producer.commit_transaction(T).expect("commit");
    let deadline = Instant::now() + T;
    while !sealed() {
        assert!(Instant::now() < deadline, "never sealed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = export(dir.path());
    assert_eq!(second["unstable_chunks"], 0, "{second}");
    let expected: Vec<String> = values("kept", 5)
        .into_iter()
        .chain(values("open", 3))
        .collect();
    assert_eq!(
        read_values(dir.path()),
        expected,
        "committed records, aborted ones skipped"
    );
}

/// Log compaction over transactions: an aborted update of a key never
/// stands for the key's latest value (the committed value survives
/// compaction), aborted records are removed, and every read_committed
/// record keeps its offset.
#[test]
fn compaction_keeps_committed_values_over_aborted_updates() {
    let broker = TestBroker::start(&["--seal-interval-ms", "200", "--cleaner-backoff-ms", "300"]);
    let rt = runtime();
    rt.block_on(async {
        use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
        let topic = NewTopic::new("txn-compact", 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("min.cleanable.dirty.ratio", "0.01");
        for result in broker
            .admin()
            .create_topics(&[topic], &AdminOptions::new())
            .await
            .expect("create topics")
        {
            result.expect("topic created");
        }
    });
    let producer = txn_producer(&broker, "compacting", &[]);
    let round = |value: &str, keys: std::ops::Range<usize>, commit: bool| {
        producer.begin_transaction().expect("begin");
        for k in keys {
            let key = format!("k{k}");
            producer
                .send(
                    BaseRecord::to("txn-compact")
                        .partition(0)
                        .key(&key)
                        .payload(value),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue");
        }
        producer.flush(T).expect("flush");
        if commit {
            producer.commit_transaction(T).expect("commit");
        } else {
            producer.abort_transaction(T).expect("abort");
        }
    };
    round("v1", 0..10, true);
    round("v2-aborted", 0..10, false);
    round("v3", 0..5, true);
    // Some superseded data after the aborted round, so compaction has work.
    for _ in 0..3 {
        round("v4", 5..6, true);
    }
    let latest = |broker: &TestBroker| -> std::collections::BTreeMap<String, (i64, String)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("group.id", "txn-tests-unused")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("txn-compact", 0, Offset::Beginning)
            .expect("offset");
        consumer.assign(&tpl).expect("assign");
        let mut out = std::collections::BTreeMap::new();
        let mut count = 0;
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("consume error: {e}"),
                Some(Ok(m)) => {
                    count += 1;
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
                    let value =
                        String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                    out.insert(key, (m.offset(), value));
                }
            }
        }
        out.insert("#records".into(), (count, String::new()));
        out
    };
    let before = latest(&broker);
    let mut expected: std::collections::BTreeMap<String, String> = (0..10)
        .map(|k| (format!("k{k}"), if k < 5 { "v3" } else { "v1" }.to_string()))
        .collect();
    expected.insert("k5".into(), "v4".into());
    let deadline = Instant::now() + T;
    loop {
        let now = latest(&broker);
        // The latest committed value of every key, at the offset it had.
        for (key, value) in &expected {
            let (offset, got) = &now[key];
            assert_eq!(
                got, value,
                "{key}: the committed value, never the aborted one"
            );
            assert_eq!(offset, &before[key].0, "{key} keeps its offset");
        }
        // Compacted: one record per key left for read_committed consumers.
        if now["#records"].0 == expected.len() as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted: {} records",
            now["#records"].0
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let uncommitted = read_all(&broker, "txn-compact", 0, "read_uncommitted");
    assert!(
        !uncommitted.contains(&"v2-aborted".to_string()),
        "aborted records are removed by compaction: {uncommitted:?}"
    );
    // Nor is the aborted transaction remembered once its records are gone
    // (else a compacted partition's list of them grows forever).
    let deadline = Instant::now() + T;
    while broker.metadata_rows("SELECT COUNT(*) FROM aborted_txns")[0][0] != "0" {
        assert!(
            Instant::now() < deadline,
            "the aborted transaction below the clean offset is still stored"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let now = latest(&broker);
    for (key, value) in &expected {
        assert_eq!(&now[key].1, value, "{key}: still the committed value");
    }
}

/// A partition keeps only its newest aborted transactions in memory
/// (`cache.aborted_txns_per_partition`, here 3); a read_committed read of
/// older data reads the older ones from the store, before and after a
/// restart, and still sees committed records only.
#[test]
fn aborted_transactions_past_the_memory_window_are_read_from_the_store() {
    let http = format!("127.0.0.1:{}", crate::common::free_port());
    let mut broker = TestBroker::start_configured(
        "[cache]\naborted_txns_per_partition = 3\n",
        &["--http-addr", &http],
    );
    let rt = runtime();
    rt.block_on(broker.create_topic("kept", 1));
    let producer = txn_producer(&broker, "windowed", &[]);
    let mut expected = Vec::new();
    for round in 0..12 {
        producer.begin_transaction().expect("begin");
        let batch = values(&format!("r{round}"), 3);
        send(&producer, "kept", 0, &batch);
        if round % 2 == 1 {
            producer.abort_transaction(T).expect("abort");
        } else {
            producer.commit_transaction(T).expect("commit");
            expected.extend(batch);
        }
    }
    drop(producer);
    assert_eq!(
        broker.metadata_rows("SELECT COUNT(*) FROM aborted_txns")[0][0],
        "6",
        "every aborted transaction is stored"
    );
    let store_reads = || crate::cluster::metric(&http, "strata_aborted_txns_store_reads_total");
    assert_eq!(store_reads(), 0.0);
    assert_eq!(read_all(&broker, "kept", 0, "read_committed"), expected);
    assert!(store_reads() > 0.0, "the oldest ones came from the store");
    broker.restart();
    assert_eq!(
        read_all(&broker, "kept", 0, "read_committed"),
        expected,
        "after a restart, which loads the newest three"
    );
    assert!(store_reads() > 0.0);
    assert_eq!(read_all(&broker, "kept", 0, "read_uncommitted").len(), 36);
}

/// KIP-890 on raw frames. Part 1: a transactional batch for a partition not
/// added to the transaction is refused (Produce before v12). Part 2
/// (transaction.version 2): Produce v12 adds the partition itself, EndTxn
/// v5 answers a new epoch, a retry of it with the old epoch gets the same
/// answer, and a late batch of the ended transaction (old epoch) cannot
/// land in the next one.
#[test]
fn kip_890_late_writes_of_an_ended_transaction_are_refused() {
    use kafka_protocol::messages::{
        ApiKey, EndTxnRequest, EndTxnResponse, ProduceResponse, ProducerId, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    const INVALID_PRODUCER_EPOCH: i16 = 47;
    const INVALID_TXN_STATE: i16 = 48;
    let broker = TestBroker::start(&[]);
    let mut raw = crate::bad_input::Raw::connect(&broker);
    assert_eq!(crate::bad_input::create_topic(&mut raw, "late", &[]), 0);
    let (code, pid, epoch) =
        crate::idempotence::init_producer_id(&mut raw, Some("late-writer"), (-1, -1));
    assert_eq!((code, epoch), (0, 0));
    let batch = |epoch: i16, seq: i32, count: usize| {
        crate::idempotence::producer_batch(pid, epoch, seq, count, true, false)
    };
    let produce = |raw: &mut crate::bad_input::Raw, version: i16, records| {
        let response: ProduceResponse = raw.call(
            ApiKey::Produce,
            version,
            &crate::bad_input::produce_request("late", 0, records, -1),
        );
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    let end = |raw: &mut crate::bad_input::Raw, epoch: i16, commit: bool| {
        let response: EndTxnResponse = raw.call(
            ApiKey::EndTxn,
            5,
            &EndTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("late-writer")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(commit),
        );
        (
            response.error_code,
            response.producer_id.0,
            response.producer_epoch,
        )
    };
    // Part 1: not added, refused.
    assert_eq!(produce(&mut raw, 9, batch(0, 0, 2)).0, INVALID_TXN_STATE);
    // Part 2: Produce v12 adds the partition.
    assert_eq!(produce(&mut raw, 12, batch(0, 0, 2)), (0, 0));
    assert_eq!(
        end(&mut raw, 0, true),
        (0, pid, 1),
        "EndTxn v5 answers the next epoch"
    );
    assert_eq!(
        end(&mut raw, 0, true),
        (0, pid, 1),
        "a retry gets the same answer"
    );
    // The ended transaction's late batch: its epoch is fenced.
    assert_eq!(
        produce(&mut raw, 12, batch(0, 2, 1)).0,
        INVALID_PRODUCER_EPOCH
    );
    // The next transaction, at the new epoch, sequences from 0.
    assert_eq!(produce(&mut raw, 12, batch(1, 0, 1)), (0, 3));
    assert_eq!(end(&mut raw, 1, false), (0, pid, 2));
    assert_eq!(
        end(&mut raw, 1, true).0,
        INVALID_TXN_STATE,
        "not the end it made"
    );
    assert_eq!(
        read_all(&broker, "late", 0, "read_committed").len(),
        2,
        "the first transaction's two records; the aborted one is skipped"
    );
    assert_eq!(read_all(&broker, "late", 0, "read_uncommitted").len(), 3);
}

/// OffsetFetch `require_stable` (KIP-447) on raw frames: while a
/// transaction holds an offset for the group, a stable fetch answers
/// UNSTABLE_OFFSET_COMMIT for that partition (the client retries) and an
/// unstable one the offset committed before; after the commit both see the
/// new offset.
#[test]
fn require_stable_waits_for_transactional_offsets() {
    let broker = TestBroker::start(&[]);
    let mut raw = crate::bad_input::Raw::connect(&broker);
    assert_eq!(crate::bad_input::create_topic(&mut raw, "stable", &[]), 0);
    let mut again = crate::bad_input::Raw::connect(&broker);
    stable_offsets_scenario(&mut raw, &mut again, "stable-group");
}

/// The require_stable scenario on topic `stable` (partition 0): the
/// transaction (id `offsets`) through `at_txn`, its offset for `group`
/// committed and fetched through `at_group`.
pub(crate) fn stable_offsets_scenario(
    at_txn: &mut crate::bad_input::Raw,
    at_group: &mut crate::bad_input::Raw,
    group: &str,
) {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse,
        GroupId, OffsetFetchRequest, OffsetFetchResponse, ProducerId, TopicName, TransactionalId,
        TxnOffsetCommitRequest, TxnOffsetCommitResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    let (code, pid, epoch) =
        crate::idempotence::init_producer_id(at_txn, Some("offsets"), (-1, -1));
    assert_eq!(code, 0);
    let txn_id = || TransactionalId(StrBytes::from_static_str("offsets"));
    let group_id = || GroupId(StrBytes::from_string(group.to_string()));
    let fetch = |raw: &mut crate::bad_input::Raw, stable: bool| {
        let response: OffsetFetchResponse = raw.call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(group_id())
                .with_require_stable(stable)
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str("stable")))
                        .with_partition_indexes(vec![0]),
                ])),
        );
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.committed_offset)
    };
    let added: AddOffsetsToTxnResponse = at_txn.call(
        ApiKey::AddOffsetsToTxn,
        3,
        &AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn_id())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(group_id()),
    );
    assert_eq!(added.error_code, 0);
    let committed: TxnOffsetCommitResponse = at_group.call(
        ApiKey::TxnOffsetCommit,
        3,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(txn_id())
            .with_group_id(group_id())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("stable")))
                    .with_partitions(vec![
                        TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(42),
                    ]),
            ]),
    );
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch(at_group, true).0, UNSTABLE_OFFSET_COMMIT);
    assert_eq!(fetch(at_group, false), (0, -1), "nothing committed yet");
    let end: EndTxnResponse = at_txn.call(
        ApiKey::EndTxn,
        3,
        &EndTxnRequest::default()
            .with_transactional_id(txn_id())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true),
    );
    assert_eq!(end.error_code, 0);
    assert_eq!(fetch(at_group, true), (0, 42));
    assert_eq!(fetch(at_group, false), (0, 42));
}

/// The last epoch of a producer id (KIP-890 part 2 bumps it with every
/// transaction): the markers of the transaction that exhausts it go out
/// under the id the partitions know (at epoch 32767), so its partitions
/// become stable; EndTxn answers a new producer id at epoch 0, and a late
/// batch of the old id is fenced.
#[test]
fn an_exhausted_producer_epoch_moves_to_a_new_id_without_a_stuck_partition() {
    use kafka_protocol::messages::{
        ApiKey, EndTxnRequest, EndTxnResponse, ProduceResponse, ProducerId, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    const INVALID_PRODUCER_EPOCH: i16 = 47;
    let mut broker = TestBroker::start(&[]);
    let mut raw = crate::bad_input::Raw::connect(&broker);
    assert_eq!(crate::bad_input::create_topic(&mut raw, "exhaust", &[]), 0);
    let (code, pid, _) = crate::idempotence::init_producer_id(&mut raw, Some("old-one"), (-1, -1));
    assert_eq!(code, 0);
    // Skip 32,765 transactions: the stored epoch, while the broker is down.
    broker.kill9();
    broker.metadata_rows(
        "UPDATE transactions SET producer_epoch = 32765 WHERE transactional_id = 'old-one'",
    );
    broker.restart();
    let mut raw = crate::bad_input::Raw::connect(&broker);
    let produce = |raw: &mut crate::bad_input::Raw, pid: i64, epoch: i16, seq: i32| {
        let response: ProduceResponse = raw.call(
            ApiKey::Produce,
            12,
            &crate::bad_input::produce_request(
                "exhaust",
                0,
                crate::idempotence::producer_batch(pid, epoch, seq, 1, true, false),
                -1,
            ),
        );
        response.responses[0].partition_responses[0].error_code
    };
    let end = |raw: &mut crate::bad_input::Raw, pid: i64, epoch: i16| {
        let response: EndTxnResponse = raw.call(
            ApiKey::EndTxn,
            5,
            &EndTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("old-one")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(true),
        );
        (
            response.error_code,
            response.producer_id.0,
            response.producer_epoch,
        )
    };
    assert_eq!(produce(&mut raw, pid, 32765, 0), 0);
    assert_eq!(end(&mut raw, pid, 32765), (0, pid, 32766));
    assert_eq!(produce(&mut raw, pid, 32766, 0), 0);
    let (code, new_pid, epoch) = end(&mut raw, pid, 32766);
    assert_eq!(
        (code, epoch),
        (0, 0),
        "the last epoch's end moves to a new id"
    );
    assert_ne!(new_pid, pid);
    assert_eq!(
        end(&mut raw, pid, 32766),
        (0, new_pid, 0),
        "a retry of that end gets the same answer"
    );
    // Both transactions are committed and the partition is stable.
    assert_eq!(read_all(&broker, "exhaust", 0, "read_committed").len(), 2);
    let (_, hw) = watermarks(&broker, "exhaust", 0, "read_uncommitted");
    assert_eq!(watermarks(&broker, "exhaust", 0, "read_committed").1, hw);
    // The old id is fenced; the new one writes.
    assert_eq!(produce(&mut raw, pid, 32766, 1), INVALID_PRODUCER_EPOCH);
    assert_eq!(produce(&mut raw, new_pid, 0, 0), 0);
}

/// A transactional id idle past `transactional.id.expiration.ms` is
/// forgotten (ListTransactions no longer shows it); its producer coming
/// back with the id and epoch it holds (KIP-360) starts over instead of
/// failing.
#[test]
fn idle_transactional_ids_expire_and_start_over() {
    use kafka_protocol::messages::{ApiKey, ListTransactionsRequest, ListTransactionsResponse};
    let broker = TestBroker::start_configured(
        "[kafka]\ntransactional_id_expiration_ms = 300\ntransactional_id_expiration_check_interval_ms = 100\n",
        &[],
    );
    let mut raw = crate::bad_input::Raw::connect(&broker);
    let (code, pid, epoch) = crate::idempotence::init_producer_id(&mut raw, Some("idle"), (-1, -1));
    assert_eq!((code, epoch), (0, 0));
    let listed = |raw: &mut crate::bad_input::Raw| -> Vec<String> {
        let response: ListTransactionsResponse = raw.call(
            ApiKey::ListTransactions,
            1,
            &ListTransactionsRequest::default().with_duration_filter(-1),
        );
        response
            .transaction_states
            .iter()
            .map(|t| t.transactional_id.to_string())
            .collect()
    };
    assert_eq!(listed(&mut raw), ["idle"]);
    let deadline = Instant::now() + T;
    while !listed(&mut raw).is_empty() {
        assert!(Instant::now() < deadline, "the idle id was never forgotten");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, again, epoch) =
        crate::idempotence::init_producer_id(&mut raw, Some("idle"), (pid, 0));
    assert_eq!((code, epoch), (0, 0), "starts over at epoch 0");
    assert_ne!(again, pid, "with a new producer id");
}
