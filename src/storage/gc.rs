//! Garbage collection of objects nothing needs:
//! - orphans: WAL objects whose PUT finished but whose metadata commit never
//!   happened (crash, failed or fenced commit), once older than the grace
//!   period. Objects whose commit is still being decided (the writer's
//!   in-flight set) are never touched, whatever the clock says. An object of
//!   an earlier broker process (another boot id in its key) can never be
//!   committed (its writer's epoch is fenced), so it is an orphan at any age
//!   (single-node rule; clusters will rely on the grace period alone);
//! - unreferenced objects: committed objects whose every chunk is gone
//!   (deleted topics).
//!
//! One sweep runs at startup, then one every `sweep_interval`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use tokio_util::sync::CancellationToken;

use super::object::ObjectStorage;
use super::paths;
use crate::metadata::MetadataStore;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub orphans_deleted: usize,
    pub unreferenced_deleted: usize,
}

pub struct Collector {
    pub storage: ObjectStorage,
    pub metadata: Arc<dyn MetadataStore>,
    pub orphan_grace: Duration,
    /// This process's boot id (see `paths`).
    pub boot: u64,
    /// Keys between PUT and commit, owned by the writer.
    pub in_flight: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Collector {
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let cutoff = now_ms.saturating_sub(self.orphan_grace.as_millis() as u64);
        for meta in self.storage.list(paths::WAL_PREFIX).await? {
            let Some((written, boot)) = paths::parse_wal_object(&meta.location) else {
                continue;
            };
            // Checked before the metadata lookup: a key absent from the set
            // then has a decided commit, so the lookup below is conclusive.
            let in_flight = self
                .in_flight
                .lock()
                .map(|keys| keys.contains(meta.location.as_ref()))
                .unwrap_or(true);
            if in_flight {
                continue;
            }
            let modified = meta.last_modified.timestamp_millis().max(0) as u64;
            let fenced = boot != self.boot;
            if written.max(modified) > cutoff && !fenced {
                continue;
            }
            if !self.metadata.object_exists(meta.location.as_ref()).await? {
                tracing::info!(key = %meta.location, "deleting orphan object");
                self.storage.delete(&meta.location).await?;
                report.orphans_deleted += 1;
            }
        }
        for key in self.metadata.unreferenced_objects().await? {
            self.storage.delete(&Path::from(key.as_str())).await?;
            self.metadata.forget_object(&key).await?;
            report.unreferenced_deleted += 1;
        }
        Ok(report)
    }

    /// Sweeps now, then every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            match self.sweep().await {
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
