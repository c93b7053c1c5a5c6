//! The `strata` command line: `serve` runs a broker; `export` reads a
//! broker's stores directly; `health` asks a broker's HTTP endpoint; the
//! other subcommands are Kafka clients (librdkafka) that work against any
//! Kafka-compatible broker.

mod backup;
pub mod client;
mod export;
mod health;
mod serve;
mod store;
mod user;

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
    Serve(Box<serve::ServeArgs>),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(client::topic::TopicCommand),
    /// List, describe, reset the offsets of, and delete consumer groups.
    #[command(subcommand)]
    Group(client::group::GroupCommand),
    /// Produce lines from stdin as records.
    Produce(client::produce::ProduceArgs),
    /// Print records of a topic.
    Consume(client::consume::ConsumeArgs),
    /// Produce benchmark (fixed rate, open loop, or --rate max) or catch-up read (--catch-up); prints JSON.
    Bench(client::bench::BenchArgs),
    /// Export a topic's sealed segments (Parquet), reading the broker's stores.
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Back the metadata store up (SQLite online, or pg_dump), holding every
    /// object the backup names until it can be restored.
    Backup(backup::BackupArgs),
    /// Put a metadata backup back in place, with every broker stopped.
    Restore(backup::RestoreArgs),
    /// Add, delete and list SCRAM users in the metadata store.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Check that a broker's HTTP endpoint reports it healthy (exit 0), for
    /// container healthchecks.
    Health(health::HealthArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Topic(cmd) => client::topic::run(cmd).await,
        Command::Group(cmd) => client::group::run(cmd).await,
        Command::Produce(args) => client::produce::run(args).await,
        Command::Consume(args) => client::consume::run(args).await,
        Command::Bench(args) => client::bench::run(args).await,
        Command::Export(cmd) => export::run(cmd).await,
        Command::Health(args) => health::run(args).await,
        Command::User(cmd) => user::run(cmd).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args).await,
    }
}
