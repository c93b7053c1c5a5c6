//! The HTTP endpoints: /health, Prometheus /metrics counting real object-store
//! traffic, 404 elsewhere.

use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::common::{TestBroker, free_port, http_request};

fn get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path)
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let http = format!("127.0.0.1:{}", free_port());
    let broker = TestBroker::start(&["--http-addr", &http]);
    assert_eq!(get(&http, "/health"), (200, "ok\n".to_string()));
    assert_eq!(get(&http, "/nope").0, 404);
    let (_, before) = get(&http, "/metrics");
    let puts_before = counter(&before, "strata_object_store_requests_total{op=\"put\"} ");
    broker.create_topic("metered", 1).await;
    let producer = broker.producer(&[]);
    for i in 0..5 {
        let value = format!("m{i}");
        let record: FutureRecord<'_, (), String> = FutureRecord::to("metered").payload(&value);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered");
    }
    let (status, after) = get(&http, "/metrics");
    assert_eq!(status, 200);
    let puts = counter(&after, "strata_object_store_requests_total{op=\"put\"} ");
    assert!(
        puts > puts_before,
        "acked writes were PUT: {puts_before} -> {puts}"
    );
    assert!(counter(&after, "strata_object_store_bytes_total{op=\"put\"} ") > 0);
    assert_eq!(
        counter(
            &after,
            "strata_object_store_request_seconds_count{op=\"put\"} "
        ),
        puts,
        "the latency histogram counts every request"
    );
    let flushes = counter(&after, "strata_wal_flush_seconds_count{stage=\"total\"} ");
    assert!(
        (1..=puts).contains(&flushes),
        "every acked write went through a timed flush (one PUT each): {flushes} flushes, {puts} PUTs"
    );
    assert_eq!(
        counter(
            &after,
            "strata_wal_flush_seconds_bucket{stage=\"total\",le=\"+Inf\"} "
        ),
        flushes,
        "the flush histogram's buckets add up"
    );
    assert_eq!(
        counter(&after, "strata_wal_append_seconds_count "),
        5,
        "each acknowledged write's wait in the write buffer is timed once"
    );
    assert_eq!(
        counter(&after, "strata_wal_append_flush_seconds_count "),
        5,
        "each acknowledged write counts the flush that made it durable once"
    );
    assert!(
        counter(&after, "strata_request_seconds_count{api=\"Produce\"} ") >= 5,
        "every Produce request is timed"
    );
    assert_eq!(
        counter(&after, "strata_fetch_waiting "),
        0,
        "no consumer, so no Fetch is long-polling"
    );
    assert!(
        counter(&after, "strata_request_seconds_count{api=\"Metadata\"} ") >= 1,
        "other APIs are timed under their own label"
    );
}
