//! TLS listeners, as a Kafka user configures them: an SSL listener beside
//! a PLAINTEXT one, a client that verifies the broker's certificate, mutual
//! TLS with a client certificate, certificates refused (an unknown CA, none
//! at all when one is required, plaintext sent to the TLS port), and a
//! renewed certificate served without a restart. The client is librdkafka
//! (confluent-kafka's wheel, built with OpenSSL), a real Kafka client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::common::TestBroker;

/// A certificate authority that signs server and client certificates.
pub(crate) struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) pem: String,
}

impl Authority {
    pub(crate) fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Authority {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate (PEM, and its key's PEM) for `names` with subject
    /// `subject` (attribute, value), in certificate order.
    pub(crate) fn sign(&self, names: &[&str], subject: &[(DnType, &str)]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name = DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path
}

/// Runs confluent-kafka in the test venv: produces `count` records to
/// `topic` then reads them back, over `config` (librdkafka settings as
/// JSON); prints `ok N` or the error.
pub(crate) fn python_client(config: &serde_json::Value, topic: &str, count: usize) -> String {
    crate::common::require_python_module("confluent_kafka");
    let script = r#"
import json, sys
from confluent_kafka import Producer, Consumer, KafkaException
config = json.loads(sys.argv[1]); topic = sys.argv[2]; count = int(sys.argv[3])
errors = []
def report(err, msg):
    if err is not None:
        errors.append(str(err))
try:
    client_errors = []
    p = Producer({"message.timeout.ms": 15000, **config,
                  "error_cb": lambda e: client_errors.append(str(e))})
    for i in range(count):
        p.produce(topic, value=f"v{i}".encode(), on_delivery=report)
    left = p.flush(20)
    if errors or left:
        print("produce failed:", errors[:3], left, "client errors:", client_errors[:3]); sys.exit(0)
    c = Consumer({**config, "group.id": "tls-test", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    seen = []
    import time
    deadline = time.time() + 30
    while len(seen) < count and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            print("consume failed:", m.error()); sys.exit(0)
        seen.append(m.value().decode())
    c.close()
    print("ok", len(seen))
except KafkaException as e:
    print("failed:", e)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(config.to_string())
        .arg(topic)
        .arg(count.to_string())
        .output()
        .expect("python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        if out.status.success() {
            String::new()
        } else {
            format!(
                " (exit {}: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        }
    )
}

/// Librdkafka settings for SSL at `addr`, trusting `ca`, with an optional
/// client certificate and key.
fn ssl_config(addr: &str, ca: &Path, client: Option<(&Path, &Path)>) -> serde_json::Value {
    let mut config = serde_json::json!({
        "bootstrap.servers": addr,
        "security.protocol": "SSL",
        "ssl.ca.location": ca.display().to_string(),
        "socket.timeout.ms": 10000,
    });
    if let Some((cert, key)) = client {
        config["ssl.certificate.location"] = cert.display().to_string().into();
        config["ssl.key.location"] = key.display().to_string().into();
    }
    config
}

fn tls_broker(dir: &Path, client_auth: &str, extra: &[&str]) -> TestBroker {
    let mut args = vec![
        "--listeners".to_string(),
        "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".to_string(),
        "--tls-cert-file".to_string(),
        dir.join("server.pem").display().to_string(),
        "--tls-key-file".to_string(),
        dir.join("server.key").display().to_string(),
        "--tls-ca-file".to_string(),
        dir.join("ca.pem").display().to_string(),
        "--tls-client-auth".to_string(),
        client_auth.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestBroker::start(&args)
}

/// An SSL listener with `tls.client_auth = required` serves a client with
/// a certificate of the trusted CA, refuses one of another CA, one without
/// a certificate, and plaintext (each refusal counted), and keeps serving;
/// the PLAINTEXT listener beside it is unaffected.
#[test]
fn mutual_tls_serves_trusted_clients_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new("strata test CA");
    let rogue = Authority::new("rogue CA");
    let ca_pem = write(dir.path(), "ca.pem", &ca.pem);
    let (cert, key) = ca.sign(
        &["localhost", "127.0.0.1"],
        &[(DnType::CommonName, "broker")],
    );
    write(dir.path(), "server.pem", &cert);
    write(dir.path(), "server.key", &key);
    let (cert, key) = ca.sign(
        &["app"],
        &[
            (DnType::OrganizationName, "Acme"),
            (DnType::OrganizationalUnitName, "eng"),
            (DnType::CommonName, "app"),
        ],
    );
    let client_cert = write(dir.path(), "client.pem", &cert);
    let client_key = write(dir.path(), "client.key", &key);
    let (cert, key) = rogue.sign(&["intruder"], &[(DnType::CommonName, "intruder")]);
    let rogue_cert = write(dir.path(), "rogue.pem", &cert);
    let rogue_key = write(dir.path(), "rogue.key", &key);
    let http = format!("127.0.0.1:{}", crate::common::free_port());
    let broker = tls_broker(
        dir.path(),
        "required",
        &[
            "--http-addr",
            &http,
            "--tls-principal-mapping-rules",
            "RULE:^CN=([^,]+),OU=eng,.*$/$1/U, DEFAULT",
        ],
    );
    let ssl = broker.listener_addr("SSL");

    let trusted = ssl_config(&ssl, &ca_pem, Some((&client_cert, &client_key)));
    assert_eq!(python_client(&trusted, "over-tls", 50), "ok 50");
    // Its principal: the certificate's subject as Kafka writes it (RFC
    // 2253, last RDN first: CN=app,OU=eng,O=Acme), mapped by the rule.
    let log = broker.log(1);
    assert!(
        log.lines()
            .any(|l| l.contains("TLS connection authenticated") && l.contains("principal=User:APP")),
        "the client's principal is its mapped certificate subject: {:?}",
        log.lines().filter(|l| l.contains("principal")).collect::<Vec<_>>()
    );

    let failures = || crate::cluster::metric(&http, "strata_authentication_failures_total") as u64;
    let before = failures();
    let quick = |mut config: serde_json::Value| {
        config["message.timeout.ms"] = 4000.into();
        config
    };
    let untrusted = quick(ssl_config(&ssl, &ca_pem, Some((&rogue_cert, &rogue_key))));
    let answer = python_client(&untrusted, "over-tls", 1);
    assert!(
        !answer.starts_with("ok"),
        "a certificate of another CA: {answer}"
    );
    let anonymous = quick(ssl_config(&ssl, &ca_pem, None));
    let answer = python_client(&anonymous, "over-tls", 1);
    assert!(!answer.starts_with("ok"), "no client certificate: {answer}");
    // Plaintext Kafka sent to the TLS port is not served.
    let mut raw = std::net::TcpStream::connect(&ssl).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    use std::io::{Read, Write};
    raw.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0])
        .expect("write");
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    assert!(
        !reply.windows(4).any(|w| w == [0, 0, 0, 1]),
        "no Kafka answer to plaintext on the TLS port: {reply:?}"
    );
    assert!(failures() >= before + 3, "each refusal counted");

    // Still serving, on both listeners.
    assert_eq!(python_client(&trusted, "over-tls-2", 5), "ok 5");
    let plain = serde_json::json!({ "bootstrap.servers": broker.addr });
    assert_eq!(python_client(&plain, "plain", 5), "ok 5");
}

/// A client that verifies the broker's certificate against a CA rejects a
/// broker whose certificate another CA signed; once the broker's files
/// are replaced by a certificate of the client's CA, it is served without
/// a restart (`tls.reload_interval_ms`).
#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Authority::new("old CA");
    let new = Authority::new("new CA");
    write(dir.path(), "ca.pem", &old.pem);
    let (cert, key) = old.sign(
        &["localhost", "127.0.0.1"],
        &[(DnType::CommonName, "broker")],
    );
    write(dir.path(), "server.pem", &cert);
    write(dir.path(), "server.key", &key);
    let broker = tls_broker(dir.path(), "none", &["--tls-reload-interval-ms", "200"]);
    let ssl = broker.listener_addr("SSL");
    let new_ca = write(dir.path(), "new-ca.pem", &new.pem);
    let mut client = ssl_config(&ssl, &new_ca, None);
    client["message.timeout.ms"] = 4000.into();
    let answer = python_client(&client, "renewed", 1);
    assert!(
        !answer.starts_with("ok"),
        "the old certificate is not trusted: {answer}"
    );

    let (cert, key) = new.sign(
        &["localhost", "127.0.0.1"],
        &[(DnType::CommonName, "broker")],
    );
    // The key first, then the chain: in between, the pair does not match
    // and the previous one is kept.
    write(dir.path(), "server.key", &key);
    write(dir.path(), "server.pem", &cert);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = python_client(&client, "renewed", 3);
        if answer == "ok 3" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served: {answer}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(broker.log(1).contains("reloaded"), "the reload is logged");
}

/// A broker whose SSL listener lacks its files, or is given a key that
/// does not match, does not start, and says what to fix.
#[test]
fn an_ssl_listener_without_usable_files_is_refused_at_start() {
    let out = Command::new(crate::common::STRATA)
        .args([
            "serve",
            "--data-dir",
            &tempfile::tempdir()
                .expect("tempdir")
                .path()
                .display()
                .to_string(),
            "--listeners",
            "SSL://127.0.0.1:0",
        ])
        .output()
        .expect("strata");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tls.cert_file"), "{stderr}");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new("CA");
    let (cert, _) = ca.sign(&["localhost"], &[(DnType::CommonName, "a")]);
    let (_, other_key) = ca.sign(&["localhost"], &[(DnType::CommonName, "b")]);
    let cert = write(dir.path(), "server.pem", &cert);
    let key = write(dir.path(), "server.key", &other_key);
    let out = Command::new(crate::common::STRATA)
        .args([
            "serve",
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listeners",
            "SSL://127.0.0.1:0",
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &key.display().to_string(),
        ])
        .output()
        .expect("strata");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
}

/// Two brokers whose inter-broker listener is SSL, requiring client
/// certificates: a transaction over partitions led by both commits, so
/// the coordinator's markers and the leaders' checks went between the
/// brokers over TLS, each broker presenting its own certificate; clients
/// use the PLAINTEXT listener beside it.
#[test]
fn brokers_reach_each_other_over_tls() {
    use crate::transactions::{T, read_all, runtime, send, txn_producer, values};
    use rdkafka::producer::Producer;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new("cluster CA");
    write(dir.path(), "ca.pem", &ca.pem);
    let (cert, key) = ca.sign(
        &["localhost", "127.0.0.1"],
        &[(DnType::CommonName, "broker")],
    );
    write(dir.path(), "server.pem", &cert);
    write(dir.path(), "server.key", &key);
    let cluster = crate::cluster::Cluster::new();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (cert, key, ca_file) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let tls_args = [
        "--listeners",
        "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "--inter-broker-listener-name",
        "SSL",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-file",
        &ca_file,
        "--tls-client-auth",
        "required",
    ];
    let brokers = [
        cluster.start_with(1, &tls_args),
        cluster.start_with(2, &tls_args),
    ];
    let rt = runtime();
    rt.block_on(crate::cluster::sees_brokers(&brokers[0].addr, 2));
    rt.block_on(brokers[0].create_topic("spread-tls", 4));
    rt.block_on(crate::cluster::balanced_over(
        &brokers[1].addr,
        "spread-tls",
        &[1, 2],
        4,
    ));
    let producer = txn_producer(&brokers[0], "tls-txn", &[]);
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 4];
    for round in 0..3 {
        producer.begin_transaction().expect("begin");
        for p in 0..4 {
            let batch = values(&format!("r{round}-p{p}"), 3);
            send(&producer, "spread-tls", p, &batch);
            if round != 1 {
                expected[p as usize].extend(batch);
            }
        }
        if round == 1 {
            producer.abort_transaction(T).expect("abort");
        } else {
            producer
                .commit_transaction(T)
                .expect("commit across brokers");
        }
    }
    for p in 0..4 {
        assert_eq!(
            read_all(&brokers[1], "spread-tls", p, "read_committed"),
            expected[p as usize],
            "partition {p}: the committed records only"
        );
    }
    // The brokers' requests to each other came over TLS, as the broker.
    let from_peers = brokers
        .iter()
        .filter(|b| {
            b.log(1).lines().any(|l| {
                l.contains("TLS connection authenticated") && l.contains("principal=User:CN=broker")
            })
        })
        .count();
    assert!(
        from_peers >= 1,
        "no broker was reached over TLS by the other"
    );
}

/// The test PostgreSQL server's CA (scripts/postgres.sh makes one).
fn postgres_ca() -> std::path::PathBuf {
    let dir = std::env::var("STRATA_PG_DIR").map_or_else(
        |_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pg"),
        std::path::PathBuf::from,
    );
    dir.join("tls/ca.pem")
}

/// Whether the connections named `application` are encrypted, from the
/// server's own view (pg_stat_ssl).
fn postgres_ssl(application: &str) -> Vec<String> {
    let base = std::env::var("STRATA_TEST_POSTGRES").expect("STRATA_TEST_POSTGRES");
    crate::common::psql(
        &base,
        &format!(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = '{application}'"
        ),
    )
    .into_iter()
    .map(|row| row.join(""))
    .collect()
}

/// A broker whose metadata store URL says sslmode=verify-full checks the
/// server against sslrootcert and talks to it over TLS (the server says
/// so); with a CA that did not sign the server it refuses to start, saying
/// why; sslmode=disable stays in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_store_is_reached_over_verified_tls() {
    let ca = postgres_ca();
    assert!(
        ca.is_file(),
        "{} is missing: scripts/postgres.sh start makes it",
        ca.display()
    );
    let url = crate::common::fresh_postgres_url();
    let verified = format!(
        "{url}&sslmode=verify-full&sslrootcert={}&application_name=strata-verified",
        ca.display()
    );
    let broker = TestBroker::start(&["--metadata", &verified]);
    broker.create_topic("over-tls", 1).await;
    let producer = broker.producer(&[]);
    producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to("over-tls").payload("sealed"),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    let read = broker.consume_all("over-tls", 0, rdkafka::Offset::Beginning);
    assert_eq!(read[0].value.as_deref(), Some(&b"sealed"[..]));
    let ssl = postgres_ssl("strata-verified");
    assert!(!ssl.is_empty() && ssl.iter().all(|s| s == "t"), "{ssl:?}");

    // A CA that did not sign the server's certificate: refused at start.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = write(
        dir.path(),
        "other-ca.pem",
        &Authority::new("another CA").pem,
    );
    let wrong = format!("{url}&sslmode=verify-full&sslrootcert={}", other.display());
    let out = Command::new(crate::common::STRATA)
        .args(["serve", "--kafka-addr", "127.0.0.1:0", "--metadata", &wrong])
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .output()
        .expect("strata");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metadata store") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );

    // sslmode=disable: plaintext, as asked.
    let plain = format!("{url}&sslmode=disable&application_name=strata-plain");
    let broker = TestBroker::start(&["--metadata", &plain]);
    broker.create_topic("in-clear", 1).await;
    let ssl = postgres_ssl("strata-plain");
    assert!(!ssl.is_empty() && ssl.iter().all(|s| s == "f"), "{ssl:?}");
}
