//! Topics, consumer groups, producer and transaction state.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{TestBackend, chunk};
use crate::metadata::{ChunkCommit, ChunkRecord, CommittedOffset, GroupStateRow, ObjectCommit};

on_every_backend!(
    group_offsets_commit_fetch_and_expire,
    group_state_is_ordered_by_coordinator_epoch,
    admin_changes_and_producer_state_are_stored,
    transaction_rows,
    transaction_writes_are_fenced_by_coordinator_epoch,
    aborted_transactions_are_read_by_range_and_forgotten,
);

/// Commits `chunk` of partition 0 in object "w1" with `aborted`.
async fn commit_chunk(
    store: &dyn crate::metadata::MetadataStore,
    id: crate::metadata::TopicId,
    chunk: ChunkRecord,
    aborted: Vec<crate::metadata::AbortedTxn>,
) {
    store
        .record_intents("0:1", vec!["w1".into()])
        .await
        .expect("intent");
    store
        .commit_object(ObjectCommit {
            object_key: "w1".into(),
            object_size: 100,
            chunks: vec![ChunkCommit {
                topic_id: id,
                partition: 0,
                leader_epoch: 0,
                chunk: ChunkRecord {
                    object_key: Arc::from("w1"),
                    ..chunk
                },
                producers: Vec::new(),
                aborted,
            }],
        })
        .await
        .expect("commit");
}

/// What a partition's aborted transactions are read and forgotten by:
/// the newest ones (memory's window), a range (a read below the window),
/// and those compaction left without records.
async fn aborted_transactions_are_read_by_range_and_forgotten(backend: TestBackend) {
    use crate::metadata::AbortedTxn;
    let store = backend.open().await;
    let id = store
        .create_topic("t", 1, BTreeMap::new(), vec![0])
        .await
        .expect("create")
        .id;
    let txn = |marker: i64| AbortedTxn {
        producer_id: marker,
        first_offset: marker - 5,
        last_offset: marker,
    };
    commit_chunk(
        store.as_ref(),
        id,
        chunk(0, 99),
        [10, 20, 30, 40, 50].map(txn).to_vec(),
    )
    .await;
    let markers = |list: Vec<AbortedTxn>| list.iter().map(|a| a.last_offset).collect::<Vec<_>>();
    let recent = store.recent_aborted(id, 0, 2).await.expect("recent");
    assert_eq!(markers(recent), vec![40, 50], "the newest, in marker order");
    let (_, newest) = store.partition_state(id, 0, 3).await.expect("state");
    assert_eq!(markers(newest), vec![30, 40, 50]);
    let range = store
        .aborted_range(id, 0, 25, 45, 100)
        .await
        .expect("range");
    assert_eq!(
        markers(range),
        vec![30, 40],
        "marker >= 25, first offset < 45"
    );
    let limited = store.aborted_range(id, 0, 0, 100, 2).await.expect("range");
    assert_eq!(markers(limited), vec![10, 20]);
    store
        .forget_aborted(id, 0, 45, vec![20])
        .await
        .expect("forget");
    let left = store.recent_aborted(id, 0, 100).await.expect("recent");
    assert_eq!(
        markers(left),
        vec![20, 50],
        "below 45 only the kept one stays"
    );
}

async fn group_offsets_commit_fetch_and_expire(backend: TestBackend) {
    let store = backend.open().await;
    let topic = store
        .create_topic("t", 2, BTreeMap::new(), vec![0])
        .await
        .expect("create");
    let offset = |partition, offset, commit_ms| CommittedOffset {
        topic_id: topic.id,
        partition,
        offset,
        leader_epoch: 3,
        metadata: Some(format!("m{offset}")),
        commit_ms,
    };
    store
        .commit_offsets("old", None, vec![offset(0, 5, 1_000), offset(1, 6, 1_000)])
        .await
        .expect("commit");
    store
        .commit_offsets("busy", None, vec![offset(0, 7, 1_000)])
        .await
        .expect("commit");
    store
        .commit_offsets("fresh", None, vec![offset(0, 8, 9_000)])
        .await
        .expect("commit");
    // A later commit overwrites, with its metadata.
    store
        .commit_offsets("old", None, vec![offset(1, 9, 1_000)])
        .await
        .expect("commit");
    let old = store.fetch_offsets("old").await.expect("fetch");
    assert_eq!(
        old.iter()
            .map(|o| (o.partition, o.offset))
            .collect::<Vec<_>>(),
        vec![(0, 5), (1, 9)]
    );
    assert_eq!(old[1].metadata.as_deref(), Some("m9"));
    store
        .record_group("busy", "consumer")
        .await
        .expect("record");
    let groups = store.stored_groups().await.expect("groups");
    assert!(groups.contains(&("busy".to_string(), "consumer".to_string())));
    assert!(groups.contains(&("old".to_string(), String::new())));
    // Expire before t=5000, except the group that still has members.
    let expired = store
        .expire_offsets(5_000, vec!["busy".into()])
        .await
        .expect("expire");
    assert_eq!(expired, 2);
    assert!(store.fetch_offsets("old").await.expect("fetch").is_empty());
    assert_eq!(store.fetch_offsets("busy").await.expect("fetch").len(), 1);
    assert_eq!(store.fetch_offsets("fresh").await.expect("fetch").len(), 1);
    store.delete_group("busy").await.expect("delete");
    assert!(store.fetch_offsets("busy").await.expect("fetch").is_empty());
    // Deleting the topic deletes its offsets.
    store.delete_topic(topic.id).await.expect("delete topic");
    assert!(
        store
            .fetch_offsets("fresh")
            .await
            .expect("fetch")
            .is_empty()
    );
}

async fn group_state_is_ordered_by_coordinator_epoch(backend: TestBackend) {
    let store = backend.open().await;
    let row = |coordinator_epoch, seq, state: &str| GroupStateRow {
        coordinator_epoch,
        seq,
        state: state.as_bytes().to_vec(),
    };
    assert_eq!(store.group_state("g").await.expect("read"), None);
    // A group recorded without state has none.
    store.record_group("g", "consumer").await.expect("record");
    assert_eq!(store.group_state("g").await.expect("read"), None);
    let put = |r: GroupStateRow| {
        let store = Arc::clone(&store);
        async move {
            store
                .put_group_state("g", "consumer", r)
                .await
                .expect("put")
        }
    };
    assert!(put(row(3, 10, "a")).await);
    assert!(put(row(3, 11, "b")).await);
    // Older writes of the same coordinator, or any of an earlier one, lose.
    assert!(!put(row(3, 11, "stale")).await);
    assert!(!put(row(3, 9, "stale")).await);
    assert!(!put(row(2, 99, "zombie")).await);
    assert_eq!(
        store.group_state("g").await.expect("read"),
        Some(row(3, 11, "b"))
    );
    // The next coordinator's first write wins whatever its sequence.
    assert!(put(row(4, 1, "c")).await);
    assert_eq!(
        store.group_state("g").await.expect("read"),
        Some(row(4, 1, "c"))
    );
    // Offsets: the coordinator at epoch 4 commits; a deposed one (3) is
    // fenced and writes nothing.
    let topic = store
        .create_topic("t", 1, std::collections::BTreeMap::new(), vec![0])
        .await
        .expect("create");
    let offset = |offset| crate::metadata::CommittedOffset {
        topic_id: topic.id,
        partition: 0,
        offset,
        leader_epoch: 0,
        metadata: None,
        commit_ms: 0,
    };
    assert_eq!(
        store
            .commit_offsets("g", Some(4), vec![offset(10)])
            .await
            .expect("current coordinator"),
        vec![true]
    );
    assert!(matches!(
        store.commit_offsets("g", Some(3), vec![offset(99)]).await,
        Err(crate::metadata::MetadataError::Fenced(_))
    ));
    assert_eq!(store.fetch_offsets("g").await.expect("fetch")[0].offset, 10);
    assert!(
        store
            .stored_groups()
            .await
            .expect("groups")
            .contains(&("g".to_string(), "consumer".to_string()))
    );
    // Not expired while the group has members; deleted with the group.
    store
        .expire_offsets(i64::MAX, vec!["g".into()])
        .await
        .expect("expire");
    assert!(store.group_state("g").await.expect("read").is_some());
    store.delete_group("g").await.expect("delete");
    assert_eq!(store.group_state("g").await.expect("read"), None);
}

async fn admin_changes_and_producer_state_are_stored(backend: TestBackend) {
    use crate::metadata::{ProducerBatchRecord, ProducerStateRecord};
    let store = backend.open().await;
    let topic = store
        .create_topic("t", 1, BTreeMap::new(), vec![0])
        .await
        .expect("create");
    // Configs replace the overrides.
    let configs = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
    store
        .set_topic_configs(topic.id, configs.clone())
        .await
        .expect("configs");
    // Partitions only grow.
    let added = store
        .add_partitions(topic.id, 3, vec![0])
        .await
        .expect("grow");
    assert_eq!(
        added.iter().map(|p| p.partition).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(store.add_partitions(topic.id, 2, vec![0]).await.is_err());
    // A chunk with a producer's state, in one commit.
    let state = ProducerStateRecord {
        producer_id: 42,
        epoch: 1,
        batches: vec![ProducerBatchRecord {
            first_seq: 0,
            last_seq: 9,
            base_offset: 0,
            last_offset: 9,
        }],
        last_append_ms: 1_000,
        txn_first_offset: None,
    };
    store
        .record_intents("0:1", vec!["a".into()])
        .await
        .expect("intent");
    store
        .commit_object(ObjectCommit {
            object_key: "a".into(),
            object_size: 100,
            chunks: vec![ChunkCommit {
                topic_id: topic.id,
                partition: 0,
                leader_epoch: 0,
                chunk: chunk(0, 9),
                producers: vec![state.clone()],
                aborted: Vec::new(),
            }],
        })
        .await
        .expect("commit");
    // The log start offset moves up, never past the high watermark.
    assert_eq!(
        store.advance_log_start(topic.id, 0, 4).await.expect("move"),
        4
    );
    assert_eq!(
        store.advance_log_start(topic.id, 0, 2).await.expect("stay"),
        4
    );
    assert_eq!(
        store.advance_log_start(topic.id, 0, 99).await.expect("cap"),
        10
    );
    // Producer ids are never handed out twice.
    let first = store.allocate_producer_id().await.expect("id");
    assert_eq!(store.allocate_producer_id().await.expect("id"), first + 1);
    assert!(store.producer_id_issued(first).await.expect("issued"));
    assert!(
        !store
            .producer_id_issued(first + 2)
            .await
            .expect("not issued")
    );
    drop(store);
    // All of it survives a reopen.
    let store = backend.open().await;
    let topics = store.list_topics().await.expect("topics");
    assert_eq!((topics[0].partitions, &topics[0].configs), (3, &configs));
    assert_eq!(
        store.partitions(topic.id).await.expect("parts")[0].log_start_offset,
        10
    );
    let states = store.producer_states().await.expect("states");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state, state);
    assert_eq!(store.allocate_producer_id().await.expect("id"), first + 2);
    // Offsets of a deleted topic are refused per partition, not as a whole.
    let offset = |topic_id| CommittedOffset {
        topic_id,
        partition: 0,
        offset: 1,
        leader_epoch: -1,
        metadata: None,
        commit_ms: 0,
    };
    let other = store
        .create_topic("u", 1, BTreeMap::new(), vec![0])
        .await
        .expect("create");
    store.delete_topic(topic.id).await.expect("delete");
    let written = store
        .commit_offsets("g", None, vec![offset(topic.id), offset(other.id)])
        .await
        .expect("commit offsets");
    assert_eq!(written, vec![false, true]);
    assert!(store.producer_states().await.expect("states").is_empty());
    assert_eq!(store.expire_producers(i64::MAX).await.expect("expire"), 0);
}

/// Transactional id "app" with an ongoing or ended transaction in
/// partition 0 of `topic` committing offsets of group "g".
fn txn_record(
    topic: crate::metadata::TopicId,
    coordinator_epoch: i32,
    state: crate::metadata::TxnState,
) -> crate::metadata::TransactionRecord {
    crate::metadata::TransactionRecord {
        transactional_id: "app".into(),
        producer_id: 9,
        producer_epoch: 3,
        last_producer_id: 9,
        last_producer_epoch: 2,
        timeout_ms: 60_000,
        state,
        partitions: vec![(topic, 0)],
        groups: vec!["g".into()],
        start_ms: 5,
        updated_ms: 6,
        coordinator_epoch,
    }
}

/// Transaction records and their pending offsets round-trip; completing a
/// commit moves the offsets to the group, an abort drops them; aborted
/// ranges come with a chunk and go with the log start.
async fn transaction_rows(backend: TestBackend) {
    use crate::metadata::{AbortedTxn, TransactionRecord, TxnState};
    let store = backend.open().await;
    let id = store
        .create_topic("t", 1, BTreeMap::new(), vec![0])
        .await
        .expect("create")
        .id;
    let record = txn_record(id, 4, TxnState::Ongoing);
    store.put_transaction(record.clone()).await.expect("put");
    let offset = |o: i64| CommittedOffset {
        topic_id: id,
        partition: 0,
        offset: o,
        leader_epoch: 0,
        metadata: None,
        commit_ms: 7,
    };
    store
        .put_txn_offsets("app", "g", 4, vec![offset(11)])
        .await
        .expect("pending offsets");
    let loaded = store.transactions().await.expect("load");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].0, record);
    assert_eq!(loaded[0].1, vec![("g".to_string(), offset(11))]);
    assert!(store.fetch_offsets("g").await.expect("fetch").is_empty());

    // Commit: the pending offset becomes the group's.
    let done = TransactionRecord {
        state: TxnState::CompleteCommit,
        ..record.clone()
    };
    store
        .complete_transaction(done.clone(), true)
        .await
        .expect("complete");
    assert_eq!(
        store.fetch_offsets("g").await.expect("fetch"),
        vec![offset(11)]
    );
    let loaded = store.transactions().await.expect("load");
    assert_eq!(loaded[0].0.state, TxnState::CompleteCommit);
    assert!(loaded[0].1.is_empty(), "no pending offsets after the end");
    // Abort: a pending offset is dropped.
    store.put_transaction(record.clone()).await.expect("put");
    store
        .put_txn_offsets("app", "g", 4, vec![offset(20)])
        .await
        .expect("pending offsets");
    store
        .complete_transaction(
            TransactionRecord {
                state: TxnState::CompleteAbort,
                ..record.clone()
            },
            false,
        )
        .await
        .expect("abort");
    assert_eq!(
        store.fetch_offsets("g").await.expect("fetch"),
        vec![offset(11)]
    );

    // Aborted ranges come with a chunk, go with the log start.
    commit_chunk(
        store.as_ref(),
        id,
        chunk(0, 39),
        vec![AbortedTxn {
            producer_id: 9,
            first_offset: 31,
            last_offset: 35,
        }],
    )
    .await;
    assert_eq!(
        store.aborted_txns().await.expect("aborted"),
        vec![(
            id,
            0,
            AbortedTxn {
                producer_id: 9,
                first_offset: 31,
                last_offset: 35
            }
        )]
    );
    store.advance_log_start(id, 0, 36).await.expect("advance");
    assert!(store.aborted_txns().await.expect("aborted").is_empty());
    store
        .delete_transactions(vec!["app".into()])
        .await
        .expect("delete");
    assert!(store.transactions().await.expect("load").is_empty());
}

/// A coordinator that lost a transactional id (its epoch is older than the
/// one the stored record was written under) can neither overwrite the
/// record, nor add pending offsets, nor complete the transaction; the
/// newer coordinator can.
async fn transaction_writes_are_fenced_by_coordinator_epoch(backend: TestBackend) {
    use crate::metadata::{MetadataError, TxnState};
    let store = backend.open().await;
    let id = store
        .create_topic("t", 1, BTreeMap::new(), vec![0])
        .await
        .expect("create")
        .id;
    let at = |coordinator_epoch, state| txn_record(id, coordinator_epoch, state);
    let offset = |o: i64| CommittedOffset {
        topic_id: id,
        partition: 0,
        offset: o,
        leader_epoch: 0,
        metadata: None,
        commit_ms: 7,
    };
    let fenced = |result: crate::metadata::Result<()>, what: &str| match result {
        Err(MetadataError::Fenced(reason)) => assert!(reason.contains("epoch 5"), "{reason}"),
        other => panic!("{what} under an older coordinator epoch: {other:?}"),
    };
    // Written at 2, taken over at 5 (the new coordinator's first write).
    store
        .put_transaction(at(2, TxnState::Ongoing))
        .await
        .expect("put");
    store
        .put_transaction(at(5, TxnState::Ongoing))
        .await
        .expect("claim");
    store
        .put_txn_offsets("app", "g", 5, vec![offset(11)])
        .await
        .expect("pending offsets");
    // The old coordinator (epoch 2) comes back.
    fenced(
        store.put_transaction(at(2, TxnState::PrepareAbort)).await,
        "a record",
    );
    fenced(
        store.put_txn_offsets("app", "g", 2, vec![offset(99)]).await,
        "pending offsets",
    );
    fenced(
        store
            .complete_transaction(at(2, TxnState::CompleteAbort), false)
            .await,
        "the end of the transaction",
    );
    let loaded = store.transactions().await.expect("load");
    assert_eq!(loaded[0].0, at(5, TxnState::Ongoing), "record unchanged");
    assert_eq!(
        loaded[0].1,
        vec![("g".to_string(), offset(11))],
        "pending offsets unchanged"
    );
    // The new coordinator commits.
    store
        .complete_transaction(at(5, TxnState::CompleteCommit), true)
        .await
        .expect("complete");
    assert_eq!(
        store.fetch_offsets("g").await.expect("fetch"),
        vec![offset(11)]
    );
    assert_eq!(
        store.transactions().await.expect("load")[0].0.state,
        TxnState::CompleteCommit
    );
}
