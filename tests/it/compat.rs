//! The compatibility report card: the same scenarios driven by three
//! independent client implementations (librdkafka through confluent-kafka,
//! kafka-python, kafkajs), each checking its data end to end. Writes the
//! matrix to `target/compat/` (scripts/compat-report.sh copies it into
//! docs/compatibility.md) and fails on any failure that is not a known,
//! explained client limitation.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_report_card() {
    require_python_module("confluent_kafka");
    require_python_module("kafka");
    let modules = root().join("target/test-node/node_modules");
    assert!(
        modules.join("kafkajs").is_dir(),
        "kafkajs is missing: run ./scripts/test.sh"
    );
    let broker = TestBroker::start_configured("[groups]\ninitial_rebalance_delay_ms = 300\n", &[]);
    let scripts = root().join("tests/compat");
    // The three clients run at once, each with its own topics and groups.
    let spawn = |mut c: Command, what: &str| {
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
    };
    let mut runs = Vec::new();
    for (prefix, script) in [
        ("rdk", "librdkafka_compat.py"),
        ("kpy", "kafka_python_compat.py"),
    ] {
        let mut c = Command::new("python3");
        c.arg(scripts.join(script))
            .args([broker.addr.as_str(), prefix]);
        runs.push((spawn(c, script), script));
    }
    let mut c = Command::new("node");
    c.arg(scripts.join("kafkajs_compat.js"))
        .args([broker.addr.as_str(), "kjs"])
        .env("NODE_PATH", &modules);
    runs.push((spawn(c, "kafkajs_compat.js"), "kafkajs_compat.js"));
    let reports: Vec<Value> = runs
        .into_iter()
        .map(|(child, what)| collect(child, what))
        .collect();

    // scenario -> client -> result
    let mut matrix: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut clients = Vec::new();
    for report in &reports {
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
    let mut markdown = String::from("| scenario |");
    for (client, _) in &clients {
        markdown.push_str(&format!(" {client} |"));
    }
    markdown.push_str("\n|---|");
    markdown.push_str(&"---|".repeat(clients.len()));
    markdown.push('\n');
    let mut unexpected = Vec::new();
    let mut notes = Vec::new();
    for (scenario, row) in &matrix {
        markdown.push_str(&format!("| {scenario} |"));
        for (client, _) in &clients {
            let result = row
                .get(client)
                .map(String::as_str)
                .unwrap_or("fail: not run");
            let known = KNOWN
                .iter()
                .find(|(c, s, _)| client.starts_with(c) && s == scenario);
            let cell = match (result, known) {
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
        markdown.push_str("\nKnown failures (client side):\n\n");
        markdown.push_str(&notes.join("\n"));
        markdown.push('\n');
    }
    let out = root().join("target/compat");
    std::fs::create_dir_all(&out).expect("target/compat");
    std::fs::write(out.join("matrix.md"), &markdown).expect("write matrix");
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&reports).expect("json"),
    )
    .expect("write results");
    assert!(
        matrix.len() >= 12,
        "every client ran every scenario:\n{markdown}"
    );
    assert!(
        unexpected.is_empty(),
        "failures:\n{}\n\n{markdown}",
        unexpected.join("\n")
    );
}
