//! The S3 path against a real S3 server over HTTP: MinIO, built from the
//! Go module proxy by the test command (scripts/go-deps.sh), with the
//! options given as flags and as the standard AWS environment variables;
//! kill -9 and a cold cache included.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::producer::FutureRecord;

use crate::common::{TestBroker, free_port, http_request};

/// The test servers' credentials (docker-compose.yml's MinIO has the same).
pub(crate) const ACCESS_KEY: &str = "strata";
pub(crate) const SECRET_KEY: &str = "strata-secret";

pub(crate) struct S3Server {
    child: Child,
    pub(crate) endpoint: String,
    _data: tempfile::TempDir,
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
            ACCESS_KEY,
            "--s3-secret-access-key",
            SECRET_KEY,
            "--s3-allow-http",
            "true",
            "--s3-path-style",
            "true",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Runs `body` (Python) with a boto3 client `s3` on this server and
    /// `args` as `args`; its standard output (`what` names it on failure).
    fn boto3(&self, body: &str, args: &[&str], what: &str) -> String {
        let script = format!(
            "import sys\nimport boto3\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],\n\
             aws_secret_access_key=sys.argv[3], region_name='us-east-1')\n\
             args = sys.argv[4:]\n{body}"
        );
        let out = Command::new("python3")
            .args(["-c", &script, &self.endpoint, ACCESS_KEY, SECRET_KEY])
            .args(args)
            .output()
            .expect("python3 with boto3 (the test venv has it)");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key in `bucket` under `prefix`, listed over the S3 API (boto3
    /// from the test venv signs the requests).
    pub(crate) fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        const BODY: &str = "\
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=args[0], Prefix=args[1]):
    for obj in page.get('Contents', []):
        print(obj['Key'])
";
        self.boto3(
            BODY,
            &[bucket, prefix],
            &format!("list s3://{bucket}/{prefix}"),
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Writes `body` at `key` in `bucket` over the S3 API.
    pub(crate) fn put(&self, bucket: &str, key: &str, body: &str) {
        const BODY: &str = "s3.put_object(Bucket=args[0], Key=args[1], Body=args[2].encode())\n";
        self.boto3(
            BODY,
            &[bucket, key, body],
            &format!("put s3://{bucket}/{key}"),
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MinIO server binary the test command builds.
fn minio_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/go/bin/minio");
    assert!(
        path.exists(),
        "{} is missing: the test command (scripts/test.sh, through scripts/go-deps.sh) builds MinIO",
        path.display()
    );
    path
}

/// A MinIO server on a free port with `buckets` (directories of its fresh
/// drive, which MinIO takes as buckets), answering once it is ready.
pub(crate) fn start_s3(buckets: &[&str]) -> S3Server {
    start_s3_with(buckets, None)
}

/// As `start_s3`, serving HTTPS with the certificate and key in `certs`
/// (MinIO's `public.crt` and `private.key`) when given.
pub(crate) fn start_s3_with(buckets: &[&str], certs: Option<&std::path::Path>) -> S3Server {
    let data = tempfile::tempdir().expect("minio drive");
    for bucket in buckets {
        std::fs::create_dir(data.path().join(bucket)).expect("bucket directory");
    }
    let port = free_port();
    let mut command = Command::new(minio_binary());
    command.arg("server").arg(data.path()).args([
        "--address",
        &format!("127.0.0.1:{port}"),
        "--quiet",
    ]);
    if let Some(certs) = certs {
        command.arg("--certs-dir").arg(certs);
    }
    let child = command
        .env("MINIO_ROOT_USER", ACCESS_KEY)
        .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
        .env("MINIO_BROWSER", "off")
        .env("MINIO_UPDATE", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start minio");
    let scheme = if certs.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://127.0.0.1:{port}");
    let server = S3Server {
        child,
        endpoint,
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = TcpStream::connect(("127.0.0.1", port)).is_ok()
            && match certs {
                None => {
                    http_request(&format!("127.0.0.1:{port}"), "GET", "/minio/health/ready").0
                        == 200
                }
                Some(certs) => Command::new("python3")
                    .args([
                        "-c",
                        "import ssl, sys, urllib.request\n\
                         ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
                         urllib.request.urlopen(sys.argv[1], context=ctx)",
                        &format!("{}/minio/health/ready", server.endpoint),
                        &certs.join("ca.pem").display().to_string(),
                    ])
                    .output()
                    .is_ok_and(|out| out.status.success()),
            };
        if ready {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "minio did not become ready on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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

    let listing = s3.list("strata-flags", "cluster-a/wal/");
    assert!(
        !listing.is_empty(),
        "WAL objects are in the bucket under the prefix"
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
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    );
    broker.create_topic("env", 2).await;
    produce(&broker, "env", 300).await;
    broker.restart();
    assert_all(&broker, "env", 300);
    assert!(!s3.list("strata-env", "wal/").is_empty());
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

/// MinIO over HTTPS with a certificate of a private CA: the broker trusts
/// it through --s3-ca-file and every acknowledged record is read back;
/// without the CA its flushes fail on the certificate and nothing is
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_over_https_with_a_private_ca() {
    let certs = tempfile::tempdir().expect("certs");
    let ca = crate::tls::Authority::new("private S3 CA");
    let (cert, key) = ca.sign(
        &["127.0.0.1", "localhost"],
        &[(rcgen::DnType::CommonName, "minio")],
    );
    crate::tls::write(certs.path(), "public.crt", &cert);
    crate::tls::write(certs.path(), "private.key", &key);
    let ca_file = crate::tls::write(certs.path(), "ca.pem", &ca.pem);
    let s3 = start_s3_with(&["secure"], Some(certs.path()));
    let mut args = s3.broker_args("s3://secure/tls");
    args.extend(["--s3-ca-file".to_string(), ca_file.display().to_string()]);
    let broker = TestBroker::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    broker.create_topic("remote", 2).await;
    produce(&broker, "remote", 200).await;
    assert_all(&broker, "remote", 200);
    drop(broker);

    // Without the CA: the certificate is refused, nothing is acknowledged.
    let args = s3.broker_args("s3://secure/untrusted");
    let broker = TestBroker::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let producer = broker.producer(&[("message.timeout.ms", "4000")]);
    let refused = producer
        .send(
            FutureRecord::<(), _>::to("untrusted").payload("x"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        refused.is_err(),
        "acknowledged without a trusted certificate"
    );
    let log = broker.log(1);
    assert!(log.to_lowercase().contains("certificate"), "{log}");
}
