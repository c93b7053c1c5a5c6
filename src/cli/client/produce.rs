//! `strata produce`: reads stdin line by line and produces each line as one
//! record.
//!
//! Lines are enqueued in input order into one librdkafka producer, which
//! batches them (`linger.ms`) and compresses batches. The command only ends
//! after every record has a delivery report, and fails if any record was not
//! delivered. The topic must already exist; nothing is auto-created.

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, BufReader};

use super::{Acks, CliContext, ConnectArgs, fetch_topic, parse_separator};

/// Produce records read from stdin, one record per line.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to produce to (it must already exist)
    pub topic: String,
    /// Split each line at the first SEP into key and value; '\t' and '\n'
    /// escapes are understood. Without it records have no key
    #[arg(long, value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: Option<String>,
    /// Send every record to this partition instead of letting the key pick one
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Acknowledgement a record needs before it counts as delivered
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Compression applied to each record batch
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// How long to wait for more records before sending a batch, in milliseconds
    #[arg(long, default_value_t = 5, value_name = "MS", value_parser = clap::value_parser!(u32).range(0..=900_000))]
    pub linger_ms: u32,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Record batch compression codec (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// No compression
    None,
    /// gzip: small output, slowest
    Gzip,
    /// Snappy: fast, moderate ratio
    Snappy,
    /// LZ4: fast, moderate ratio
    Lz4,
    /// Zstandard: good ratio at good speed
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Runs `strata produce`.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    produce_from(&args, BufReader::new(tokio::io::stdin())).await
}

/// Produces every line of `input` as `run` does with stdin.
pub async fn produce_from(
    args: &ProduceArgs,
    mut input: impl AsyncBufRead + Unpin,
) -> anyhow::Result<()> {
    let topic = fetch_topic(&args.connect, &args.topic).await?;
    if let Some(partition) = args.partition {
        topic.require_partition(partition)?;
    }

    let producer: FutureProducer<CliContext> = args
        .connect
        .client_config()
        .set("acks", args.acks.as_str())
        .set("compression.type", args.compression.as_str())
        .set("linger.ms", args.linger_ms.to_string())
        .create_with_context(CliContext)
        .context("could not create the kafka producer")?;

    let mut deliveries = Deliveries::default();
    let mut line = Vec::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .await
            .context("could not read the input")?
            == 0
        {
            break;
        }
        line_number += 1;
        let record = strip_newline(&line);
        let (key, value) = match &args.key_separator {
            None => (None, record),
            Some(sep) => match split_once(record, sep.as_bytes()) {
                Some((key, value)) => (Some(key), value),
                None => {
                    deliveries.wait_all().await;
                    deliveries.report(&args.topic)?;
                    bail!(
                        "line {line_number} has no key separator {sep:?}; with --key-separator every line needs a key, the separator, then the value"
                    );
                }
            },
        };
        let mut record = FutureRecord::<[u8], [u8]>::to(&args.topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        deliveries.enqueue(&producer, record).await;
    }
    deliveries.wait_all().await;
    deliveries.report(&args.topic)
}

/// Delivery reports still outstanding, and the tally of those received.
#[derive(Default)]
struct Deliveries {
    pending: FuturesUnordered<DeliveryFuture>,
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Deliveries {
    /// Enqueues `record`, waiting for earlier deliveries while librdkafka's
    /// local queue is full.
    async fn enqueue(
        &mut self,
        producer: &FutureProducer<CliContext>,
        mut record: FutureRecord<'_, [u8], [u8]>,
    ) {
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match self.pending.next().await {
                        Some(outcome) => self.tally(outcome),
                        None => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                    }
                }
                Err((err, _)) => {
                    self.fail(err.to_string());
                    break;
                }
            }
        }
        // Collect reports that already arrived so `pending` stays small.
        while let Some(Some(outcome)) = futures::FutureExt::now_or_never(self.pending.next()) {
            self.tally(outcome);
        }
    }

    async fn wait_all(&mut self) {
        while let Some(outcome) = self.pending.next().await {
            self.tally(outcome);
        }
    }

    fn tally(&mut self, outcome: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>) {
        match outcome {
            Ok(Ok(_)) => self.delivered += 1,
            Ok(Err((err, _))) => self.fail(err.to_string()),
            Err(_) => self.fail("the producer shut down before reporting delivery".to_owned()),
        }
    }

    fn fail(&mut self, error: String) {
        self.failed += 1;
        self.first_error.get_or_insert(error);
    }

    /// Prints the summary to stderr; an error if any record was not delivered.
    fn report(&self, topic: &str) -> anyhow::Result<()> {
        eprintln!("produced {} records to {topic}", self.delivered);
        match &self.first_error {
            None => Ok(()),
            Some(first) => bail!(
                "{} of {} records were not delivered to '{topic}'; first error: {first}",
                self.failed,
                self.failed + self.delivered
            ),
        }
    }
}

/// The line without its trailing `\n` or `\r\n`.
fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits `haystack` around the first occurrence of a non-empty `separator`.
fn split_once<'a>(haystack: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = haystack
        .windows(separator.len())
        .position(|window| window == separator)?;
    Some((&haystack[..at], &haystack[at + separator.len()..]))
}

#[cfg(test)]
mod tests {
    use super::{split_once, strip_newline};

    #[test]
    fn lines_lose_only_their_line_ending() {
        assert_eq!(strip_newline(b"a b\r\n"), b"a b");
        assert_eq!(strip_newline(b"a b\n"), b"a b");
        assert_eq!(strip_newline(b"last"), b"last");
        assert_eq!(strip_newline(b"\n"), b"");
    }

    #[test]
    fn key_is_split_at_the_first_separator() {
        assert_eq!(
            split_once(b"k::v::w", b"::"),
            Some((&b"k"[..], &b"v::w"[..]))
        );
        assert_eq!(split_once(b"::v", b"::"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_once(b"no separator", b"\t"), None);
    }
}
