//! Strata: a Kafka-compatible broker that keeps every acknowledged byte in
//! object storage.
//!
//! Map of the crate:
//! - [`protocol`]: Kafka framing and record-batch views; no I/O.
//! - [`broker`]: listener, connections, dispatch, one handler per API.
//! - [`storage`]: write buffer and group commit, object layout, cache, GC.
//! - [`metadata`]: the metadata store trait and its SQLite backend.
//! - [`config`]: the configuration file, environment and flags.
//! - [`export`]: sealed segments exported as Parquet files.
//! - [`cli`]: the `strata` command line (server and client subcommands).
//! - [`http`]: health and Prometheus metrics over HTTP.
//! - [`telemetry`]: logging setup.

pub mod broker;
pub mod cli;
pub mod config;
pub mod export;
pub mod http;
pub mod metadata;
pub mod protocol;
pub mod storage;
pub mod telemetry;
