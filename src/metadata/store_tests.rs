//! Tests every metadata backend passes: each runs on SQLite (a database
//! file in a temporary directory) and on PostgreSQL (a fresh schema of the
//! server `STRATA_TEST_POSTGRES` names, which `./scripts/test.sh` starts).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    ChunkCommit, ChunkOutcome, ChunkRecord, CommittedOffset, MetadataError, MetadataStore,
    ObjectCommit, TopicId, UnsealedObjects,
};

/// Where a test's store lives; `open` opens it (again, for reopen tests).
pub(crate) enum TestBackend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl TestBackend {
    pub(crate) fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    /// A schema of its own on the test server, so tests run in parallel.
    pub(crate) async fn postgres() -> Self {
        let base = std::env::var("STRATA_TEST_POSTGRES").unwrap_or_else(|_| {
            panic!(
                "STRATA_TEST_POSTGRES is not set: the PostgreSQL tests need a server. \
                 Run ./scripts/test.sh, or: export STRATA_TEST_POSTGRES=$(scripts/postgres.sh start)"
            )
        });
        let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL at {base}: {e}"));
        tokio::spawn(connection);
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        Self::Postgres(format!("{base}{sep}options=-csearch_path%3D{schema}"))
    }

    pub(crate) async fn open(&self) -> Arc<dyn MetadataStore> {
        match self {
            Self::Sqlite(dir) => Arc::new(
                super::sqlite::SqliteStore::open(&dir.path().join("m.db"))
                    .await
                    .expect("open sqlite"),
            ),
            Self::Postgres(url) => Arc::new(
                super::postgres::PostgresStore::open(url)
                    .await
                    .expect("open postgres"),
            ),
        }
    }
}

/// Runs a generic test on both backends: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::TestBackend::sqlite()).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(super::TestBackend::postgres().await).await
            }
        }
    )*};
}

on_every_backend!(
    group_offsets_commit_fetch_and_expire,
    commit_is_fenced_per_partition,
    admin_changes_and_producer_state_are_stored,
    intents_sealing_swap_and_retirement,
    transaction_rows,
);

pub(crate) fn chunk(base: i64, last: i64) -> ChunkRecord {
    ChunkRecord {
        base_offset: base,
        last_offset: last,
        max_timestamp: 5,
        object_key: Arc::from("wal/x"),
        object_size: 100,
        byte_start: 0,
        byte_len: 100,
        index_len: 0,
    }
}

/// A write-ahead object `key` holding one chunk of partition 0.
pub(crate) fn wal_commit(
    topic: TopicId,
    key: &str,
    epoch: i32,
    base: i64,
    last: i64,
) -> ObjectCommit {
    ObjectCommit {
        object_key: key.to_string(),
        object_size: 100,
        chunks: vec![ChunkCommit {
            topic_id: topic,
            partition: 0,
            leader_epoch: epoch,
            chunk: ChunkRecord {
                object_key: Arc::from(key),
                ..chunk(base, last)
            },
            producers: Vec::new(),
            aborted: Vec::new(),
        }],
    }
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
        .commit_offsets("old", vec![offset(0, 5, 1_000), offset(1, 6, 1_000)])
        .await
        .expect("commit");
    store
        .commit_offsets("busy", vec![offset(0, 7, 1_000)])
        .await
        .expect("commit");
    store
        .commit_offsets("fresh", vec![offset(0, 8, 9_000)])
        .await
        .expect("commit");
    // A later commit overwrites, with its metadata.
    store
        .commit_offsets("old", vec![offset(1, 9, 1_000)])
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

/// A chunk is fenced on its partition's leader epoch and high watermark,
/// alone: the other partitions of the same object commit.
async fn commit_is_fenced_per_partition(backend: TestBackend) {
    let store = backend.open().await;
    let topic = store
        .create_topic("t", 2, BTreeMap::new(), vec![0])
        .await
        .expect("create");
    let commit = |key: &str, epoch, base, last| wal_commit(topic.id, key, epoch, base, last);
    let keys = ["a", "b", "c", "d"].map(String::from).to_vec();
    store.record_intents("0:1", keys).await.expect("intents");
    let out = store
        .commit_object(commit("a", 0, 0, 9))
        .await
        .expect("commit");
    assert_eq!(out, vec![ChunkOutcome::Committed]);
    // A gap in partition 0 is refused; partition 1's chunk of the same
    // object lands.
    let mut both = commit("b", 0, 11, 12);
    let mut other = both.chunks[0].clone();
    other.partition = 1;
    other.chunk.base_offset = 0;
    other.chunk.last_offset = 4;
    both.chunks.push(other);
    let out = store.commit_object(both).await.expect("commit");
    assert_eq!(out, vec![ChunkOutcome::Fenced, ChunkOutcome::Committed]);
    store.claim_own_partitions(0).await.expect("claim");
    // The old epoch is fenced now; an object with nothing committed retires.
    let out = store
        .commit_object(commit("c", 0, 10, 12))
        .await
        .expect("commit");
    assert_eq!(out, vec![ChunkOutcome::Fenced]);
    assert_eq!(store.retired_objects(i64::MAX, 10).await.expect("r"), ["c"]);
    let out = store
        .commit_object(commit("d", 1, 10, 12))
        .await
        .expect("new epoch commits");
    assert_eq!(out, vec![ChunkOutcome::Committed]);
    let parts = store.partitions(topic.id).await.expect("partitions");
    assert_eq!(
        parts
            .iter()
            .map(|p| (p.high_watermark, p.leader_epoch))
            .collect::<Vec<_>>(),
        [(13, 1), (5, 1)]
    );
    let keys = |chunks: Vec<ChunkRecord>| -> Vec<String> {
        chunks.iter().map(|c| c.object_key.to_string()).collect()
    };
    assert_eq!(
        keys(store.chunks(topic.id, 0).await.expect("chunks")),
        ["a", "d"]
    );
    assert_eq!(
        keys(store.chunks(topic.id, 1).await.expect("chunks")),
        ["b"]
    );
    store.delete_topic(topic.id).await.expect("delete");
    let mut retired = store.retired_objects(i64::MAX, 10).await.expect("retired");
    retired.sort();
    assert_eq!(retired, ["a", "b", "c", "d"]);
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
        .commit_offsets("g", vec![offset(topic.id), offset(other.id)])
        .await
        .expect("commit offsets");
    assert_eq!(written, vec![false, true]);
    assert!(store.producer_states().await.expect("states").is_empty());
    assert_eq!(store.expire_producers(i64::MAX).await.expect("expire"), 0);
}

/// Upload intents: a commit needs its intent; the collector's view (stale
/// intents, doomed ones, retired objects) and the sealer's swap.
async fn intents_sealing_swap_and_retirement(backend: TestBackend) {
    use crate::metadata::{ObjectKind, SealedChunk, SealedObject};
    let store = backend.open().await;
    let topic = store
        .create_topic("t", 1, BTreeMap::new(), vec![0])
        .await
        .expect("create");
    let wal = |key: &str, base, last| wal_commit(topic.id, key, 0, base, last);
    // No intent, no commit.
    assert!(matches!(
        store.commit_object(wal("w0", 0, 9)).await,
        Err(MetadataError::Fenced(_))
    ));
    let keys: Vec<String> = ["w1", "w2", "w3", "s1", "s2"].map(String::from).to_vec();
    store.record_intents("0:1", keys).await.expect("intents");
    for (key, base) in [("w1", 0), ("w2", 10), ("w3", 20)] {
        store
            .commit_object(wal(key, base, base + 9))
            .await
            .expect("commit");
    }
    // Intents of a live owner are stale only after the grace; those of an
    // earlier process of the same node (0:0) at any age.
    store
        .record_intents("0:0", vec!["old".into()])
        .await
        .expect("intent");
    let young = store.stale_intents(0, 0, "0:1", 10).await.expect("stale");
    assert_eq!(
        young.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        ["old"]
    );
    let all = store
        .stale_intents(i64::MAX, 0, "0:1", 10)
        .await
        .expect("stale");
    assert_eq!(
        all.len(),
        3,
        "s1, s2 and old (committed ones are gone): {all:?}"
    );
    // Dooming forgets nothing committed, and a doomed intent fails its commit.
    let doomed = store
        .doom_uncommitted(vec!["s2".into(), "old".into()])
        .await
        .expect("doom");
    assert_eq!(doomed, vec!["s2".to_string(), "old".to_string()]);
    let unsealed = store.unsealed_objects(0, 250, 10).await.expect("unsealed");
    assert!(unsealed.more, "w3 is left for the next cycle");
    assert_eq!(
        unsealed
            .objects
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["w1", "w2"],
        "oldest first, within the byte budget"
    );
    let sealed = |key: &str, replaces: Vec<(&str, i64)>, last| SealedObject {
        key: key.to_string(),
        size: 300,
        kind: ObjectKind::Segment,
        chunks: vec![SealedChunk {
            leader_epoch: 0,
            topic_id: topic.id,
            partition: 0,
            chunk: ChunkRecord {
                object_key: Arc::from(key),
                object_size: 300,
                index_len: 20,
                ..chunk(0, last)
            },
            replaces: replaces
                .into_iter()
                .map(|(k, base)| (Arc::from(k), base))
                .collect(),
        }],
    };
    // A doomed output cannot be committed.
    assert!(matches!(
        store
            .replace_chunks(vec![sealed("s2", vec![("w1", 0), ("w2", 10)], 19)], true)
            .await,
        Err(MetadataError::Fenced(_))
    ));
    // Replaced rows that do not cover the new chunk exactly: skipped.
    let applied = store
        .replace_chunks(vec![sealed("s1", vec![("w1", 0)], 19)], true)
        .await
        .expect("swap");
    assert_eq!(applied, vec![vec![false]]);
    assert_eq!(
        store.retired_objects(i64::MAX, 10).await.expect("r"),
        ["s1"]
    );
    store
        .record_intents("0:1", vec!["s3".into()])
        .await
        .expect("intent");
    let applied = store
        .replace_chunks(vec![sealed("s3", vec![("w1", 0), ("w2", 10)], 19)], false)
        .await
        .expect("swap");
    assert_eq!(applied, vec![vec![true]]);
    // Replaced objects are left to `retire_unreferenced`, which retires
    // only those no chunk references any more.
    assert_eq!(
        store.retired_objects(i64::MAX, 10).await.expect("r"),
        ["s1"]
    );
    store
        .retire_unreferenced(vec!["w1".into(), "w2".into(), "w3".into()])
        .await
        .expect("retire");
    let chunks = store.chunks(topic.id, 0).await.expect("chunks");
    assert_eq!(
        chunks
            .iter()
            .map(|c| (
                c.base_offset,
                c.last_offset,
                c.object_key.as_ref(),
                c.index_len
            ))
            .collect::<Vec<_>>(),
        [(0, 19, "s3", 20), (20, 29, "w3", 0)]
    );
    let mut retired = store.retired_objects(i64::MAX, 10).await.expect("r");
    retired.sort();
    assert_eq!(retired, ["s1", "w1", "w2"]);
    assert!(store.retired_objects(0, 10).await.expect("r").is_empty());
    assert_eq!(
        store.unsealed_objects(0, 1 << 20, 10).await.expect("u"),
        UnsealedObjects {
            objects: vec![("w3".to_string(), 100)],
            more: false
        }
    );
    store
        .forget_objects(vec!["w1".into(), "w3".into()])
        .await
        .expect("forget");
    let mut retired = store.retired_objects(i64::MAX, 10).await.expect("r");
    retired.sort();
    assert_eq!(retired, ["s1", "w2"], "w3 is referenced: not forgotten");
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
    let record = TransactionRecord {
        transactional_id: "app".into(),
        producer_id: 9,
        producer_epoch: 3,
        last_producer_id: 9,
        last_producer_epoch: 2,
        timeout_ms: 60_000,
        state: TxnState::Ongoing,
        partitions: vec![(id, 0)],
        groups: vec!["g".into()],
        start_ms: 5,
        updated_ms: 6,
    };
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
        .put_txn_offsets("app", "g", vec![offset(11)])
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
        .put_txn_offsets("app", "g", vec![offset(20)])
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
                    ..chunk(0, 39)
                },
                producers: Vec::new(),
                aborted: vec![AbortedTxn {
                    producer_id: 9,
                    first_offset: 31,
                    last_offset: 35,
                }],
            }],
        })
        .await
        .expect("commit");
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
