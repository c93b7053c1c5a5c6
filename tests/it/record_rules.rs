//! A topic's rules for each produced record, as Kafka applies them: keys on
//! compacted topics, and the timestamp window of CreateTime topics
//! (`message.timestamp.before.max.ms` / `after.max.ms`). A batch with a
//! record that breaks them is refused whole, with the error code Kafka uses
//! and every such record named in `record_errors` (KIP-467); nothing of it
//! is stored. Sent as raw frames, to see the response as the wire has it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ProduceResponse};
use kafka_protocol::records::Compression;

use crate::bad_input::{Raw, create_topic, encode_batch, produce_request};
use crate::common::TestBroker;

const INVALID_TIMESTAMP: i16 = 32;
const INVALID_RECORD: i16 = 87;
const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// One batch of `(key, timestamp)` records, compressed with `compression`.
fn batch(records: &[(Option<&str>, i64)], compression: Compression) -> Bytes {
    let records: Vec<(Option<Bytes>, i64, Bytes)> = records
        .iter()
        .enumerate()
        .map(|(i, (key, timestamp))| {
            (
                key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                *timestamp,
                Bytes::from(format!("value {i}")),
            )
        })
        .collect();
    encode_batch(&records, compression).freeze()
}

/// The partition's answer: error code, record errors (index, message) and
/// base offset.
fn produce(raw: &mut Raw, topic: &str, records: Bytes) -> (i16, Vec<(i32, String)>, i64) {
    let response: ProduceResponse =
        raw.call(ApiKey::Produce, 9, &produce_request(topic, 0, records, -1));
    let partition = &response.responses[0].partition_responses[0];
    let errors = partition
        .record_errors
        .iter()
        .map(|e| {
            (
                e.batch_index,
                e.batch_index_error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    (partition.error_code, errors, partition.base_offset)
}

fn indexes(errors: &[(i32, String)]) -> Vec<i32> {
    errors.iter().map(|(i, _)| *i).collect()
}

#[test]
fn keyless_records_on_a_compacted_topic_are_named_and_their_batch_refused() {
    let broker = TestBroker::start(&[]);
    let mut raw = Raw::connect(&broker);
    assert_eq!(
        create_topic(&mut raw, "compacted", &[("cleanup.policy", "compact")]),
        0
    );
    let now = now_ms();
    for compression in [Compression::None, Compression::Zstd] {
        let mixed = batch(
            &[(Some("a"), now), (None, now), (Some("b"), now), (None, now)],
            compression,
        );
        let (code, errors, _) = produce(&mut raw, "compacted", mixed);
        assert_eq!(code, INVALID_RECORD, "{compression:?}");
        assert_eq!(indexes(&errors), [1, 3], "{compression:?}: {errors:?}");
        assert!(errors[0].1.contains("no key"), "{errors:?}");
    }
    // Nothing of the refused batches was stored: the next one starts at 0.
    let good = batch(&[(Some("a"), now), (Some("b"), now)], Compression::None);
    assert_eq!(produce(&mut raw, "compacted", good), (0, vec![], 0));
}

#[test]
fn timestamps_outside_the_topic_window_are_refused_as_kafka_does() {
    let broker = TestBroker::start(&[]);
    let mut raw = Raw::connect(&broker);
    let now = now_ms();
    // Default window: up to an hour ahead, any time before.
    assert_eq!(create_topic(&mut raw, "defaults", &[]), 0);
    let future = batch(
        &[
            (None, now),
            (None, now + 2 * HOUR_MS),
            (None, now + 48 * HOUR_MS),
        ],
        Compression::None,
    );
    let (code, errors, _) = produce(&mut raw, "defaults", future.clone());
    assert_eq!(code, INVALID_TIMESTAMP);
    assert_eq!(indexes(&errors), [1, 2], "{errors:?}");
    assert!(errors[0].1.contains("out of range"), "{errors:?}");
    let old = batch(&[(None, 1_000_000_000_000)], Compression::Lz4);
    assert_eq!(produce(&mut raw, "defaults", old), (0, vec![], 0));

    // A topic that allows two days ahead takes the same batch; one that
    // allows a minute back refuses yesterday.
    assert_eq!(
        create_topic(
            &mut raw,
            "wide",
            &[(
                "message.timestamp.after.max.ms",
                &(49 * HOUR_MS).to_string()
            )]
        ),
        0
    );
    assert_eq!(produce(&mut raw, "wide", future.clone()), (0, vec![], 0));
    assert_eq!(
        create_topic(
            &mut raw,
            "recent",
            &[("message.timestamp.before.max.ms", "60000")]
        ),
        0
    );
    let yesterday = batch(
        &[(None, now), (None, now - 24 * HOUR_MS)],
        Compression::None,
    );
    let (code, errors, _) = produce(&mut raw, "recent", yesterday);
    assert_eq!(code, INVALID_TIMESTAMP);
    assert_eq!(indexes(&errors), [1]);

    // LogAppendTime topics stamp batches with the broker's time: the
    // producer's timestamps are not checked.
    assert_eq!(
        create_topic(
            &mut raw,
            "appended",
            &[("message.timestamp.type", "LogAppendTime")]
        ),
        0
    );
    assert_eq!(produce(&mut raw, "appended", future), (0, vec![], 0));
}
