//! Storage: everything between a validated record batch and the object store.
//!
//! - `wal`: the write buffer and group commit (the durability point);
//! - `partition` / `catalog`: the committed log of each partition in memory;
//! - `cache`: block cache over the object store (foyer, memory + disk);
//! - `object`: the object store behind retry, deadline and metrics layers
//!   (`object_client`: its HTTP client, counting retried attempts);
//! - `paths`: every object key, built in one place;
//! - `producers`: idempotent producer state and Kafka's sequence rules;
//! - `intents`: upload intents recorded before every PUT;
//! - `sealer`: write-ahead objects rewritten by partition into segments;
//! - `cleaner`: retention and log compaction (run by the sealer's task);
//! - `segment`: the layout of sealed objects (sections, sparse index, footer);
//! - `gc`: removal of orphan and retired objects, from the metadata store,
//!   and of objects nothing names, from a rare listing of the bucket;
//! - `txn`: an ongoing transaction as the write path checks it.

pub mod cache;
pub mod catalog;
pub mod cleaner;
pub mod gc;
pub mod intents;
pub mod metrics;
pub mod object;
mod object_client;
pub mod partition;
pub mod paths;
pub mod producers;
pub mod sealer;
pub mod segment;
pub mod txn;
pub mod wal;
