//! Consumer groups with real clients: librdkafka consumers (range,
//! roundrobin, cooperative-sticky) sharing partitions and rebalancing on
//! join, leave and crash (a kcat member killed with SIGKILL); commits that
//! survive a broker kill -9 with their metadata; static membership; and the
//! coordinator's fencing errors on raw frames.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::common::TestBroker;

const GROUP_CONFIG: &str = "[groups]\ninitial_rebalance_delay_ms = 300\n";

/// One librdkafka group member on its own thread.
pub(crate) struct Member {
    stop: Arc<AtomicBool>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    handle: Option<JoinHandle<()>>,
}

/// Counts a member's rebalances (assignments and revocations).
#[derive(Default)]
pub(crate) struct Counting {
    pub(crate) rebalances: AtomicUsize,
}

pub type Seen = Arc<Mutex<Vec<String>>>;

pub(crate) fn member(
    addr: &str,
    group: &str,
    topic: &str,
    extra: &[(&str, &str)],
    seen: Seen,
    context: Arc<Counting>,
) -> Member {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200");
    // With KIP-848 the broker owns session and heartbeat timing.
    if !extra.contains(&("group.protocol", "consumer")) {
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "300");
    }
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let assignment = Arc::new(Mutex::new(BTreeSet::new()));
    let (stop2, assignment2, topic) = (
        Arc::clone(&stop),
        Arc::clone(&assignment),
        topic.to_string(),
    );
    let consumer: BaseConsumer<CountingRef> = config
        .create_with_context(CountingRef(context))
        .expect("consumer");
    let handle = std::thread::spawn(move || {
        consumer.subscribe(&[&topic]).expect("subscribe");
        while !stop2.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                seen.lock().expect("seen").push(value);
                let _ = consumer.store_offset_from_message(&m);
            }
            if let Ok(tpl) = consumer.assignment() {
                *assignment2.lock().expect("assignment") =
                    tpl.elements().iter().map(|e| e.partition()).collect();
            }
        }
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        // Dropping the consumer leaves the group (dynamic members).
    });
    Member {
        stop,
        assignment,
        handle: Some(handle),
    }
}

/// Forwards to a shared `Counting` so the test can read it.
struct CountingRef(Arc<Counting>);
impl ClientContext for CountingRef {}
impl ConsumerContext for CountingRef {
    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_) | Rebalance::Revoke(_)) {
            self.0.rebalances.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Member {
    pub(crate) fn assigned(&self) -> BTreeSet<i32> {
        self.assignment.lock().expect("assignment").clone()
    }
    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            handle.join().expect("member thread");
        }
    }
}

pub async fn produce_range(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
) {
    let producer = broker.producer(&[("linger.ms", "5")]);
    let mut pending = Vec::new();
    for i in range {
        let value = format!("rec-{i}");
        let record: FutureRecord<'_, (), String> = FutureRecord::to(topic)
            .partition((i % partitions as usize) as i32)
            .payload(&value);
        pending.push(producer.send_result(record).expect("enqueue"));
    }
    for p in pending {
        p.await.expect("future").expect("delivered");
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each partition owned by exactly one member, all partitions owned.
pub(crate) fn partitioned(assignments: &[BTreeSet<i32>], partitions: i32) -> bool {
    let total: usize = assignments.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
    total == partitions as usize && union == (0..partitions).collect()
}

pub fn all_seen(seens: &[&Seen], count: usize) -> (bool, usize) {
    let mut distinct = HashSet::new();
    let mut total = 0;
    for seen in seens {
        let seen = seen.lock().expect("seen");
        total += seen.len();
        distinct.extend(seen.iter().cloned());
    }
    let complete = (0..count).all(|i| distinct.contains(&format!("rec-{i}")));
    (complete, total - distinct.len())
}

async fn join_leave_rebalance(assignor: &str) {
    let broker = TestBroker::start_configured(GROUP_CONFIG, &[]);
    let topic = format!("g-{assignor}");
    broker.create_topic(&topic, 6).await;
    produce_range(&broker, &topic, 6, 0..600).await;
    let group = format!("grp-{assignor}");
    let strategy = [("partition.assignment.strategy", assignor)];
    let seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    let members: Vec<Member> = (0..3)
        .map(|i| {
            member(
                &broker.addr,
                &group,
                &topic,
                &strategy,
                Arc::clone(&seen[i]),
                Arc::default(),
            )
        })
        .collect();
    wait_until(
        "three members sharing six partitions",
        Duration::from_secs(40),
        || {
            let a: Vec<_> = members.iter().map(Member::assigned).collect();
            partitioned(&a, 6) && a.iter().all(|s| s.len() == 2)
        },
    );
    let refs: Vec<&Seen> = seen.iter().collect();
    wait_until("all 600 records consumed", Duration::from_secs(30), || {
        all_seen(&refs, 600).0
    });

    // One member leaves: the other two take over its partitions.
    let mut members = members;
    let leaver = members.pop().expect("three members");
    leaver.stop();
    produce_range(&broker, &topic, 6, 600..1200).await;
    wait_until(
        "two members sharing six partitions",
        Duration::from_secs(40),
        || {
            let a: Vec<_> = members.iter().map(Member::assigned).collect();
            partitioned(&a, 6)
        },
    );
    wait_until("all 1200 records consumed", Duration::from_secs(30), || {
        all_seen(&refs, 1200).0
    });
    let (_, duplicates) = all_seen(&refs, 1200);
    eprintln!("{assignor}: 1200 records, {duplicates} duplicates (allowed after a rebalance)");
    for m in members {
        m.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_members_share_and_rebalance() {
    join_leave_rebalance("range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_members_share_and_rebalance() {
    join_leave_rebalance("roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_survives_a_crashed_member() {
    let broker = TestBroker::start_configured(GROUP_CONFIG, &[]);
    broker.create_topic("coop", 4).await;
    produce_range(&broker, "coop", 4, 0..400).await;
    let strategy = [("partition.assignment.strategy", "cooperative-sticky")];
    let seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    let members: Vec<Member> = (0..2)
        .map(|i| {
            member(
                &broker.addr,
                "coop-group",
                "coop",
                &strategy,
                Arc::clone(&seen[i]),
                Arc::default(),
            )
        })
        .collect();
    wait_until(
        "two members sharing four partitions",
        Duration::from_secs(40),
        || partitioned(&members.iter().map(Member::assigned).collect::<Vec<_>>(), 4),
    );
    // A third member in another process, killed without leaving.
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &broker.addr,
            "-G",
            "coop-group",
            "coop",
            "-q",
            "-f",
            "%s\n",
        ])
        .args(["-X", "partition.assignment.strategy=cooperative-sticky"])
        .args([
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "auto.offset.reset=earliest",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat is installed by the test command");
    let stdout = kcat.stdout.take().expect("stdout");
    let kcat_seen = Arc::clone(&seen[2]);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            kcat_seen.lock().expect("seen").push(line);
        }
    });
    wait_until(
        "the kcat member to own partitions",
        Duration::from_secs(40),
        || members.iter().map(|m| m.assigned().len()).sum::<usize>() < 4,
    );
    kcat.kill().expect("SIGKILL kcat");
    let _ = kcat.wait();
    let _ = reader.join();
    produce_range(&broker, "coop", 4, 400..800).await;
    wait_until(
        "the survivors to own all partitions again",
        Duration::from_secs(40),
        || partitioned(&members.iter().map(Member::assigned).collect::<Vec<_>>(), 4),
    );
    let refs: Vec<&Seen> = seen.iter().collect();
    wait_until(
        "every record consumed by some member",
        Duration::from_secs(30),
        || all_seen(&refs, 800).0,
    );
    let (_, duplicates) = all_seen(&refs, 800);
    eprintln!("cooperative-sticky with a crash: 800 records, {duplicates} duplicates");
    for m in members {
        m.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_kill_9_with_metadata() {
    let mut broker = TestBroker::start_configured(GROUP_CONFIG, &[]);
    broker.create_topic("resume", 2).await;
    produce_range(&broker, "resume", 2, 0..100).await;
    let config = |addr: &str| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", addr)
            .set("group.id", "resumers")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        c
    };
    let consumer: BaseConsumer = config(&broker.addr).create().expect("consumer");
    consumer.subscribe(&["resume"]).expect("subscribe");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut consumed = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while consumed < 40 {
        assert!(Instant::now() < deadline, "consumed only {consumed}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            next.insert(m.partition(), m.offset() + 1);
            consumed += 1;
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in &next {
        tpl.add_partition_offset("resume", *partition, Offset::Offset(*offset))
            .expect("tpl");
    }
    let mut with_metadata = TopicPartitionList::new();
    for (partition, offset) in &next {
        let mut elem = with_metadata.add_partition("resume", *partition);
        elem.set_offset(Offset::Offset(*offset)).expect("offset");
        elem.set_metadata(format!("checkpoint p{partition}"));
    }
    consumer
        .commit(&with_metadata, CommitMode::Sync)
        .expect("commit");
    drop(consumer);

    broker.restart();
    let consumer: BaseConsumer = config(&broker.addr).create().expect("consumer");
    let committed = consumer
        .committed_offsets(tpl.clone(), Duration::from_secs(10))
        .expect("committed offsets");
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(next[&e.partition()]),
            "offset of {}",
            e.partition()
        );
        assert_eq!(
            e.metadata(),
            format!("checkpoint p{}", e.partition()),
            "metadata comes back as written"
        );
    }
    consumer.subscribe(&["resume"]).expect("subscribe");
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    let mut rest = 0;
    let expected_rest = 100 - next.values().sum::<i64>() as usize;
    let deadline = Instant::now() + Duration::from_secs(40);
    while rest < expected_rest {
        assert!(
            Instant::now() < deadline,
            "resumed consumer read {rest} of {expected_rest}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            first.entry(m.partition()).or_insert(m.offset());
            rest += 1;
        }
    }
    for (partition, offset) in &first {
        assert_eq!(
            Some(offset),
            next.get(partition).or(Some(&0)),
            "resumed at the commit"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_members_recover_from_a_broker_kill_9() {
    let mut broker = TestBroker::start_configured(GROUP_CONFIG, &[]);
    broker.create_topic("survive", 4).await;
    produce_range(&broker, "survive", 4, 0..200).await;
    let seen: Vec<Seen> = (0..2).map(|_| Seen::default()).collect();
    let members: Vec<Member> = (0..2)
        .map(|i| {
            member(
                &broker.addr,
                "survivors",
                "survive",
                &[],
                Arc::clone(&seen[i]),
                Arc::default(),
            )
        })
        .collect();
    let refs: Vec<&Seen> = seen.iter().collect();
    wait_until("200 records consumed", Duration::from_secs(40), || {
        all_seen(&refs, 200).0
    });
    let checker: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "survivors")
        .create()
        .expect("consumer");
    let mut all_partitions = TopicPartitionList::new();
    for p in 0..4 {
        all_partitions.add_partition("survive", p);
    }
    wait_until(
        "the auto-commits to cover all 200 records",
        Duration::from_secs(20),
        || {
            let committed = checker
                .committed_offsets(all_partitions.clone(), Duration::from_secs(5))
                .expect("committed");
            committed
                .elements()
                .iter()
                .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
                .sum::<i64>()
                == 200
        },
    );
    drop(checker);
    // The coordinator's memory is gone; the same members must rejoin by
    // themselves and carry on from their committed offsets.
    broker.restart_same_port();
    produce_range(&broker, "survive", 4, 200..400).await;
    wait_until(
        "the members to rejoin and share all partitions",
        Duration::from_secs(60),
        || {
            partitioned(&members.iter().map(Member::assigned).collect::<Vec<_>>(), 4)
                && members.iter().all(|m| !m.assigned().is_empty())
        },
    );
    wait_until("all 400 records consumed", Duration::from_secs(60), || {
        all_seen(&refs, 400).0
    });
    let mut before_crash: Vec<String> = refs
        .iter()
        .flat_map(|s| s.lock().expect("seen").clone())
        .filter(|v| {
            v.strip_prefix("rec-")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n < 200)
        })
        .collect();
    let total = before_crash.len();
    before_crash.sort();
    before_crash.dedup();
    assert_eq!(
        total,
        before_crash.len(),
        "records committed before the crash were read again"
    );
    let (_, duplicates) = all_seen(&refs, 400);
    eprintln!(
        "broker kill -9 under a live group: 400 records, {duplicates} duplicates after the restart"
    );
    for m in members {
        m.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_commits_land() {
    let broker = TestBroker::start_configured(GROUP_CONFIG, &[]);
    broker.create_topic("async", 1).await;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "async-committers")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("async", 0, Offset::Offset(0))
        .expect("tpl");
    let committed_now = |c: &BaseConsumer| {
        c.committed_offsets(tpl.clone(), Duration::from_secs(10))
            .expect("committed")
            .elements()[0]
            .offset()
    };
    assert_eq!(
        committed_now(&consumer),
        Offset::Invalid,
        "nothing committed yet"
    );
    let mut wanted = TopicPartitionList::new();
    wanted
        .add_partition_offset("async", 0, Offset::Offset(42))
        .expect("tpl");
    consumer
        .commit(&wanted, CommitMode::Async)
        .expect("async commit queued");
    wait_until("the async commit to land", Duration::from_secs(20), || {
        let _ = consumer.poll(Duration::from_millis(50));
        committed_now(&consumer) == Offset::Offset(42)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_rejoins_without_a_rebalance() {
    let broker = TestBroker::start_configured(GROUP_CONFIG, &[]);
    broker.create_topic("static", 4).await;
    let dynamic_ctx = Arc::new(Counting::default());
    let dynamic = member(
        &broker.addr,
        "static-group",
        "static",
        &[],
        Seen::default(),
        Arc::clone(&dynamic_ctx),
    );
    let static_cfg = [("group.instance.id", "instance-1")];
    let first = member(
        &broker.addr,
        "static-group",
        "static",
        &static_cfg,
        Seen::default(),
        Arc::default(),
    );
    wait_until(
        "two members sharing four partitions",
        Duration::from_secs(40),
        || partitioned(&[dynamic.assigned(), first.assigned()], 4) && first.assigned().len() == 2,
    );
    let before = first.assigned();
    let rebalances = dynamic_ctx.rebalances.load(Ordering::SeqCst);
    // A static member does not leave on close; it comes back with the same instance id.
    first.stop();
    let again = member(
        &broker.addr,
        "static-group",
        "static",
        &static_cfg,
        Seen::default(),
        Arc::default(),
    );
    wait_until(
        "the static member to get its partitions back",
        Duration::from_secs(20),
        || again.assigned() == before,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        dynamic_ctx.rebalances.load(Ordering::SeqCst),
        rebalances,
        "the other member saw no rebalance"
    );
    again.stop();
    dynamic.stop();
}

mod raw {
    //! The coordinator's answers on raw frames, code by code.

    use bytes::Bytes;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    use crate::bad_input::Raw;
    use crate::common::TestBroker;

    fn s(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_string())
    }

    fn join(
        raw: &mut Raw,
        member: &str,
        protocol_type: &str,
        session_ms: i32,
    ) -> JoinGroupResponse {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(s("fence")))
            .with_session_timeout_ms(session_ms)
            .with_rebalance_timeout_ms(3000)
            .with_member_id(s(member))
            .with_protocol_type(s(protocol_type))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            ]);
        raw.call(ApiKey::JoinGroup, 7, &request)
    }

    fn heartbeat(raw: &mut Raw, member: &str, generation: i32) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(s("fence")))
            .with_generation_id(generation)
            .with_member_id(s(member));
        let response: HeartbeatResponse = raw.call(ApiKey::Heartbeat, 4, &request);
        response.error_code
    }

    fn commit(raw: &mut Raw, member: &str, generation: i32) -> i16 {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(s("fence")))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default().with_committed_offset(1),
                    ]),
            ]);
        let response: OffsetCommitResponse = raw.call(ApiKey::OffsetCommit, 8, &request);
        response.topics[0].partitions[0].error_code
    }

    #[test]
    fn fencing_codes_match_kafka() {
        let broker =
            TestBroker::start_configured("[groups]\ninitial_rebalance_delay_ms = 0\n", &[]);
        let mut raw = Raw::connect(&broker);
        let create = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s("t")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
        let _: CreateTopicsResponse = raw.call(ApiKey::CreateTopics, 7, &create);

        assert_eq!(
            join(&mut raw, "", "consumer", 1000).error_code,
            26,
            "INVALID_SESSION_TIMEOUT"
        );
        let first = join(&mut raw, "", "consumer", 10_000);
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED (KIP-394)");
        let member = first.member_id.to_string();
        assert!(!member.is_empty());
        assert_eq!(
            join(&mut raw, "made-up", "consumer", 10_000).error_code,
            25,
            "UNKNOWN_MEMBER_ID"
        );
        let joined = join(&mut raw, &member, "consumer", 10_000);
        assert_eq!(joined.error_code, 0);
        assert_eq!(joined.leader.to_string(), member);
        let generation = joined.generation_id;
        assert_eq!(
            join(&mut raw, "", "connect", 10_000).error_code,
            23,
            "INCONSISTENT_GROUP_PROTOCOL"
        );

        assert_eq!(
            heartbeat(&mut raw, &member, generation + 1),
            22,
            "ILLEGAL_GENERATION"
        );
        assert_eq!(
            heartbeat(&mut raw, "stranger", generation),
            25,
            "UNKNOWN_MEMBER_ID"
        );
        assert_eq!(
            commit(&mut raw, &member, generation),
            27,
            "REBALANCE_IN_PROGRESS before SyncGroup"
        );
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("fence")))
            .with_generation_id(generation)
            .with_member_id(s(&member))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(Bytes::from_static(b"mine")),
            ]);
        let synced: SyncGroupResponse = raw.call(ApiKey::SyncGroup, 5, &sync);
        assert_eq!(synced.error_code, 0);
        assert_eq!(&synced.assignment[..], b"mine");
        assert_eq!(heartbeat(&mut raw, &member, generation), 0);
        assert_eq!(commit(&mut raw, &member, generation), 0);
        assert_eq!(
            commit(&mut raw, &member, generation - 1),
            22,
            "stale generation"
        );
        assert_eq!(
            commit(&mut raw, "", -1),
            25,
            "simple commits are refused while members are active"
        );

        let delete: DeleteGroupsResponse = raw.call(
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s("fence")), GroupId(s("nobody"))]),
        );
        assert_eq!(delete.results[0].error_code, 68, "NON_EMPTY_GROUP");
        assert_eq!(delete.results[1].error_code, 69, "GROUP_ID_NOT_FOUND");

        let listed: ListGroupsResponse = raw.call(
            ApiKey::ListGroups,
            4,
            &ListGroupsRequest::default().with_states_filter(vec![s("Stable")]),
        );
        assert_eq!(listed.groups.len(), 1);
        assert_eq!(listed.groups[0].group_state.to_string(), "Stable");
        let empty_only: ListGroupsResponse = raw.call(
            ApiKey::ListGroups,
            4,
            &ListGroupsRequest::default().with_states_filter(vec![s("Empty")]),
        );
        assert!(empty_only.groups.is_empty());

        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("fence")))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&member)),
                MemberIdentity::default().with_member_id(s("ghost")),
            ]);
        let left: LeaveGroupResponse = raw.call(ApiKey::LeaveGroup, 5, &leave);
        assert_eq!(left.members[0].error_code, 0);
        assert_eq!(left.members[1].error_code, 25);
        let described: DescribeGroupsResponse = raw.call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("fence"))]),
        );
        assert_eq!(described.groups[0].group_state.to_string(), "Empty");
        assert!(described.groups[0].members.is_empty());
        // OffsetFetch v8: several groups in one request, all partitions.
        let fetched: OffsetFetchResponse = raw.call(
            ApiKey::OffsetFetch,
            8,
            &OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("fence")))
                    .with_topics(None),
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("nobody")))
                    .with_topics(None),
            ]),
        );
        assert_eq!(fetched.groups.len(), 2);
        let fence = &fetched.groups[0];
        assert_eq!(fence.topics.len(), 1);
        assert_eq!(fence.topics[0].partitions[0].committed_offset, 1);
        assert!(fetched.groups[1].topics.is_empty());
        // Empty now, with its committed offset: deletable.
        let delete: DeleteGroupsResponse = raw.call(
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("fence"))]),
        );
        assert_eq!(delete.results[0].error_code, 0);
    }
}

mod kip848 {
    //! The KIP-848 consumer protocol (`group.protocol=consumer`): server-side
    //! assignment, incremental reconciliation, and a member lost to SIGKILL.

    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    use super::{Member, Seen, all_seen, member, produce_range, wait_until};
    use crate::bad_input::Raw;
    use crate::common::TestBroker;

    const CONFIG: &str =
        "[groups]\nconsumer_session_timeout_ms = 6000\nconsumer_heartbeat_interval_ms = 300\n";

    const PY_MEMBER: &str = r#"
import sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
              "group.protocol": "consumer", "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[3]])
while True:
    m = c.poll(0.2)
    if m is None or m.error():
        continue
    print(m.value().decode(), flush=True)
"#;

    /// (members, union of assigned partitions, any partition owned twice).
    fn described(raw: &mut Raw, group: &str) -> (usize, Vec<i32>, bool, String) {
        let request = ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let response: ConsumerGroupDescribeResponse =
            raw.call(ApiKey::ConsumerGroupDescribe, 0, &request);
        let g = &response.groups[0];
        let mut all: Vec<i32> = g
            .members
            .iter()
            .flat_map(|m| {
                m.assignment
                    .topic_partitions
                    .iter()
                    .flat_map(|t| t.partitions.clone())
            })
            .collect();
        all.sort();
        let mut distinct = all.clone();
        distinct.dedup();
        let doubled = distinct.len() != all.len();
        (
            g.members.len(),
            distinct,
            doubled,
            g.group_state.to_string(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_side_assignment_survives_a_killed_member() {
        crate::common::require_python_module("confluent_kafka");
        let broker = TestBroker::start_configured(CONFIG, &[]);
        broker.create_topic("kip848", 4).await;
        produce_range(&broker, "kip848", 4, 0..400).await;
        let mut raw = Raw::connect(&broker);
        let protocol = [("group.protocol", "consumer")];
        let seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
        let members: Vec<Member> = (0..2)
            .map(|i| {
                member(
                    &broker.addr,
                    "new-proto",
                    "kip848",
                    &protocol,
                    Arc::clone(&seen[i]),
                    Arc::default(),
                )
            })
            .collect();
        let script = broker.data_dir.join("kip848_member.py");
        std::fs::write(&script, PY_MEMBER).expect("write script");
        let mut python = Command::new("python3")
            .arg(&script)
            .args([broker.addr.as_str(), "new-proto", "kip848"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "python3 with confluent-kafka is installed by the test command (scripts/test.sh)",
            );
        let stdout = python.stdout.take().expect("stdout");
        let py_seen = Arc::clone(&seen[2]);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                py_seen.lock().expect("seen").push(line);
            }
        });
        wait_until(
            "three KIP-848 members sharing four partitions",
            Duration::from_secs(60),
            || {
                let (count, partitions, doubled, state) = described(&mut raw, "new-proto");
                assert!(!doubled, "a partition was owned by two members");
                count == 3 && partitions == vec![0, 1, 2, 3] && state == "Stable"
            },
        );
        let refs: Vec<&Seen> = seen.iter().collect();
        wait_until("all 400 records consumed", Duration::from_secs(30), || {
            all_seen(&refs, 400).0
        });

        python.kill().expect("SIGKILL the python member");
        let _ = python.wait();
        let _ = reader.join();
        produce_range(&broker, "kip848", 4, 400..800).await;
        wait_until(
            "the two survivors to own all four partitions",
            Duration::from_secs(60),
            || {
                let (count, partitions, doubled, _) = described(&mut raw, "new-proto");
                assert!(!doubled, "a partition was owned by two members");
                count == 2 && partitions == vec![0, 1, 2, 3]
            },
        );
        wait_until("all 800 records consumed", Duration::from_secs(30), || {
            all_seen(&refs, 800).0
        });
        let (_, duplicates) = all_seen(&refs, 800);
        eprintln!("kip-848 with a killed member: 800 records, {duplicates} duplicates");
        for m in members {
            m.stop();
        }
    }

    #[test]
    fn heartbeat_fencing_on_raw_frames() {
        let broker = TestBroker::start_configured(CONFIG, &[]);
        let mut raw = Raw::connect(&broker);
        let hb = |raw: &mut Raw, member: &str, epoch: i32| -> ConsumerGroupHeartbeatResponse {
            let request = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("raw848")))
                .with_member_id(StrBytes::from_string(member.to_string()))
                .with_member_epoch(epoch)
                .with_rebalance_timeout_ms(5000)
                .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str(
                    "none",
                ))]))
                .with_topic_partitions(Some(vec![]));
            raw.call(ApiKey::ConsumerGroupHeartbeat, 0, &request)
        };
        let joined = hb(&mut raw, "", 0);
        assert_eq!(joined.error_code, 0);
        let id = joined.member_id.expect("member id").to_string();
        assert!(joined.member_epoch > 0);
        assert_eq!(joined.heartbeat_interval_ms, 300);
        assert_eq!(hb(&mut raw, &id, joined.member_epoch).error_code, 0);
        assert_eq!(
            hb(&mut raw, &id, joined.member_epoch + 7).error_code,
            110,
            "FENCED_MEMBER_EPOCH"
        );
        assert_eq!(
            hb(&mut raw, "stranger", 1).error_code,
            25,
            "UNKNOWN_MEMBER_ID"
        );
        let left = hb(&mut raw, &id, -1);
        assert_eq!((left.error_code, left.member_epoch), (0, -1));
        assert_eq!(
            hb(&mut raw, &id, joined.member_epoch).error_code,
            25,
            "gone after leaving"
        );
    }
}
