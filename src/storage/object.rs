//! The object store as the rest of the broker sees it: `put`, ranged `get`,
//! `delete`, `list`, each passing through two layers:
//!
//! 1. retry: timeouts, 5xx, 503 SlowDown and connection errors are retried
//!    with exponential backoff and full jitter, up to a bounded number of
//!    attempts; errors that retrying cannot fix (not found, denied, invalid)
//!    return at once;
//! 2. metrics: requests, errors, bytes and latency per operation.
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
    ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use rand::Rng;
use thiserror::Error;

use super::metrics::{ObjectStoreMetrics, OpMetrics};
use crate::config::S3Config;

/// What the caller should do about a failed object-store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// Transient; already retried as often as the policy allows.
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

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff before attempt `attempt + 1`.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX));
        let cap = exp.min(self.max_delay);
        let millis = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

fn classify(err: &object_store::Error) -> StorageErrorKind {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => StorageErrorKind::NotFound,
        E::Generic { source, .. } => {
            let text = source.to_string();
            // The HTTP client reports 4xx as "Client error with status 4xx".
            // Throttling (429) and request timeouts (408) are worth retrying.
            let client_error = text.contains("Client error with status 4")
                && !text.contains("status 408")
                && !text.contains("status 429");
            if client_error {
                StorageErrorKind::Invalid
            } else {
                StorageErrorKind::Unavailable
            }
        }
        E::JoinError { .. } => StorageErrorKind::Unavailable,
        _ => StorageErrorKind::Invalid,
    }
}

/// The broker's handle on the object store.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<dyn ObjectStore>,
    retry: RetryPolicy,
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
            // Our own retry layer decides; the client's would double it.
            let no_retry = RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            };
            // Set timeouts key by key: `with_client_options` would replace the
            // options (allow_http among them) taken from flags and AWS_* vars.
            let store = builder
                .with_retry(no_retry)
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    "5s",
                )
                .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "30s")
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
            return Ok(Self::new(inner, format!("s3://{rest}")));
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
            retry: RetryPolicy::default(),
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

    /// Runs `call` through the retry and metrics layers.
    async fn layered<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        metrics: &OpMetrics,
        bytes_of: impl Fn(&T) -> u64,
        mut call: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let result = call().await;
            metrics.record(started.elapsed(), result.as_ref().map(&bytes_of).ok());
            match result {
                Ok(value) => return Ok(value),
                Err(source) => {
                    let kind = classify(&source);
                    attempt += 1;
                    if kind != StorageErrorKind::Unavailable || attempt >= self.retry.max_attempts {
                        return Err(StorageError {
                            kind,
                            op,
                            key: key.to_string(),
                            source,
                        });
                    }
                    metrics.record_retry();
                    tracing::debug!(op, key, attempt, error = %source, "retrying object store call");
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                }
            }
        }
    }

    pub async fn put(&self, key: &Path, data: Bytes) -> Result<(), StorageError> {
        let len = data.len() as u64;
        self.layered(
            "put",
            key.as_ref(),
            &self.metrics.put,
            |_| len,
            || self.inner.put(key, PutPayload::from_bytes(data.clone())),
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
            &self.metrics.put,
            |_| len,
            || {
                self.inner
                    .put(key, parts.iter().cloned().collect::<PutPayload>())
            },
        )
        .await
        .map(|_| ())
    }

    pub async fn get_range(&self, key: &Path, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.layered(
            "get",
            key.as_ref(),
            &self.metrics.get,
            |b: &Bytes| b.len() as u64,
            || self.inner.get_range(key, range.clone()),
        )
        .await
    }

    pub async fn delete(&self, key: &Path) -> Result<(), StorageError> {
        let result = self
            .layered(
                "delete",
                key.as_ref(),
                &self.metrics.delete,
                |_| 0,
                || self.inner.delete(key),
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

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let prefix_path = Path::from(prefix);
        self.layered(
            "list",
            prefix,
            &self.metrics.list,
            |v: &Vec<ObjectMeta>| v.len() as u64,
            || self.inner.list(Some(&prefix_path)).try_collect::<Vec<_>>(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let policy = RetryPolicy::default();
        for attempt in 0..40 {
            assert!(policy.delay(attempt) <= policy.max_delay);
        }
    }

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: message.to_string().into(),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_and_permanent_ones_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store =
            ObjectStorage::open(&dir.path().display().to_string(), &S3Config::default())
                .expect("open");
        store.retry.base_delay = Duration::from_millis(1);
        let metrics = OpMetrics::default();
        // Two 503 SlowDown answers, then success.
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result = store
            .layered("put", "k", &metrics, |_: &u32| 0, || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(generic("Server returned non-2xx status code: 503 Service Unavailable: SlowDown"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result.expect("succeeds on the third attempt"), 2);
        assert_eq!(metrics.retries(), 2);
        assert_eq!(metrics.requests(), 3);
        assert_eq!(metrics.errors(), 2);
        // A 403 is not retried.
        let calls = std::sync::atomic::AtomicU32::new(0);
        let denied = store
            .layered(
                "get",
                "k",
                &metrics,
                |_: &u32| 0,
                || {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {
                        Err::<u32, _>(generic(
                            "Client error with status 403 Forbidden: AccessDenied",
                        ))
                    }
                },
            )
            .await
            .expect_err("denied");
        assert_eq!(denied.kind, StorageErrorKind::Invalid);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Throttling (429) keeps being retried until the attempts run out.
        let calls = std::sync::atomic::AtomicU32::new(0);
        let throttled = store
            .layered(
                "get",
                "k",
                &metrics,
                |_: &u32| 0,
                || {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {
                        Err::<u32, _>(generic("Client error with status 429 Too Many Requests"))
                    }
                },
            )
            .await
            .expect_err("gives up");
        assert_eq!(throttled.kind, StorageErrorKind::Unavailable);
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            store.retry.max_attempts
        );
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
