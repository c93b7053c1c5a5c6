//! Bad input on the wire, sent as raw frames: each gets the right Kafka error
//! code or a closed connection, the broker keeps serving everyone else, and
//! its memory stays bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::common::TestBroker;

pub struct Raw {
    pub stream: TcpStream,
    correlation: i32,
}

impl Raw {
    pub fn connect(broker: &TestBroker) -> Self {
        Self::connect_to(&broker.addr)
    }

    /// A raw client over a connection opened elsewhere.
    pub fn from_stream(stream: TcpStream) -> Self {
        Raw {
            stream,
            correlation: 0,
        }
    }

    pub fn connect_to(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        Raw {
            stream,
            correlation: 0,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn frame<M: Encodable>(&mut self, api: ApiKey, version: i16, body: &M) -> Bytes {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("raw-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, api.request_header_version(version))
            .expect("header");
        body.encode(&mut buf, version).expect("body");
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        buf.freeze()
    }

    fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    pub fn call<Req: Encodable, Resp: Decodable + HeaderVersion>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        let frame = self.frame(api, version, body);
        self.send_raw(&frame);
        let mut response = self.read_frame().expect("a response");
        let header_version = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let header =
            ResponseHeader::decode(&mut response, header_version).expect("response header");
        assert_eq!(header.correlation_id, self.correlation);
        Resp::decode(&mut response, version).expect("response body")
    }

    /// Sends a request without waiting for its response (pipelining).
    pub fn send<Req: Encodable>(&mut self, api: ApiKey, version: i16, body: &Req) {
        let frame = self.frame(api, version, body);
        self.send_raw(&frame);
    }

    /// Reads the next response, of a request sent with `send`.
    pub fn receive<Resp: Decodable + HeaderVersion>(&mut self, api: ApiKey, version: i16) -> Resp {
        let mut response = self.read_frame().expect("a response");
        ResponseHeader::decode(&mut response, api.response_header_version(version))
            .expect("response header");
        Resp::decode(&mut response, version).expect("response body")
    }

    /// True once the broker closed the connection (EOF or reset).
    fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// The broker still answers a fresh client.
fn assert_serving(broker: &TestBroker) {
    let mut raw = Raw::connect(broker);
    let response: ApiVersionsResponse =
        raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
}

fn batch(values: &[&[u8]], compression: Compression) -> BytesMut {
    let records: Vec<(Option<Bytes>, i64, Bytes)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                None,
                1_700_000_000_000 + i as i64,
                Bytes::copy_from_slice(v),
            )
        })
        .collect();
    encode_batch(&records, compression)
}

/// One record batch (v2, CreateTime) of `(key, timestamp, value)` records.
pub(crate) fn encode_batch(
    records: &[(Option<Bytes>, i64, Bytes)],
    compression: Compression,
) -> BytesMut {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, timestamp, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence must stay constant for the encoder to keep
            // the records in one batch.
            sequence: i as i32,
            timestamp: *timestamp,
            key: key.clone(),
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf
}

pub(crate) fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ])
}

fn produce_error(raw: &mut Raw, topic: &str, partition: i32, records: Bytes) -> i16 {
    let response: ProduceResponse = raw.call(
        ApiKey::Produce,
        9,
        &produce_request(topic, partition, records, -1),
    );
    response.responses[0].partition_responses[0].error_code
}

pub(crate) fn create_topic(raw: &mut Raw, name: &str, configs: &[(&str, &str)]) -> i16 {
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        );
    let response: CreateTopicsResponse = raw.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(5000),
    );
    response.topics[0].error_code
}

#[test]
fn framing_errors_close_only_that_connection() {
    let broker = TestBroker::start(&[]);
    // Size over the 100 MiB default maximum.
    let mut raw = Raw::connect(&broker);
    raw.send_raw(&(200 * 1024 * 1024i32).to_be_bytes());
    assert!(raw.is_closed(), "oversized frame closes the connection");
    // Negative size.
    let mut raw = Raw::connect(&broker);
    raw.send_raw(&(-5i32).to_be_bytes());
    assert!(raw.is_closed(), "negative size closes the connection");
    // Truncated frame: promises 100 bytes, sends 10, then hangs up its side.
    let mut raw = Raw::connect(&broker);
    raw.send_raw(&100i32.to_be_bytes());
    raw.send_raw(&[0, 18, 0, 3, 0, 0, 0, 1, 0, 0]);
    raw.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert!(raw.is_closed());
    // Frame too short for a header.
    let mut raw = Raw::connect(&broker);
    raw.send_raw(&[0, 0, 0, 2, 0, 18]);
    assert!(raw.is_closed());
    // Unknown API key.
    let mut raw = Raw::connect(&broker);
    raw.send_raw(&[0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(raw.is_closed(), "unknown api key closes the connection");
    // Known API, version we do not implement.
    let mut raw = Raw::connect(&broker);
    let frame = raw.frame(ApiKey::OffsetCommit, 9, &OffsetCommitRequest::default());
    raw.send_raw(&frame);
    assert!(raw.is_closed(), "unsupported version closes the connection");
    // A huge frame that is mostly promises: 50 MB declared, a few bytes sent,
    // then silence; the broker must not allocate for it up front.
    let mut liar = Raw::connect(&broker);
    liar.send_raw(&(50 * 1024 * 1024i32).to_be_bytes());
    liar.send_raw(&[0, 3, 0, 12]);
    assert_serving(&broker);
    assert!(
        broker.rss_kib() < 200 * 1024,
        "rss {} KiB after a 50 MB promise",
        broker.rss_kib()
    );
}

#[test]
fn api_versions_answers_unknown_versions_with_v0() {
    let broker = TestBroker::start(&[]);
    let mut raw = Raw::connect(&broker);
    // An ApiVersions v99 request: header v2 with an empty body.
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(99)
        .with_correlation_id(7)
        .encode(&mut frame, 2)
        .expect("header");
    let size = (frame.len() - 4) as i32;
    frame[0..4].copy_from_slice(&size.to_be_bytes());
    raw.send_raw(&frame);
    let mut response = raw.read_frame().expect("a response");
    let _header = ResponseHeader::decode(&mut response, 0).expect("header v0");
    let body = ApiVersionsResponse::decode(&mut response, 0).expect("v0 body");
    assert_eq!(body.error_code, 35, "UNSUPPORTED_VERSION");
    let apis: Vec<i16> = body.api_keys.iter().map(|k| k.api_key).collect();
    for api in [
        0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 23, 32, 33, 37, 42, 44,
        47, 60, 61, 68, 69,
    ] {
        assert!(apis.contains(&api), "api {api} advertised");
    }
    assert!(
        !apis.contains(&(ApiKey::DescribeLogDirs as i16)),
        "only implemented APIs are advertised"
    );
    // And the supported versions work.
    let ok: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(ok.error_code, 0);
    let produce = ok
        .api_keys
        .iter()
        .find(|k| k.api_key == 0)
        .expect("produce");
    assert_eq!(
        produce.min_version, 3,
        "magic 0/1 produce versions are not offered"
    );
}

/// An API Strata does not implement, sent without checking ApiVersions, is
/// answered with UNSUPPORTED_VERSION and the connection stays usable.
#[test]
fn unimplemented_apis_answer_unsupported_version() {
    let broker = TestBroker::start(&[]);
    let mut raw = Raw::connect(&broker);
    let dirs: DescribeLogDirsResponse = raw.call(
        ApiKey::DescribeLogDirs,
        4,
        &DescribeLogDirsRequest::default(),
    );
    assert_eq!(dirs.error_code, 35, "UNSUPPORTED_VERSION");
    let tokens: DescribeDelegationTokenResponse = raw.call(
        ApiKey::DescribeDelegationToken,
        3,
        &DescribeDelegationTokenRequest::default(),
    );
    assert_eq!(tokens.error_code, 35);
    let ok: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(ok.error_code, 0, "the same connection still works");
}

#[test]
fn counts_larger_than_the_bytes_that_follow() {
    let broker = TestBroker::start(&[]);
    let before = broker.rss_kib();
    for _ in 0..20 {
        // Metadata v12 (flexible): header, then a compact array claiming
        // 2^28 topics with nothing after it.
        let mut raw = Raw::connect(&broker);
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(3)
            .with_request_api_version(12)
            .with_correlation_id(1)
            .encode(&mut frame, 2)
            .expect("header");
        frame.put_slice(&[0x80, 0x80, 0x80, 0x80, 0x01]); // varint 2^28
        let size = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        raw.send_raw(&frame);
        assert!(raw.is_closed(), "malformed body closes the connection");
        // Metadata v4 (non-flexible): array of i32::MAX topics.
        let mut raw = Raw::connect(&broker);
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(3)
            .with_request_api_version(4)
            .with_correlation_id(1)
            .encode(&mut frame, 1)
            .expect("header");
        frame.put_i32(i32::MAX);
        frame.put_slice(&[0, 1, b'x']);
        let size = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        raw.send_raw(&frame);
        assert!(raw.is_closed());
        // Produce v9 with a records length running past the end.
        let mut raw = Raw::connect(&broker);
        let good = produce_request("t", 0, Bytes::from_static(b"0123456789"), -1);
        let mut frame = BytesMut::from(&raw.frame(ApiKey::Produce, 9, &good)[..]);
        let len = frame.len();
        frame.truncate(len - 6); // cut into the records bytes
        let size = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        raw.send_raw(&frame);
        assert!(raw.is_closed());
    }
    assert_serving(&broker);
    let after = broker.rss_kib();
    assert!(
        after < before + 100 * 1024,
        "rss grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn produce_errors_carry_kafka_codes() {
    let broker = TestBroker::start(&[]);
    let mut raw = Raw::connect(&broker);
    assert_eq!(
        create_topic(&mut raw, "p", &[("max.message.bytes", "2000")]),
        0
    );
    let good = batch(&[b"fine"], Compression::None).freeze();
    assert_eq!(produce_error(&mut raw, "p", 0, good.clone()), 0);

    let mut bad_crc = batch(&[b"tampered"], Compression::None);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    assert_eq!(
        produce_error(&mut raw, "p", 0, bad_crc.freeze()),
        2,
        "CORRUPT_MESSAGE"
    );

    let mut old_magic = batch(&[b"old"], Compression::None);
    old_magic[16] = 1;
    assert_eq!(
        produce_error(&mut raw, "p", 0, old_magic.freeze()),
        87,
        "INVALID_RECORD"
    );

    // A well-formed, correctly checksummed batch whose one record claims
    // offset delta 5: it would make offset base+5 hold two records.
    let mut liar = batch(&[b"x"], Compression::None);
    liar.truncate(61);
    liar.extend_from_slice(&[12, 0, 0, 10, 1, 0, 0]); // length 6: attrs, ts 0, delta 5, key null, value 0... headers
    let len = (liar.len() - 12) as i32;
    liar[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&liar[21..]);
    liar[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        produce_error(&mut raw, "p", 0, liar.freeze()),
        87,
        "INVALID_RECORD"
    );

    let truncated = good.slice(..good.len() - 3);
    assert_eq!(
        produce_error(&mut raw, "p", 0, truncated),
        2,
        "CORRUPT_MESSAGE"
    );

    let big = batch(&[&[1u8; 3000][..]], Compression::None).freeze();
    assert_eq!(
        produce_error(&mut raw, "p", 0, big),
        10,
        "MESSAGE_TOO_LARGE"
    );

    assert_eq!(
        produce_error(&mut raw, "no-such-topic", 0, good.clone()),
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        produce_error(&mut raw, "p", -1, good.clone()),
        3,
        "negative partition"
    );
    assert_eq!(
        produce_error(&mut raw, "p", 7, good.clone()),
        3,
        "partition out of range"
    );
    assert_eq!(produce_error(&mut raw, "bad name!", 0, good.clone()), 3);

    let response: ProduceResponse = raw.call(
        ApiKey::Produce,
        9,
        &produce_request("p", 0, good.clone(), 5),
    );
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );

    // Nothing bad was stored: only the one good batch is there.
    let fetch = fetch(&mut raw, "p", 0, 0);
    assert_eq!(fetch.0, 0);
    assert_eq!(fetch.1, 1, "high watermark counts only the accepted record");
    assert_serving(&broker);
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(10)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(max_bytes),
                ]),
        ])
}

/// Sends a one-partition Fetch (v11) without reading its response.
pub(crate) fn send_fetch(raw: &mut Raw, topic: &str, partition: i32, offset: i64, max_bytes: i32) {
    raw.send(
        ApiKey::Fetch,
        11,
        &fetch_request(topic, partition, offset, max_bytes),
    );
}

/// (error code, high watermark, records bytes) of a one-partition fetch.
pub(crate) fn fetch(raw: &mut Raw, topic: &str, partition: i32, offset: i64) -> (i16, i64, usize) {
    let request = fetch_request(topic, partition, offset, 1 << 20);
    let response: FetchResponse = raw.call(ApiKey::Fetch, 11, &request);
    let p = &response.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.as_ref().map(|r| r.len()).unwrap_or(0),
    )
}

#[test]
fn fetch_and_admin_errors_carry_kafka_codes() {
    let broker = TestBroker::start(&[]);
    let mut raw = Raw::connect(&broker);
    assert_eq!(create_topic(&mut raw, "f", &[]), 0);
    assert_eq!(
        create_topic(&mut raw, "bad/name", &[]),
        17,
        "INVALID_TOPIC_EXCEPTION"
    );
    assert_eq!(create_topic(&mut raw, &"x".repeat(300), &[]), 17);
    assert_eq!(
        produce_error(
            &mut raw,
            "f",
            0,
            batch(&[b"a", b"b"], Compression::Zstd).freeze()
        ),
        0
    );
    assert_eq!(
        fetch(&mut raw, "f", 0, -1).0,
        1,
        "negative offset: OFFSET_OUT_OF_RANGE"
    );
    assert_eq!(
        fetch(&mut raw, "f", 0, 3).0,
        1,
        "past the end: OFFSET_OUT_OF_RANGE"
    );
    assert_eq!(fetch(&mut raw, "f", -4, 0).0, 3, "negative partition");
    assert_eq!(fetch(&mut raw, "nope", 0, 0).0, 3, "unknown topic");
    let (code, hw, bytes) = fetch(&mut raw, "f", 0, 1);
    assert_eq!((code, hw), (0, 2));
    assert!(bytes > 0, "the batch holding offset 1 is returned");
    assert_eq!(
        fetch(&mut raw, "f", 0, 2),
        (0, 2, 0),
        "at the end: empty after max_wait"
    );

    // More batches in later flushes: one Fetch reads across chunks, and a
    // partition named twice is answered once.
    for _ in 0..3 {
        assert_eq!(
            produce_error(&mut raw, "f", 0, batch(&[b"c"], Compression::Lz4).freeze()),
            0
        );
    }
    let request = FetchRequest::default()
        .with_max_wait_ms(10)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("f")))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                    FetchPartition::default()
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let response: FetchResponse = raw.call(ApiKey::Fetch, 11, &request);
    let parts = &response.responses[0].partitions;
    let records = parts[0].records.clone().expect("records");
    let mut batches = 0;
    let mut at = 0usize;
    while at + 12 <= records.len() {
        batches += 1;
        at += 12
            + i32::from_be_bytes([
                records[at + 8],
                records[at + 9],
                records[at + 10],
                records[at + 11],
            ]) as usize;
    }
    assert_eq!(
        batches, 4,
        "all four batches, from four flushes, in one response"
    );
    assert_eq!(
        parts[1].records.as_ref().map(|r| r.len()),
        Some(0),
        "the repeat gets nothing"
    );

    let metadata: MetadataResponse = raw.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("in valid")))),
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("f")))),
            ]))
            .with_allow_auto_topic_creation(true),
    );
    assert_eq!(
        metadata.topics[0].error_code, 17,
        "invalid names are never auto-created"
    );
    assert_eq!(metadata.topics[1].error_code, 0);
    assert!(
        !metadata.topics[1].topic_id.is_nil(),
        "topic ids are returned"
    );
}

#[test]
fn list_offsets_max_timestamp_and_timestamps() {
    let broker = TestBroker::start(&[]);
    let mut raw = Raw::connect(&broker);
    assert_eq!(create_topic(&mut raw, "ts", &[]), 0);
    // Three batches; the largest timestamp sits in the middle of the second.
    for values in [&[&b"a"[..], b"b"][..], &[b"c", b"d", b"e"], &[b"f"]] {
        let b = batch(values, Compression::Gzip);
        assert_eq!(produce_error(&mut raw, "ts", 0, b.freeze()), 0);
    }
    let list = |raw: &mut Raw, ts: i64| -> (i16, i64, i64) {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("ts")))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts),
                    ]),
            ]);
        let response: ListOffsetsResponse = raw.call(ApiKey::ListOffsets, 8, &request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    };
    assert_eq!(list(&mut raw, -2).1, 0, "earliest");
    assert_eq!(list(&mut raw, -1).1, 6, "latest is the high watermark");
    // Each batch encodes timestamps 1_700_000_000_000 + index in batch, so
    // the max (…002) is first reached at offset 4 (third record of batch two).
    assert_eq!(
        list(&mut raw, -3),
        (0, 4, 1_700_000_000_002),
        "max timestamp"
    );
    assert_eq!(list(&mut raw, 1_700_000_000_001), (0, 1, 1_700_000_000_001));
    assert_eq!(
        list(&mut raw, 1_700_000_000_003),
        (0, -1, -1),
        "none that late"
    );
}

/// Latencies (ms) of `rounds` produce (acks=1) + fetch round trips.
fn round_trips(raw: &mut Raw, topic: &str, rounds: usize) -> Vec<f64> {
    let value = vec![b'v'; 1024];
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            let records = batch(&[value.as_slice()], Compression::None).freeze();
            let produced: ProduceResponse =
                raw.call(ApiKey::Produce, 9, &produce_request(topic, 0, records, 1));
            let produced = &produced.responses[0].partition_responses[0];
            assert_eq!(produced.error_code, 0);
            let (error, _, bytes) = fetch(raw, topic, 0, produced.base_offset);
            assert_eq!((error, bytes > 1024), (0, true), "the record read back");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn p99(mut latencies: Vec<f64>) -> f64 {
    latencies.sort_by(f64::total_cmp);
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// Slow-trickle frames (Kafka's slowloris): 12 clients announce 100 MiB
/// Produce and Metadata frames, more than the whole request budget, and
/// send a byte every 50 ms. The request budget counts bytes as they arrive,
/// so they hold almost nothing, and a normal client's produce and fetch
/// round trips stay within 2x of their unloaded p99 (they waited for the
/// 30 s frame deadline when the budget was taken at the size prefix).
#[test]
fn slow_trickle_frames_do_not_starve_a_normal_client() {
    let broker = TestBroker::start_configured("[kafka]\nmax_request_memory_bytes = 4194304\n", &[]);
    let mut raw = Raw::connect(&broker);
    assert_eq!(create_topic(&mut raw, "steady", &[]), 0);
    round_trips(&mut raw, "steady", 50);
    let unloaded = p99(round_trips(&mut raw, "steady", 300));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..12)
        .map(|i| {
            let mut liar = Raw::connect(&broker);
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                liar.send_raw(&(100 * 1024 * 1024i32).to_be_bytes());
                // Produce (0) or Metadata (3), version 9.
                liar.send_raw(&[0, if i % 2 == 0 { 0 } else { 3 }, 0, 9]);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if liar.stream.write_all(&[0]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let during = round_trips(&mut raw, "steady", 300);
    let worst = during.iter().copied().fold(0.0, f64::max);
    let loaded = p99(during);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for trickler in tricklers {
        trickler.join().expect("trickler");
    }
    eprintln!(
        "produce+fetch round trip p99: {unloaded:.2} ms unloaded, {loaded:.2} ms beside 12 tricklers (worst {worst:.1} ms)"
    );
    // Starved, a round trip waited for the tricklers' 30 s frame deadline.
    assert!(
        worst < 2_000.0,
        "a round trip took {worst:.0} ms beside tricklers"
    );
    // Within 2x of unloaded (an idle machine: 6.0 and 8.5 ms); the 25 ms
    // allow for the rest of the suite sharing this machine's cores.
    assert!(
        loaded <= 2.0 * unloaded.max(2.0) || loaded <= unloaded + 25.0,
        "p99 {loaded:.2} ms beside tricklers, {unloaded:.2} ms without"
    );
}

/// A decompression bomb (a gzip batch inflating past 128 MiB) is refused
/// with INVALID_RECORD, twelve of them at once leave the broker's RSS
/// under 512 MiB (inflation runs one batch per core at a time; without that
/// bound 6 at once reached 696 MiB), and the broker goes on serving.
#[test]
fn decompression_bombs_are_refused_within_a_memory_bound() {
    let broker = TestBroker::start(&[]);
    let mut raw = Raw::connect(&broker);
    assert_eq!(create_topic(&mut raw, "bombed", &[]), 0);
    // One record of 129 MiB of zeros, gzipped to about 130 KiB.
    let zeros = vec![0u8; 129 * 1024 * 1024];
    let bomb = batch(&[zeros.as_slice()], Compression::Gzip).freeze();
    drop(zeros);
    assert!(bomb.len() < 1024 * 1024, "{} bytes", bomb.len());
    let rss = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pid = broker.pid();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (rss, watching) = (
            std::sync::Arc::clone(&rss),
            std::sync::Arc::clone(&watching),
        );
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    rss.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let senders: Vec<_> = (0..12)
        .map(|_| {
            let mut raw = Raw::connect(&broker);
            let bomb = bomb.clone();
            std::thread::spawn(move || produce_error(&mut raw, "bombed", 0, bomb))
        })
        .collect();
    for sender in senders {
        assert_eq!(sender.join().expect("sender"), 87, "INVALID_RECORD");
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.join().expect("watcher");
    let peak = rss.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("peak RSS with 12 bombs at once: {} MiB", peak / 1024);
    assert!(peak < 512 * 1024, "peak RSS {} MiB", peak / 1024);
    assert_serving(&broker);
}
