//! Garbage collection, driven by the metadata store:
//! - orphans: upload intents not renewed for the grace period (on the
//!   store's clock) whose object was never committed (a crash, a failed or
//!   fenced commit, a sealer output whose swap did not happen). A live
//!   broker renews its undecided keys (`intents`), so only keys nobody
//!   owns any more age out; keys of this process whose commit is still
//!   undecided are skipped whatever their age; keys of earlier processes
//!   of this node (fenced when it started) need no grace. The intent is
//!   doomed in the metadata store first, only if still stale there (a
//!   commit needing it fails from then on), then the object is deleted (on
//!   the embedded store with the staging file a PUT cut short by a crash
//!   leaves), then the intent forgotten;
//! - retired objects: committed objects that no chunk has referenced for the
//!   delete grace period (sealed into segments, deleted topics, retention),
//!   so a read that looked a chunk up just before it moved still finds its
//!   bytes; while a backup hold lives (`strata backup`), only those retired
//!   before it was taken, so a metadata backup taken under the hold still
//!   finds every object it names when restored;
//! - unnamed objects, the backstop: a rare pass lists the bucket's
//!   `wal/`, `seg/` and `shr/` keys page by page and deletes objects that
//!   no object row and no upload intent names and that were last written
//!   longer ago than `unnamed_grace` (hours by default), so that nothing
//!   is left without an owner for good whatever the cause (an intent lost
//!   to a bug, a metadata backup restored over newer data). The bucket
//!   prefix belongs to one metadata store: two clusters must not share it.
//!
//! In a cluster only the broker holding the controller lease sweeps, so
//! each object is deleted once (by one broker), whichever wrote it.
//!
//! Each sweep works through at most `BATCH` rows of each kind, oldest first,
//! and repeats while a batch comes back full: work per round is bounded, and
//! nothing scans whole tables. Sweeps run at startup and every
//! `sweep_interval`; the listing pass at most every `list_interval`, one
//! page (`LIST_PAGE` keys, one metadata query) at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use object_store::path::Path;
use tokio_util::sync::CancellationToken;

use super::intents::Intents;
use super::object::ObjectStorage;
use crate::metadata::{MetadataStore, StaleIntents};

const BATCH: usize = 500;
/// Keys per page of the listing pass (one metadata query each).
const LIST_PAGE: usize = 1_000;
/// The key prefixes Strata writes (`paths`): the listing pass looks only there.
const LISTED_PREFIXES: [&str; 3] = ["wal", "seg", "shr"];

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub orphans_deleted: usize,
    pub retired_deleted: usize,
    /// Objects the listing pass found that nothing names.
    pub unnamed_deleted: usize,
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
    /// An object that nothing names is deleted by the listing pass only
    /// once last written this long ago.
    pub unnamed_grace: Duration,
    /// Time between listing passes.
    pub list_interval: Duration,
}

impl Collector {
    /// Deletes an object (one already gone counts as deleted).
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        Ok(self.storage.delete(&Path::from(key)).await?)
    }

    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        let stale_intents = StaleIntents {
            grace_ms: i64::try_from(self.orphan_grace.as_millis()).unwrap_or(i64::MAX),
            node: self.node,
            current: self.intents.owner().to_string(),
        };
        loop {
            let stale = self
                .metadata
                .stale_intents(stale_intents.clone(), BATCH)
                .await?;
            let full = stale.len() == BATCH;
            let candidates: Vec<String> = stale
                .into_iter()
                .filter(|i| i.owner != self.intents.owner() || !self.intents.is_live(&i.key))
                .map(|i| i.key)
                .collect();
            let progress = !candidates.is_empty();
            if progress {
                let doomed = self
                    .metadata
                    .doom_uncommitted(candidates, stale_intents.clone())
                    .await?;
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
        let expired = self.metadata.expire_backup_holds().await?;
        if expired > 0 {
            tracing::info!(expired, "backup holds ran out");
        }
        loop {
            let retired = self
                .metadata
                .retired_objects(
                    i64::try_from(self.delete_grace.as_millis()).unwrap_or(i64::MAX),
                    BATCH,
                )
                .await?;
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

    /// The listing pass: deletes objects under Strata's prefixes that no
    /// row and no intent names, last written before `unnamed_grace`. Pages
    /// of `LIST_PAGE` keys; stops early (to go on at the next pass) if this
    /// broker stops being the controller.
    pub async fn sweep_unnamed(&self) -> anyhow::Result<usize> {
        let grace = chrono::Duration::from_std(self.unnamed_grace).unwrap_or(chrono::Duration::MAX);
        let mut deleted = 0;
        for prefix in LISTED_PREFIXES {
            let mut pages = self.storage.list_pages(prefix, LIST_PAGE);
            while let Some(page) = pages.next_page().await? {
                if !self.controller.load(Ordering::Acquire) {
                    return Ok(deleted);
                }
                let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
                let old: Vec<String> = page
                    .into_iter()
                    .filter(|meta| now - meta.last_modified > grace)
                    .map(|meta| meta.location.to_string())
                    .collect();
                if old.is_empty() {
                    continue;
                }
                for key in self.metadata.unnamed_objects(old).await? {
                    tracing::warn!(%key, "deleting an object that no metadata names");
                    self.storage.delete(&Path::from(key.as_str())).await?;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Sweeps now, then every `interval` until `shutdown`; the listing pass
    /// runs at the first sweep and then every `list_interval`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let mut last_listing: Option<Instant> = None;
        loop {
            let result = if self.controller.load(Ordering::Acquire) {
                let mut result = self.sweep().await;
                let listing_due = last_listing.is_none_or(|at| at.elapsed() >= self.list_interval);
                if let (Ok(report), true) = (&mut result, listing_due) {
                    last_listing = Some(Instant::now());
                    match self.sweep_unnamed().await {
                        Ok(deleted) => report.unnamed_deleted = deleted,
                        Err(error) => {
                            tracing::warn!(%error, "bucket listing pass failed; will retry")
                        }
                    }
                }
                result
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
