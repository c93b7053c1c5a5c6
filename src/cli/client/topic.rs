//! `strata topic`: create, list, describe and delete topics.
//!
//! Uses the standard Kafka admin APIs (CreateTopics, DeleteTopics,
//! DescribeConfigs) and Metadata, so it works against any Kafka-compatible
//! cluster. Every per-topic failure the broker reports becomes an error that
//! names the topic and says what to change.

use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigEntry, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication, TopicResult,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{
    CliContext, ConnectArgs, fetch_topic, find_topic, kafka_reason, list_topics, print_stdout,
};

/// How long the brokers get to finish an admin operation.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Manage topics.
#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic
    Create {
        /// Name of the topic to create
        name: String,
        /// Number of partitions
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Number of replicas per partition (cannot exceed the number of brokers)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        replication_factor: i32,
        /// Topic config override, e.g. --config retention.ms=86400000 (repeatable)
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List every topic name, one per line, sorted
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a topic's partitions, their leaders, and its configs
    Describe {
        /// Name of the topic to describe
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a topic and all of its records
    Delete {
        /// Name of the topic to delete
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Runs one `strata topic` subcommand.
pub async fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            connect,
        } => create(&connect, &name, partitions, replication_factor, &configs).await,
        TopicCommand::List { connect } => list(&connect).await,
        TopicCommand::Describe { name, connect } => describe(&connect, &name).await,
        TopicCommand::Delete { name, connect } => delete(&connect, &name).await,
    }
}

fn admin_client(connect: &ConnectArgs) -> anyhow::Result<AdminClient<CliContext>> {
    connect
        .client_config()
        .create_with_context(CliContext)
        .context("could not create the kafka admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT))
}

/// Creates `name`; also used by `strata bench` for its own topic.
pub(crate) async fn create_topic(
    connect: &ConnectArgs,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(String, String)],
) -> Result<(), TopicError> {
    let admin = admin_client(connect).map_err(TopicError::Request)?;
    let topic = configs.iter().fold(
        NewTopic::new(
            name,
            partitions,
            TopicReplication::Fixed(replication_factor),
        ),
        |topic, (key, value)| topic.set(key, value),
    );
    let results = admin
        .create_topics([&topic], &admin_options())
        .await
        .map_err(|err| TopicError::Request(request_failed(&err, "create", name)))?;
    single_result(results, name)
}

/// Error for an admin request that got no per-topic answer.
fn request_failed(err: &KafkaError, action: &str, name: &str) -> anyhow::Error {
    let reason = kafka_reason(err);
    match err {
        KafkaError::AdminOp(
            RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut,
        ) => anyhow::anyhow!(
            "the cluster did not {action} topic '{name}' within {} s ({reason}); check that it is healthy and supports this request",
            ADMIN_TIMEOUT.as_secs()
        ),
        _ => anyhow::anyhow!("could not {action} topic '{name}': {reason}"),
    }
}

async fn create(
    connect: &ConnectArgs,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(String, String)],
) -> anyhow::Result<()> {
    // Also proves the brokers are reachable before the slower admin request.
    if find_topic(connect, name).await?.is_some() {
        bail!("topic '{name}' already exists");
    }
    create_topic(connect, name, partitions, replication_factor, configs)
        .await
        .map_err(|err| err.into_anyhow(name, "create"))?;
    print_stdout(&format!(
        "created topic '{name}' ({partitions} partitions, replication factor {replication_factor})\n"
    ))
}

async fn list(connect: &ConnectArgs) -> anyhow::Result<()> {
    let mut names: Vec<String> = list_topics(connect)
        .await?
        .into_iter()
        .map(|topic| topic.name)
        .collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        out.push_str(&name);
        out.push('\n');
    }
    print_stdout(&out)
}

async fn describe(connect: &ConnectArgs, name: &str) -> anyhow::Result<()> {
    let info = fetch_topic(connect, name).await?;
    // librdkafka 0.39 does not expose topic ids, so none is printed.
    let mut out = format!(
        "topic: {}\npartitions: {}\n",
        info.name,
        info.partitions.len()
    );
    out.push_str(&format!(
        "{:<10} {:<8} {:<16} isr\n",
        "partition", "leader", "replicas"
    ));
    for p in &info.partitions {
        let leader = if p.leader < 0 {
            "none".to_owned()
        } else {
            p.leader.to_string()
        };
        let problem = p.error.map(|e| format!("  ({e})")).unwrap_or_default();
        out.push_str(&format!(
            "{:<10} {:<8} {:<16} {}{problem}\n",
            p.id,
            leader,
            join_ids(&p.replicas),
            join_ids(&p.isr)
        ));
    }
    print_stdout(&out)?;

    // Partitions are the essential answer; a broker without DescribeConfigs
    // support should not turn the whole command into a failure.
    match describe_configs(connect, name).await {
        Ok(configs) => print_stdout(&configs),
        Err(err) => {
            eprintln!("warning: could not read the configs of topic '{name}': {err:#}");
            Ok(())
        }
    }
}

async fn describe_configs(connect: &ConnectArgs, name: &str) -> anyhow::Result<String> {
    let admin = admin_client(connect)?;
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], &admin_options())
        .await
        .map_err(|err| {
            anyhow::anyhow!("describe configs request failed: {}", kafka_reason(&err))
        })?;
    let resource = match results.into_iter().next() {
        Some(Ok(resource)) => resource,
        Some(Err(code)) => bail!("the broker answered: {code}"),
        None => bail!("the broker returned no config resource"),
    };
    let mut entries = resource.entries;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::from("configs:\n");
    for entry in &entries {
        let value = match (&entry.value, entry.is_sensitive) {
            (_, true) => "<sensitive>",
            (Some(value), false) => value.as_str(),
            (None, false) => "<null>",
        };
        out.push_str(&format!(
            "  {}={value}  ({})\n",
            entry.name,
            config_origin(entry)
        ));
    }
    Ok(out)
}

/// Where a config value comes from, as the user thinks of it.
fn config_origin(entry: &ConfigEntry) -> &'static str {
    match entry.source {
        ConfigSource::DynamicTopic => "override",
        ConfigSource::DynamicBroker
        | ConfigSource::DynamicDefaultBroker
        | ConfigSource::StaticBroker => "broker setting",
        ConfigSource::Default => "default",
        ConfigSource::Unknown if entry.is_default => "default",
        ConfigSource::Unknown => "override",
    }
}

async fn delete(connect: &ConnectArgs, name: &str) -> anyhow::Result<()> {
    // Also proves the brokers are reachable before the slower admin request.
    fetch_topic(connect, name).await?;
    let admin = admin_client(connect)?;
    let results = admin
        .delete_topics(&[name], &admin_options())
        .await
        .map_err(|err| request_failed(&err, "delete", name))?;
    single_result(results, name).map_err(|err| err.into_anyhow(name, "delete"))?;
    print_stdout(&format!("deleted topic '{name}'\n"))
}

/// Why a create or delete of one topic failed.
#[derive(Debug)]
pub(crate) enum TopicError {
    /// The broker rejected the operation for this topic.
    Rejected(RDKafkaErrorCode),
    /// The request itself failed (unreachable broker, timeout, ...).
    Request(anyhow::Error),
}

impl TopicError {
    /// Turns the failure into a message that says what to change.
    pub(crate) fn into_anyhow(self, name: &str, action: &str) -> anyhow::Error {
        let code = match self {
            TopicError::Request(err) => return err,
            TopicError::Rejected(code) => code,
        };
        match code {
            RDKafkaErrorCode::TopicAlreadyExists => {
                anyhow::anyhow!("topic '{name}' already exists")
            }
            RDKafkaErrorCode::UnknownTopicOrPartition => {
                anyhow::anyhow!("topic '{name}' does not exist")
            }
            RDKafkaErrorCode::InvalidTopic => anyhow::anyhow!(
                "'{name}' is not a valid topic name; use at most 249 letters, digits, '.', '_' or '-'"
            ),
            RDKafkaErrorCode::InvalidPartitions => {
                anyhow::anyhow!(
                    "invalid partition count for topic '{name}'; use --partitions 1 or more"
                )
            }
            RDKafkaErrorCode::InvalidReplicationFactor => anyhow::anyhow!(
                "invalid replication factor for topic '{name}'; --replication-factor cannot exceed the number of brokers"
            ),
            RDKafkaErrorCode::InvalidConfig => anyhow::anyhow!(
                "the broker rejected a config of topic '{name}'; check the --config keys and values"
            ),
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed => {
                anyhow::anyhow!("not authorized to {action} topic '{name}'")
            }
            other => anyhow::anyhow!("could not {action} topic '{name}': {other}"),
        }
    }
}

/// Extracts the outcome for `name` from a one-topic admin response.
fn single_result(results: Vec<TopicResult>, name: &str) -> Result<(), TopicError> {
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, code))) => Err(TopicError::Rejected(code)),
        None => Err(TopicError::Request(anyhow::anyhow!(
            "the broker returned no result for topic '{name}'"
        ))),
    }
}

fn join_ids(ids: &[i32]) -> String {
    let ids: Vec<String> = ids.iter().map(i32::to_string).collect();
    ids.join(",")
}

/// clap parser for `--config KEY=VALUE`.
pub(super) fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "expected KEY=VALUE, e.g. retention.ms=86400000, got '{raw}'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_key_value;

    #[test]
    fn config_pairs_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("cleanup.policy=compact"),
            Ok(("cleanup.policy".to_owned(), "compact".to_owned()))
        );
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_key_value("retention.ms").is_err());
        assert!(parse_key_value("=1").is_err());
    }
}
