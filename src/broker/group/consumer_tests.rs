//! Tests of the KIP-848 group state machine (`consumer.rs`).

use super::*;

fn topic() -> TopicId {
    TopicId(uuid::Uuid::from_u128(7))
}

fn hb(member: &str, epoch: i32, owned: Option<&[i32]>) -> Heartbeat {
    Heartbeat {
        member_id: member.to_string(),
        member_epoch: epoch,
        instance_id: None,
        rack_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        subscribed: Some(vec!["t".into()]),
        subscribed_regex: None,
        server_assignor: None,
        owned: owned.map(|ps| ps.iter().map(|p| (topic(), *p)).collect()),
    }
}

#[test]
fn partitions_move_only_after_they_are_released() {
    let resolve = |name: &str| (name == "t").then_some((topic(), 4));
    let now = Instant::now();
    let mut group = ConsumerGroup::new("g");
    let a = group.heartbeat(hb("a", 0, None), now, &resolve, &Vec::new);
    assert_eq!(
        a.assignment.as_ref().map(BTreeSet::len),
        Some(4),
        "alone, a gets everything"
    );
    let a_epoch = a.member_epoch;
    // b joins: its share is still held by a, so b gets nothing yet.
    let b = group.heartbeat(hb("b", 0, None), now, &resolve, &Vec::new);
    assert_eq!(b.assignment.map(|s| s.len()), Some(0));
    // a is told to drop two partitions, keeping its epoch.
    let a = group.heartbeat(
        hb("a", a_epoch, Some(&[0, 1, 2, 3])),
        now,
        &resolve,
        &Vec::new,
    );
    let kept = a.assignment.expect("changed");
    assert_eq!(kept.len(), 2);
    assert_eq!(
        a.member_epoch, a_epoch,
        "epoch moves only after the revocation"
    );
    // b still waits while a has not confirmed.
    let b = group.heartbeat(hb("b", b.member_epoch, Some(&[])), now, &resolve, &Vec::new);
    assert!(b.assignment.is_none_or(|s| s.is_empty()));
    // a confirms: it moves to the new epoch; then b receives the rest.
    let owned: Vec<i32> = kept.iter().map(|(_, p)| *p).collect();
    let a = group.heartbeat(hb("a", a_epoch, Some(&owned)), now, &resolve, &Vec::new);
    assert!(a.member_epoch > a_epoch);
    let b = group.heartbeat(hb("b", b.member_epoch, Some(&[])), now, &resolve, &Vec::new);
    let got = b.assignment.expect("b gets its share");
    assert_eq!(got.len(), 2);
    assert!(got.is_disjoint(&kept));
    assert_eq!(group.state(), "Stable");
    // A stale epoch is fenced; an unknown member too.
    let fenced = group.heartbeat(hb("a", a_epoch - 5, None), now, &resolve, &Vec::new);
    assert_eq!(
        fenced.error.map(|e| e.0),
        Some(ResponseError::FencedMemberEpoch)
    );
    let unknown = group.heartbeat(hb("zed", 3, None), now, &resolve, &Vec::new);
    assert_eq!(
        unknown.error.map(|e| e.0),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn range_and_uniform_cover_every_partition_once() {
    let now = Instant::now();
    let mut members = BTreeMap::new();
    for id in ["m1", "m2", "m3"] {
        let mut g = ConsumerGroup::new("x");
        g.heartbeat(hb(id, 0, None), now, &|_| None, &Vec::new);
        let mut m = g.members.remove(id).expect("member");
        m.subscribed = vec!["t".into()];
        members.insert(id.to_string(), m);
    }
    let topics = BTreeMap::from([("t".to_string(), Some((topic(), 7)))]);
    for assignor in ASSIGNORS {
        let target = assign(assignor, &members, &topics, &BTreeMap::new());
        let all: Vec<TopicPartition> = target.values().flatten().copied().collect();
        let distinct: BTreeSet<TopicPartition> = all.iter().copied().collect();
        assert_eq!(all.len(), 7, "{assignor}");
        assert_eq!(distinct.len(), 7, "{assignor}");
        assert!(
            target.values().all(|s| (2..=3).contains(&s.len())),
            "{assignor} is balanced"
        );
    }
}

#[test]
fn a_regular_expression_subscribes_to_whole_matching_names() {
    let mut group = ConsumerGroup::new("g");
    let now = Instant::now();
    let mut join = hb("a", 0, None);
    join.subscribed = None;
    join.subscribed_regex = Some("t|orders-.*".into());
    let names = || vec!["t".to_string(), "xt".to_string(), "orders-1".to_string()];
    let resolve = |name: &str| match name {
        "t" => Some((topic(), 2)),
        "orders-1" => Some((TopicId(uuid::Uuid::from_u128(9)), 1)),
        _ => None,
    };
    let first = group.heartbeat(join, now, &resolve, &names);
    assert!(first.error.is_none());
    let member = &group.members[&first.member_id];
    assert_eq!(
        member.regex_matches,
        vec!["orders-1".to_string(), "t".to_string()]
    );
    assert_eq!(
        group.target[&first.member_id].len(),
        3,
        "t's 2 partitions and orders-1's"
    );
    let mut bad = hb("b", 0, None);
    bad.subscribed_regex = Some("(".into());
    let refused = group.heartbeat(bad, now, &resolve, &names);
    assert_eq!(
        refused.error.map(|(code, _)| code),
        Some(ResponseError::InvalidRegularExpression),
        "a bad expression is refused"
    );
}
