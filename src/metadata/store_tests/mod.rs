//! Tests every metadata backend passes: each runs on SQLite (a database
//! file in a temporary directory) and on PostgreSQL (a fresh schema of the
//! server `STRATA_TEST_POSTGRES` names, which `./scripts/test.sh` starts).
//! `objects`: chunks, fencing, intents and sealing swaps; `rows`: topics,
//! groups, producer and transaction state.

use std::sync::Arc;

use super::{ChunkCommit, ChunkRecord, MetadataStore, ObjectCommit, TopicId};

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
                super::postgres::PostgresStore::open(url, super::postgres::DEFAULT_CALL_TIMEOUT)
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

mod objects;
mod rows;

/// A grace (ms) that makes every row old: an hour ahead of the clock.
pub(crate) const ALL: i64 = -3_600_000;
/// A grace (ms) that makes no row old (about 41 days).
pub(crate) const NONE: i64 = 3_600_000_000;

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
