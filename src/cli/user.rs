//! `strata user`: SCRAM users in the metadata store, managed directly (for
//! the first administrator, or with every broker down). With a broker up,
//! Kafka's own `kafka-configs.sh --entity-type users` does the same through
//! the admin API.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::store::StoreArgs;
use crate::broker::security::scram::{
    DEFAULT_ITERATIONS, MAX_ITERATIONS, MIN_ITERATIONS, Mechanism, ScramCredential,
};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or set its password (SCRAM-SHA-256 and SCRAM-SHA-512).
    Add(AddArgs),
    /// Delete a user's SCRAM credentials.
    Delete(NameArgs),
    /// List users and their mechanisms.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The user name (the principal is User:NAME).
    pub name: String,
    /// The password (else read from STRATA_USER_PASSWORD).
    #[arg(long, env = "STRATA_USER_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// Only this mechanism (SCRAM-SHA-256 or SCRAM-SHA-512) [default: both].
    #[arg(long)]
    pub mechanism: Option<String>,
    /// PBKDF2 iterations (4096 to 16384).
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    pub iterations: u32,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

async fn open(
    store: &StoreArgs,
) -> anyhow::Result<std::sync::Arc<dyn crate::metadata::MetadataStore>> {
    let config = store.base_config()?;
    let url = config.metadata_url();
    crate::metadata::open(
        &url,
        std::time::Duration::from_millis(config.metadata_timeout_ms),
    )
    .await
    .context("cannot open the metadata store")
}

pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add(args) => {
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&args.iterations) {
                bail!("--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}");
            }
            if args.name.is_empty() || args.password.is_empty() {
                bail!("a user needs a name and a non-empty password");
            }
            let mechanisms = match args.mechanism.as_deref() {
                None => vec![Mechanism::Sha256, Mechanism::Sha512],
                Some(name) => vec![
                    Mechanism::from_name(&name.to_ascii_uppercase()).with_context(|| {
                        format!("unknown mechanism {name}: SCRAM-SHA-256 or SCRAM-SHA-512")
                    })?,
                ],
            };
            let metadata = open(&args.store).await?;
            for mechanism in mechanisms {
                let credential = ScramCredential::from_password(
                    &args.name,
                    mechanism,
                    &args.password,
                    args.iterations,
                );
                metadata
                    .put_scram_credential(credential.to_record())
                    .await?;
                println!("{}: {} set", args.name, mechanism.name());
            }
        }
        UserCommand::Delete(args) => {
            let metadata = open(&args.store).await?;
            let mut any = false;
            for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
                any |= metadata
                    .delete_scram_credential(&args.name, mechanism.code())
                    .await?;
            }
            if !any {
                bail!("no user {} in the metadata store", args.name);
            }
            println!("{}: deleted", args.name);
        }
        UserCommand::List(args) => {
            let metadata = open(&args.store).await?;
            for record in metadata.scram_credentials(None).await? {
                let mechanism =
                    Mechanism::from_code(record.mechanism).map_or("unknown", Mechanism::name);
                println!(
                    "{}\t{mechanism}\titerations={}",
                    record.user, record.iterations
                );
            }
        }
    }
    Ok(())
}
