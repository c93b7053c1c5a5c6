//! `strata export parquet`: a topic's sealed segments written as Parquet
//! while the broker runs, read back with pyarrow and duckdb and compared
//! record by record with what was produced (nullable keys and values,
//! headers, every compression codec); re-runs export only new offsets, also
//! after the sealer merged exported chunks with new ones; S3 as source and
//! destination (MinIO); an unknown topic and a bad destination are clear
//! errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::common::{STRATA, TestBroker, eventually, require_python_module};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 3;
const BASE_TS: i64 = 1_700_000_000_000;
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Headers = Vec<(String, Option<Vec<u8>>)>;

/// `len` bytes that no codec shrinks (a linear congruential sequence).
fn incompressible(seed: usize, len: usize) -> Vec<u8> {
    let mut state = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

/// Record `i` of the test, as the reader script prints it, but for its
/// partition and offset (known once delivered).
fn record_fields(i: usize) -> (Option<Vec<u8>>, Option<Vec<u8>>, Headers) {
    let key = (!i.is_multiple_of(7)).then(|| format!("key-{i}").into_bytes());
    // Tombstones, and one empty (not null) value.
    let value = match i % 11 {
        0 => None,
        5 => Some(Vec::new()),
        _ if i.is_multiple_of(PARTITIONS as usize) => Some(incompressible(i, 200)),
        _ => Some(format!("value-{i}-{}", "v".repeat(i % 20)).into_bytes()),
    };
    let headers = match i % 3 {
        0 => Vec::new(),
        1 => vec![("trace".to_string(), Some(vec![0, 1, 2, (i % 256) as u8]))],
        _ => vec![
            ("source".to_string(), Some(format!("s{i}").into_bytes())),
            ("null-header".to_string(), None),
        ],
    };
    (key, value, headers)
}

/// Produces records `from..from + count` over every codec and partition;
/// returns them as rows `[partition, offset, timestamp, type, key, value,
/// headers]`.
async fn produce(producers: &[FutureProducer], from: usize, count: usize) -> Vec<Value> {
    let mut pending = Vec::new();
    for i in from..from + count {
        let (key, value, headers) = record_fields(i);
        let mut owned = OwnedHeaders::new();
        for (name, value) in &headers {
            owned = owned.insert(Header {
                key: name,
                value: value.as_deref(),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(TOPIC)
            .partition((i % PARTITIONS as usize) as i32)
            .timestamp(BASE_TS + i as i64)
            .headers(owned);
        if let Some(key) = &key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &value {
            record = record.payload(value.as_slice());
        }
        let delivery = producers[i % producers.len()]
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("enqueue");
        pending.push((i, key, value, headers, delivery));
    }
    let mut rows = Vec::new();
    for (i, key, value, headers, delivery) in pending {
        let delivered = delivery.await.expect("delivery").expect("delivered");
        rows.push(json!([
            delivered.partition,
            delivered.offset,
            BASE_TS + i as i64,
            "CreateTime",
            key.as_deref().map(hex),
            value.as_deref().map(hex),
            headers
                .iter()
                .map(|(k, v)| json!([k, v.as_deref().map(hex)]))
                .collect::<Vec<_>>(),
        ]));
    }
    rows
}

/// Chunk rows of `topic` not sealed yet (write-ahead), and all of them.
fn chunk_counts(broker: &TestBroker, topic: &str) -> (i64, i64) {
    let rows = broker.metadata_rows(&format!(
        "SELECT COALESCE(SUM(CASE WHEN c.index_len = 0 THEN 1 ELSE 0 END), 0), COUNT(*)
         FROM chunks c JOIN topics t ON t.topic_id = c.topic_id WHERE t.name = '{topic}'"
    ));
    (
        rows[0][0].parse().expect("unsealed"),
        rows[0][1].parse().expect("count"),
    )
}

async fn wait_sealed(broker: &TestBroker) {
    eventually(
        Duration::from_secs(60),
        || {
            let (unsealed, all) = chunk_counts(broker, TOPIC);
            unsealed == 0 && all > 0
        },
        || {
            format!(
                "not sealed: {:?}\n{}",
                chunk_counts(broker, TOPIC),
                broker.log(1)
            )
        },
    )
    .await;
}

fn export(broker: &TestBroker, topic: &str, to: &str) -> Output {
    Command::new(STRATA)
        .args(["export", "parquet", topic, "--to", to, "--data-dir"])
        .arg(&broker.data_dir)
        .args(broker.metadata_args())
        .env("RUST_LOG", "warn")
        .env_remove("STRATA_CONFIG")
        .output()
        .expect("run strata export")
}

/// Runs the export, expects success and returns its JSON summary.
fn export_ok(broker: &TestBroker, to: &Path) -> Value {
    let out = export(broker, TOPIC, &to.display().to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "export failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {stdout}");
    serde_json::from_str(lines[0]).expect("summary is JSON")
}

/// The export read back by pyarrow and by duckdb (tests/clients/read_parquet.py).
fn read_back(dir: &Path) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/read_parquet.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.join(TOPIC))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "reading the Parquet files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| (r[0].as_i64(), r[1].as_i64()));
    rows
}

fn assert_read_back(dir: &Path, expected: &[Value]) {
    let read = read_back(dir);
    for reader in ["pyarrow", "duckdb"] {
        let rows = read[reader]["rows"].as_array().expect("rows").clone();
        assert_eq!(rows.len(), expected.len(), "{reader}: record count");
        for (got, want) in rows.iter().zip(expected) {
            assert_eq!(got, want, "{reader}: record differs");
        }
    }
    let schema = &read["pyarrow"]["schema"];
    assert_eq!(schema["partition"], "int32", "{schema}");
    assert_eq!(schema["offset"], "int64", "{schema}");
    assert_eq!(schema["timestamp"], "timestamp[ms, tz=UTC]", "{schema}");
    assert_eq!(schema["key"], "binary", "{schema}");
    assert_eq!(schema["value"], "binary", "{schema}");
    let headers = schema["headers"].as_str().expect("headers type");
    assert!(
        headers.starts_with("list<") && headers.contains("key: string not null"),
        "{headers}"
    );
    let duck = &read["duckdb"]["schema"];
    assert_eq!(duck["timestamp"], "TIMESTAMP WITH TIME ZONE", "{duck}");
    assert_eq!(duck["value"], "BLOB", "{duck}");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = crate::common::files_under(dir)
        .iter()
        .map(|p| {
            p.strip_prefix(dir)
                .expect("under dir")
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

/// Partitions of `TOPIC` with a chunk that holds offset `boundary` and
/// offsets after it (a merge across an earlier export's last offset).
fn partitions_with_chunk_across(broker: &TestBroker, boundary: i64) -> Vec<i32> {
    broker
        .metadata_rows(&format!(
            "SELECT DISTINCT c.partition FROM chunks c JOIN topics t ON t.topic_id = c.topic_id
             WHERE t.name = '{TOPIC}' AND c.base_offset <= {boundary}
               AND c.last_offset > {boundary} AND c.index_len > 0
             ORDER BY c.partition"
        ))
        .into_iter()
        .map(|r| r[0].parse().expect("partition"))
        .collect()
}

/// One wave: 10 records per partition, then waits until they are sealed.
async fn wave(broker: &TestBroker, producers: &[FutureProducer], n: usize) -> Vec<Value> {
    let rows = produce(producers, n * WAVE, WAVE).await;
    wait_sealed(broker).await;
    rows
}

const WAVE: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_export_as_parquet_that_pyarrow_and_duckdb_read_back() {
    require_python_module("pyarrow");
    require_python_module("duckdb");
    // Partition 0's waves (about 2.5 KB) get their own segments, the other
    // partitions' share objects; every wave is in the smallest merge class,
    // so four chunks of a partition are merged into one.
    let broker = TestBroker::start(&[
        "--seal-interval-ms",
        "200",
        "--seal-own-segment-bytes",
        "2000",
    ]);
    broker.create_topic(TOPIC, PARTITIONS).await;
    let producers: Vec<FutureProducer> = CODECS
        .iter()
        .map(|codec| broker.producer(&[("compression.type", codec), ("linger.ms", "20")]))
        .collect();
    // One wave: at most two chunks per partition, nothing merged yet.
    let mut expected = wave(&broker, &producers, 0).await;

    let out_dir = tempfile::tempdir().expect("tempdir");
    let first = export_ok(&broker, out_dir.path());
    assert_eq!(first["topic"], TOPIC);
    assert_eq!(first["records"], WAVE, "{first}");
    assert_eq!(first["files_skipped"], 0, "{first}");
    assert_eq!(first["unsealed_chunks"], 0, "{first}");
    let written = first["files_written"].as_u64().expect("files_written");
    assert!(written >= PARTITIONS as u64, "{first}");
    let files = files_in(out_dir.path());
    assert_eq!(files.len() as u64, written, "{files:?}");
    for name in &files {
        let ok = (0..PARTITIONS).any(|p| name.starts_with(&format!("{TOPIC}/partition={p}/")))
            && name.ends_with(".parquet")
            && name
                .rsplit('/')
                .next()
                .is_some_and(|f| f.len() == 20 + 1 + 20 + 8);
        assert!(ok, "file layout: {name}");
    }
    let total_bytes: u64 = crate::common::files_under(out_dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum();
    assert_eq!(first["bytes"], total_bytes, "{first}");
    expected = sorted(expected);
    assert_read_back(out_dir.path(), &expected);

    // Nothing new: nothing written, every sealed chunk skipped.
    let again = export_ok(&broker, out_dir.path());
    assert_eq!(again["files_written"], 0, "{again}");
    assert_eq!(again["records"], 0, "{again}");
    assert!(
        again["files_skipped"].as_u64() >= Some(PARTITIONS as u64),
        "{again}"
    );
    assert_eq!(files_in(out_dir.path()), files);

    // Three more waves: four or more chunks per partition, and the sealer
    // merges the oldest four, across the offsets exported above (0..=9 of
    // each partition). Only the new offsets are exported, none twice, and
    // the old files stay.
    for n in 1..4 {
        expected.extend(wave(&broker, &producers, n).await);
    }
    let last_exported = (WAVE as i64 / PARTITIONS as i64) - 1;
    eventually(
        Duration::from_secs(30),
        || partitions_with_chunk_across(&broker, last_exported).len() == PARTITIONS as usize,
        || {
            format!(
                "no merge across offset {last_exported}: {:?}\n{}",
                partitions_with_chunk_across(&broker, last_exported),
                broker.log(1)
            )
        },
    )
    .await;
    let third = export_ok(&broker, out_dir.path());
    assert_eq!(third["records"], 3 * WAVE, "{third}");
    assert_eq!(third["unsealed_chunks"], 0, "{third}");
    assert!(
        third["files_written"].as_u64() >= Some(PARTITIONS as u64),
        "{third}"
    );
    let now = files_in(out_dir.path());
    assert!(files.iter().all(|f| now.contains(f)), "old files kept");
    assert_read_back(out_dir.path(), &sorted(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_bad_destinations_are_clear_errors() {
    let broker = TestBroker::start(&[]);
    broker.create_topic("present", 1).await;
    let out_dir = tempfile::tempdir().expect("tempdir");
    let to = out_dir.path().display().to_string();

    let out = export(&broker, "absent", &to);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown topic fails");
    assert!(stderr.contains("unknown topic 'absent'"), "{stderr}");

    let out = export(&broker, "present", "ftp://host/dir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad URL fails");
    assert!(
        stderr.contains("expected a path, file:///path or s3://bucket/prefix"),
        "{stderr}"
    );

    // A data dir with no broker's metadata in it.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(STRATA)
        .args(["export", "parquet", "present", "--to", &to, "--data-dir"])
        .arg(empty.path())
        .env_remove("STRATA_CONFIG")
        .output()
        .expect("run strata export");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no metadata store at"), "{stderr}");

    // An empty topic exports nothing, successfully.
    let summary = {
        let out = export(&broker, "present", &to);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("summary")
    };
    assert_eq!(summary["files_written"], 0, "{summary}");
    assert!(files_in(out_dir.path()).is_empty());
}

/// Copies the objects under `bucket/prefix` to `out` (boto3 from the test venv).
fn download(endpoint: &str, bucket: &str, prefix: &str, out: &Path) -> Vec<String> {
    const SCRIPT: &str = r#"
import os, sys
import boto3
endpoint, key, secret, bucket, prefix, out = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name="us-east-1")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    for obj in page.get("Contents", []):
        path = os.path.join(out, obj["Key"][len(prefix) + 1:])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, obj["Key"], path)
        print(obj["Key"])
"#;
    let out_dir = out.display().to_string();
    let result = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            endpoint,
            crate::s3::ACCESS_KEY,
            crate::s3::SECRET_KEY,
            bucket,
            prefix,
            &out_dir,
        ])
        .output()
        .expect("run python3");
    assert!(
        result.status.success(),
        "download: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8_lossy(&result.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reads_and_writes_s3() {
    require_python_module("pyarrow");
    require_python_module("duckdb");
    let s3 = crate::s3::start_s3(&["data", "lake"]);
    let mut args = s3.broker_args("s3://data/strata");
    args.extend(["--seal-interval-ms".to_string(), "200".to_string()]);
    let broker = TestBroker::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    broker.create_topic(TOPIC, PARTITIONS).await;
    let producers: Vec<FutureProducer> = CODECS
        .iter()
        .map(|codec| broker.producer(&[("compression.type", codec)]))
        .collect();
    let expected = sorted(wave(&broker, &producers, 0).await);

    // The same stores as the broker, S3 settings from the environment this
    // time; the destination is another bucket of the same server.
    let run = || {
        let out = Command::new(STRATA)
            .args(["export", "parquet", TOPIC, "--to", "s3://lake/exports"])
            .arg("--data-dir")
            .arg(&broker.data_dir)
            .args(broker.metadata_args())
            .args(["--object-store", "s3://data/strata"])
            .env_remove("STRATA_CONFIG")
            .env("RUST_LOG", "warn")
            .env("STRATA_S3_ENDPOINT", &s3.endpoint)
            .env("STRATA_S3_REGION", "us-east-1")
            .env("STRATA_S3_ACCESS_KEY_ID", crate::s3::ACCESS_KEY)
            .env("STRATA_S3_SECRET_ACCESS_KEY", crate::s3::SECRET_KEY)
            .env("STRATA_S3_ALLOW_HTTP", "true")
            .env("STRATA_S3_PATH_STYLE", "true")
            .output()
            .expect("run strata export");
        assert!(
            out.status.success(),
            "export to S3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("summary")
    };
    let first = run();
    assert_eq!(first["records"], WAVE, "{first}");
    assert_eq!(first["destination"], "s3://lake/exports", "{first}");
    let local = tempfile::tempdir().expect("tempdir");
    let keys = download(&s3.endpoint, "lake", "exports", local.path());
    assert_eq!(
        keys.len() as u64,
        first["files_written"].as_u64().expect("n"),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| k.starts_with("exports/events/partition=")),
        "{keys:?}"
    );
    assert_read_back(local.path(), &expected);

    let again = run();
    assert_eq!(again["files_written"], 0, "{again}");
    assert_eq!(again["records"], 0, "{again}");
}
