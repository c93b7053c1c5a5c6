//! Tests of what only the SQLite backend has: the read-only open beside a
//! writer and the migrations of older files (what every backend does is
//! tested in `metadata::store_tests`, on SQLite and PostgreSQL).

use super::*;
use crate::metadata::store_tests::{ALL, chunk, wal_commit};

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
        .create_topic("t", 1, BTreeMap::new(), vec![0])
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
    let write = reader.create_topic("u", 1, BTreeMap::new(), vec![0]).await;
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
                    leader_epoch: 0,
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
        store.retired_objects(ALL, 10).await.expect("retired"),
        ["w2"]
    );
    store.delete_topic(id).await.expect("delete");
    let mut retired = store.retired_objects(ALL, 10).await.expect("retired");
    retired.sort();
    assert_eq!(retired, ["s1", "s2", "w1", "w2"]);
}

/// v7 (transactions) on a v6 store: producer states keep their rows with no
/// open transaction.
#[tokio::test]
async fn the_v7_migration_keeps_producer_states() {
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
    let states = store.producer_states().await.expect("states");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].topic_id, parse_topic_id(topic).expect("id"));
    assert_eq!(states[0].state.txn_first_offset, None);
}
