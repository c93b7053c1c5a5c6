//! The read cache: objects are read in fixed-size, aligned blocks held in a
//! `foyer` hybrid cache (memory first, then a disk tier under the data dir).
//!
//! - Write-through: a freshly committed object is inserted block by block
//!   (copied, so the cache's weight is the memory it holds), so readers at
//!   the tail never touch the object store. Those blocks stay in memory and
//!   are dropped, not written to the disk tier, when evicted: the produce
//!   path writes each byte once, to the object store (profiled: the disk
//!   tier's copy was a third of the bytes the broker wrote and a quarter of
//!   its CPU at full load). Lagging readers fetch from the object store.
//! - Blocks fetched on a miss go to memory and then to the disk tier, so
//!   repeated catch-up reads are served locally; with the embedded store
//!   they stay in memory only, since the disk tier would copy a local file.
//! - A miss is one ranged GET for the whole block; concurrent misses on the
//!   same block share that GET (foyer's `get_or_fetch` single-flight).
//! - A read within one block returns a slice of the cached block, without a
//!   copy. Objects are immutable, so a cached block never goes stale.

use std::ops::Range;
use std::path::Path;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCacheProperties, Location, LruConfig,
};
use foyer_memory::FetchTarget;

use super::object::{ObjectStorage, StorageError};
use crate::config::CacheConfig;

pub struct BlockCache {
    fetcher: Fetcher,
    block_bytes: u64,
    /// Window of sealed chunks' reads (`read_extent`).
    read_ahead_bytes: u64,
}

/// The cache with what a miss needs; cloned into background read-aheads.
#[derive(Clone)]
struct Fetcher {
    cache: HybridCache<String, Bytes>,
    storage: ObjectStorage,
    /// Where entries fetched on a miss are kept.
    fetched: Location,
}

impl Fetcher {
    /// The cache entry `key` holding bytes `range` of `object_key`, fetched
    /// with one GET on a miss.
    async fn fetch(
        &self,
        key: String,
        object_key: &str,
        range: Range<u64>,
    ) -> anyhow::Result<Bytes> {
        let expected = range.end - range.start;
        let storage = self.storage.clone();
        let path = object_store::path::Path::from(object_key);
        let location = self.fetched;
        let entry = self
            .cache
            .get_or_fetch(&key, move || async move {
                let value = storage.get_range(&path, range).await?;
                let properties = HybridCacheProperties::default().with_location(location);
                Ok::<_, StorageError>(FetchTarget::Entry { value, properties })
            })
            .await
            .with_context(|| format!("cannot read {key}"))?;
        let data = entry.value().clone();
        if data.len() as u64 != expected {
            bail!("{key} has {} bytes, expected {expected}", data.len());
        }
        Ok(data)
    }
}

/// How many read-ahead windows `extent` has: `window` bytes each from its
/// start, the last one taking the rest (so between one and two windows
/// long, and a chunk of up to twice the window is one GET).
fn window_count(extent: &Range<u64>, window: u64) -> u64 {
    ((extent.end - extent.start) / window).max(1)
}

/// Window `index` of `extent` (see `window_count`).
fn window_range(extent: &Range<u64>, window: u64, index: u64) -> Range<u64> {
    let start = extent.start + index * window;
    if index + 1 >= window_count(extent, window) {
        start..extent.end
    } else {
        start..start + window
    }
}

fn block_key(object_key: &str, block: u64) -> String {
    format!("{object_key}#{block}")
}

impl BlockCache {
    pub async fn open(
        config: &CacheConfig,
        dir: &Path,
        storage: ObjectStorage,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
        // foyer's disk blocks must hold at least one of our blocks.
        let engine_block = (config.block_bytes * 4)
            .max(config.read_ahead_bytes * 4)
            .max(16 * 1024 * 1024);
        let disk_bytes = config.disk_bytes.max(engine_block * 4);
        let device = FsDeviceBuilder::new(dir)
            .with_capacity(disk_bytes)
            .build()
            .context("cannot open the disk cache")?;
        let cache = HybridCacheBuilder::new()
            .with_name("strata-blocks")
            .memory(config.memory_bytes.max(1))
            // One plain LRU: entries are large (1 MiB blocks, 4 MiB read-ahead
            // windows), and foyer's defaults (8 shards, new entries in a 10%
            // low-priority pool) would evict a window read ahead before its
            // reader got to it.
            .with_shards(1)
            .with_eviction_config(LruConfig {
                high_priority_pool_ratio: 0.0,
            })
            .with_weighter(|key: &String, value: &Bytes| key.len() + value.len())
            .storage()
            .with_engine_config(BlockEngineConfig::new(device).with_block_size(engine_block))
            .build()
            .await
            .context("cannot build the hybrid cache")?;
        Ok(Self {
            fetcher: Fetcher {
                cache,
                fetched: if storage.is_local() {
                    Location::InMem
                } else {
                    Location::Default
                },
                storage,
            },
            block_bytes: config.block_bytes as u64,
            read_ahead_bytes: (config.read_ahead_bytes as u64).max(4096),
        })
    }

    /// Write-through of a just-committed object. Each block is copied out of
    /// the object so that a cached block does not keep the whole object (up
    /// to `wal.max_buffered_bytes`) alive while being weighed as one block.
    pub fn insert_object(&self, object_key: &str, data: &Bytes) {
        let len = data.len() as u64;
        let mut block = 0u64;
        while block * self.block_bytes < len {
            let start = block * self.block_bytes;
            let end = (start + self.block_bytes).min(len);
            self.fetcher.cache.insert_with_properties(
                block_key(object_key, block),
                Bytes::copy_from_slice(&data[start as usize..end as usize]),
                HybridCacheProperties::default().with_location(Location::InMem),
            );
            block += 1;
        }
    }

    /// Bytes `range` of the object `object_key` of `object_size` bytes.
    pub async fn read(
        &self,
        object_key: &str,
        object_size: u64,
        range: Range<u64>,
    ) -> anyhow::Result<Bytes> {
        if range.start >= range.end || range.end > object_size {
            bail!(
                "invalid read of {object_key}: bytes {}..{} of an object of {object_size} bytes",
                range.start,
                range.end
            );
        }
        let first = range.start / self.block_bytes;
        let last = (range.end - 1) / self.block_bytes;
        if first == last {
            let block = self.block(object_key, object_size, first).await?;
            let offset = first * self.block_bytes;
            return Ok(block.slice((range.start - offset) as usize..(range.end - offset) as usize));
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for index in first..=last {
            let block = self.block(object_key, object_size, index).await?;
            let offset = index * self.block_bytes;
            let from = range.start.max(offset) - offset;
            let to = range.end.min(offset + block.len() as u64) - offset;
            out.extend_from_slice(&block[from as usize..to as usize]);
        }
        Ok(out.freeze())
    }

    /// Bytes `range` of a sealed chunk whose data and index span `extent`
    /// of `object_key`: read in windows of `read_ahead_bytes` counted from
    /// the extent's start (the last one up to twice as long: it takes the
    /// rest), each one ranged GET and one cache entry, so a
    /// cold read costs one GET per window and never fetches bytes outside
    /// the extent (other partitions' sections of a shared object). The
    /// window after the last one read is fetched in the background, so a
    /// consumer catching up finds it there (read-ahead).
    pub async fn read_extent(
        &self,
        object_key: &str,
        extent: Range<u64>,
        range: Range<u64>,
    ) -> anyhow::Result<Bytes> {
        if range.start >= range.end || range.start < extent.start || range.end > extent.end {
            bail!(
                "invalid read of {object_key}: bytes {}..{} outside the chunk at {}..{}",
                range.start,
                range.end,
                extent.start,
                extent.end
            );
        }
        let window = self.read_ahead_bytes;
        let windows = window_count(&extent, window);
        let index_of = |at: u64| ((at - extent.start) / window).min(windows - 1);
        let (first, last) = (index_of(range.start), index_of(range.end - 1));
        if last + 1 < windows {
            self.prefetch(object_key, &extent, last + 1);
        }
        let mut out: Option<BytesMut> = None;
        for index in first..=last {
            let data = self
                .fetcher
                .fetch(
                    format!("{object_key}@{}#{index}", extent.start),
                    object_key,
                    window_range(&extent, window, index),
                )
                .await?;
            let offset = extent.start + index * window;
            let from = (range.start.max(offset) - offset) as usize;
            let to = (range.end.min(offset + data.len() as u64) - offset) as usize;
            if first == last {
                return Ok(data.slice(from..to));
            }
            out.get_or_insert_with(|| BytesMut::with_capacity((range.end - range.start) as usize))
                .extend_from_slice(&data[from..to]);
        }
        Ok(out.unwrap_or_default().freeze())
    }

    /// Starts fetching window `index` of `extent` unless it is cached or
    /// already on its way (foyer shares one fetch per key).
    fn prefetch(&self, object_key: &str, extent: &Range<u64>, index: u64) {
        let key = format!("{object_key}@{}#{index}", extent.start);
        if self.fetcher.cache.memory().contains(&key) {
            return;
        }
        let fetcher = self.fetcher.clone();
        let range = window_range(extent, self.read_ahead_bytes, index);
        let object_key = object_key.to_string();
        tokio::spawn(async move {
            if let Err(error) = fetcher.fetch(key, &object_key, range).await {
                tracing::debug!(%error, "read-ahead failed (the read will retry)");
            }
        });
    }

    /// A whole object, for a reader that reads it once (the sealer): from
    /// the memory tier if every block is there, else with one GET that
    /// does not fill the cache.
    pub async fn read_whole(&self, object_key: &str, object_size: u64) -> anyhow::Result<Bytes> {
        let blocks = object_size.div_ceil(self.block_bytes);
        let mut cached = Vec::with_capacity(blocks as usize);
        for index in 0..blocks {
            match self
                .fetcher
                .cache
                .memory()
                .get(&block_key(object_key, index))
            {
                Some(entry) => cached.push(entry.value().clone()),
                None => break,
            }
        }
        if cached.len() as u64 == blocks
            && cached.iter().map(|b| b.len() as u64).sum::<u64>() == object_size
        {
            if cached.len() == 1 {
                return Ok(cached.swap_remove(0));
            }
            let mut out = BytesMut::with_capacity(object_size as usize);
            for block in &cached {
                out.extend_from_slice(block);
            }
            return Ok(out.freeze());
        }
        let path = object_store::path::Path::from(object_key);
        let data = self
            .fetcher
            .storage
            .get_range(&path, 0..object_size)
            .await?;
        if data.len() as u64 != object_size {
            bail!(
                "{object_key} has {} bytes, expected {object_size}",
                data.len()
            );
        }
        Ok(data)
    }

    /// Bytes `range` of an object with one GET, not cached (merges and
    /// compaction read each chunk once).
    pub async fn read_uncached(
        &self,
        object_key: &str,
        range: Range<u64>,
    ) -> anyhow::Result<Bytes> {
        let path = object_store::path::Path::from(object_key);
        let len = range.end.saturating_sub(range.start);
        let data = self.fetcher.storage.get_range(&path, range).await?;
        if data.len() as u64 != len {
            bail!("{object_key}: read {} bytes, expected {len}", data.len());
        }
        Ok(data)
    }

    async fn block(&self, object_key: &str, object_size: u64, index: u64) -> anyhow::Result<Bytes> {
        let start = index * self.block_bytes;
        let end = (start + self.block_bytes).min(object_size);
        self.fetcher
            .fetch(block_key(object_key, index), object_key, start..end)
            .await
    }

    pub async fn close(&self) -> anyhow::Result<()> {
        self.fetcher
            .cache
            .close()
            .await
            .context("cannot close the cache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::S3Config;

    #[tokio::test]
    async fn reads_across_blocks_and_from_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = ObjectStorage::open(
            &dir.path().join("objects").display().to_string(),
            &S3Config::default(),
        )
        .expect("open");
        let config = CacheConfig {
            memory_bytes: 1 << 20,
            disk_bytes: 64 << 20,
            block_bytes: 4096,
            read_ahead_bytes: 8192,
            ..CacheConfig::default()
        };
        let cache = BlockCache::open(&config, &dir.path().join("cache"), storage.clone())
            .await
            .expect("cache");
        let data: Bytes = (0..10_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let key = object_store::path::Path::from("wal/1-x.wal");
        storage.put(&key, data.clone()).await.expect("put");
        // Cold: every block comes from the store.
        let got = cache
            .read("wal/1-x.wal", 10_000, 4000..9000)
            .await
            .expect("read");
        assert_eq!(got, data.slice(4000..9000));
        let gets = storage.metrics().get.requests();
        // Warm: no further GET.
        let again = cache
            .read("wal/1-x.wal", 10_000, 4100..4200)
            .await
            .expect("read");
        assert_eq!(again, data.slice(4100..4200));
        assert_eq!(storage.metrics().get.requests(), gets);
        assert!(
            cache
                .read("wal/1-x.wal", 10_000, 9000..10_001)
                .await
                .is_err()
        );
    }
}
