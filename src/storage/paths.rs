//! Every object key Strata writes is built here, and only here.
//!
//! Layout (relative to the store's root or the S3 prefix):
//! - `wal/<millis:013>-<boot:016x>-<random:016x>.wal`: one flushed write
//!   buffer holding chunks of many partitions. The time prefix keeps listings
//!   in write order and lets the orphan sweep judge age without a HEAD
//!   request; the boot id tells objects of this broker process from those of
//!   earlier ones (whose uncommitted objects can never be committed).
//!
//! Per-partition sealed segments will live under `topics/<topic-id>/<partition>/`;
//! keys are built from topic ids, never from topic names.

use object_store::path::Path;
use rand::Rng;

pub const WAL_PREFIX: &str = "wal";

/// A fresh, unique key for a WAL object written now by process `boot`.
pub fn new_wal_object(now_ms: u64, boot: u64) -> Path {
    let random: u64 = rand::rng().random();
    Path::from(format!(
        "{WAL_PREFIX}/{now_ms:013}-{boot:016x}-{random:016x}.wal"
    ))
}

/// `(write time, boot id)` encoded in a WAL object key, if it is one of ours.
pub fn parse_wal_object(key: &Path) -> Option<(u64, u64)> {
    let name = key.as_ref().strip_prefix(WAL_PREFIX)?.strip_prefix('/')?;
    let name = name.strip_suffix(".wal")?;
    let mut parts = name.split('-');
    let millis = parts.next()?.parse().ok()?;
    let boot = u64::from_str_radix(parts.next()?, 16).ok()?;
    let _random = parts.next()?;
    parts.next().is_none().then_some((millis, boot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_keys_round_trip_their_time_and_boot() {
        let key = new_wal_object(1_700_000_000_123, 0xabc);
        assert!(
            key.as_ref()
                .starts_with("wal/1700000000123-0000000000000abc-")
        );
        assert_eq!(parse_wal_object(&key), Some((1_700_000_000_123, 0xabc)));
        assert_eq!(parse_wal_object(&Path::from("topics/x/0/1.seg")), None);
        assert_eq!(
            parse_wal_object(&Path::from("wal/notanumber-1-2.wal")),
            None
        );
        assert_eq!(parse_wal_object(&Path::from("wal/1-2.wal")), None);
    }
}
