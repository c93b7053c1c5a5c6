//! The consumer protocol's embedded payloads (what JoinGroup metadata and
//! SyncGroup assignments carry for `protocol_type = "consumer"`). Decoded
//! from untrusted bytes: every read is bounds-checked and every count is
//! checked against the bytes left before anything is looped over.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed consumer protocol payload: {0}")]
pub struct PayloadError(String);

fn malformed<T>(why: impl Into<String>) -> Result<T, PayloadError> {
    Err(PayloadError(why.into()))
}

/// A cursor over untrusted bytes; every read fails rather than panics.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], PayloadError> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return malformed("truncated");
        };
        self.0 = rest;
        Ok(*head)
    }

    fn i16(&mut self) -> Result<i16, PayloadError> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, PayloadError> {
        self.take().map(i32::from_be_bytes)
    }

    /// An array length (null is empty); `min_size` is the smallest encoding
    /// of one element.
    fn count(&mut self, min_size: usize) -> Result<usize, PayloadError> {
        let count = usize::try_from(self.i32()?).unwrap_or(0);
        if count.saturating_mul(min_size) > self.0.len() {
            return malformed(format!(
                "claims {count} entries but only {} bytes follow",
                self.0.len()
            ));
        }
        Ok(count)
    }

    fn string(&mut self) -> Result<String, PayloadError> {
        let Ok(len) = usize::try_from(self.i16()?) else {
            return malformed("null topic name");
        };
        let Some((raw, rest)) = self.0.split_at_checked(len) else {
            return malformed("truncated");
        };
        self.0 = rest;
        match std::str::from_utf8(raw) {
            Ok(name) if !name.contains('\0') => Ok(name.to_owned()),
            _ => malformed("topic name is not valid UTF-8 text"),
        }
    }

    fn version(&mut self) -> Result<i16, PayloadError> {
        match self.i16()? {
            v if v < 0 => malformed(format!("unknown version {v}")),
            v => Ok(v),
        }
    }
}

/// Topic names of a ConsumerProtocolSubscription (the topic list comes right
/// after the version in every version).
pub fn subscription_topics(bytes: &[u8]) -> Result<Vec<String>, PayloadError> {
    let mut input = Reader(bytes);
    input.version()?;
    (0..input.count(2)?).map(|_| input.string()).collect()
}

/// `(topic, partition)` pairs of a ConsumerProtocolAssignment; trailing user
/// data is ignored.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, i32)>, PayloadError> {
    let mut input = Reader(bytes);
    input.version()?;
    let mut assignment = Vec::new();
    for _ in 0..input.count(2 + 4)? {
        let topic = input.string()?;
        for _ in 0..input.count(4)? {
            assignment.push((topic.clone(), input.i32()?));
        }
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(version: i16, topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            out.extend((topic.len() as i16).to_be_bytes());
            out.extend(topic.as_bytes());
            out.extend((partitions.len() as i32).to_be_bytes());
            for partition in *partitions {
                out.extend(partition.to_be_bytes());
            }
        }
        out.extend((user_data.len() as i32).to_be_bytes());
        out.extend(user_data);
        out
    }

    #[test]
    fn assignments_decode_to_topic_partitions() {
        let bytes = encode(1, &[("orders", &[0, 2]), ("audit", &[1])], b"opaque");
        let decoded = decode_assignment(&bytes).expect("well-formed assignment");
        let expected: Vec<(String, i32)> = [("orders", 0), ("orders", 2), ("audit", 1)]
            .iter()
            .map(|(t, p)| ((*t).to_owned(), *p))
            .collect();
        assert_eq!(decoded, expected);
        assert!(
            decode_assignment(&encode(0, &[], b""))
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn subscriptions_decode_to_topics() {
        // A subscription starts like an assignment without partitions.
        let mut bytes = 1i16.to_be_bytes().to_vec();
        bytes.extend(2i32.to_be_bytes());
        for t in ["orders", "payments"] {
            bytes.extend((t.len() as i16).to_be_bytes());
            bytes.extend(t.as_bytes());
        }
        bytes.extend((-1i32).to_be_bytes());
        assert_eq!(
            subscription_topics(&bytes).expect("valid"),
            vec!["orders", "payments"]
        );
        assert!(subscription_topics(&[1]).is_err());
    }

    #[test]
    fn truncated_or_malformed_payloads_are_errors() {
        let bytes = encode(0, &[("orders", &[0, 2]), ("audit", &[1])], b"");
        // The last 4 bytes are the ignored user-data length.
        for len in 0..bytes.len() - 4 {
            assert!(
                decode_assignment(&bytes[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        let mut null_topic = encode(0, &[("x", &[0])], b"");
        null_topic[6..8].copy_from_slice(&(-1i16).to_be_bytes());
        assert!(decode_assignment(&null_topic).is_err());
        assert!(decode_assignment(&encode(0, &[("a\0b", &[0])], b"")).is_err());
        assert!(decode_assignment(&encode(-1, &[], b"")).is_err());
    }

    #[test]
    fn absurd_counts_fail_without_allocating() {
        let mut topics = 0i16.to_be_bytes().to_vec();
        topics.extend(i32::MAX.to_be_bytes());
        assert!(decode_assignment(&topics).is_err());
        assert!(subscription_topics(&topics).is_err());
        let mut partitions = encode(0, &[("t", &[])], b"");
        partitions[9..13].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_assignment(&partitions).is_err());
    }
}
