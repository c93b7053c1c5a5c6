//! Chunks of flushed objects, fencing, upload intents and sealing swaps.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ALL, NONE, TestBackend, chunk, wal_commit};
use crate::metadata::{ChunkOutcome, ChunkRecord, MetadataError, StaleIntents, UnsealedObjects};

on_every_backend!(
    commit_is_fenced_per_partition,
    intents_sealing_swap_and_retirement
);

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
    assert_eq!(store.retired_objects(ALL, 10).await.expect("r"), ["c"]);
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
    let mut retired = store.retired_objects(ALL, 10).await.expect("retired");
    retired.sort();
    assert_eq!(retired, ["a", "b", "c", "d"]);
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
    let stale = |grace_ms| StaleIntents {
        grace_ms,
        node: 0,
        current: "0:1".into(),
    };
    let young = store.stale_intents(stale(NONE), 10).await.expect("stale");
    assert_eq!(
        young.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        ["old"]
    );
    let all = store.stale_intents(stale(ALL), 10).await.expect("stale");
    assert_eq!(
        all.len(),
        3,
        "s1, s2 and old (committed ones are gone): {all:?}"
    );
    // What no row and no intent names: only "stray" (w1 has a row, s1 an
    // intent).
    assert_eq!(
        store
            .unnamed_objects(vec!["w1".into(), "s1".into(), "stray".into()])
            .await
            .expect("unnamed"),
        ["stray"]
    );
    // A renewed intent is young again: not stale, and not doomed by a
    // collector that listed it as stale before the renewal.
    assert_eq!(
        store
            .renew_intents("0:1", vec!["s1".into(), "old".into()])
            .await
            .expect("renew"),
        1,
        "only the owner's own intents are renewed"
    );
    let after_renewal = store.stale_intents(stale(60_000), 10).await.expect("stale");
    assert!(
        after_renewal.iter().all(|i| i.key != "s1"),
        "{after_renewal:?}"
    );
    assert!(
        store
            .doom_uncommitted(vec!["s1".into()], stale(60_000))
            .await
            .expect("doom")
            .is_empty(),
        "a renewed intent is not doomed"
    );
    // Dooming forgets nothing committed, and a doomed intent fails its commit.
    let doomed = store
        .doom_uncommitted(vec!["s2".into(), "old".into()], stale(ALL))
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
    assert_eq!(store.retired_objects(ALL, 10).await.expect("r"), ["s1"]);
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
    assert_eq!(store.retired_objects(ALL, 10).await.expect("r"), ["s1"]);
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
    let mut retired = store.retired_objects(ALL, 10).await.expect("r");
    retired.sort();
    assert_eq!(retired, ["s1", "w1", "w2"]);
    assert!(store.retired_objects(NONE, 10).await.expect("r").is_empty());
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
    let mut retired = store.retired_objects(ALL, 10).await.expect("r");
    retired.sort();
    assert_eq!(retired, ["s1", "w2"], "w3 is referenced: not forgotten");
}
