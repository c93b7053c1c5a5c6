//! The `strata` command line: `serve` runs a broker; the other subcommands
//! are Kafka clients (librdkafka) that work against any Kafka-compatible
//! broker.

mod serve;

use clap::{Parser, Subcommand};

/// Strata: a Kafka-compatible broker that keeps every acknowledged byte in object storage.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker.
    Serve(serve::ServeArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
    }
}
