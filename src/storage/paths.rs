//! Every object key Strata writes is built here, and only here.
//!
//! Layout (relative to the store's root or the S3 prefix); every key holds
//! 64 random bits, and keys spread over prefixes (256 two-hex-digit fan-out
//! directories, or the topic id) instead of one flat directory, with S3's
//! per-prefix request rates (and local directory sizes) in mind:
//! - `wal/<xx>/<millis:013>-<random:016x>.wal`: one flushed write buffer
//!   holding chunks of many partitions (the durability point);
//! - `seg/<topic-id>/<partition>/<base-offset:020>-<random:016x>.seg`: one
//!   partition's sealed segment;
//! - `shr/<xx>/<millis:013>-<random:016x>.shr`: sealed chunks of several
//!   partitions, ordered by partition.
//!
//! Keys are built from topic ids, never from topic names. Which objects
//! exist, and which may be deleted, is known from the metadata store
//! (upload intents and object rows), never from listing the bucket.

use object_store::path::Path;
use rand::Rng;

use crate::metadata::TopicId;

fn fan_out(random: u64) -> String {
    format!("{:02x}", random >> 56)
}

/// A fresh, unique key for a write-ahead object.
pub fn new_wal_object(now_ms: u64) -> Path {
    let random: u64 = rand::rng().random();
    Path::from(format!(
        "wal/{}/{now_ms:013}-{random:016x}.wal",
        fan_out(random)
    ))
}

/// A fresh, unique key for a partition's segment starting at `base_offset`.
pub fn new_segment(topic: TopicId, partition: i32, base_offset: i64) -> Path {
    let random: u64 = rand::rng().random();
    Path::from(format!(
        "seg/{topic}/{partition}/{:020}-{random:016x}.seg",
        base_offset.max(0)
    ))
}

/// A fresh, unique key for a shared object (sealed chunks of several
/// partitions).
pub fn new_shared(now_ms: u64) -> Path {
    let random: u64 = rand::rng().random();
    Path::from(format!(
        "shr/{}/{now_ms:013}-{random:016x}.shr",
        fan_out(random)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_prefixes_and_are_unique() {
        let a = new_wal_object(1_700_000_000_123);
        let b = new_wal_object(1_700_000_000_123);
        assert_ne!(a, b);
        let parts: Vec<_> = a.parts().collect();
        assert_eq!(parts.len(), 3, "{a}");
        assert_eq!(parts[0].as_ref(), "wal");
        assert_eq!(parts[1].as_ref().len(), 2);
        assert!(parts[2].as_ref().starts_with("1700000000123-"));
        let topic = TopicId(uuid::Uuid::from_u128(0xabc));
        let seg = new_segment(topic, 7, 42);
        assert!(
            seg.as_ref()
                .starts_with(&format!("seg/{topic}/7/00000000000000000042-")),
            "{seg}"
        );
        assert!(new_shared(5).as_ref().starts_with("shr/"));
    }
}
