//! Tests of the SQLite backend against a real database file.

use super::*;
use crate::metadata::ChunkCommit;

fn chunk(base: i64, last: i64) -> ChunkRecord {
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
fn wal_commit(topic: TopicId, key: &str, epoch: i32, base: i64, last: i64) -> ObjectCommit {
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

#[tokio::test]
async fn group_offsets_commit_fetch_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("m.db"))
        .await
        .expect("open");
    let topic = store
        .create_topic("t", 2, BTreeMap::new(), 0)
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

#[tokio::test]
async fn commit_is_fenced_on_epoch_and_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("m.db"))
        .await
        .expect("open");
    let topic = store
        .create_topic("t", 1, BTreeMap::new(), 0)
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
    // A gap is refused and leaves nothing behind.
    assert!(matches!(
        store.commit_object(commit("b", 0, 11, 12)).await,
        Err(MetadataError::Fenced(_))
    ));
    assert!(
        store
            .doom_uncommitted(vec!["b".into()])
            .await
            .expect("doom")
            .contains(&"b".to_string()),
        "the refused object is not committed"
    );
    store.claim_all_partitions(0).await.expect("claim");
    // The old epoch is fenced now.
    assert!(matches!(
        store.commit_object(commit("c", 0, 10, 12)).await,
        Err(MetadataError::Fenced(_))
    ));
    store
        .commit_object(commit("d", 1, 10, 12))
        .await
        .expect("new epoch commits");
    let parts = store.partitions(topic.id).await.expect("partitions");
    assert_eq!(parts[0].high_watermark, 13);
    assert_eq!(store.chunks(topic.id, 0).await.expect("chunks").len(), 2);
    store.delete_topic(topic.id).await.expect("delete");
    let mut retired = store.retired_objects(i64::MAX, 10).await.expect("retired");
    retired.sort();
    assert_eq!(retired, vec!["a".to_string(), "d".to_string()]);
}

#[tokio::test]
async fn admin_changes_and_producer_state_are_stored() {
    use crate::metadata::{ProducerBatchRecord, ProducerStateRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let topic = store
        .create_topic("t", 1, BTreeMap::new(), 0)
        .await
        .expect("create");
    // Configs replace the overrides.
    let configs = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
    store
        .set_topic_configs(topic.id, configs.clone())
        .await
        .expect("configs");
    // Partitions only grow.
    let added = store.add_partitions(topic.id, 3, 0).await.expect("grow");
    assert_eq!(
        added.iter().map(|p| p.partition).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(store.add_partitions(topic.id, 2, 0).await.is_err());
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
    let store = SqliteStore::open(&path).await.expect("reopen");
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
        .create_topic("u", 1, BTreeMap::new(), 0)
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
#[tokio::test]
async fn intents_sealing_swap_and_retirement() {
    use crate::metadata::{ObjectKind, SealedChunk, SealedObject};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("m.db"))
        .await
        .expect("open");
    let topic = store
        .create_topic("t", 1, BTreeMap::new(), 0)
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
    let unsealed = store.unsealed_objects(250, 10).await.expect("unsealed");
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
        store.unsealed_objects(1 << 20, 10).await.expect("u"),
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

#[tokio::test]
async fn a_read_only_store_reads_beside_the_writer_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    let missing = SqliteStore::open_read_only(&path)
        .await
        .err()
        .expect("no store yet");
    assert!(
        missing.to_string().contains("no metadata store at"),
        "{missing}"
    );
    let writer = SqliteStore::open(&path).await.expect("open");
    let topic = writer
        .create_topic("t", 1, BTreeMap::new(), 0)
        .await
        .expect("create");
    // The writer holds a write transaction while the reader opens and reads:
    // the read-only open takes no write lock.
    let blocker = Connection::open(&path).expect("second writer");
    blocker
        .execute_batch("BEGIN IMMEDIATE; UPDATE partitions SET high_watermark = high_watermark")
        .expect("hold the write lock");
    let reader = SqliteStore::open_read_only(&path)
        .await
        .expect("opens under a write lock");
    assert_eq!(
        reader.list_topics().await.expect("topics"),
        vec![topic.clone()]
    );
    blocker.execute_batch("COMMIT").expect("release");
    writer
        .record_intents("0:1", vec!["wal/a".into()])
        .await
        .expect("intent");
    writer
        .commit_object(wal_commit(topic.id, "wal/a", 0, 0, 9))
        .await
        .expect("commit");
    let chunks = reader.chunks(topic.id, 0).await.expect("chunks");
    assert_eq!(chunks.len(), 1, "the reader sees later commits");
    let write = reader.create_topic("u", 1, BTreeMap::new(), 0).await;
    assert!(write.is_err(), "a read-only store refuses writes");
    assert_eq!(writer.list_topics().await.expect("topics").len(), 1);
}

/// A store written by the previous schema (chunks in a rowid table with an
/// index by object) keeps every chunk through the migration, and the
/// objects' chunk counts are filled in from it: retiring counts what is
/// left.
#[tokio::test]
async fn the_v6_migration_keeps_chunks_and_counts_their_objects() {
    use crate::metadata::{ObjectKind, SealedChunk};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    let topic = "6b1a4f4e-3c1d-4c3a-9d47-6f0e6b2f1a01";
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .expect("version table");
        for migration in &schema::MIGRATIONS[..5] {
            conn.execute_batch(migration).expect("old schema");
        }
        conn.execute_batch(&format!(
            "INSERT INTO schema_version VALUES (5);
             INSERT INTO topics VALUES ('{topic}', 't', 2, '{{}}', 0);
             INSERT INTO partitions VALUES ('{topic}', 0, 0, 0, 0, 30, 0), ('{topic}', 1, 0, 0, 0, 10, 0);
             INSERT INTO objects (object_key, size, created_ms, kind) VALUES
               ('s1', 300, 0, 1), ('w1', 200, 0, 0), ('w2', 100, 0, 0);
             INSERT INTO chunks VALUES
               ('{topic}', 0, 0, 19, 5, 's1', 0, 280, 20),
               ('{topic}', 0, 20, 29, 5, 'w1', 0, 100, 0),
               ('{topic}', 1, 0, 9, 5, 'w1', 100, 100, 0);
             UPDATE objects SET retired_ms = 1 WHERE object_key = 'w2';"
        ))
        .expect("old rows");
    }
    let store = SqliteStore::open(&path).await.expect("migrate");
    let id = parse_topic_id(topic).expect("id");
    let chunks = store.chunks(id, 0).await.expect("chunks");
    assert_eq!(
        chunks
            .iter()
            .map(|c| (c.base_offset, c.last_offset, c.object_key.as_ref()))
            .collect::<Vec<_>>(),
        [(0, 19, "s1"), (20, 29, "w1")]
    );
    assert_eq!(store.chunks(id, 1).await.expect("chunks").len(), 1);
    // w1 is still referenced by partition 1 after partition 0's chunk of
    // it is replaced; deleting the topic leaves nothing referencing s1, w1
    // or the new segment.
    store
        .record_intents("0:1", vec!["s2".into()])
        .await
        .expect("intent");
    let applied = store
        .replace_chunks(
            vec![SealedObject {
                key: "s2".into(),
                size: 100,
                kind: ObjectKind::Segment,
                chunks: vec![SealedChunk {
                    topic_id: id,
                    partition: 0,
                    chunk: ChunkRecord {
                        object_key: Arc::from("s2"),
                        index_len: 10,
                        ..chunk(20, 29)
                    },
                    replaces: vec![(Arc::from("w1"), 20)],
                }],
            }],
            false,
        )
        .await
        .expect("swap");
    assert_eq!(applied, vec![vec![true]]);
    store
        .retire_unreferenced(vec!["w1".into(), "s1".into()])
        .await
        .expect("retire");
    assert_eq!(
        store.retired_objects(i64::MAX, 10).await.expect("retired"),
        ["w2"]
    );
    store.delete_topic(id).await.expect("delete");
    let mut retired = store.retired_objects(i64::MAX, 10).await.expect("retired");
    retired.sort();
    assert_eq!(retired, ["s1", "s2", "w1", "w2"]);
}

/// v7 (transactions) on a v6 store: producer states keep their rows with no
/// open transaction; transaction records, their pending offsets and aborted
/// ranges round-trip; completing a commit moves the offsets to the group,
/// an abort drops them; trimming the log start forgets aborted ranges
/// below it.
#[tokio::test]
async fn the_v7_migration_and_transaction_rows() {
    use crate::metadata::{AbortedTxn, TransactionRecord, TxnState};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    let topic = "6b1a4f4e-3c1d-4c3a-9d47-6f0e6b2f1a02";
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .expect("version table");
        for migration in &schema::MIGRATIONS[..6] {
            conn.execute_batch(migration).expect("old schema");
        }
        conn.execute_batch(&format!(
            "INSERT INTO schema_version VALUES (6);
             INSERT INTO topics VALUES ('{topic}', 't', 1, '{{}}', 0);
             INSERT INTO partitions VALUES ('{topic}', 0, 0, 0, 0, 30, 0);
             INSERT INTO producer_state VALUES ('{topic}', 0, 7, 1, '[]', 1000);"
        ))
        .expect("old rows");
    }
    let store = SqliteStore::open(&path).await.expect("migrate");
    let id = parse_topic_id(topic).expect("id");
    let states = store.producer_states().await.expect("states");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state.txn_first_offset, None);

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
                    ..chunk(30, 39)
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
    assert_eq!(store.aborted_txns().await.expect("aborted").len(), 1);
    store.advance_log_start(id, 0, 36).await.expect("advance");
    assert!(store.aborted_txns().await.expect("aborted").is_empty());
    store
        .delete_transactions(vec!["app".into()])
        .await
        .expect("delete");
    assert!(store.transactions().await.expect("load").is_empty());
}
