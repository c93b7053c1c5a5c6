//! Restore drills: produce, back the metadata store up (`strata backup`,
//! with the broker running), produce more and let sealing and the
//! collector run until the objects the backup names are retired, restore
//! the backup (`strata restore`, brokers stopped), and read back, through
//! a broker with an empty cache, every record acknowledged before the
//! backup. On PostgreSQL with MinIO (pg_dump / pg_restore), and on the
//! embedded SQLite store (an online `VACUUM INTO`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::Offset;
use rdkafka::producer::FutureRecord;

use crate::cluster::OwnPostgres;
use crate::common::{STRATA, TestBroker, consume_until_end, eventually, psql};
use crate::s3::start_s3;

const TOPIC: &str = "drill";
const PARTITIONS: i32 = 2;

/// Flags that make sealing and collection quick: without a backup hold,
/// a retired object is gone a second or two after sealing.
const QUICK_GC: [&str; 6] = [
    "--seal-interval-ms",
    "300",
    "--gc-delete-grace-secs",
    "1",
    "--gc-sweep-interval-secs",
    "1",
];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Produces `count` records named `prefix-i`; returns where each landed.
async fn produce(broker: &TestBroker, prefix: &str, count: usize) -> Vec<(i32, i64, String)> {
    let producer = broker.producer(&[("acks", "all")]);
    let mut acked = Vec::new();
    for i in 0..count {
        let value = format!("{prefix}-{i}");
        let record = FutureRecord::<(), _>::to(TOPIC)
            .partition(i as i32 % PARTITIONS)
            .payload(&value);
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("acknowledged");
        acked.push((delivery.partition, delivery.offset, value));
    }
    acked
}

/// Runs `strata <args>` with `envs`, which must succeed.
fn strata(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(STRATA)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run strata");
    assert!(
        out.status.success(),
        "strata {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every record of `acked` is read back at its offset through `broker`.
fn assert_all_back(broker: &TestBroker, acked: &[(i32, i64, String)]) {
    let mut stored: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        for r in consume_until_end(&broker.addr, TOPIC, partition, Offset::Beginning) {
            let value = String::from_utf8(r.value.expect("value")).expect("utf8");
            stored.insert((partition, r.offset), value);
        }
    }
    for (partition, offset, value) in acked {
        assert_eq!(
            stored.get(&(*partition, *offset)),
            Some(value),
            "acknowledged before the backup: {value} at {partition}/{offset}"
        );
    }
}

/// Waits until no write-ahead object created before `before_ms` is left
/// unsealed (`rows` runs SQL on the current store), then a few collector
/// sweeps more: without a hold, their objects are deleted by then.
async fn wait_sealed_and_swept(rows: impl Fn(&str) -> Vec<Vec<String>>, before_ms: i64) {
    let sql = format!(
        "SELECT COUNT(*) FROM objects WHERE kind = 0 AND retired_ms IS NULL \
         AND created_ms <= {before_ms}"
    );
    eventually(
        Duration::from_secs(60),
        || rows(&sql)[0][0] == "0",
        || {
            format!(
                "write-ahead objects from before the backup still unsealed: {:?}",
                rows(&sql)
            )
        },
    )
    .await;
    // What is awaited here is something that must not happen (the hold
    // keeps the objects): give the collector three sweeps past the grace
    // (1 s each) to do it if it would.
    tokio::time::sleep(Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_backup_restores_every_record_acknowledged_before_it() {
    let postgres = OwnPostgres::start();
    let s3 = start_s3(&["drill"]);
    let mut args = s3.broker_args("s3://drill/data");
    args.extend(
        ["--metadata", &postgres.url, "--node-id", "1"]
            .into_iter()
            .chain(QUICK_GC)
            .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut broker = TestBroker::start(&args);
    broker.create_topic(TOPIC, PARTITIONS).await;
    let before = produce(&broker, "before", 200).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("metadata.dump");
    let backup_ms = now_ms();
    let backup_arg = backup.display().to_string();
    let out = strata(
        &["backup", "--to", &backup_arg, "--metadata", &postgres.url],
        &[],
    );
    assert!(out.contains("\"metadata\":\"postgres\""), "{out}");

    produce(&broker, "after", 200).await;
    wait_sealed_and_swept(|sql| psql(&postgres.url, sql), backup_ms).await;
    broker.terminate();

    strata(
        &[
            "restore",
            "--from",
            &backup_arg,
            "--metadata",
            &postgres.url,
        ],
        &[],
    );
    // A broker with an empty cache: every byte comes from the bucket.
    let restored = TestBroker::start(&args);
    assert_all_back(&restored, &before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_sqlite_backup_restores_every_record_acknowledged_before_it() {
    let mut broker = TestBroker::start(&QUICK_GC);
    let sqlite = format!("sqlite://{}", broker.data_dir.join("metadata.db").display());
    let objects = broker.objects_dir().display().to_string();
    broker.create_topic(TOPIC, PARTITIONS).await;
    let before = produce(&broker, "before", 200).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("metadata-backup.db");
    let backup_ms = now_ms();
    let backup_arg = backup.display().to_string();
    // Online: the broker keeps running.
    let out = strata(&["backup", "--to", &backup_arg, "--metadata", &sqlite], &[]);
    assert!(out.contains("\"metadata\":\"sqlite\""), "{out}");

    produce(&broker, "after", 200).await;
    wait_sealed_and_swept(|sql| broker.metadata_rows(sql), backup_ms).await;
    broker.terminate();

    // Restored into a new data directory (no cache) over the same objects.
    let fresh = tempfile::tempdir().expect("tempdir");
    let restored_url = format!("sqlite://{}", fresh.path().join("metadata.db").display());
    strata(
        &[
            "restore",
            "--from",
            &backup_arg,
            "--metadata",
            &restored_url,
        ],
        &[],
    );
    let mut flags: Vec<&str> = vec!["--metadata", &restored_url, "--object-store", &objects];
    flags.extend(QUICK_GC);
    let restored = TestBroker::start(&flags);
    assert_all_back(&restored, &before);
}
