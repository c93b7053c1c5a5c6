//! Tests of the stored form of groups (`stored.rs`).

use super::super::consumer::Heartbeat;
use super::*;

#[test]
fn a_stable_classic_group_comes_back_as_it_was_stored() {
    let now = Instant::now();
    let mut group = Group::new("g");
    for (id, instance) in [("b-1", None), ("a-2", Some("static-a"))] {
        group.add_member(Member {
            id: id.into(),
            instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_millis(10_000),
            rebalance_timeout: Duration::from_millis(30_000),
            protocols: vec![("range".into(), Bytes::from_static(b"\x00\x01sub"))],
            assignment: Bytes::from(format!("assigned to {id}")),
            last_heartbeat: now,
            awaiting_join: None,
            awaiting_sync: None,
            joined: false,
            supports_skip_assignment: true,
        });
    }
    group.generation = 7;
    group.state = GroupState::Stable;
    group.protocol_type = Some("consumer".into());
    group.protocol = Some("range".into());
    group.leader = Some("b-1".into());
    let row = GroupStateRow {
        coordinator_epoch: 3,
        seq: 1,
        state: serde_json::to_vec(&Snapshot::Classic(ClassicSnapshot::of(&group))).expect("encode"),
    };
    let Ok(Loaded::Classic(back)) = decode("g", &row, now) else {
        panic!("a classic group");
    };
    assert_eq!(back.state, GroupState::Stable);
    assert_eq!(back.generation, 7);
    assert_eq!(back.leader.as_deref(), Some("b-1"));
    assert_eq!(back.join_order, vec!["b-1", "a-2"]);
    assert_eq!(back.static_members["static-a"], "a-2");
    assert_eq!(
        back.members["a-2"].assignment,
        Bytes::from("assigned to a-2")
    );
    assert_eq!(
        back.members["b-1"].protocols,
        group.members["b-1"].protocols
    );
    assert!(back.validate_member("a-2", Some("static-a"), 7).is_ok());
    assert_eq!(classic_fingerprint(&back), classic_fingerprint(&group));
    // Not JSON, or not ours: an error, not a panic.
    let bad = GroupStateRow {
        state: b"{\"kind\":\"classic\",\"generation\":\"x\"}".to_vec(),
        ..row
    };
    assert!(decode("g", &bad, now).is_err());
}

fn heartbeat(member: &str, epoch: i32, owned: Option<BTreeSet<TopicPartition>>) -> Heartbeat {
    Heartbeat {
        member_id: member.to_string(),
        member_epoch: epoch,
        instance_id: None,
        rack_id: Some("zone-a".into()),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        subscribed: Some(vec!["t".into()]),
        subscribed_regex: Some("logs-.*".into()),
        server_assignor: None,
        owned,
    }
}

#[test]
fn a_kip848_group_mid_reconciliation_goes_on_the_same_after_a_reload() {
    let topic = TopicId(uuid::Uuid::from_u128(7));
    let resolve = move |name: &str| (name == "t").then_some((topic, 4));
    let topics = || vec!["t".to_string(), "logs-1".to_string()];
    let now = Instant::now();
    let mut group = ConsumerGroup::new("g");
    let a = group.heartbeat(heartbeat("a", 0, None), now, &resolve, &topics);
    let a_epoch = a.member_epoch;
    // b joins: a must give up half of its partitions first.
    let b = group.heartbeat(heartbeat("b", 0, None), now, &resolve, &topics);
    let b_epoch = b.member_epoch;
    let row = GroupStateRow {
        coordinator_epoch: 1,
        seq: 1,
        state: serde_json::to_vec(&Snapshot::Consumer(ConsumerSnapshot::of(&group)))
            .expect("encode"),
    };
    let Ok(Loaded::Consumer(mut back)) = decode("g", &row, now) else {
        panic!("a KIP-848 group");
    };
    assert_eq!(consumer_fingerprint(&back), consumer_fingerprint(&group));
    assert_eq!(back.state(), group.state());
    assert_eq!(
        back.members["a"]
            .regex
            .as_ref()
            .map(|(text, _)| text.as_str()),
        Some("logs-.*")
    );
    // The same heartbeats get the same answers from both.
    let everything: Vec<TopicPartition> = (0..4).map(|p| (topic, p)).collect();
    for (member, epoch, owned) in [
        ("a", a_epoch, Some(everything.clone())),
        ("b", b_epoch, Some(Vec::new())),
    ] {
        let owned = owned.map(|o| o.into_iter().collect::<BTreeSet<_>>());
        let before = group.heartbeat(
            heartbeat(member, epoch, owned.clone()),
            now,
            &resolve,
            &topics,
        );
        let after = back.heartbeat(heartbeat(member, epoch, owned), now, &resolve, &topics);
        assert_eq!(
            (before.error.is_none(), before.member_epoch),
            (after.error.is_none(), after.member_epoch),
            "{member}"
        );
        assert_eq!(
            group.members[member].assigned, back.members[member].assigned,
            "{member}"
        );
        assert_eq!(
            group.members[member].revoking, back.members[member].revoking,
            "{member}"
        );
    }
    assert!(
        !back.members["a"].revoking.is_empty() || back.members["a"].assigned.len() == 2,
        "a gives up half: {:?}",
        back.members["a"]
    );
}

#[test]
fn hex_rejects_what_is_not_hex() {
    assert!(serde_json::from_str::<Hex>("\"0g\"").is_err());
    assert!(serde_json::from_str::<Hex>("\"abc\"").is_err());
    assert!(serde_json::from_str::<Hex>("\"é0\"").is_err());
    let Hex(bytes) = serde_json::from_str("\"00ff10\"").expect("hex");
    assert_eq!(&bytes[..], &[0x00, 0xff, 0x10]);
}
