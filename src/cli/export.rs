//! `strata export parquet TOPIC --to URL`: writes a topic's sealed segments
//! as Parquet files (see `crate::export`). Opens the broker's own stores,
//! found from the same file, environment and flags as `strata serve`; the
//! metadata store read-only, so it runs beside a live broker.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::store::StoreArgs;
use crate::export::export_topic;
use crate::storage::object::ObjectStorage;

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write the sealed segments of a topic as Parquet files, one per sealed
    /// chunk, at URL/TOPIC/partition=P/FIRST-LAST.parquet (offsets, 20
    /// digits). Incremental: offsets already in a file are skipped. Data not
    /// sealed yet is exported by a later run. Prints a JSON summary.
    Parquet(ParquetArgs),
}

#[derive(Debug, Args)]
pub struct ParquetArgs {
    /// The topic to export.
    pub topic: String,
    /// Where to write: a directory, file:///dir or s3://bucket/prefix (S3
    /// settings as for the broker's object store).
    #[arg(long, value_name = "URL")]
    pub to: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run(command: ExportCommand) -> anyhow::Result<()> {
    match command {
        ExportCommand::Parquet(args) => parquet(args).await,
    }
}

async fn parquet(args: ParquetArgs) -> anyhow::Result<()> {
    let config = args.store.base_config()?;
    config.validate()?;
    let metadata_url = config.metadata_url();
    let metadata = crate::metadata::open_read_only(&metadata_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the metadata store {}",
                crate::config::redact_url(&metadata_url)
            )
        })?;
    let source = ObjectStorage::open(&config.object_store_url(), &config.s3)
        .context("cannot open the broker's object store")?;
    let destination = ObjectStorage::open(&args.to, &config.s3)
        .with_context(|| format!("cannot open the export destination '{}'", args.to))?;
    let summary = export_topic(metadata.as_ref(), &source, &destination, &args.topic).await?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
