//! Configuration precedence as a user sees it: TOML file, then `STRATA_*`
//! environment, then flags; and a clear error for a bad file.

use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;

use crate::common::{STRATA, TestBroker};

async fn partitions_of_auto_created(broker: &TestBroker) -> usize {
    let producer = broker.producer(&[]);
    let record: FutureRecord<'_, (), str> = FutureRecord::to("auto").payload("x");
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("delivered");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some("auto"), Duration::from_secs(10))
        .expect("metadata");
    metadata.topics()[0].partitions().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("strata.toml");
    std::fs::write(
        &file,
        "[kafka]\ndefault_partitions = 3\n\n[wal]\nflush_interval_ms = 5\n",
    )
    .expect("write");
    let file = file.display().to_string();

    let from_file = TestBroker::start(&["--config", &file]);
    assert_eq!(partitions_of_auto_created(&from_file).await, 3);

    let from_env =
        TestBroker::start_with_env(&["--config", &file], &[("STRATA_DEFAULT_PARTITIONS", "5")]);
    assert_eq!(partitions_of_auto_created(&from_env).await, 5);

    let from_flag = TestBroker::start_with_env(
        &["--config", &file, "--default-partitions", "7"],
        &[("STRATA_DEFAULT_PARTITIONS", "5")],
    );
    assert_eq!(partitions_of_auto_created(&from_flag).await, 7);
}

#[test]
fn bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[wal]\nflush_byte = 10\n").expect("write");
    let out = Command::new(STRATA)
        .args(["serve", "--kafka-addr", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("flush_byte"),
        "the unknown key is named: {stderr}"
    );

    std::fs::write(&file, "[kafka]\ndefault_partitions = 0\n").expect("write");
    let out = Command::new(STRATA)
        .args(["serve", "--kafka-addr", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kafka.default_partitions"));
}
