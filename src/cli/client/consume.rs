//! `strata consume`: prints a topic's records to stdout, one line per record.
//!
//! Partitions are assigned directly from metadata with explicit start offsets;
//! no consumer group is joined and no offset is ever committed, so this works
//! against brokers without group support and leaves no trace on the cluster.
//! Records of one partition are printed in offset order; partitions interleave.
//! Output is buffered and flushed whenever no record is immediately ready, on
//! exit and on Ctrl-C; a closed stdout pipe ends the command without error.

use std::io::{BufWriter, Write};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::FutureExt as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{CliContext, ConnectArgs, fetch_topic, parse_separator};

/// librdkafka refuses `assign()` without a `group.id`. The group is never
/// joined and nothing is committed under it.
const PLACEHOLDER_GROUP_ID: &str = "strata-cli-consume";

/// Print records of a topic to stdout, one line per record.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read
    pub topic: String,
    /// Where to start in every partition read: 'beginning', 'end' (only records
    /// produced from now on) or an offset number
    #[arg(long, default_value = "beginning", value_name = "beginning|end|OFFSET", value_parser = parse_start)]
    pub from: Start,
    /// Read only this partition (default: every partition of the topic)
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Exit after printing this many records
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_messages: Option<u64>,
    /// Exit after this many milliseconds without a new record (0 = wait forever)
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub idle_timeout_ms: u64,
    /// Print each record's key before its value ("null" when it has none)
    #[arg(long)]
    pub print_key: bool,
    /// Print each record's partition and offset before its value
    #[arg(long)]
    pub print_offset: bool,
    /// Separator written after each printed field; '\t' and '\n' escapes are understood
    #[arg(long, default_value = r"\t", value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where reading starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record still retained.
    Beginning,
    /// The next record produced after the command starts.
    End,
    /// This offset; it must exist in every partition read.
    Offset(i64),
}

/// Runs `strata consume` until `--max-messages`, `--idle-timeout-ms`, Ctrl-C
/// or a closed stdout.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    consume_into(&args, std::io::stdout()).await
}

/// Writes records to `out` as `run` does to stdout.
pub async fn consume_into(args: &ConsumeArgs, out: impl Write) -> anyhow::Result<()> {
    let consumer = assign(args).await?;
    let result = print_records(args, &consumer, out).await;
    // Dropping a consumer blocks while librdkafka closes it.
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .context("consumer shutdown thread panicked")?;
    result
}

/// Creates a consumer and assigns it the requested partitions.
async fn assign(args: &ConsumeArgs) -> anyhow::Result<StreamConsumer<CliContext>> {
    let topic = fetch_topic(&args.connect, &args.topic).await?;
    let partitions: Vec<i32> = match args.partition {
        None => topic.partitions.iter().map(|p| p.id).collect(),
        Some(wanted) => {
            topic.require_partition(wanted)?;
            vec![wanted]
        }
    };
    let (offset, reset) = match args.from {
        Start::Beginning => (Offset::Beginning, "earliest"),
        Start::End => (Offset::End, "latest"),
        // "error" makes an out-of-range offset a visible error, not a silent jump.
        Start::Offset(n) => (Offset::Offset(n), "error"),
    };
    let consumer: StreamConsumer<CliContext> = args
        .connect
        .client_config()
        .set("group.id", PLACEHOLDER_GROUP_ID)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .create_with_context(CliContext)
        .context("could not create the kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment
            .add_partition_offset(&args.topic, partition, offset)
            .with_context(|| format!("invalid start offset {offset:?}"))?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("could not assign the partitions of topic '{}'", args.topic))?;
    Ok(consumer)
}

async fn print_records(
    args: &ConsumeArgs,
    consumer: &StreamConsumer<CliContext>,
    out: impl Write,
) -> anyhow::Result<()> {
    // Resolves on Ctrl-C only; if no handler can be installed, never.
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let mut interrupted = std::pin::pin!(interrupted);
    let idle_timeout =
        (args.idle_timeout_ms > 0).then(|| Duration::from_millis(args.idle_timeout_ms));
    let mut out = BufWriter::new(out);
    let mut printed = 0u64;
    let mut last_warning = String::new();
    while args.max_messages.is_none_or(|max| printed < max) {
        // Polled on every record too, so a busy stream still sees Ctrl-C.
        if interrupted.as_mut().now_or_never().is_some() {
            break;
        }
        let next = match consumer.recv().now_or_never() {
            Some(next) => next,
            None => {
                // Nothing ready: show what we have before waiting.
                if !flushed(out.flush())? {
                    return Ok(());
                }
                let wait = async {
                    match idle_timeout {
                        Some(limit) => tokio::time::timeout(limit, consumer.recv()).await.ok(),
                        None => Some(consumer.recv().await),
                    }
                };
                tokio::select! {
                    biased;
                    () = interrupted.as_mut() => break,
                    next = wait => match next {
                        Some(next) => next,
                        None => break, // idle for --idle-timeout-ms
                    },
                }
            }
        };
        match next {
            Ok(message) => {
                let line = format_record(args, &message);
                if !flushed(out.write_all(&line))? {
                    return Ok(());
                }
                printed += 1;
            }
            Err(err) => {
                check_fatal(args, consumer, &err)?;
                let warning = err.to_string();
                if warning != last_warning {
                    eprintln!("warning: {warning}");
                    last_warning = warning;
                }
            }
        }
    }
    flushed(out.flush()).map(|_| ())
}

/// Fails on errors that retrying cannot fix.
fn check_fatal(
    args: &ConsumeArgs,
    consumer: &StreamConsumer<CliContext>,
    err: &KafkaError,
) -> anyhow::Result<()> {
    if let (Start::Offset(n), Some(RDKafkaErrorCode::AutoOffsetReset)) =
        (args.from, err.rdkafka_error_code())
    {
        bail!(
            "offset {n} is out of range in a partition of topic '{}'; use an offset that exists (see `strata topic describe`) or --from beginning",
            args.topic
        );
    }
    if let Some((code, reason)) = consumer.client().fatal_error() {
        bail!("the consumer hit a fatal error: {reason} ({code})");
    }
    if matches!(err, KafkaError::MessageConsumptionFatal(_)) {
        bail!("the consumer hit a fatal error: {err}");
    }
    Ok(())
}

/// One output line: `[partition SEP offset SEP] [key SEP] value \n`.
fn format_record(args: &ConsumeArgs, message: &impl Message) -> Vec<u8> {
    let sep = args.key_separator.as_bytes();
    let payload = message.payload();
    let mut line = Vec::with_capacity(payload.map_or(0, <[u8]>::len) + 32);
    if args.print_offset {
        line.extend_from_slice(message.partition().to_string().as_bytes());
        line.extend_from_slice(sep);
        line.extend_from_slice(message.offset().to_string().as_bytes());
        line.extend_from_slice(sep);
    }
    if args.print_key {
        push_lossy(&mut line, message.key());
        line.extend_from_slice(sep);
    }
    push_lossy(&mut line, payload);
    line.push(b'\n');
    line
}

/// Appends `bytes` as UTF-8 (invalid sequences become U+FFFD), or `null`.
fn push_lossy(line: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => line.extend_from_slice(String::from_utf8_lossy(bytes).as_bytes()),
        None => line.extend_from_slice(b"null"),
    }
}

/// `Ok(true)` if the write worked, `Ok(false)` if stdout's reader went away.
fn flushed(result: std::io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err).context("could not write to stdout"),
    }
}

/// clap parser for `--from`.
fn parse_start(raw: &str) -> Result<Start, String> {
    match raw {
        "beginning" => Ok(Start::Beginning),
        "end" => Ok(Start::End),
        number => match number.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(Start::Offset(offset)),
            _ => Err(format!(
                "expected 'beginning', 'end' or an offset of 0 or more, got '{raw}'"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{Start, parse_start};

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("end"), Ok(Start::End));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert!(parse_start("-1").is_err());
        assert!(parse_start("latest").is_err());
    }
}
