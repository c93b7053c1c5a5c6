//! Integration tests: a real `strata` process on a real TCP port, driven by
//! real Kafka clients (librdkafka through the `rdkafka` crate, kcat, and raw
//! protocol frames for the bad-input cases), against the embedded object
//! store and against a real S3 server (MinIO) over HTTP; Parquet exports are
//! read back with pyarrow and duckdb.

mod acl;
mod admin;
pub(crate) mod bad_input;
mod cleanup;
mod cli;
pub(crate) mod cluster;
mod cluster_faults;
mod cluster_txn;
mod common;
mod compat;
mod config;
mod connections;
mod crash;
mod export;
mod groups;
mod http;
pub(crate) mod idempotence;
mod polyglot;
mod produce_consume;
mod quotas;
mod record_rules;
mod restore;
mod s3;
pub(crate) mod sasl;
mod store;
mod tiering;
pub(crate) mod tls;
pub(crate) mod transactions;
