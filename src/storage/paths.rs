//! Every object key Strata writes is built here, and only here.
//!
//! Layout (relative to the store's root or the S3 prefix):
//! - `wal/<millis:013>-<random:016x>.wal`: one flushed write buffer holding
//!   chunks of many partitions. The time prefix keeps listings in write order
//!   and lets the orphan sweep judge age without a HEAD request.
//!
//! Per-partition sealed segments will live under `topics/<topic-id>/<partition>/`;
//! keys are built from topic ids, never from topic names.

use object_store::path::Path;
use rand::Rng;

pub const WAL_PREFIX: &str = "wal";

/// A fresh, unique key for a WAL object written now.
pub fn new_wal_object(now_ms: u64) -> Path {
    let random: u64 = rand::rng().random();
    Path::from(format!("{WAL_PREFIX}/{now_ms:013}-{random:016x}.wal"))
}

/// The write time encoded in a WAL object key, if the key is one of ours.
pub fn wal_object_written_ms(key: &Path) -> Option<u64> {
    let name = key.as_ref().strip_prefix(WAL_PREFIX)?.strip_prefix('/')?;
    let (millis, rest) = name.split_once('-')?;
    if !rest.ends_with(".wal") {
        return None;
    }
    millis.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_keys_round_trip_their_time() {
        let key = new_wal_object(1_700_000_000_123);
        assert!(key.as_ref().starts_with("wal/1700000000123-"));
        assert_eq!(wal_object_written_ms(&key), Some(1_700_000_000_123));
        assert_eq!(wal_object_written_ms(&Path::from("topics/x/0/1.seg")), None);
        assert_eq!(
            wal_object_written_ms(&Path::from("wal/notanumber-1.wal")),
            None
        );
    }
}
