//! The object store as the rest of the broker sees it: `put`, ranged `get`,
//! `delete`, `list`, each passing through these layers:
//!
//! 1. retry (S3): object_store's own, which decides by type what is worth
//!    another attempt: 5xx (503 SlowDown among them), 429 and 408 statuses,
//!    connection and transport errors, and timeouts of idempotent requests
//!    (every Strata key is written once, so a PUT is idempotent). Attempts
//!    back off exponentially with jitter, within a budget of
//!    `RETRY_ATTEMPTS` and `RETRY_BUDGET` of time; errors that retrying
//!    cannot fix (not found, denied, invalid) return at once;
//! 2. deadline: every call, its retries included, ends within a time that
//!    fits its size (`deadline_for`: a base plus the bytes at a floor
//!    rate), so a large segment upload gets the time it needs and a stuck
//!    small one fails in seconds rather than minutes; a call past its
//!    deadline fails as `Unavailable`;
//! 3. metrics: requests, errors, bytes and latency per operation, and the
//!    attempts that failed transiently (counted at the HTTP client).
//!
//! What a failure means for the caller is its `StorageErrorKind`, decided
//! from object_store's error variants, never from their text.
//!
//! The embedded store is `LocalFileSystem` with fsync on: a `put` that
//! returned has its file and directory entry on disk.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};
use thiserror::Error;

use super::metrics::{ObjectStoreMetrics, OpMetrics};
use super::object_client::CountingConnector;
use crate::config::S3Config;

/// What the caller should do about a failed object-store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// Transient; already retried as often as the budget allows, or out of
    /// time. Trying again later may succeed.
    Unavailable,
    NotFound,
    /// Configuration or permission problem; retrying will not help.
    Invalid,
}

#[derive(Debug, Error)]
#[error("object store {op} {key}: {source}")]
pub struct StorageError {
    pub kind: StorageErrorKind,
    pub op: &'static str,
    pub key: String,
    #[source]
    pub source: object_store::Error,
}

/// Attempts of one S3 request at most (the first included).
pub const RETRY_ATTEMPTS: usize = 10;
/// No new attempt starts this long after a request's first.
pub const RETRY_BUDGET: Duration = Duration::from_secs(20);
/// Every call gets this long, plus its bytes at `DEADLINE_FLOOR_RATE`.
pub const DEADLINE_BASE: Duration = Duration::from_secs(20);
/// The slowest transfer rate (bytes per second) a call is given time for.
pub const DEADLINE_FLOOR_RATE: u64 = 2 * 1024 * 1024;
/// One HTTP request's own limit: the deadline of the largest call the
/// broker makes (a segment of a few hundred MiB); calls are cut by their
/// own, smaller deadlines first.
const REQUEST_CEILING: &str = "300s";

/// How long a call moving `bytes` may take, retries included.
pub fn deadline_for(bytes: u64) -> Duration {
    DEADLINE_BASE + Duration::from_millis(bytes.saturating_mul(1_000) / DEADLINE_FLOOR_RATE)
}

fn classify(err: &object_store::Error) -> StorageErrorKind {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => StorageErrorKind::NotFound,
        // What is left once the retry layer gave up on a transient failure
        // (a status or transport error), or a status it does not retry (a
        // 400): the store is not usable now.
        E::Generic { .. } | E::JoinError { .. } => StorageErrorKind::Unavailable,
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. } => StorageErrorKind::Invalid,
        _ => StorageErrorKind::Unavailable,
    }
}

/// The broker's handle on the object store.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<ObjectStoreMetrics>,
    description: String,
    /// The embedded store's directory.
    local_root: Option<std::path::PathBuf>,
}

impl ObjectStorage {
    /// Opens `url`: a plain path or `file://` URL (embedded), or `s3://bucket[/prefix]`.
    pub fn open(url: &str, s3: &S3Config) -> anyhow::Result<Self> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                anyhow::bail!(
                    "object store URL '{url}' has no bucket: expected s3://bucket/prefix"
                );
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(allow) = s3.allow_http {
                builder = builder.with_allow_http(allow);
            }
            if let Some(path_style) = s3.path_style {
                builder = builder.with_virtual_hosted_style_request(!path_style);
            }
            let retry = RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(20),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: RETRY_ATTEMPTS - 1,
                retry_timeout: RETRY_BUDGET,
            };
            let roots = match &s3.ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        anyhow::anyhow!("cannot read s3.ca_file {}: {e}", path.display())
                    })?;
                    let roots = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
                        anyhow::anyhow!("s3.ca_file {} is not a PEM bundle: {e}", path.display())
                    })?;
                    if roots.is_empty() {
                        anyhow::bail!("s3.ca_file {} holds no certificate", path.display());
                    }
                    roots
                }
                None => Vec::new(),
            };
            let metrics = Arc::new(ObjectStoreMetrics::default());
            // Set timeouts key by key: `with_client_options` would replace the
            // options (allow_http among them) taken from flags and AWS_* vars.
            let store = builder
                .with_retry(retry)
                .with_http_connector(CountingConnector {
                    metrics: Arc::clone(&metrics),
                    roots,
                })
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    "5s",
                )
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                    REQUEST_CEILING,
                )
                .build()
                .map_err(|e| anyhow::anyhow!("cannot configure S3 store for '{url}': {e}"))?;
            let inner: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                Arc::new(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    store,
                    prefix.trim_matches('/'),
                ))
            };
            return Ok(Self {
                metrics,
                ..Self::new(inner, format!("s3://{rest}"))
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.contains("://") {
            anyhow::bail!(
                "unsupported object store URL '{url}': expected a path, file:///path or s3://bucket/prefix"
            );
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create object store directory {dir}: {e}"))?;
        let local = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| anyhow::anyhow!("cannot open object store directory {dir}: {e}"))?
            .with_fsync(true);
        Ok(Self {
            local_root: Some(std::path::PathBuf::from(dir)),
            ..Self::new(Arc::new(local), format!("file://{dir}"))
        })
    }

    pub fn new(inner: Arc<dyn ObjectStore>, description: String) -> Self {
        Self {
            inner,
            metrics: Arc::new(ObjectStoreMetrics::default()),
            description,
            local_root: None,
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether objects live on this machine's filesystem (the embedded store).
    pub fn is_local(&self) -> bool {
        self.description.starts_with("file://")
    }

    pub fn metrics(&self) -> &Arc<ObjectStoreMetrics> {
        &self.metrics
    }

    /// Runs `call` (object_store retries within it) under the deadline
    /// for `size` bytes, recording it in `metrics`.
    async fn layered<T>(
        &self,
        op: &'static str,
        key: &str,
        size: u64,
        metrics: &OpMetrics,
        bytes_of: impl Fn(&T) -> u64,
        call: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, StorageError> {
        let started = Instant::now();
        let deadline = deadline_for(size);
        let result = match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(object_store::Error::Generic {
                store: "strata",
                source: format!("no answer within the call's deadline of {deadline:?}").into(),
            }),
        };
        metrics.record(started.elapsed(), result.as_ref().map(&bytes_of).ok());
        result.map_err(|source| StorageError {
            kind: classify(&source),
            op,
            key: key.to_string(),
            source,
        })
    }

    pub async fn put(&self, key: &Path, data: Bytes) -> Result<(), StorageError> {
        let len = data.len() as u64;
        self.layered(
            "put",
            key.as_ref(),
            len,
            &self.metrics.put,
            |_| len,
            self.inner.put(key, PutPayload::from_bytes(data)),
        )
        .await
        .map(|_| ())
    }

    /// PUTs an object made of `parts`, back to back, without joining them.
    pub async fn put_parts(&self, key: &Path, parts: Vec<Bytes>) -> Result<(), StorageError> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.layered(
            "put",
            key.as_ref(),
            len,
            &self.metrics.put,
            |_| len,
            self.inner
                .put(key, parts.into_iter().collect::<PutPayload>()),
        )
        .await
        .map(|_| ())
    }

    pub async fn get_range(&self, key: &Path, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.layered(
            "get",
            key.as_ref(),
            range.end.saturating_sub(range.start),
            &self.metrics.get,
            |b: &Bytes| b.len() as u64,
            self.inner.get_range(key, range),
        )
        .await
    }

    pub async fn delete(&self, key: &Path) -> Result<(), StorageError> {
        let result = self
            .layered(
                "delete",
                key.as_ref(),
                0,
                &self.metrics.delete,
                |_| 0,
                self.inner.delete(key),
            )
            .await;
        match result {
            Err(e) if e.kind == StorageErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Deletes an object whose upload may have been cut short (an orphan).
    /// On the embedded store a PUT writes the staging file `<key>#<n>` and
    /// renames it to `<key>` (`LocalFileSystem`); a crash in between leaves
    /// the staging file, which nothing else would ever delete, so it goes
    /// too. An S3 PUT is atomic: nothing more to do there.
    pub async fn delete_abandoned(&self, key: &Path) -> Result<(), StorageError> {
        self.delete(key).await?;
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = key
            .parts()
            .fold(root.clone(), |dir, part| dir.join(part.as_ref()));
        for suffix in 1.. {
            let mut staging = file.clone().into_os_string();
            staging.push(format!("#{suffix}"));
            match tokio::fs::remove_file(&staging).await {
                Ok(()) => {
                    tracing::info!(staging = %staging.to_string_lossy(), "deleted an interrupted upload")
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                Err(error) => {
                    return Err(StorageError {
                        kind: StorageErrorKind::Unavailable,
                        op: "delete",
                        key: staging.to_string_lossy().into_owned(),
                        source: object_store::Error::Generic {
                            store: "LocalFileSystem",
                            source: Box::new(error),
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// Lists the objects under `prefix` a page of `page` at a time, so a
    /// bucket of any size is walked in bounded memory (S3 lists 1,000 keys
    /// per request). A failed page ends the walk with its error.
    pub fn list_pages(&self, prefix: &str, page: usize) -> ListPages<'_> {
        let prefix_path = Path::from(prefix);
        ListPages {
            stream: self.inner.list(Some(&prefix_path)),
            page: page.max(1),
            metrics: &self.metrics.list,
            prefix: prefix.to_string(),
            done: false,
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let prefix_path = Path::from(prefix);
        self.layered(
            "list",
            prefix,
            0,
            &self.metrics.list,
            |v: &Vec<ObjectMeta>| v.len() as u64,
            self.inner.list(Some(&prefix_path)).try_collect::<Vec<_>>(),
        )
        .await
    }
}

/// A walk over the objects under a prefix (`ObjectStorage::list_pages`).
pub struct ListPages<'a> {
    stream: futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>>,
    page: usize,
    metrics: &'a OpMetrics,
    prefix: String,
    /// The stream ended (it must not be polled again) or failed.
    done: bool,
}

impl ListPages<'_> {
    /// The next page of objects, or `None` when the walk is done.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ObjectMeta>>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let started = Instant::now();
        let mut page = Vec::with_capacity(self.page.min(1_024));
        while page.len() < self.page {
            match self.stream.try_next().await {
                Ok(Some(meta)) => page.push(meta),
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Err(source) => {
                    self.done = true;
                    self.metrics.record(started.elapsed(), None);
                    return Err(StorageError {
                        kind: classify(&source),
                        op: "list",
                        key: self.prefix.clone(),
                        source,
                    });
                }
            }
        }
        self.metrics
            .record(started.elapsed(), Some(page.len() as u64));
        Ok((!page.is_empty()).then_some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fit_the_size_of_the_call() {
        assert_eq!(deadline_for(0), DEADLINE_BASE);
        // A 64 MiB segment gets 32 s more than an empty call at 2 MiB/s.
        assert_eq!(
            deadline_for(64 << 20),
            DEADLINE_BASE + Duration::from_secs(32)
        );
        assert!(deadline_for(u64::MAX) > deadline_for(1 << 40));
    }

    #[test]
    fn failures_are_classified_by_their_type() {
        use object_store::Error as E;
        let source = || -> Box<dyn std::error::Error + Send + Sync> { "x".into() };
        let kind = |e| classify(&e);
        assert_eq!(
            kind(E::NotFound {
                path: "k".into(),
                source: source()
            }),
            StorageErrorKind::NotFound
        );
        assert_eq!(
            kind(E::PermissionDenied {
                path: "k".into(),
                source: source()
            }),
            StorageErrorKind::Invalid
        );
        // Whatever its text says: a generic failure is what the retry layer
        // gave up on.
        assert_eq!(
            kind(E::Generic {
                store: "S3",
                source: "Client error with status 403".into()
            }),
            StorageErrorKind::Unavailable
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_ends_at_its_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStorage::open(&dir.path().display().to_string(), &S3Config::default())
            .expect("open");
        let metrics = OpMetrics::default();
        let stuck = store
            .layered(
                "put",
                "k",
                1 << 20,
                &metrics,
                |_: &()| 0,
                std::future::pending::<object_store::Result<()>>(),
            )
            .await
            .expect_err("out of time");
        assert_eq!(stuck.kind, StorageErrorKind::Unavailable);
        assert!(stuck.to_string().contains("deadline"), "{stuck}");
        assert_eq!(metrics.errors(), 1);
    }

    #[tokio::test]
    async fn a_listing_walks_in_pages_to_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStorage::open(&dir.path().display().to_string(), &S3Config::default())
            .expect("open");
        for i in 0..5 {
            store
                .put(
                    &Path::from(format!("wal/{i}.wal")),
                    Bytes::from_static(b"x"),
                )
                .await
                .expect("put");
        }
        let mut pages = store.list_pages("wal", 2);
        let mut sizes = Vec::new();
        while let Some(page) = pages.next_page().await.expect("page") {
            sizes.push(page.len());
        }
        assert_eq!(sizes, [2, 2, 1]);
        // Done stays done (the stream underneath is not polled again).
        assert!(pages.next_page().await.expect("after the end").is_none());
    }

    #[tokio::test]
    async fn local_round_trip_and_missing_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStorage::open(&dir.path().display().to_string(), &S3Config::default())
            .expect("open");
        let key = Path::from("wal/1-a.wal");
        store
            .put(&key, Bytes::from_static(b"hello world"))
            .await
            .expect("put");
        assert_eq!(
            store.get_range(&key, 6..11).await.expect("get").as_ref(),
            b"world"
        );
        let missing = store
            .get_range(&Path::from("wal/none"), 0..1)
            .await
            .expect_err("missing");
        assert_eq!(missing.kind, StorageErrorKind::NotFound);
        assert_eq!(store.list("wal").await.expect("list").len(), 1);
        store.delete(&key).await.expect("delete");
        store.delete(&key).await.expect("delete is idempotent");
        assert_eq!(store.metrics().put.requests(), 1);
    }

    #[tokio::test]
    async fn deleting_an_abandoned_upload_removes_its_staging_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStorage::open(&dir.path().display().to_string(), &S3Config::default())
            .expect("open");
        // What kill -9 during a local PUT leaves: the staging file only.
        let staging = dir.path().join("seg/t/0/5-b.seg#1");
        std::fs::create_dir_all(staging.parent().expect("parent")).expect("mkdir");
        std::fs::write(&staging, b"half an object").expect("write");
        store
            .delete_abandoned(&Path::from("seg/t/0/5-b.seg"))
            .await
            .expect("delete");
        assert!(!staging.exists(), "the interrupted upload is gone");
        // A whole object goes the same way; none at all is not an error.
        let key = Path::from("wal/2-c.wal");
        store
            .put(&key, Bytes::from_static(b"x"))
            .await
            .expect("put");
        store.delete_abandoned(&key).await.expect("delete");
        store.delete_abandoned(&key).await.expect("idempotent");
        assert!(store.list("wal").await.expect("list").is_empty());
    }
}
