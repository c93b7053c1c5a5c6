//! Test harness: start, kill -9 and restart a `strata serve` process, plus
//! small client helpers.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

pub struct TestBroker {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    /// `Some(url)`: the broker's metadata lives in PostgreSQL (a schema of
    /// its own), else in SQLite in `data_dir`.
    pub postgres: Option<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    starts: usize,
    listen_on: Option<String>,
    /// Set for a broker run as a compose service: see `start_as_service`.
    service: Option<Service>,
    _tmp: Option<TempDir>,
}

/// A broker run as a container would run it: its listeners are its own
/// settings (no `--kafka-addr`), and it resolves host names through a
/// hosts file of its own (a private mount namespace binds it over
/// /etc/hosts), as a container resolves compose's service names.
struct Service {
    hosts: PathBuf,
    /// The listener whose advertised address tests connect to.
    client_listener: String,
}

impl TestBroker {
    /// A broker with a fresh data directory and extra `serve` arguments.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// A broker started with `toml` as its configuration file.
    pub fn start_configured(toml: &str, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("strata.toml");
        std::fs::write(&config, toml).expect("write config");
        let config = config.display().to_string();
        let mut all: Vec<&str> = vec!["--config", &config];
        all.extend_from_slice(args);
        Self::start_in(tmp, &all, &[])
    }

    /// A broker on `data` (a data directory prepared beforehand).
    pub fn start_in_dir(data: TempDir, args: &[&str]) -> Self {
        Self::start_in(data, args, &[])
    }

    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), args, envs)
    }

    fn start_in(tmp: TempDir, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let postgres = postgres_metadata();
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(url) = &postgres {
            args.extend(["--metadata".to_string(), url.clone()]);
        }
        Self::spawned(tmp, postgres, args, envs, None)
    }

    /// A broker with `envs` as its whole configuration (listeners included),
    /// resolving names through `hosts`; `addr` is the advertised address
    /// of its `client_listener`. Needs `unshare` (util-linux) and mount
    /// namespaces, which root has (else user namespaces).
    pub fn start_as_service(envs: &[(&str, &str)], hosts: &Path, client_listener: &str) -> Self {
        let service = Service {
            hosts: hosts.to_path_buf(),
            client_listener: client_listener.to_string(),
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        Self::spawned(tmp, None, Vec::new(), envs, Some(service))
    }

    fn spawned(
        tmp: TempDir,
        postgres: Option<String>,
        args: Vec<String>,
        envs: &[(&str, &str)],
        service: Option<Service>,
    ) -> Self {
        let mut broker = TestBroker {
            child: None,
            addr: String::new(),
            data_dir: tmp.path().to_path_buf(),
            postgres,
            args,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts: 0,
            listen_on: None,
            service,
            _tmp: Some(tmp),
        };
        broker.spawn();
        broker
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.data_dir.join(format!("broker-{n}.log"))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).expect("log file");
        let mut cmd = match &self.service {
            None => Command::new(STRATA),
            Some(service) => {
                // `unshare` execs the shell, which binds the hosts file and
                // execs the broker: the child's pid is the broker's.
                let root = Command::new("id")
                    .arg("-u")
                    .output()
                    .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
                let mut cmd = Command::new("unshare");
                if !root {
                    cmd.args(["--user", "--map-root-user"]);
                }
                cmd.args([
                    "--mount",
                    "sh",
                    "-c",
                    "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
                ])
                .arg(&service.hosts)
                .arg(STRATA);
                cmd
            }
        };
        cmd.arg("serve").arg("--data-dir").arg(&self.data_dir);
        // A broker given its own listeners does without the harness's.
        if self.service.is_none() && !self.args.iter().any(|a| a == "--listeners") {
            cmd.arg("--kafka-addr")
                .arg(self.listen_on.as_deref().unwrap_or("127.0.0.1:0"));
        }
        cmd.args(&self.args)
            .env("RUST_LOG", "info,strata=debug")
            .env_remove("STRATA_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn strata"));
        self.addr = self.wait_for_listen();
        if let Some(service) = &self.service {
            self.addr = self.listener_addr(&service.client_listener.clone());
        }
    }

    fn wait_for_listen(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.log(self.starts);
            // Only a whole line: the log may be read mid-write.
            if let Some(line) = text
                .split_inclusive('\n')
                .find(|l| l.starts_with("strata listening on ") && l.ends_with('\n'))
            {
                return line
                    .trim_start_matches("strata listening on ")
                    .trim()
                    .to_string();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("strata exited with {status} before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "strata did not start within 60s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The advertised address of listener `name`, as its latest start
    /// logged it.
    pub fn listener_addr(&self, name: &str) -> String {
        let prefix = format!("strata listener {name} on ");
        let text = self.log(self.starts);
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.split(" advertised as ").nth(1))
            .unwrap_or_else(|| panic!("no {prefix}... line:\n{text}"))
            .trim()
            .to_string()
    }

    /// Everything the n-th start of the broker logged.
    pub fn log(&self, n: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path(n)) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// SIGKILL: no flush, no shutdown hook, like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop (SIGTERM) and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running broker");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        child.wait().expect("wait for strata")
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// kill -9, then start again on the same address, so that running
    /// clients reconnect to it.
    pub fn restart_same_port(&mut self) {
        self.kill9();
        let addr = self.addr.clone();
        self.listen_on = Some(addr.clone());
        self.spawn();
        assert_eq!(self.addr, addr);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running broker").id()
    }

    /// Resident set size of the broker process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// `--metadata URL` when the broker's metadata is not the default
    /// SQLite file of its data directory (for `strata export`).
    pub fn metadata_args(&self) -> Vec<String> {
        match &self.postgres {
            Some(url) => vec!["--metadata".into(), url.clone()],
            None => Vec::new(),
        }
    }

    /// The result of `sql` (a query, or a change made while the broker is
    /// down) on the broker's metadata store (SQLite or PostgreSQL: same
    /// tables), each value as text (NULL as "").
    pub fn metadata_rows(&self, sql: &str) -> Vec<Vec<String>> {
        match &self.postgres {
            Some(url) => psql(url, sql),
            None => {
                let db = rusqlite::Connection::open(self.data_dir.join("metadata.db"))
                    .expect("open metadata.db");
                let mut stmt = db.prepare(sql).expect("prepare");
                let columns = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..columns)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => String::new(),
                                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                                rusqlite::types::ValueRef::Real(v) => v.to_string(),
                                rusqlite::types::ValueRef::Text(v)
                                | rusqlite::types::ValueRef::Blob(v) => {
                                    String::from_utf8_lossy(v).into_owned()
                                }
                            })
                        })
                        .collect()
                })
                .expect("query")
                .map(|r| r.expect("row"))
                .collect()
            }
        }
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.data_dir.join("objects")
    }

    pub fn producer(&self, extra: &[(&str, &str)]) -> FutureProducer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.addr)
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5");
        for (k, v) in extra {
            config.set(*k, *v);
        }
        config.create().expect("producer")
    }

    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("admin client")
    }

    /// Creates a topic (replication factor 1). A request that gets no answer
    /// is tried again with a fresh admin client (once seen in CI: a first
    /// CreateTopics timed out after 60 s); the broker's log is shown if
    /// none succeeds.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let mut last = String::new();
        for attempt in 1..=3 {
            let options = AdminOptions::new()
                .request_timeout(Some(rdkafka::util::Timeout::After(Duration::from_secs(20))));
            match self
                .admin()
                .create_topics(
                    &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                    &options,
                )
                .await
            {
                Ok(results) => {
                    for result in results {
                        match result {
                            Ok(_) => {}
                            // An earlier attempt's request landed after all.
                            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))
                                if attempt > 1 => {}
                            Err(e) => panic!("topic {name} not created: {e:?}"),
                        }
                    }
                    return;
                }
                Err(e) => {
                    eprintln!("create topic {name}, attempt {attempt}: {e}");
                    last = e.to_string();
                }
            }
        }
        let log = self.log(self.starts);
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "create topics request failed 3 times ({last}); broker log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// Consumes every record of `topic`/`partition` from `from` up to the
    /// current end: `(offset, key, value, timestamp)`.
    pub fn consume_all(&self, topic: &str, partition: i32, from: Offset) -> Vec<Consumed> {
        consume_until_end(&self.addr, topic, partition, from)
    }

    pub fn high_watermark(&self, topic: &str, partition: i32) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("consumer");
        consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("watermarks")
            .1
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        // Whether it still ran when the test failed, and what it logged
        // last (warnings, errors, panics, connections closed on an error),
        // so a failure can be read from CI.
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.kill9();
        if std::thread::panicking() && self.starts > 0 {
            let log = self.log(self.starts);
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    ["WARN", "ERROR", "panicked", "connection closed"]
                        .iter()
                        .any(|mark| l.contains(mark))
                })
                .collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            eprintln!(
                "broker at {} (start {}, {}) logged last:\n{}",
                self.addr,
                self.starts,
                match exited {
                    Some(status) => format!("had exited: {status}"),
                    None => "still running".into(),
                },
                tail.join("\n")
            );
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

pub fn consume_until_end(addr: &str, topic: &str, partition: i32, from: Offset) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "strata-tests-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from)
        .expect("offset");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "consume timed out after {} records (high watermark {high})",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            // librdkafka reports a lost connection and reconnects by
            // itself, as a user's consumer rides over it; a broker that is
            // gone shows as the deadline above (and in its log's tail).
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                code
                @ (RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure),
            ))) => eprintln!("{addr}: {code} while reading {topic}/{partition}; retrying"),
            Some(Err(e)) => panic!("consume error: {e}"),
            Some(Ok(m)) => {
                use rdkafka::message::Headers;
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Consumed {
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().map(|v| v.to_vec()),
                    timestamp: m.timestamp().to_millis(),
                    headers,
                });
                if m.offset() + 1 >= high {
                    break;
                }
            }
        }
    }
    out
}

/// Files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Fails (never skips) unless `python3` can import `module`; the test command
/// (scripts/test.sh) puts a venv with every client on PATH.
pub fn require_python_module(module: &str) {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 cannot import '{module}': run the tests with ./scripts/test.sh, which installs it"
    );
}

/// A port nothing listens on right now (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One raw HTTP/1.1 request to `addr` (`host:port`); returns (status, body).
pub fn http_request(addr: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect http");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Records committed in `topic` (the sum of its partitions' high
/// watermarks), read by a blocking client off the runtime.
pub async fn committed(addr: &str, topic: &str, partitions: i32) -> i64 {
    let (addr, topic) = (addr.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .create()
            .expect("consumer");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .sum()
    })
    .await
    .expect("watermark task")
}

/// Waits (up to 60 s) until more than `floor` records of `topic` are
/// committed; returns how many are.
pub async fn committed_beyond(addr: &str, topic: &str, partitions: i32, floor: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = committed(addr, topic, partitions).await;
        if now > floor {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {now} records committed, waited for more than {floor}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `condition` (every 50 ms) until it holds; fails with `what()` if it
/// does not within `timeout`. For states only visible from outside the
/// broker (files, rows): no event to wait on.
pub async fn eventually(
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
    what: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `STRATA_TEST_METADATA=postgres` (the test command's second pass),
/// every test broker keeps its metadata in a fresh schema of the
/// PostgreSQL server `STRATA_TEST_POSTGRES` names.
fn postgres_metadata() -> Option<String> {
    let postgres = match std::env::var("STRATA_TEST_METADATA").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("STRATA_TEST_METADATA={other}: expected sqlite or postgres"),
    };
    postgres.then(fresh_postgres_url)
}

/// The URL of a fresh, empty schema on the test PostgreSQL server
/// (`STRATA_TEST_POSTGRES`, which `./scripts/test.sh` starts).
pub fn fresh_postgres_url() -> String {
    let base = std::env::var("STRATA_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "STRATA_TEST_POSTGRES is not set: these tests need a PostgreSQL server. \
             Run ./scripts/test.sh, or: export STRATA_TEST_POSTGRES=$(scripts/postgres.sh start)"
        )
    });
    let schema = format!("it_{}", uuid::Uuid::new_v4().simple());
    psql(&base, &format!("CREATE SCHEMA {schema}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// Runs `sql` with psql on `url` (its `options` parameter sets the
/// schema); rows split on tabs.
pub fn psql(url: &str, sql: &str) -> Vec<Vec<String>> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql (Debian's postgresql-client; ./scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "psql failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}
