//! The S3 path against a real S3 server over HTTP: moto's standalone server
//! (installed by the test command), with the options given as flags and as
//! the standard AWS environment variables; kill -9 and a cold cache included.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::producer::FutureRecord;

use crate::common::{TestBroker, free_port, http_request};

pub(crate) struct S3Server {
    child: Child,
    pub(crate) endpoint: String,
}

impl S3Server {
    /// `strata serve` flags for an object store at `url` on this server.
    pub(crate) fn broker_args(&self, url: &str) -> Vec<String> {
        [
            "--object-store",
            url,
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            "us-east-1",
            "--s3-access-key-id",
            "test",
            "--s3-secret-access-key",
            "test",
            "--s3-allow-http",
            "true",
            "--s3-path-style",
            "true",
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(endpoint: &str, method: &str, path: &str) -> (u16, String) {
    http_request(endpoint.trim_start_matches("http://"), method, path)
}

pub(crate) fn start_s3(buckets: &[&str]) -> S3Server {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server is installed by the test command (scripts/test.sh: pip install moto[server])");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = S3Server { child, endpoint };
    for bucket in buckets {
        let (status, body) = http(&server.endpoint, "PUT", &format!("/{bucket}"));
        assert_eq!(status, 200, "create bucket {bucket}: {body}");
    }
    server
}

async fn produce(broker: &TestBroker, topic: &str, count: usize) {
    let producer = broker.producer(&[("acks", "all"), ("compression.type", "gzip")]);
    let mut pending = Vec::new();
    for i in 0..count {
        let value = format!("s3 record {i}");
        let record: FutureRecord<'_, (), String> = FutureRecord::to(topic)
            .partition((i % 2) as i32)
            .payload(&value);
        pending.push(producer.send_result(record).expect("enqueue"));
    }
    for p in pending {
        p.await.expect("future").expect("delivered");
    }
}

fn assert_all(broker: &TestBroker, topic: &str, count: usize) {
    let mut values = Vec::new();
    for partition in 0..2 {
        let records = broker.consume_all(topic, partition, Offset::Beginning);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
        }
        values.extend(
            records
                .into_iter()
                .map(|r| String::from_utf8(r.value.expect("value")).expect("utf-8")),
        );
    }
    let mut expected: Vec<String> = (0..count).map(|i| format!("s3 record {i}")).collect();
    values.sort();
    expected.sort();
    assert_eq!(values, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_flags_survives_kill_9_and_cold_cache() {
    let s3 = start_s3(&["strata-flags"]);
    let args = s3.broker_args("s3://strata-flags/cluster-a");
    let mut broker = TestBroker::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    broker.create_topic("remote", 2).await;
    produce(&broker, "remote", 600).await;
    assert_all(&broker, "remote", 600);

    let (status, listing) = http(
        &s3.endpoint,
        "GET",
        "/strata-flags?list-type=2&prefix=cluster-a/wal/",
    );
    assert_eq!(status, 200);
    assert!(
        listing.contains("<Key>cluster-a/wal/"),
        "WAL objects are in the bucket under the prefix: {listing}"
    );
    assert!(
        !broker.objects_dir().exists(),
        "nothing is written to a local object directory"
    );

    // Crash, empty the local cache: every byte must come back from S3.
    broker.kill9();
    std::fs::remove_dir_all(broker.data_dir.join("cache")).expect("drop cache");
    broker.restart();
    assert_all(&broker, "remote", 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_standard_aws_environment() {
    let s3 = start_s3(&["strata-env"]);
    let mut broker = TestBroker::start_with_env(
        &["--object-store", "s3://strata-env"],
        &[
            ("AWS_ENDPOINT_URL", &s3.endpoint),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    );
    broker.create_topic("env", 2).await;
    produce(&broker, "env", 300).await;
    broker.restart();
    assert_all(&broker, "env", 300);
    let (_, listing) = http(&s3.endpoint, "GET", "/strata-env?list-type=2&prefix=wal/");
    assert!(listing.contains("<Key>wal/"), "{listing}");
}

#[test]
fn unreachable_s3_is_a_clear_startup_error_or_retry_not_a_panic() {
    // A bucket URL without a bucket is refused up front with a message.
    let out = Command::new(crate::common::STRATA)
        .args([
            "serve",
            "--kafka-addr",
            "127.0.0.1:0",
            "--object-store",
            "s3://",
        ])
        .arg("--data-dir")
        .arg(tempfile::tempdir().expect("tmp").path())
        .output()
        .expect("run strata");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no bucket"), "{stderr}");
}
