//! ACLs as Kafka users manage and meet them: Kafka's own `kafka-acls.sh`
//! (the Java admin client, authenticated as a super user with SCRAM) adds,
//! lists and removes bindings, and librdkafka clients authenticated as
//! other users get exactly what the bindings allow: TOPIC_AUTHORIZATION_FAILED
//! for a topic they may not read, Metadata without the topics they may
//! not describe, GROUP_AUTHORIZATION_FAILED without the group's READ,
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED without the transactional id's
//! WRITE, and DENY winning over ALLOW.

use std::process::Command;

use crate::common::TestBroker;

fn client(config: &serde_json::Value, args: &[&str]) -> String {
    crate::common::require_python_module("confluent_kafka");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/acl_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(config.to_string())
        .args(args)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "acl_client {args:?}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn user(addr: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "bootstrap.servers": addr,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": name,
        "sasl.password": format!("{name}-secret"),
    })
}

/// kafka-acls.sh as the super user `admin`.
fn kafka_acls(addr: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let (ok, text) = crate::sasl::kafka_tool("org.apache.kafka.tools.AclCommand", addr, dir, args);
    assert!(ok, "kafka-acls {args:?}: {text}");
    text
}

#[test]
fn acls_from_kafkas_tool_decide_what_each_user_may_do() {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().display().to_string();
    for name in ["alice", "bob"] {
        let out = Command::new(crate::common::STRATA)
            .args(["user", "add", name, "--data-dir", &data_dir])
            .env("STRATA_USER_PASSWORD", format!("{name}-secret"))
            .output()
            .expect("strata user add");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let broker = TestBroker::start_in_dir(
        data,
        &[
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            "--acl-enabled",
            "true",
            "--super-users",
            "User:admin",
            "--sasl-bootstrap-user",
            "admin",
            "--sasl-bootstrap-password",
            "admin-secret",
        ],
    );
    let sasl = broker.listener_addr("SASL_PLAINTEXT");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut admin = user(&sasl, "admin");
    admin["sasl.mechanism"] = "SCRAM-SHA-512".into();
    let (alice, bob) = (user(&sasl, "alice"), user(&sasl, "bob"));

    // The super user creates the topics; alice may not.
    assert_eq!(client(&admin, &["create", "orders"]), "ok");
    assert_eq!(client(&admin, &["create", "secret"]), "ok");
    assert_eq!(client(&admin, &["produce", "secret", "3"]), "ok 3");
    assert_eq!(
        client(&alice, &["create", "mine"]),
        "error TOPIC_AUTHORIZATION_FAILED"
    );

    // Nothing granted yet: alice may neither write nor see anything.
    assert_eq!(
        client(&alice, &["produce", "orders", "1"]),
        "error TOPIC_AUTHORIZATION_FAILED"
    );
    assert_eq!(client(&alice, &["topics"]), "ok", "no topic visible");

    kafka_acls(
        &sasl,
        dir.path(),
        &[
            "--add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Read",
            "--operation",
            "Write",
            "--topic",
            "orders",
        ],
    );
    kafka_acls(
        &sasl,
        dir.path(),
        &[
            "--add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Read",
            "--group",
            "app",
        ],
    );
    assert_eq!(client(&alice, &["produce", "orders", "5"]), "ok 5");
    assert_eq!(client(&alice, &["consume", "orders", "app", "5"]), "ok 5");
    // Metadata shows alice only what she may describe.
    assert_eq!(client(&alice, &["topics"]), "ok orders");
    assert_eq!(client(&admin, &["topics"]), "ok orders,secret");
    // A topic without an ACL for her, and a group without READ.
    assert_eq!(
        client(&alice, &["consume", "secret", "app", "1"]),
        "error TOPIC_AUTHORIZATION_FAILED"
    );
    kafka_acls(
        &sasl,
        dir.path(),
        &[
            "--add",
            "--allow-principal",
            "User:bob",
            "--operation",
            "Read",
            "--topic",
            "orders",
        ],
    );
    assert_eq!(
        client(&bob, &["consume", "orders", "app", "1"]),
        "error GROUP_AUTHORIZATION_FAILED"
    );

    // Transactions need WRITE on the transactional id.
    assert_eq!(
        client(&alice, &["txn", "orders-txn", "orders"]),
        "error TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
    );
    kafka_acls(
        &sasl,
        dir.path(),
        &[
            "--add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Write",
            "--transactional-id",
            "orders-",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    assert_eq!(client(&alice, &["txn", "orders-txn", "orders"]), "ok");

    // The bindings as kafka-acls lists them.
    let listed = kafka_acls(&sasl, dir.path(), &["--list", "--topic", "orders"]);
    assert!(
        listed.contains("principal=User:alice")
            && listed.contains("operation=READ")
            && listed.contains("principal=User:bob"),
        "{listed}"
    );

    // DENY wins over ALLOW; removing it gives the access back.
    let deny = [
        "--deny-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "orders",
    ];
    let mut add = vec!["--add"];
    add.extend(deny);
    kafka_acls(&sasl, dir.path(), &add);
    assert_eq!(
        client(&alice, &["consume", "orders", "app", "1"]),
        "error TOPIC_AUTHORIZATION_FAILED"
    );
    let mut remove = vec!["--remove", "--force"];
    remove.extend(deny);
    kafka_acls(&sasl, dir.path(), &remove);
    assert_eq!(client(&alice, &["produce", "orders", "1"]), "ok 1");
    assert_eq!(client(&alice, &["consume", "orders", "app", "1"]), "ok 1");

    // The PLAINTEXT listener's User:ANONYMOUS has no ACL: refused too.
    let anonymous = serde_json::json!({ "bootstrap.servers": broker.addr });
    assert_eq!(
        client(&anonymous, &["produce", "orders", "1"]),
        "error TOPIC_AUTHORIZATION_FAILED"
    );
}
