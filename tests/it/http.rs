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

fn get_with(addr: &str, path: &str, authorization: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect http");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// With `http_auth_token`, /metrics answers Prometheus only with the
/// token (401 otherwise), while /health stays open to probes; a token too
/// short to be one is refused at start.
#[test]
fn metrics_need_the_bearer_token_when_one_is_set() {
    let http = format!("127.0.0.1:{}", free_port());
    let token = "9f1c2e7a5b3d4f6081a2c3e4d5f60718";
    let broker = TestBroker::start(&["--http-addr", &http, "--http-auth-token", token]);
    assert_eq!(get(&http, "/health"), (200, "ok\n".to_string()));
    let (status, body) = get(&http, "/metrics");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(
        get_with(&http, "/metrics", "Bearer wrong-token-of-some-length"),
        401
    );
    assert_eq!(get_with(&http, "/metrics", &format!("Basic {token}")), 401);
    assert_eq!(get_with(&http, "/metrics", &format!("Bearer {token}")), 200);
    // The Kafka listener is another address and does not speak HTTP.
    assert_ne!(broker.addr, http);

    let out = std::process::Command::new(crate::common::STRATA)
        .args([
            "serve",
            "--kafka-addr",
            "127.0.0.1:0",
            "--http-auth-token",
            "short",
        ])
        .args([
            "--data-dir",
            &tempfile::tempdir()
                .expect("tmp")
                .path()
                .display()
                .to_string(),
        ])
        .output()
        .expect("strata");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http_auth_token"), "{stderr}");
}
