//! Consumer groups whose members are other client implementations, each in
//! its own process: kafka-python (pure Python) and kafkajs (pure JavaScript).
//! Three members share a topic; one is killed with SIGKILL; the survivors
//! take over its partitions after the session timeout and nothing is lost.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::bad_input::Raw;
use crate::common::TestBroker;
use crate::groups::{Seen, all_seen, produce_range, wait_until};

struct External {
    child: Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl External {
    fn spawn(mut command: Command, seen: Seen, what: &str) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} (installed by scripts/test.sh): {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                seen.lock().expect("seen").push(line);
            }
        });
        External {
            child,
            reader: Some(reader),
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for External {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// (members, partitions assigned with repeats, group state) of a classic group.
fn describe(raw: &mut Raw, group: &str) -> (usize, Vec<i32>, String) {
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let response: DescribeGroupsResponse = raw.call(ApiKey::DescribeGroups, 5, &request);
    let g = &response.groups[0];
    let mut partitions: Vec<i32> = g
        .members
        .iter()
        .flat_map(|m| {
            strata::protocol::consumer::decode_assignment(&m.member_assignment).unwrap_or_default()
        })
        .map(|(_, p)| p)
        .collect();
    partitions.sort();
    (g.members.len(), partitions, g.group_state.to_string())
}

async fn three_members_one_killed(client: &str, command: impl Fn() -> Command) {
    let broker = TestBroker::start_configured("[groups]\ninitial_rebalance_delay_ms = 500\n", &[]);
    let topic = format!("poly-{client}");
    let group = format!("poly-{client}-group");
    broker.create_topic(&topic, 6).await;
    produce_range(&broker, &topic, 6, 0..600).await;
    let seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    let mut members: Vec<External> = seen
        .iter()
        .map(|s| {
            let mut c = command();
            c.args([broker.addr.as_str(), group.as_str(), topic.as_str()]);
            External::spawn(c, Arc::clone(s), client)
        })
        .collect();
    let mut raw = Raw::connect(&broker);
    wait_until(
        &format!("three {client} members sharing six partitions"),
        Duration::from_secs(90),
        || {
            let (count, partitions, state) = describe(&mut raw, &group);
            count == 3 && partitions == vec![0, 1, 2, 3, 4, 5] && state == "Stable"
        },
    );
    let refs: Vec<&Seen> = seen.iter().collect();
    wait_until("all 600 records consumed", Duration::from_secs(60), || {
        all_seen(&refs, 600).0
    });

    members[2].kill9();
    produce_range(&broker, &topic, 6, 600..1200).await;
    wait_until(
        &format!("two {client} members owning all six partitions"),
        Duration::from_secs(90),
        || {
            let (count, partitions, state) = describe(&mut raw, &group);
            count == 2 && partitions == vec![0, 1, 2, 3, 4, 5] && state == "Stable"
        },
    );
    wait_until("all 1200 records consumed", Duration::from_secs(60), || {
        all_seen(&refs, 1200).0
    });
    let (_, duplicates) = all_seen(&refs, 1200);
    eprintln!("{client}: 1200 records, {duplicates} duplicates (allowed after the crash)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_group_survives_a_killed_member() {
    crate::common::require_python_module("kafka");
    three_members_one_killed("kafka-python", || {
        let mut c = Command::new("python3");
        c.arg(clients_dir().join("kafka_python_member.py"));
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_group_survives_a_killed_member() {
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-node/node_modules");
    assert!(
        modules.join("kafkajs").is_dir(),
        "kafkajs is missing from {}: run the tests with ./scripts/test.sh, which installs it",
        modules.display()
    );
    three_members_one_killed("kafkajs", || {
        let mut c = Command::new("node");
        c.arg(clients_dir().join("kafkajs_member.js"))
            .env("NODE_PATH", &modules);
        c
    })
    .await;
}
