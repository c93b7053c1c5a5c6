//! Kafka wire protocol: framing, request headers, record batch views and the
//! table of APIs Strata answers. No sockets and no tokio in here: bytes in,
//! typed values out, so every decoder can be unit- and fuzz-tested.
//!
//! Message bodies themselves are the `kafka-protocol` crate's types (vendored
//! with bounded pre-allocation, see `vendor/kafka-protocol/README.vendor.md`).

pub mod batch;
pub mod consumer;
pub mod control;
pub mod filter;
pub mod frame;
pub mod records;
pub mod versions;

pub use frame::{FrameError, RequestFrame, decode_request_header, encode_response};
