//! SASL listeners as Kafka users run them: SCRAM-SHA-256/512 and PLAIN
//! from librdkafka (confluent-kafka) over SASL_PLAINTEXT and SASL_SSL, the
//! first user from configuration, users managed with Kafka's own
//! `kafka-configs.sh` (the Java admin client, itself authenticated with
//! SCRAM) and with `strata user`, and what is refused: a wrong password, an
//! unknown mechanism, and requests before authentication.

use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::{
    ApiKey, MetadataRequest, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rcgen::DnType;

use crate::common::TestBroker;
use crate::tls::{Authority, python_client, write};

fn sasl_config(
    addr: &str,
    protocol: &str,
    mechanism: &str,
    user: &str,
    password: &str,
) -> serde_json::Value {
    serde_json::json!({
        "bootstrap.servers": addr,
        "security.protocol": protocol,
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    })
}

/// A Kafka command-line tool (its main class) against `addr`,
/// authenticated as `admin` with SCRAM-SHA-512 over SASL_PLAINTEXT:
/// whether it succeeded, and what it printed.
pub(crate) fn kafka_tool(
    class: &str,
    addr: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> (bool, String) {
    let classpath = crate::transactions::java_classpath("ToolsCompat");
    let config = write(
        dir,
        "admin.properties",
        "security.protocol=SASL_PLAINTEXT\n\
         sasl.mechanism=SCRAM-SHA-512\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"admin-secret\";\n",
    );
    let out = Command::new("java")
        .args(["-cp", &classpath, class])
        .args(["--bootstrap-server", addr])
        .args(["--command-config", &config.display().to_string()])
        .args(args)
        .output()
        .expect("java");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// kafka-configs.sh as `admin`.
fn kafka_configs(addr: &str, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    kafka_tool("org.apache.kafka.tools.ConfigCommand", addr, dir, args)
}

#[test]
fn scram_and_plain_users_from_kafkas_tools_and_strata_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new("sasl CA");
    let ca_pem = write(dir.path(), "ca.pem", &ca.pem);
    let (cert, key) = ca.sign(
        &["localhost", "127.0.0.1"],
        &[(DnType::CommonName, "broker")],
    );
    let cert = write(dir.path(), "server.pem", &cert);
    let key = write(dir.path(), "server.key", &key);
    let http = format!("127.0.0.1:{}", crate::common::free_port());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let broker = TestBroker::start_with_env(
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--sasl-enabled-mechanisms",
            "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            "--sasl-bootstrap-user",
            "admin",
            "--http-addr",
            &http,
        ],
        &[("STRATA_SASL_BOOTSTRAP_PASSWORD", "admin-secret")],
    );
    let sasl = broker.listener_addr("SASL_PLAINTEXT");
    let sasl_ssl = broker.listener_addr("SASL_SSL");

    // The bootstrap user, with SCRAM-SHA-512.
    let admin = sasl_config(
        &sasl,
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "admin",
        "admin-secret",
    );
    assert_eq!(python_client(&admin, "scram", 20), "ok 20");

    // kafka-configs.sh (authenticated itself) creates alice with SCRAM-SHA-256.
    let (ok, out) = kafka_configs(
        &sasl,
        dir.path(),
        &[
            "--alter",
            "--add-config",
            "SCRAM-SHA-256=[iterations=4096,password=alice-secret]",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
        ],
    );
    assert!(ok, "kafka-configs --alter: {out}");
    let (ok, out) = kafka_configs(
        &sasl,
        dir.path(),
        &[
            "--describe",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
        ],
    );
    assert!(
        ok && out.contains("SCRAM-SHA-256=iterations=4096"),
        "kafka-configs --describe: {out}"
    );

    // alice over SASL_SSL with SCRAM-SHA-256, and with PLAIN (checked
    // against the same credential).
    let mut alice = sasl_config(
        &sasl_ssl,
        "SASL_SSL",
        "SCRAM-SHA-256",
        "alice",
        "alice-secret",
    );
    alice["ssl.ca.location"] = ca_pem.display().to_string().into();
    assert_eq!(python_client(&alice, "scram-ssl", 10), "ok 10");
    let plain = sasl_config(&sasl, "SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret");
    assert_eq!(python_client(&plain, "plain", 10), "ok 10");

    // Refused: a wrong password (SCRAM and PLAIN), a mechanism alice has
    // no credential of; each counted.
    let failures = || crate::cluster::metric(&http, "strata_authentication_failures_total") as u64;
    let before = failures();
    for (mechanism, password) in [
        ("SCRAM-SHA-256", "wrong"),
        ("PLAIN", "wrong"),
        ("SCRAM-SHA-512", "alice-secret"),
    ] {
        let mut config = sasl_config(&sasl, "SASL_PLAINTEXT", mechanism, "alice", password);
        config["message.timeout.ms"] = 4000.into();
        let answer = python_client(&config, "refused", 1);
        assert!(
            !answer.starts_with("ok") && answer.to_lowercase().contains("authentication"),
            "{mechanism} with {password}: {answer}"
        );
    }
    assert!(failures() >= before + 3, "refusals counted");

    // An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled list.
    let mut raw = crate::bad_input::Raw::connect_to(&sasl);
    let answer: SaslHandshakeResponse = raw.call(
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI")),
    );
    assert_eq!(answer.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    let offered: Vec<String> = answer.mechanisms.iter().map(|m| m.to_string()).collect();
    assert_eq!(offered, ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]);
    // A Kafka request before authentication closes the connection.
    let mut raw = crate::bad_input::Raw::connect_to(&sasl);
    raw.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    use std::io::Read;
    assert!(
        matches!(raw.stream.read(&mut byte), Ok(0) | Err(_)),
        "closed without an answer"
    );

    // strata user: lists both users; deleting alice through kafka-configs
    // locks her out.
    let out = Command::new(crate::common::STRATA)
        .args([
            "user",
            "list",
            "--data-dir",
            &broker.data_dir.display().to_string(),
        ])
        .args(broker.metadata_args())
        .output()
        .expect("strata user list");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("admin\tSCRAM-SHA-512"), "{listed}");
    assert!(
        listed.contains("alice\tSCRAM-SHA-256\titerations=4096"),
        "{listed}"
    );
    let (ok, out) = kafka_configs(
        &sasl,
        dir.path(),
        &[
            "--alter",
            "--delete-config",
            "SCRAM-SHA-256",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
        ],
    );
    assert!(ok, "kafka-configs --delete-config: {out}");
    let mut plain = plain;
    plain["message.timeout.ms"] = 4000.into();
    let answer = python_client(&plain, "plain", 1);
    assert!(!answer.starts_with("ok"), "alice is gone: {answer}");
}

/// `strata user add` creates a user in the store that a client then
/// authenticates as, with the broker started afterwards; bad input to it
/// is refused with what to fix.
#[test]
fn strata_user_add_creates_a_user_clients_log_in_as() {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().display().to_string();
    let out = Command::new(crate::common::STRATA)
        .args(["user", "add", "carol", "--data-dir", &data_dir])
        .env("STRATA_USER_PASSWORD", "carol-secret")
        .output()
        .expect("strata user add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bad = Command::new(crate::common::STRATA);
    bad.args([
        "user",
        "add",
        "dave",
        "--password",
        "x",
        "--iterations",
        "10",
        "--data-dir",
        &data_dir,
    ]);
    let out = bad.output().expect("strata user add");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--iterations"));
    let broker = TestBroker::start_in_dir(
        data,
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        ],
    );
    let sasl = broker.listener_addr("SASL_PLAINTEXT");
    let carol = sasl_config(
        &sasl,
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "carol",
        "carol-secret",
    );
    assert_eq!(python_client(&carol, "carol", 5), "ok 5");
}
