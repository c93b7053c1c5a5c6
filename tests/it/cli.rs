//! The newcomer's tools: `strata topic|produce|consume` against a running
//! broker, checked on their output and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::{STRATA, TestBroker, free_port};

fn strata(broker: &TestBroker, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(STRATA)
        .args(args)
        .env("STRATA_BROKERS", &broker.addr)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("strata output")
}

fn ok(broker: &TestBroker, args: &[&str], stdin: &str) -> String {
    let out = strata(broker, args, stdin);
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn topic_produce_consume_round_trip() {
    let broker = TestBroker::start(&[]);
    ok(
        &broker,
        &[
            "topic",
            "create",
            "cli",
            "--partitions",
            "2",
            "--config",
            "retention.ms=-1",
        ],
        "",
    );
    assert_eq!(ok(&broker, &["topic", "list"], ""), "cli\n");
    let described = ok(&broker, &["topic", "describe", "cli"], "");
    assert!(described.contains("partitions: 2"), "{described}");
    assert!(described.contains("retention.ms=-1"), "{described}");
    assert!(
        described.contains("max.message.bytes=1048588"),
        "{described}"
    );

    let lines: String = (0..20).map(|i| format!("user{i}|clicked {i}\n")).collect();
    ok(
        &broker,
        &[
            "produce",
            "cli",
            "--key-separator",
            "|",
            "--partition",
            "1",
            "--compression",
            "zstd",
        ],
        &lines,
    );
    let out = ok(
        &broker,
        &[
            "consume",
            "cli",
            "--partition",
            "1",
            "--from",
            "beginning",
            "--max-messages",
            "20",
            "--print-key",
            "--print-offset",
        ],
        "",
    );
    let expected: String = (0..20)
        .map(|i| format!("1\t{i}\tuser{i}\tclicked {i}\n"))
        .collect();
    assert_eq!(out, expected);
    let from_offset = ok(
        &broker,
        &[
            "consume",
            "cli",
            "--partition",
            "1",
            "--from",
            "18",
            "--max-messages",
            "2",
        ],
        "",
    );
    assert_eq!(from_offset, "clicked 18\nclicked 19\n");
    let idle = ok(
        &broker,
        &[
            "consume",
            "cli",
            "--partition",
            "0",
            "--idle-timeout-ms",
            "1500",
        ],
        "",
    );
    assert_eq!(idle, "", "partition 0 is empty; consume exits when idle");

    ok(&broker, &["topic", "delete", "cli"], "");
    // Only Kafka's internal __consumer_offsets is left (created, as in
    // Kafka, when the consumer looked for its group coordinator).
    assert_eq!(
        ok(&broker, &["topic", "list"], ""),
        "__consumer_offsets\n",
        "the topic is gone"
    );
}

#[test]
fn cli_errors_say_what_to_fix() {
    let broker = TestBroker::start(&[]);
    let bad = strata(&broker, &["topic", "create", "has space"], "");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid topic name"));
    let missing = strata(&broker, &["topic", "describe", "nope"], "");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    ok(&broker, &["topic", "create", "dup"], "");
    let dup = strata(&broker, &["topic", "create", "dup"], "");
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_describe_reset_and_delete() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let broker = TestBroker::start(&[]);
    ok(
        &broker,
        &["topic", "create", "lag", "--partitions", "2"],
        "",
    );
    let lines: String = (0..30).map(|i| format!("{i}\n")).collect();
    ok(&broker, &["produce", "lag", "--partition", "0"], &lines);
    let fifteen: String = (0..15).map(|i| format!("{i}\n")).collect();
    ok(&broker, &["produce", "lag", "--partition", "1"], &fifteen);
    // A group that committed 20 of partition 0 and 5 of partition 1.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "readers")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lag", 0, Offset::Offset(20))
        .expect("tpl");
    tpl.add_partition_offset("lag", 1, Offset::Offset(5))
        .expect("tpl");
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    drop(consumer);

    let listed = ok(&broker, &["group", "list"], "");
    assert!(
        listed.lines().any(|l| l.starts_with("readers ")),
        "{listed}"
    );
    let described = ok(&broker, &["group", "describe", "readers"], "");
    let row = |text: &str, partition: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == ["lag", partition])
            .unwrap_or_else(|| panic!("no row for partition {partition} in:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert_eq!(
        row(&described, "0")[2..5],
        ["20", "30", "10"],
        "{described}"
    );
    assert_eq!(row(&described, "1")[2..5], ["5", "15", "10"], "{described}");

    let dry = ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "readers",
            "--topic",
            "lag",
            "--to-earliest",
        ],
        "",
    );
    assert!(dry.contains("dry run"), "{dry}");
    let after_dry = ok(&broker, &["group", "describe", "readers"], "");
    assert_eq!(row(&after_dry, "0")[2], "20", "a dry run changes nothing");

    let real = ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "readers",
            "--topic",
            "lag",
            "--partition",
            "0",
            "--to-offset",
            "3",
            "--execute",
        ],
        "",
    );
    assert!(real.contains("offsets committed"), "{real}");
    let after = ok(&broker, &["group", "describe", "readers"], "");
    assert_eq!(row(&after, "0")[2..5], ["3", "30", "27"], "{after}");
    assert_eq!(row(&after, "1")[2], "5", "other partitions untouched");
    let latest = ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "readers",
            "--topic",
            "lag",
            "--to-latest",
            "--execute",
        ],
        "",
    );
    assert!(latest.contains("offsets committed"));
    let caught_up = ok(&broker, &["group", "describe", "readers"], "");
    assert_eq!(row(&caught_up, "1")[2..5], ["15", "15", "0"], "{caught_up}");

    ok(&broker, &["group", "delete", "readers"], "");
    let gone = strata(&broker, &["group", "describe", "readers"], "");
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

/// `strata bench` against a real broker: a short fixed-rate run reports what
/// it sent, with end-to-end latency, broker CPU and the broker's flush and
/// PUT figures; `--rate max --total-mb` stops at the size asked; `--catch-up`
/// reads back every record written.
#[test]
fn bench_produces_measures_and_reads_back() {
    let http = format!("127.0.0.1:{}", free_port());
    let broker = TestBroker::start(&["--http-addr", &http]);
    let pid = broker.pid().to_string();
    let metrics = format!("http://{http}/metrics");
    let json = |out: &str| -> serde_json::Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("bench prints JSON ({e}): {out}"))
    };
    let run = json(&ok(
        &broker,
        &[
            "bench",
            "b",
            "--rate",
            "400",
            "--duration-secs",
            "2",
            "--warmup-secs",
            "1",
            "--partitions",
            "4",
            "--record-bytes",
            "200",
            "--broker-pid",
            &pid,
            "--metrics-url",
            &metrics,
        ],
        "",
    ));
    assert_eq!(run["workload"], "produce_open_loop");
    assert_eq!(run["errors"], 0);
    let acked = run["records_acked"].as_u64().expect("records_acked");
    assert!((790..=801).contains(&acked), "2 s at 400/s measured: {run}");
    assert_eq!(run["end_to_end_records"].as_u64(), Some(acked), "{run}");
    let p99 = run["produce_latency_ms"]["p99"].as_f64().expect("p99");
    assert!(p99 > 0.0 && p99 < 10_000.0, "{run}");
    assert!(run["broker_cpu_seconds_per_gb"].as_f64().expect("cpu") > 0.0);
    assert!(run["object_store_puts_per_sec"].as_f64().expect("puts") > 0.0);
    assert!(run["flush_put_commit_p99_ms"].as_f64().expect("flush p99") > 0.0);
    assert_eq!(
        run["object_store_gets_per_gb"].as_f64(),
        Some(0.0),
        "tail reads hit the cache"
    );

    let fill = json(&ok(
        &broker,
        &[
            "bench",
            "b",
            "--rate",
            "max",
            "--total-mb",
            "2",
            "--record-bytes",
            "1000",
            "--warmup-secs",
            "0",
            "--duration-secs",
            "60",
            "--no-end-to-end",
        ],
        "",
    ));
    assert_eq!(fill["workload"], "produce_max");
    assert_eq!(fill["records_acked"], 2000, "stops after 2 MB: {fill}");
    assert!(fill.get("end_to_end_latency_ms").is_none());

    // Everything written, warmup included: 3 s at 400/s, then 2,000.
    let read = json(&ok(&broker, &["bench", "b", "--catch-up"], ""));
    assert_eq!(read["workload"], "catch_up_read");
    assert_eq!(read["records"], 1200 + 2000, "{read}");
    assert!(read["throughput_mb_per_sec"].as_f64().expect("MB/s") > 0.0);

    let missing = strata(&broker, &["bench", "nope", "--catch-up"], "");
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("does not exist") && err.contains("--total-mb"),
        "{err}"
    );
}

/// A password in the metadata store's URL never reaches an error message,
/// a log line or `--help`, whichever tool fails to reach the store.
#[test]
fn passwords_stay_out_of_errors_logs_and_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    // A PostgreSQL that is down (nothing listens on port 1).
    let url = "postgres://strata:Sup3rS3cret@127.0.0.1:1/strata";
    let backup = format!("{data}/backup.sql");
    let runs: [&[&str]; 4] = [
        &["export", "parquet", "t", "--to", data],
        &["backup", "--to", &backup],
        &["user", "list"],
        &["serve", "--kafka-addr", "127.0.0.1:0"],
    ];
    for args in runs {
        let out = Command::new(STRATA)
            .args(args)
            .args(["--data-dir", data, "--metadata", url])
            .env("RUST_LOG", "debug")
            .output()
            .expect("run strata");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{args:?} failed: {said}");
        assert!(
            said.contains("metadata store"),
            "{args:?} says what failed: {said}"
        );
        assert!(
            !said.contains("Sup3rS3cret"),
            "{args:?} printed the password: {said}"
        );
    }
    let help = Command::new(STRATA)
        .args(["serve", "--help"])
        .env("STRATA_METADATA", url)
        .env("STRATA_S3_SECRET_ACCESS_KEY", "Sup3rS3cret")
        .env("STRATA_SASL_BOOTSTRAP_PASSWORD", "Sup3rS3cret")
        .output()
        .expect("run strata");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--metadata"), "{help}");
    assert!(
        !help.contains("Sup3rS3cret"),
        "--help shows a secret: {help}"
    );
}
