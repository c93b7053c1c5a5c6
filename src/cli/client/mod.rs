//! Client-side subcommands: `strata topic`, `strata group`, `strata produce`,
//! `strata consume` and `strata bench`.
//!
//! Everything here speaks the Kafka protocol through librdkafka (the `rdkafka`
//! crate) and never reaches into broker internals, so these commands work
//! against any Kafka-compatible cluster. This file holds what the commands
//! share: the connection flags, the librdkafka config builder, topic metadata
//! lookup, and forwarding of librdkafka's own logs to `tracing`.
//!
//! The CLI never creates a topic as a side effect: every client sets
//! `allow.auto.create.topics=false`, and only `topic create` and `bench` (for
//! its own topic) issue an explicit CreateTopics request.

pub mod bench;
pub mod bench_catch_up;
pub mod bench_load;
pub mod bench_probe;
pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How long a metadata lookup may take before the command gives up.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to find the cluster; flattened into every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Bootstrap brokers of any Kafka-compatible cluster, comma-separated
    #[arg(
        long,
        env = "STRATA_BROKERS",
        default_value = "localhost:9092",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub brokers: String,
}

impl ConnectArgs {
    /// librdkafka settings common to every client the CLI creates.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "strata-cli")
            .set("allow.auto.create.topics", "false")
            .set_log_level(RDKafkaLogLevel::Warning);
        config
    }

    /// Error for a failed first contact with the cluster, saying what to check.
    fn unreachable(&self, err: &KafkaError) -> anyhow::Error {
        anyhow::anyhow!(
            "could not fetch metadata from '{}' ({}); is a broker listening there? set --brokers or STRATA_BROKERS",
            self.brokers,
            kafka_reason(err)
        )
    }
}

/// The useful part of a librdkafka error: its code and description when it
/// has one, without the wrapper text repeated in the error's source chain.
pub(crate) fn kafka_reason(err: &KafkaError) -> String {
    let code = match err {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    code.map_or_else(|| err.to_string(), |code| code.to_string())
}

/// Acknowledgement level a producer waits for (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    /// Wait until every in-sync replica has the record (the durable choice)
    All,
    /// Wait for the partition leader only
    #[value(name = "1")]
    Leader,
    /// Do not wait at all (fire and forget; delivery errors go unnoticed)
    #[value(name = "0")]
    Zero,
}

impl Acks {
    /// The value librdkafka expects for `acks`.
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::Zero => "0",
        }
    }
}

/// Forwards librdkafka's internal log lines and client errors to `tracing`
/// (target `librdkafka`) instead of the `log` crate.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CliContext;

impl ClientContext for CliContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ConsumerContext for CliContext {}

/// One partition as reported by a Metadata response.
#[derive(Debug, Clone)]
pub(crate) struct PartitionInfo {
    pub id: i32,
    /// Broker id of the leader, -1 when there is none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Partition-level error, if the broker reported one.
    pub error: Option<RDKafkaErrorCode>,
}

/// One topic as reported by a Metadata response, partitions sorted by id.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    /// Topic-level error, e.g. unknown topic or not authorized.
    pub error: Option<RDKafkaErrorCode>,
}

impl TopicInfo {
    /// Fails with a helpful message unless the topic has `partition`.
    pub(crate) fn require_partition(&self, partition: i32) -> anyhow::Result<()> {
        if self.partitions.iter().any(|p| p.id == partition) {
            return Ok(());
        }
        anyhow::bail!(
            "partition {partition} does not exist in topic '{}', which has {} partitions (0 to {})",
            self.name,
            self.partitions.len(),
            self.partitions.len().saturating_sub(1)
        )
    }
}

/// Every topic in the cluster, as one Metadata request sees it.
pub(crate) async fn list_topics(connect: &ConnectArgs) -> anyhow::Result<Vec<TopicInfo>> {
    fetch_metadata(connect, None)
        .await?
        .map_err(|err| connect.unreachable(&err))
}

/// One topic's metadata, or `None` if the cluster does not know the topic.
pub(crate) async fn find_topic(
    connect: &ConnectArgs,
    topic: &str,
) -> anyhow::Result<Option<TopicInfo>> {
    let topics = match fetch_metadata(connect, Some(topic)).await? {
        Err(err) if is_unknown_topic(err.rdkafka_error_code()) => return Ok(None),
        Err(err) => return Err(connect.unreachable(&err)),
        Ok(topics) => topics,
    };
    let Some(info) = topics.into_iter().find(|info| info.name == topic) else {
        return Ok(None);
    };
    match info.error {
        None if info.partitions.is_empty() => Ok(None),
        None => Ok(Some(info)),
        Some(code) if is_unknown_topic(Some(code)) => Ok(None),
        Some(RDKafkaErrorCode::InvalidTopic) => {
            anyhow::bail!("'{topic}' is not a valid topic name")
        }
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            anyhow::bail!("not authorized to access topic '{topic}'")
        }
        Some(code) => anyhow::bail!("the cluster reports an error for topic '{topic}': {code}"),
    }
}

/// One topic's metadata; "topic 'x' does not exist" if the cluster lacks it.
pub(crate) async fn fetch_topic(connect: &ConnectArgs, topic: &str) -> anyhow::Result<TopicInfo> {
    find_topic(connect, topic).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "topic '{topic}' does not exist; create it with `strata topic create {topic}`"
        )
    })
}

/// Runs one Metadata request for `topic` (`None`: all topics) on a blocking
/// thread, since librdkafka's metadata call blocks. The outer error is only
/// for a panicked thread; the inner one is what the cluster said.
async fn fetch_metadata(
    connect: &ConnectArgs,
    topic: Option<&str>,
) -> anyhow::Result<Result<Vec<TopicInfo>, KafkaError>> {
    let config = connect.client_config();
    let wanted = topic.map(str::to_owned);
    let lookup = tokio::task::spawn_blocking(move || -> Result<Vec<TopicInfo>, KafkaError> {
        let client: BaseConsumer<CliContext> = config.create_with_context(CliContext)?;
        let metadata = client.fetch_metadata(wanted.as_deref(), METADATA_TIMEOUT)?;
        let mut topics = Vec::with_capacity(metadata.topics().len());
        for topic in metadata.topics() {
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions()
                .iter()
                .map(|p| PartitionInfo {
                    id: p.id(),
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                    error: p.error().map(RDKafkaErrorCode::from),
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            topics.push(TopicInfo {
                name: topic.name().to_owned(),
                partitions,
                error: topic.error().map(RDKafkaErrorCode::from),
            });
        }
        Ok(topics)
    });
    lookup.await.context("metadata lookup thread panicked")
}

fn is_unknown_topic(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    )
}

/// Writes `text` to stdout. A closed pipe (`strata topic list | head`) is not
/// an error: the reader simply wanted no more.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("could not write to stdout")
        }
        _ => Ok(()),
    }
}

/// clap parser for separators: accepts `\t`, `\n`, `\r` and `\\` escapes so
/// `--key-separator '\t'` works without shell quoting tricks.
pub(crate) fn parse_separator(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') | None => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    if out.is_empty() {
        return Err("the separator must not be empty".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::bench::BenchArgs;
    use super::consume::{ConsumeArgs, Start};
    use super::group::GroupCommand;
    use super::parse_separator;
    use super::produce::ProduceArgs;
    use super::topic::TopicCommand;

    /// The shape `strata` wires these commands into.
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        #[command(subcommand)]
        Topic(TopicCommand),
        #[command(subcommand)]
        Group(GroupCommand),
        Produce(ProduceArgs),
        Consume(ConsumeArgs),
        Bench(BenchArgs),
    }

    /// `main` may run any command on a spawned task; this fails to compile
    /// if a command future stops being `Send`.
    #[test]
    fn command_futures_are_send() {
        fn assert_send<A, F: std::future::Future + Send>(_: fn(A) -> F) {}
        assert_send(super::topic::run);
        assert_send(super::group::run);
        assert_send(super::produce::run);
        assert_send(super::consume::run);
        assert_send(super::bench::run);
    }

    #[test]
    fn command_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_parse_into_the_documented_values() {
        let cli = Cli::try_parse_from(["strata", "consume", "orders"]).expect("valid arguments");
        let Command::Consume(args) = cli.command else {
            panic!("parsed into the wrong subcommand");
        };
        assert_eq!(args.from, Start::Beginning);
        assert_eq!(args.key_separator, "\t");

        let cli = Cli::try_parse_from(["strata", "bench"]).expect("valid arguments");
        let Command::Bench(args) = cli.command else {
            panic!("parsed into the wrong subcommand");
        };
        assert_eq!(
            (args.topic.as_str(), args.rate, args.partitions),
            ("strata-bench", super::bench::Rate::PerSec(5000), 16)
        );
        let cli = Cli::try_parse_from(["strata", "bench", "--rate", "max", "--total-mb", "10"])
            .expect("valid arguments");
        let Command::Bench(args) = cli.command else {
            panic!("parsed into the wrong subcommand");
        };
        assert_eq!(
            (args.rate, args.total_mb),
            (super::bench::Rate::Max, Some(10))
        );
        let err = Cli::try_parse_from(["strata", "bench", "--rate", "fast"])
            .expect_err("not a rate")
            .to_string();
        assert!(err.contains("neither a positive number"), "{err}");
    }

    #[test]
    fn separator_escapes_are_decoded() {
        assert_eq!(parse_separator(r"\t").as_deref(), Ok("\t"));
        assert_eq!(parse_separator(r"a\\b").as_deref(), Ok(r"a\b"));
        assert_eq!(parse_separator(r"\x").as_deref(), Ok(r"\x"));
        assert_eq!(parse_separator(":").as_deref(), Ok(":"));
        assert!(parse_separator("").is_err());
    }
}
