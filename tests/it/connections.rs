//! Bounded connections, as Kafka bounds them: `max_connections`, per-IP
//! bounds with overrides, `connections_max_idle_ms`, and a write timeout
//! for clients that stop reading. Connections past a bound are closed at
//! once, and the broker's memory stays bounded with thousands open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use crate::bad_input::Raw;
use crate::common::{TestBroker, free_port, http_request};

fn gauge(http: &str, line_prefix: &str) -> u64 {
    let (status, body) = http_request(http, "GET", "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in /metrics"))
}

/// True when the broker closes `stream` within `within` (EOF or reset),
/// false when it is still open after it.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the broker sent bytes unasked"),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn answers(raw: &mut Raw) -> bool {
    let response: ApiVersionsResponse =
        raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    response.error_code == 0
}

/// Ten thousand idle clients: every one of them is held (and still
/// answered), the next ones are closed at once and counted, a slot given
/// back is taken by a new client, and the broker's memory grows by a
/// stated bound of 20 KiB a connection (47 KiB before the read buffer shrank from 64 to 8 KiB and the request futures were boxed).
#[test]
fn ten_thousand_idle_connections_stay_within_the_bound() {
    const OPEN: usize = 10_000;
    // This process holds 10,000 sockets too.
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).expect("raise this test's open files limit");
        let current = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        assert!(
            current >= OPEN as u64 + 1_000,
            "this test needs an open files limit of at least {} (ulimit -n is {current})",
            OPEN + 1_000
        );
    }
    let http = format!("127.0.0.1:{}", free_port());
    let max = OPEN.to_string();
    let broker = TestBroker::start(&["--http-addr", &http, "--max-connections", &max]);
    let rss_before = broker.rss_kib();
    // From 127.0.0.2, on ports below the ephemeral range, so that these
    // 10,000 sockets never take a port another test is about to listen on.
    let target: std::net::SocketAddr = broker.addr.parse().expect("broker address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut clients: Vec<TcpStream> = runtime.block_on(async {
        let mut clients = Vec::with_capacity(OPEN);
        for i in 0..OPEN {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("reuseaddr");
            let port = 20_000 + i as u16;
            socket
                .bind(std::net::SocketAddr::from(([127, 0, 0, 2], port)))
                .unwrap_or_else(|e| panic!("bind 127.0.0.2:{port}: {e}"));
            let stream = socket
                .connect(target)
                .await
                .unwrap_or_else(|e| panic!("connection {i} of {OPEN}: {e}"));
            let stream = stream.into_std().expect("std stream");
            stream.set_nonblocking(false).expect("blocking");
            clients.push(stream);
        }
        clients
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while gauge(&http, "strata_connections ") < OPEN as u64 {
        assert!(
            Instant::now() < deadline,
            "the broker did not accept {OPEN}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_after = broker.rss_kib();
    let per_connection = (rss_after.saturating_sub(rss_before)) * 1024 / OPEN as u64;
    eprintln!(
        "{OPEN} idle connections: RSS {rss_before} KiB -> {rss_after} KiB, {per_connection} bytes each"
    );
    assert!(
        per_connection <= 20 * 1024,
        "{per_connection} bytes of RSS a connection (bound: 20 KiB)"
    );
    // Past the bound: closed at once, before anything is read.
    for _ in 0..20 {
        let mut extra = TcpStream::connect(&broker.addr).expect("the kernel accepts");
        assert!(
            closed_within(&mut extra, Duration::from_secs(5)),
            "a connection past max_connections stays open"
        );
    }
    assert_eq!(
        gauge(
            &http,
            "strata_connections_refused_total{reason=\"broker\"} "
        ),
        20
    );
    // The held ones are served.
    let mut held = Raw::from_stream(clients.pop().expect("a client"));
    held.stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    assert!(answers(&mut held), "a held connection is served");
    // A slot given back is taken by the next client.
    drop(clients.drain(..100));
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&http, "strata_connections ") > (OPEN - 100) as u64 {
        assert!(
            Instant::now() < deadline,
            "closed connections not counted out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut newcomer = Raw::connect(&broker);
    assert!(
        answers(&mut newcomer),
        "a newcomer is served once there is room"
    );
}

/// Per-IP bounds (with an override for this address), and idle connections
/// closed after connections_max_idle_ms while busy ones stay.
#[test]
fn idle_connections_close_and_per_address_bounds_hold() {
    let http = format!("127.0.0.1:{}", free_port());
    let broker = TestBroker::start(&[
        "--http-addr",
        &http,
        "--max-connections-per-ip",
        "1",
        "--max-connections-per-ip-overrides",
        "127.0.0.1:3,10.9.9.9:100",
        "--connections-max-idle-ms",
        "2000",
    ]);
    let mut busy = Raw::connect(&broker);
    let mut idle = [
        TcpStream::connect(&broker.addr).expect("connect"),
        TcpStream::connect(&broker.addr).expect("connect"),
    ];
    // 127.0.0.1 may hold 3 (its override), not 1: once the broker holds
    // the three, the fourth is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(&http, "strata_connections ") < 3 {
        assert!(Instant::now() < deadline, "the broker did not accept 3");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut fourth = TcpStream::connect(&broker.addr).expect("the kernel accepts");
    assert!(closed_within(&mut fourth, Duration::from_secs(5)));
    assert_eq!(
        gauge(
            &http,
            "strata_connections_refused_total{reason=\"address\"} "
        ),
        1
    );
    // The busy connection sends a request every 500 ms for 5 s and stays;
    // the idle ones are closed after 2 s.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert!(answers(&mut busy), "a busy connection is kept");
        std::thread::sleep(Duration::from_millis(500));
    }
    for stream in &mut idle {
        assert!(
            closed_within(stream, Duration::from_millis(100)),
            "an idle connection is still open after 5 s"
        );
    }
    assert_eq!(gauge(&http, "strata_connections_idle_closed_total "), 2);
    assert!(answers(&mut busy));
}

/// A client that pipelines 64 Fetches of 8 MiB and never reads their
/// responses holds at most its share of the response budget (the broker's
/// memory does not grow by the 512 MiB it asked for), does not hold up
/// another client's Fetches, and is closed once a response waits longer
/// than the write timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_its_share_then_is_closed() {
    let broker = TestBroker::start_configured(
        "[kafka]\nmax_response_memory_bytes = 33554432\nfetch_max_bytes = 8388608\n",
        &["--connection-write-timeout-ms", "8000"],
    );
    broker.create_topic("big", 1).await;
    let producer = broker.producer(&[]);
    let value = vec![7u8; 512 * 1024];
    for _ in 0..16 {
        producer
            .send(
                rdkafka::producer::FutureRecord::<(), _>::to("big").payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }
    let rss_before = broker.rss_kib();
    let mut stalled = Raw::connect(&broker);
    for _ in 0..64 {
        crate::bad_input::send_fetch(&mut stalled, "big", 0, 0, 8 * 1024 * 1024);
    }
    stalled.stream.flush().expect("flush");
    // Meanwhile another client's Fetches of the same data are served.
    let mut other = Raw::connect(&broker);
    other
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    for _ in 0..4 {
        let (error, _, bytes) = crate::bad_input::fetch(&mut other, "big", 0, 0);
        assert_eq!((error, bytes > 0), (0, true));
    }
    let rss_stalled = broker.rss_kib();
    eprintln!("RSS {rss_before} KiB before, {rss_stalled} KiB with 64 unread 8 MiB Fetches");
    assert!(
        rss_stalled.saturating_sub(rss_before) < 128 * 1024,
        "RSS grew from {rss_before} to {rss_stalled} KiB"
    );
    // After the write timeout the broker gives up on it: reading now
    // drains what was queued in the kernel, then finds the connection
    // closed, short of the 64 responses.
    std::thread::sleep(Duration::from_secs(10));
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut sink = vec![0u8; 1 << 20];
    let mut drained = 0usize;
    loop {
        match stalled.stream.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled connection is still open after {drained} bytes: {e}"),
        }
    }
    assert!(
        drained < 64 * 8 * 1024 * 1024,
        "not every response was written ({drained} bytes)"
    );
    assert!(answers(&mut other));
}
