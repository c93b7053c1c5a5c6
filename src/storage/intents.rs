//! Upload intents: every object key this process writes is recorded in the
//! metadata store (with this process as its owner) before its PUT, so the
//! collector (`gc`) deletes only objects a writer of this store announced,
//! and never one whose commit may still land:
//! - a key stays *live* from its reservation until its commit is decided
//!   (committed, failed, or given up); the collector skips live keys of this
//!   process whatever their age;
//! - an intent ages from its last renewal on the store's clock, and this
//!   process renews its live keys every `renew_interval` (a fraction of the
//!   grace period): another broker's collector never dooms a key that a
//!   live, quiet broker reserved long ago and has not used yet;
//! - keys nobody renews any more (a dead process's, a key whose commit
//!   failed) are collected once older than the grace period, and those of
//!   earlier processes of this node (fenced at start) at any age; a commit
//!   needs its intent, and the collector dooms an intent before deleting
//!   its object.
//!
//! Write-ahead keys are reserved in batches ahead of use (one metadata
//! transaction per `WAL_BATCH` flushes), so the write path does not pay a
//! transaction per flush.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path;
use tokio_util::sync::CancellationToken;

use super::paths;
use crate::metadata::{MetadataStore, Result};

const WAL_BATCH: usize = 64;
/// Keys renewed per metadata statement.
const RENEW_BATCH: usize = 1_000;

pub struct Intents {
    owner: String,
    metadata: Arc<dyn MetadataStore>,
    /// Keys of this process whose fate is undecided.
    live: Mutex<HashSet<String>>,
    /// Write-ahead keys reserved and not used yet.
    pool: Mutex<VecDeque<Path>>,
    refilling: AtomicBool,
}

/// A reserved key; dropping it releases the key (its commit is decided).
pub struct LiveKey {
    intents: Arc<Intents>,
    pub key: Path,
}

impl Drop for LiveKey {
    fn drop(&mut self) {
        self.intents.release(self.key.as_ref());
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Intents {
    /// `owner` names this process: `<node id>:<boot id>`.
    pub fn new(owner: String, metadata: Arc<dyn MetadataStore>) -> Arc<Self> {
        Arc::new(Self {
            owner,
            metadata,
            live: Mutex::default(),
            pool: Mutex::default(),
            refilling: AtomicBool::new(false),
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether `key` is a key of this process whose commit is undecided.
    pub fn is_live(&self, key: &str) -> bool {
        self.live.lock().map(|l| l.contains(key)).unwrap_or(true)
    }

    fn release(&self, key: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(key);
        }
    }

    /// Restarts the age of every live key of this process in the store.
    pub async fn renew(&self) -> Result<usize> {
        let live: Vec<String> = match self.live.lock() {
            Ok(live) => live.iter().cloned().collect(),
            Err(_) => return Ok(0),
        };
        let mut renewed = 0;
        for keys in live.chunks(RENEW_BATCH) {
            renewed += self
                .metadata
                .renew_intents(&self.owner, keys.to_vec())
                .await?;
        }
        Ok(renewed)
    }

    /// Renews the live keys every `interval` until `shutdown`. A renewal
    /// that fails (the store unreachable) is retried at the next tick; a
    /// key left unrenewed past the grace period may be doomed, and then its
    /// commit fails (a retriable error for its producers), never lands.
    pub async fn run_renewal(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(error) = self.renew().await {
                tracing::warn!(%error, "cannot renew this broker's upload intents; will retry");
            }
        }
    }

    /// Records intents for `keys` (one transaction); they are live until
    /// their `LiveKey`s drop.
    pub async fn reserve(self: &Arc<Self>, keys: Vec<Path>) -> Result<Vec<LiveKey>> {
        self.record(&keys).await?;
        Ok(keys
            .into_iter()
            .map(|key| LiveKey {
                intents: Arc::clone(self),
                key,
            })
            .collect())
    }

    async fn record(&self, keys: &[Path]) -> Result<()> {
        let names: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        if let Ok(mut live) = self.live.lock() {
            live.extend(names.iter().cloned());
        }
        let recorded = self
            .metadata
            .record_intents(&self.owner, names.clone())
            .await;
        if recorded.is_err()
            && let Ok(mut live) = self.live.lock()
        {
            for name in &names {
                live.remove(name);
            }
        }
        recorded
    }

    async fn refill(&self) -> Result<()> {
        let keys: Vec<Path> = (0..WAL_BATCH)
            .map(|_| paths::new_wal_object(now_ms()))
            .collect();
        self.record(&keys).await?;
        if let Ok(mut pool) = self.pool.lock() {
            pool.extend(keys);
        }
        Ok(())
    }

    fn pop(&self) -> Option<(Path, usize)> {
        let mut pool = self.pool.lock().ok()?;
        let key = pool.pop_front()?;
        Some((key, pool.len()))
    }

    /// A write-ahead key with its intent recorded. Reserved keys are kept
    /// ahead of use; the pool is refilled in the background when it runs
    /// low, and here only when it is empty.
    pub async fn wal_key(self: &Arc<Self>) -> Result<LiveKey> {
        loop {
            if let Some((key, left)) = self.pop() {
                if left < WAL_BATCH / 4 && !self.refilling.swap(true, Ordering::AcqRel) {
                    let this = Arc::clone(self);
                    tokio::spawn(async move {
                        if let Err(error) = this.refill().await {
                            tracing::warn!(%error, "cannot reserve object keys ahead");
                        }
                        this.refilling.store(false, Ordering::Release);
                    });
                }
                return Ok(LiveKey {
                    intents: Arc::clone(self),
                    key,
                });
            }
            self.refill().await?;
        }
    }
}
