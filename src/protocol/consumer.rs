//! The consumer protocol's embedded payloads (what JoinGroup metadata and
//! SyncGroup assignments carry for `protocol_type = "consumer"`), decoded
//! with bounds checks: malformed bytes give an empty result, never a panic.

use bytes::{Buf, Bytes};

fn read_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return None;
    }
    let raw = buf.split_to(len as usize);
    String::from_utf8(raw.to_vec()).ok()
}

/// Topic names of a ConsumerProtocolSubscription (any version: the topic
/// list comes right after the version in all of them).
pub fn subscription_topics(metadata: &Bytes) -> Vec<String> {
    let mut buf = metadata.clone();
    if buf.remaining() < 6 {
        return Vec::new();
    }
    let _version = buf.get_i16();
    let count = buf.get_i32();
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        match read_string(&mut buf) {
            Some(topic) => topics.push(topic),
            None => return Vec::new(),
        }
    }
    topics
}

/// `(topic, partitions)` of a ConsumerProtocolAssignment.
pub fn assignment_partitions(assignment: &Bytes) -> Vec<(String, Vec<i32>)> {
    let mut buf = assignment.clone();
    if buf.remaining() < 6 {
        return Vec::new();
    }
    let _version = buf.get_i16();
    let count = buf.get_i32();
    let mut out = Vec::new();
    for _ in 0..count.max(0) {
        let Some(topic) = read_string(&mut buf) else {
            return Vec::new();
        };
        if buf.remaining() < 4 {
            return Vec::new();
        }
        let n = buf.get_i32();
        if n < 0 || buf.remaining() < n as usize * 4 {
            return Vec::new();
        }
        out.push((topic, (0..n).map(|_| buf.get_i32()).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn decodes_subscriptions_and_assignments_and_survives_garbage() {
        let mut sub = bytes::BytesMut::new();
        sub.put_i16(1);
        sub.put_i32(2);
        for t in ["orders", "payments"] {
            sub.put_i16(t.len() as i16);
            sub.put_slice(t.as_bytes());
        }
        sub.put_i32(-1); // user data
        assert_eq!(
            subscription_topics(&sub.freeze()),
            vec!["orders", "payments"]
        );

        let mut asg = bytes::BytesMut::new();
        asg.put_i16(0);
        asg.put_i32(1);
        asg.put_i16(6);
        asg.put_slice(b"orders");
        asg.put_i32(2);
        asg.put_i32(0);
        asg.put_i32(3);
        assert_eq!(
            assignment_partitions(&asg.freeze()),
            vec![("orders".to_string(), vec![0, 3])]
        );

        let absurd = Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 1]);
        assert!(subscription_topics(&absurd).is_empty());
        assert!(assignment_partitions(&absurd).is_empty());
        assert!(subscription_topics(&Bytes::from_static(&[1])).is_empty());
    }
}
