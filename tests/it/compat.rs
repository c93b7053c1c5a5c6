//! The compatibility report card: the same scenarios driven by independent
//! client implementations (librdkafka through confluent-kafka,
//! kafka-python, kafkajs, the Java client, Kafka's own command-line tools,
//! franz-go, sarama), each checking its data end to end. Also franz-go's
//! own kgo integration suite (`franz_go_kgo_suite`). Writes the matrix to `target/compat/`
//! (scripts/compat-report.sh copies it into docs/compatibility.md) and fails
//! on any failure that is not a known, explained client limitation.
//!
//! With `STRATA_COMPAT_KAFKA=HOST:PORT` (set by scripts/compat-report.sh,
//! which starts a real Apache Kafka), every client also runs every scenario
//! against that broker, and each cell shows both results: a scenario that
//! passes on Kafka and fails on Strata is a Strata bug.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{TestBroker, require_python_module};

/// Failures that are the client's, not the broker's, with the reason shown
/// in the report. Anything else failing fails this test.
/// None at present (kafkajs's zstd scenario passes with a WebAssembly codec).
const KNOWN: &[(&str, &str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Waits for a client's run and parses the report it printed last.
fn collect(child: std::process::Child, what: &str) -> Value {
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{what} printed no report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn require_installed() {
    require_python_module("confluent_kafka");
    require_python_module("kafka");
    assert!(
        root()
            .join("target/test-node/node_modules/kafkajs")
            .is_dir(),
        "kafkajs is missing: run ./scripts/test.sh"
    );
    assert!(
        root()
            .join("target/java/classes/JavaCompat.class")
            .is_file(),
        "the Java test programs are missing: run ./scripts/test.sh (scripts/java-deps.sh)"
    );
    for program in ["franzgo_compat", "sarama_compat", "kgo.test"] {
        assert!(
            root().join("target/go/bin").join(program).is_file(),
            "the Go test programs are missing: run ./scripts/test.sh (scripts/go-deps.sh)"
        );
    }
}

/// Runs every client's scenarios against `bootstrap`, all at once, each
/// with its own topics and groups. Returns their reports.
fn run_clients(bootstrap: &str) -> Vec<Value> {
    let scripts = root().join("tests/compat");
    let java_cp = format!(
        "{}/target/java/lib/*:{}/target/java/classes",
        root().display(),
        root().display()
    );
    let mut commands: Vec<(Command, &str)> = Vec::new();
    for (prefix, script) in [
        ("rdk", "librdkafka_compat.py"),
        ("kpy", "kafka_python_compat.py"),
    ] {
        let mut c = Command::new("python3");
        c.arg(scripts.join(script)).args([bootstrap, prefix]);
        commands.push((c, script));
    }
    let mut c = Command::new("node");
    c.arg(scripts.join("kafkajs_compat.js"))
        .args([bootstrap, "kjs"])
        .env("NODE_PATH", root().join("target/test-node/node_modules"));
    commands.push((c, "kafkajs_compat.js"));
    for (prefix, class) in [("java", "JavaCompat"), ("tools", "ToolsCompat")] {
        let mut c = Command::new("java");
        c.args(["-Xmx512m", "-cp", &java_cp, class, bootstrap, prefix]);
        commands.push((c, class));
    }
    for (prefix, program) in [("fgo", "franzgo_compat"), ("srm", "sarama_compat")] {
        let mut c = Command::new(root().join("target/go/bin").join(program));
        c.args([bootstrap, prefix]);
        commands.push((c, program));
    }
    let runs: Vec<_> = commands
        .into_iter()
        .map(|(mut c, what)| {
            let child = c
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
            (child, what)
        })
        .collect();
    runs.into_iter()
        .map(|(child, what)| collect(child, what))
        .collect()
}

/// `scenario -> client -> result`, and `(client, version)` in run order.
type Matrix = BTreeMap<String, BTreeMap<String, String>>;

fn matrix(reports: &[Value]) -> (Matrix, Vec<(String, String)>) {
    let mut matrix: Matrix = BTreeMap::new();
    let mut clients = Vec::new();
    for report in reports {
        let client = report["client"].as_str().unwrap_or("?").to_string();
        clients.push((
            client.clone(),
            report["version"].as_str().unwrap_or("?").to_string(),
        ));
        for (scenario, result) in report["results"].as_object().into_iter().flatten() {
            matrix
                .entry(scenario.clone())
                .or_default()
                .insert(client.clone(), result.as_str().unwrap_or("?").to_string());
        }
    }
    (matrix, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_report_card() {
    require_installed();
    let broker = TestBroker::start_configured("[groups]\ninitial_rebalance_delay_ms = 300\n", &[]);
    let reports = run_clients(&broker.addr);
    let kafka = std::env::var("STRATA_COMPAT_KAFKA").ok();
    let kafka_reports = kafka.as_deref().map(run_clients).unwrap_or_default();
    let (matrix, clients) = matrix(&reports);
    let (kafka_matrix, _) = self::matrix(&kafka_reports);

    let mut markdown = String::new();
    if kafka.is_some() {
        markdown.push_str("Each cell: Strata / Apache Kafka 4.4.0 (the reference, same run).\n\n");
    }
    markdown.push_str("| scenario |");
    for (client, _) in &clients {
        markdown.push_str(&format!(" {client} |"));
    }
    markdown.push_str("\n|---|");
    markdown.push_str(&"---|".repeat(clients.len()));
    markdown.push('\n');
    let mut unexpected = Vec::new();
    let mut notes = Vec::new();
    let mut scenarios = 0;
    for (scenario, row) in &matrix {
        markdown.push_str(&format!("| {scenario} |"));
        for (client, _) in &clients {
            let Some(result) = row.get(client) else {
                markdown.push_str(" |");
                continue;
            };
            scenarios += 1;
            let known = KNOWN
                .iter()
                .find(|(c, s, _)| client.starts_with(c) && s == scenario);
            let mut cell = match (result.as_str(), known) {
                ("pass", _) => "pass".to_string(),
                (_, Some((_, _, why))) => {
                    notes.push(format!("- {client}, {scenario}: {why} (`{result}`)"));
                    "fail (client)".to_string()
                }
                (failure, None) => {
                    unexpected.push(format!("{client} / {scenario}: {failure}"));
                    "**FAIL**".to_string()
                }
            };
            if kafka.is_some() {
                let on_kafka = kafka_matrix
                    .get(scenario)
                    .and_then(|r| r.get(client))
                    .map(String::as_str)
                    .unwrap_or("not run");
                if on_kafka == "pass" {
                    cell.push_str(" / pass");
                } else {
                    notes.push(format!(
                        "- {client}, {scenario} on Apache Kafka: `{on_kafka}`"
                    ));
                    cell.push_str(" / fail");
                }
            }
            markdown.push_str(&format!(" {cell} |"));
        }
        markdown.push('\n');
    }
    markdown.push_str("\nClient versions: ");
    markdown.push_str(
        &clients
            .iter()
            .map(|(c, v)| format!("{c} {v}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    markdown.push_str(".\n");
    if !notes.is_empty() {
        markdown.push_str("\nNotes on failures:\n\n");
        markdown.push_str(&notes.join("\n"));
        markdown.push('\n');
    }
    let out = root().join("target/compat");
    std::fs::create_dir_all(&out).expect("target/compat");
    std::fs::write(out.join("matrix.md"), &markdown).expect("write matrix");
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "strata": reports,
            "kafka": kafka_reports,
        }))
        .expect("json"),
    )
    .expect("write results");
    assert_eq!(clients.len(), 7, "every client reported:\n{markdown}");
    assert!(
        scenarios >= 100,
        "every client ran its scenarios ({scenarios} results):\n{markdown}"
    );
    assert!(
        unexpected.is_empty(),
        "failures:\n{}\n\n{markdown}",
        unexpected.join("\n")
    );
}

/// Runs scripts/franz-go-suite.sh against `bootstrap`; returns its report.
fn kgo_suite(bootstrap: &str, quick: bool) -> Value {
    let mut command = Command::new(root().join("scripts/franz-go-suite.sh"));
    if quick {
        command.arg("--quick");
    }
    // TestTxnEtl too: transactions are supported.
    command.arg("--txn");
    let child = command
        .arg(bootstrap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start scripts/franz-go-suite.sh");
    collect(child, "franz-go's kgo suite")
}

/// franz-go's own kgo integration tests (TestTxnEtl included) against
/// Strata: the quick subset in the normal suite, the full suite
/// with `STRATA_KGO_FULL=1`, and against Apache Kafka too with
/// `STRATA_COMPAT_KAFKA` (both set by scripts/compat-report.sh). Counts go
/// to target/compat/kgo.json.
#[test]
fn franz_go_kgo_suite() {
    require_installed();
    let quick = std::env::var("STRATA_KGO_FULL").is_err();
    let broker = TestBroker::start_configured("[groups]\ninitial_rebalance_delay_ms = 300\n", &[]);
    let strata = kgo_suite(&broker.addr, quick);
    let kafka = std::env::var("STRATA_COMPAT_KAFKA")
        .ok()
        .map(|bootstrap| kgo_suite(&bootstrap, quick));
    let out = root().join("target/compat");
    std::fs::create_dir_all(&out).expect("target/compat");
    std::fs::write(
        out.join("kgo.json"),
        serde_json::to_string_pretty(&serde_json::json!({"strata": strata, "kafka": kafka}))
            .expect("json"),
    )
    .expect("write kgo.json");
    let passed = strata["passed"].as_u64().unwrap_or(0);
    assert_eq!(
        strata["failed"].as_u64(),
        Some(0),
        "franz-go tests failed on Strata: {strata}\n(output: target/go/kgo-suite-*.log)"
    );
    assert!(passed >= 140, "the suite ran ({passed} passed): {strata}");
}
