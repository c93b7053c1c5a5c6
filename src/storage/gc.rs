//! Garbage collection, from the metadata store alone (the bucket is never
//! listed, so objects this store's writers did not announce, such as those
//! of another broker sharing the bucket, are never touched):
//! - orphans: upload intents older than the grace period whose object was
//!   never committed (a crash, a failed or fenced commit, a sealer output
//!   whose swap did not happen). Keys of this process whose commit is still
//!   undecided are skipped whatever their age; keys of earlier processes
//!   of this node (fenced when it started) need no grace. The intent is doomed in the
//!   metadata store first (a commit needing it fails from then on), then the
//!   object is deleted (on the embedded store with the staging file a PUT
//!   cut short by a crash leaves), then the intent forgotten;
//! - retired objects: committed objects that no chunk has referenced for the
//!   delete grace period (sealed into segments, deleted topics, retention),
//!   so a read that looked a chunk up just before it moved still finds its
//!   bytes.
//!
//! In a cluster only the broker holding the controller lease sweeps, so
//! each object is deleted once (by one broker), whichever wrote it.
//!
//! Each sweep works through at most `BATCH` rows of each kind, oldest first,
//! and repeats while a batch comes back full: work per round is bounded, and
//! nothing scans whole tables. Sweeps run at startup and every
//! `sweep_interval`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use tokio_util::sync::CancellationToken;

use super::intents::Intents;
use super::object::ObjectStorage;
use crate::metadata::MetadataStore;

const BATCH: usize = 500;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub orphans_deleted: usize,
    pub retired_deleted: usize,
}

pub struct Collector {
    pub storage: ObjectStorage,
    pub metadata: Arc<dyn MetadataStore>,
    pub intents: Arc<Intents>,
    /// This broker's node id: intents of its earlier processes (fenced at
    /// start) are orphans at any age.
    pub node: i32,
    /// An intent younger than this is left alone (its PUT and commit may be
    /// under way).
    pub orphan_grace: Duration,
    /// A retired object is kept this long for reads still in flight.
    pub delete_grace: Duration,
    /// Whether this broker holds the controller lease (it alone sweeps).
    pub controller: Arc<AtomicBool>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Collector {
    /// Deletes an object (one already gone counts as deleted).
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        Ok(self.storage.delete(&Path::from(key)).await?)
    }

    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        loop {
            let before = now_ms().saturating_sub(self.orphan_grace.as_millis() as i64);
            let stale = self
                .metadata
                .stale_intents(before, self.node, self.intents.owner(), BATCH)
                .await?;
            let full = stale.len() == BATCH;
            let candidates: Vec<String> = stale
                .into_iter()
                .filter(|i| i.owner != self.intents.owner() || !self.intents.is_live(&i.key))
                .map(|i| i.key)
                .collect();
            let progress = !candidates.is_empty();
            if progress {
                let doomed = self.metadata.doom_uncommitted(candidates).await?;
                for key in &doomed {
                    tracing::info!(%key, "deleting orphan object");
                    self.storage
                        .delete_abandoned(&Path::from(key.as_str()))
                        .await?;
                }
                report.orphans_deleted += doomed.len();
                self.metadata.forget_intents(doomed).await?;
            }
            // Only live keys of this process left in a full batch: the rest
            // waits for the next sweep.
            if !full || !progress {
                break;
            }
        }
        loop {
            let before = now_ms().saturating_sub(self.delete_grace.as_millis() as i64);
            let retired = self.metadata.retired_objects(before, BATCH).await?;
            let full = retired.len() == BATCH;
            for key in &retired {
                self.delete(key).await?;
            }
            report.retired_deleted += retired.len();
            self.metadata.forget_objects(retired).await?;
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// Sweeps now, then every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            let result = if self.controller.load(Ordering::Acquire) {
                self.sweep().await
            } else {
                Ok(SweepReport::default())
            };
            match result {
                Ok(report) if report != SweepReport::default() => {
                    tracing::info!(?report, "object sweep done");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "object sweep failed; will retry"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
