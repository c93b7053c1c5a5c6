//! The object store a test runs against: the embedded store (a local
//! directory under the broker's data dir) or a real S3 server (MinIO) over
//! HTTP. A test body written against `Store` runs on both; metadata stays
//! SQLite in the broker's data dir either way.

use std::collections::BTreeSet;

use crate::common::{TestBroker, files_under};
use crate::s3::{S3Server, start_s3};

const BUCKET: &str = "strata-tier";
/// A non-empty prefix, so the tests also cover keys under one.
const PREFIX: &str = "cluster";

pub(crate) enum Store {
    Embedded,
    S3(S3Server),
}

impl Store {
    pub(crate) fn embedded() -> Self {
        Store::Embedded
    }

    /// A fresh MinIO server with an empty bucket.
    pub(crate) fn s3() -> Self {
        Store::S3(start_s3(&[BUCKET]))
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::S3(_) => "s3",
        }
    }

    /// A broker with a fresh data dir on this store, with `args` after the
    /// store's own.
    pub(crate) fn start_broker(&self, args: &[&str]) -> TestBroker {
        match self {
            Store::Embedded => TestBroker::start(args),
            Store::S3(s3) => {
                let own = s3.broker_args(&format!("s3://{BUCKET}/{PREFIX}"));
                let mut all: Vec<&str> = own.iter().map(String::as_str).collect();
                all.extend_from_slice(args);
                TestBroker::start(&all)
            }
        }
    }

    /// Every object key in the store, relative to the broker's root (as the
    /// metadata store names them).
    pub(crate) fn keys(&self, broker: &TestBroker) -> BTreeSet<String> {
        match self {
            Store::Embedded => {
                let root = broker.objects_dir();
                files_under(&root)
                    .into_iter()
                    .filter_map(|p| {
                        p.strip_prefix(&root)
                            .ok()
                            .map(|p| p.to_string_lossy().into_owned())
                    })
                    .collect()
            }
            Store::S3(s3) => {
                assert!(
                    !broker.objects_dir().exists(),
                    "a broker on S3 writes no local objects"
                );
                s3.list(BUCKET, &format!("{PREFIX}/"))
                    .into_iter()
                    .map(|k| k.trim_start_matches(&format!("{PREFIX}/")).to_string())
                    .collect()
            }
        }
    }

    /// How many keys start with `prefix` (say `wal/`).
    pub(crate) fn count(&self, broker: &TestBroker, prefix: &str) -> usize {
        self.keys(broker)
            .iter()
            .filter(|k| k.starts_with(prefix))
            .count()
    }

    /// Empties the broker's local cache (stopped broker): the embedded
    /// store's blocks live in memory only, S3's also on disk.
    pub(crate) fn drop_cache(&self, broker: &TestBroker) {
        let cache = broker.data_dir.join("cache");
        if cache.exists() {
            std::fs::remove_dir_all(&cache).expect("drop the cache");
        }
    }
}
