//! An ongoing transaction as the write path sees it: its producer, epoch
//! and partitions, and whether it still takes batches. The transaction
//! coordinator (`broker::txn`) creates and ends it; the write buffer checks
//! it under its own lock, so a batch that races the end of its transaction
//! is either refused or lands before the markers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::metadata::TopicId;

#[derive(Debug)]
pub struct OpenTxn {
    pub producer_id: i64,
    pub epoch: i16,
    partitions: RwLock<BTreeSet<(TopicId, i32)>>,
    open: AtomicBool,
}

impl OpenTxn {
    pub fn new(producer_id: i64, epoch: i16, partitions: &[(TopicId, i32)]) -> Arc<Self> {
        Arc::new(Self {
            producer_id,
            epoch,
            partitions: RwLock::new(partitions.iter().copied().collect()),
            open: AtomicBool::new(true),
        })
    }

    /// False from the moment the transaction starts ending: a batch that
    /// finds it closed under the write buffer's lock is refused, one that
    /// finds it open lands before the markers.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The transaction starts ending: no batch of it is taken from now on.
    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    pub fn contains(&self, topic: TopicId, partition: i32) -> bool {
        self.partitions
            .read()
            .map(|p| p.contains(&(topic, partition)))
            .unwrap_or(false)
    }

    /// Adds partitions the transaction now covers.
    pub fn add_partitions(&self, partitions: impl IntoIterator<Item = (TopicId, i32)>) {
        if let Ok(mut covered) = self.partitions.write() {
            covered.extend(partitions);
        }
    }
}
