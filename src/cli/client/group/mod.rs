//! `strata group`: list, describe, reset the offsets of, and delete consumer
//! groups.
//!
//! Uses only standard Kafka APIs through librdkafka (ListGroups,
//! DescribeGroups, OffsetFetch, OffsetCommit, ListOffsets, DeleteGroups), so it
//! works against any Kafka-compatible cluster. The CLI never joins a group:
//! committed offsets are read and written by a consumer that carries the
//! group's id but neither subscribes nor assigns, so its commits use
//! generation -1, which brokers accept only while the group has no members.
//! Every librdkafka call here blocks, so each command's cluster work runs on
//! one blocking thread, where its consumer is also closed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::groups::GroupInfo;
use rdkafka::{Offset, TopicPartitionList};

mod reset;

use super::{CliContext, ConnectArgs, fetch_topic, kafka_reason, list_topics, print_stdout};
use reset::{ResetTo, reset_offsets};

/// How long one group, offset or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Manage consumer groups.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List every consumer group with its state and protocol type, sorted by name
    List {
        /// Show only groups in this state, e.g. Stable or Empty (case-insensitive)
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a group's members and, per partition, its committed offset and lag
    Describe {
        /// Name of the group to describe
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move a group's committed offsets on one topic (the group must have no members)
    ResetOffsets {
        /// Name of the group whose offsets to reset
        group: String,
        /// Topic whose offsets to reset
        #[arg(long)]
        topic: String,
        /// Reset only this partition (default: every partition of the topic)
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        partition: Option<i32>,
        #[command(flatten)]
        to: ResetTo,
        /// Commit the new offsets; without this flag only the plan is printed
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a group and its committed offsets (the group must have no members)
    Delete {
        /// Name of the group to delete
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Runs one `strata group` subcommand.
pub async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List { state, connect } => list(&connect, state.as_deref()).await,
        GroupCommand::Describe { group, connect } => describe(&connect, &group).await,
        GroupCommand::ResetOffsets {
            group,
            topic,
            partition,
            to,
            execute,
            connect,
        } => reset_offsets(&connect, &group, &topic, partition, to.target(), execute).await,
        GroupCommand::Delete { group, connect } => delete(&connect, &group).await,
    }
}

/// A group as DescribeGroups reports it.
#[derive(Debug)]
struct Group {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    id: String,
    client_id: String,
    host: String,
    /// Assigned `(topic, partition)`s; empty unless the protocol type is
    /// "consumer" and the group is not rebalancing.
    assignment: Vec<(String, i32)>,
}

impl Group {
    fn from_info(info: &GroupInfo) -> Self {
        let decode = info.protocol_type() == "consumer";
        let members = info.members().iter().map(|member| Member {
            id: member.id().to_owned(),
            client_id: member.client_id().to_owned(),
            host: member.client_host().to_owned(),
            assignment: match member.assignment() {
                Some(bytes) if decode => crate::protocol::consumer::decode_assignment(bytes)
                    .unwrap_or_else(|err| {
                        eprintln!(
                            "warning: ignoring the assignment of member '{}': {err:#}",
                            member.id()
                        );
                        Vec::new()
                    }),
                _ => Vec::new(),
            },
        });
        Group {
            state: info.state().to_owned(),
            protocol_type: info.protocol_type().to_owned(),
            protocol: info.protocol().to_owned(),
            members: members.collect(),
        }
    }

    /// Fails unless the group is empty, the only time a non-member may
    /// change its offsets.
    fn ensure_inactive(&self, name: &str) -> anyhow::Result<()> {
        if self.members.is_empty() && matches!(self.state.as_str(), "Empty" | "Dead" | "") {
            return Ok(());
        }
        bail!(
            "group '{name}' is {} with {} member(s); stop its consumers first, offsets can only be reset while the group is empty",
            self.state,
            self.members.len()
        )
    }
}

/// A consumer that carries a group's id (if any) but never joins the group;
/// every method blocks.
struct Client {
    consumer: BaseConsumer<CliContext>,
    /// The group whose id the consumer carries ("" for none).
    group_id: String,
    brokers: String,
}

/// Runs `work` with a [`Client`] on a blocking thread, where the consumer is
/// also closed (that blocks too).
async fn with_client<T: Send + 'static>(
    connect: &ConnectArgs,
    group: Option<&str>,
    work: impl FnOnce(&Client) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let mut config = connect.client_config();
    if let Some(group) = group {
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
    }
    let group_id = group.unwrap_or_default().to_owned();
    let brokers = connect.brokers.clone();
    let task = tokio::task::spawn_blocking(move || {
        let consumer = config
            .create_with_context(CliContext)
            .context("could not create the kafka consumer")?;
        work(&Client {
            consumer,
            group_id,
            brokers,
        })
    });
    task.await.context("group request thread panicked")?
}

impl Client {
    /// Every group the brokers know (`name`: only that one), by name.
    fn groups(&self, name: Option<&str>) -> anyhow::Result<BTreeMap<String, Group>> {
        let list = self.consumer.fetch_group_list(name, REQUEST_TIMEOUT);
        let list = list.map_err(|err| self.failed(&err, "list consumer groups"))?;
        let groups = list.groups().iter();
        Ok(groups
            .map(|info| (info.name().to_owned(), Group::from_info(info)))
            .collect())
    }

    /// The group named `name`, or `None` if no broker knows it.
    fn find_group(&self, name: &str) -> anyhow::Result<Option<Group>> {
        let group = self.groups(Some(name))?.remove(name);
        Ok(group.filter(|group| group.state != "Dead"))
    }

    /// This client's group's committed offset for each of `partitions`
    /// (`None`: no commit), by topic and partition.
    fn committed(&self, partitions: &[(String, i32)]) -> anyhow::Result<OffsetMap> {
        let mut query = TopicPartitionList::new();
        for (topic, partition) in partitions {
            query.add_partition(topic, *partition);
        }
        let answer = self.consumer.committed_offsets(query, REQUEST_TIMEOUT);
        let action = format!("read the committed offsets of group '{}'", self.group_id);
        let answer = answer.map_err(|err| self.failed(&err, &action))?;
        let offsets = answer.elements().into_iter().map(|elem| {
            let offset = match (elem.error(), elem.offset()) {
                (Ok(()), Offset::Offset(offset)) => Some(offset),
                _ => None,
            };
            ((elem.topic().to_owned(), elem.partition()), offset)
        });
        Ok(offsets.collect())
    }

    /// The oldest retained offset and the log end offset of a partition.
    fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        let marks = self
            .consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT);
        marks.map_err(|err| self.failed(&err, &format!("read the offsets of {topic}/{partition}")))
    }

    /// Per partition, the offset of the first record at or after `millis`
    /// (`None`: no such record).
    fn offsets_for_time(
        &self,
        partitions: &[(String, i32)],
        millis: i64,
    ) -> anyhow::Result<OffsetMap> {
        let mut query = TopicPartitionList::new();
        for (topic, partition) in partitions {
            query
                .add_partition_offset(topic, *partition, Offset::Offset(millis))
                .with_context(|| format!("invalid timestamp {millis}"))?;
        }
        let action = "look up offsets by time";
        let answer = self.consumer.offsets_for_times(query, REQUEST_TIMEOUT);
        let answer = answer.map_err(|err| self.failed(&err, action))?;
        let mut offsets = BTreeMap::new();
        for elem in answer.elements() {
            elem.error().map_err(|err| self.failed(&err, action))?;
            let offset = match elem.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            offsets.insert((elem.topic().to_owned(), elem.partition()), offset);
        }
        Ok(offsets)
    }

    /// Error for a failed request, saying what to check or do.
    fn failed(&self, err: &KafkaError, action: &str) -> anyhow::Error {
        request_failed(err, action, &self.brokers)
    }
}

/// Committed or looked-up offsets by `(topic, partition)`.
type OffsetMap = BTreeMap<(String, i32), Option<i64>>;

/// Error for a failed group request, saying what to check or do.
fn request_failed(err: &KafkaError, action: &str, brokers: &str) -> anyhow::Error {
    let code = match err {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    let reason = kafka_reason(err);
    match code {
        Some(RDKafkaErrorCode::UnsupportedFeature) => anyhow!(
            "could not {action}: the cluster at '{brokers}' does not support consumer groups ({reason})"
        ),
        Some(
            RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::WaitingForCoordinator
            | RDKafkaErrorCode::CoordinatorNotAvailable,
        ) => anyhow!(
            "could not {action} ({reason}); is a broker with consumer group support listening at '{brokers}'? set --brokers or STRATA_BROKERS"
        ),
        Some(
            RDKafkaErrorCode::NonEmptyGroup
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::RebalanceInProgress,
        ) => anyhow!("could not {action}: the group has active members; stop its consumers first"),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
            anyhow!("could not {action}: not authorized for this group")
        }
        _ => anyhow!("could not {action}: {reason}"),
    }
}

async fn list(connect: &ConnectArgs, state: Option<&str>) -> anyhow::Result<()> {
    let groups = with_client(connect, None, |client| client.groups(None)).await?;
    let rows: Vec<Vec<String>> = groups
        .into_iter()
        .filter(|(_, group)| state.is_none_or(|s| group.state.eq_ignore_ascii_case(s)))
        .map(|(name, group)| vec![name, group.state, or_dash(group.protocol_type)])
        .collect();
    if rows.is_empty() {
        eprintln!("no consumer groups found");
        return Ok(());
    }
    print_stdout(&render_table("GROUP STATE PROTOCOL-TYPE", &rows))
}

async fn describe(connect: &ConnectArgs, name: &str) -> anyhow::Result<()> {
    // Also proves the brokers are reachable, with the shared error message.
    let topics = list_topics(connect).await?;
    let (group, rows) = with_client(connect, Some(name), move |client| {
        let name = client.group_id.as_str();
        let group = client.find_group(name)?;
        let group = group.ok_or_else(|| anyhow!("group '{name}' does not exist"))?;
        let mut owners = BTreeMap::new();
        for member in &group.members {
            for assigned in &member.assignment {
                owners.insert(assigned.clone(), member);
            }
        }
        let mut wanted: Vec<(String, i32)> = owners.keys().cloned().collect();
        for topic in &topics {
            wanted.extend(topic.partitions.iter().map(|p| (topic.name.clone(), p.id)));
        }
        wanted.sort();
        wanted.dedup();
        let mut rows = Vec::new();
        for ((topic, partition), offset) in client.committed(&wanted)? {
            let owner = owners.get(&(topic.clone(), partition)).copied();
            if offset.is_none() && owner.is_none() {
                continue;
            }
            let log_end = match client.watermarks(&topic, partition) {
                Ok((_, high)) => Some(high),
                Err(err) => {
                    eprintln!("warning: {err:#}");
                    None
                }
            };
            let lag = offset.zip(log_end).map(|(offset, end)| end - offset);
            rows.push(vec![
                topic,
                partition.to_string(),
                offset.map_or_else(dash, |offset| offset.to_string()),
                log_end.map_or_else(dash, |end| end.to_string()),
                lag.map_or_else(dash, |lag| lag.to_string()),
                owner.map_or_else(dash, |m| m.id.clone()),
                owner.map_or_else(dash, |m| m.host.clone()),
                owner.map_or_else(dash, |m| m.client_id.clone()),
            ]);
        }
        Ok((group, rows))
    })
    .await?;

    let mut out = format!(
        "group: {name}\nstate: {}\nprotocol type: {}\nprotocol: {}\nmembers: {}\n\n",
        group.state,
        or_dash(group.protocol_type),
        or_dash(group.protocol),
        group.members.len()
    );
    if rows.is_empty() {
        out.push_str("no committed offsets and no assigned partitions\n");
    } else {
        let header = "TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID";
        out.push_str(&render_table(header, &rows));
    }
    print_stdout(&out)
}

async fn delete(connect: &ConnectArgs, group: &str) -> anyhow::Result<()> {
    // Looking the group up first gives clear answers, and keeps clusters
    // without group support away from librdkafka's DeleteGroups path, which
    // aborts the process when the coordinator does not offer that API.
    let group_name = group.to_owned();
    let found = with_client(connect, None, move |client| client.find_group(&group_name)).await?;
    let Some(found) = found else {
        bail!("group '{group}' does not exist");
    };
    if !found.members.is_empty() {
        bail!("group '{group}' still has members; stop its consumers first");
    }
    let admin: AdminClient<CliContext> = connect
        .client_config()
        .create_with_context(CliContext)
        .context("could not create the kafka admin client")?;
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let action = format!("delete group '{group}'");
    let results = admin.delete_groups(&[group], &options).await;
    let results = results.map_err(|err| request_failed(&err, &action, &connect.brokers))?;
    match results.into_iter().next() {
        Some(Ok(_)) => print_stdout(&format!("deleted group '{group}'\n")),
        Some(Err((_, RDKafkaErrorCode::GroupIdNotFound))) => {
            bail!("group '{group}' does not exist")
        }
        Some(Err((_, code))) => {
            let err = KafkaError::AdminOp(code);
            Err(request_failed(&err, &action, &connect.brokers))
        }
        None => bail!("the broker returned no result for group '{group}'"),
    }
}

/// Left-aligned columns separated by two spaces under a header of
/// space-separated column names.
fn render_table(header: &str, rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.split(' ').map(str::to_owned).collect();
    let mut widths: Vec<usize> = header.iter().map(|name| name.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells = row.iter().zip(&widths);
        let cells: Vec<String> = cells.map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn dash() -> String {
    "-".to_owned()
}

fn or_dash(text: String) -> String {
    if text.is_empty() { dash() } else { text }
}

#[cfg(test)]
mod tests {
    use super::{Group, Member, render_table};

    #[test]
    fn only_empty_groups_may_be_reset() {
        let group = |state: &str, members: usize| Group {
            state: state.to_owned(),
            protocol_type: "consumer".to_owned(),
            protocol: "range".to_owned(),
            members: (0..members)
                .map(|i| Member {
                    id: format!("m{i}"),
                    client_id: "c".to_owned(),
                    host: "/127.0.0.1".to_owned(),
                    assignment: Vec::new(),
                })
                .collect(),
        };
        assert!(group("Empty", 0).ensure_inactive("g").is_ok());
        assert!(group("Dead", 0).ensure_inactive("g").is_ok());
        let err = group("Stable", 2)
            .ensure_inactive("g")
            .expect_err("active group");
        assert!(
            err.to_string().contains("stop its consumers first"),
            "{err}"
        );
        assert!(group("PreparingRebalance", 0).ensure_inactive("g").is_err());
    }

    #[test]
    fn tables_align_columns_under_the_header() {
        let rows = vec![vec!["orders".to_owned(), "0".to_owned(), "-".to_owned()]];
        assert_eq!(
            render_table("TOPIC P X", &rows),
            "TOPIC   P  X\norders  0  -\n"
        );
    }
}
