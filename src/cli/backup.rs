//! `strata backup` and `strata restore`: a copy of the metadata store that
//! can be restored later without losing what it names.
//!
//! The objects a metadata backup names must still exist when it is
//! restored, yet the collector deletes objects some time after they are
//! retired (sealed into segments, compacted, past retention). So a backup
//! first takes a *backup hold* in the store (`--hold-hours`, a week by
//! default): while it lives, no object retired from then on is deleted.
//! Then it copies the store: SQLite with `VACUUM INTO` (online: the broker
//! keeps running), PostgreSQL with `pg_dump` (custom format). The hold is
//! part of the copy too, so after a restore the objects it names are kept
//! as long as the hold lives. A backup restored after its hold ran out may
//! name objects that are gone: keep `--hold-hours` longer than backups are
//! kept.
//!
//! `strata restore` puts a backup back, with every broker stopped: the
//! SQLite file in place of the store's, or `pg_restore --clean` into the
//! PostgreSQL database. Objects written after the backup are named by
//! nothing then, and the collector's listing pass deletes them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;

use super::store::StoreArgs;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (a file that must not exist yet).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// How long objects retired after the backup are kept (the backup can
    /// be restored within this time).
    #[arg(long, default_value_t = 168, value_name = "HOURS")]
    pub hold_hours: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup `strata backup` wrote.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs an external tool, failing with what to install if it is missing.
fn run_tool(program: &str, args: &[&str], package: &str) -> anyhow::Result<()> {
    let status = Command::new(program).args(args).status().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {program} ({e}): install PostgreSQL's client tools (Debian: {package})"
        )
    })?;
    if !status.success() {
        bail!("{program} failed ({status})");
    }
    Ok(())
}

fn sqlite_path(url: &str) -> Option<&Path> {
    url.strip_prefix("sqlite://").map(Path::new)
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let config = args.store.base_config()?;
    config.validate()?;
    let url = config.metadata_url();
    if args.to.exists() {
        bail!("{} exists already: give a new file", args.to.display());
    }
    let metadata = crate::metadata::open(
        &url,
        std::time::Duration::from_millis(config.metadata_timeout_ms),
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the metadata store {}",
            crate::config::redact_url(&url)
        )
    })?;
    let hold_ms = i64::try_from(args.hold_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
    let hold = metadata
        .add_backup_hold(hold_ms)
        .await
        .context("cannot take a backup hold")?;
    let to = args.to.display().to_string();
    match sqlite_path(&url) {
        Some(path) => {
            let path = path.to_path_buf();
            let target = to.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let conn = rusqlite::Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )?;
                conn.busy_timeout(std::time::Duration::from_secs(30))?;
                // A consistent copy of one read transaction, beside the
                // running broker.
                conn.execute("VACUUM INTO ?1", [&target])?;
                Ok(())
            })
            .await
            .context("backup task failed")?
            .with_context(|| format!("cannot copy the SQLite store to {to}"))?;
        }
        None => run_tool(
            "pg_dump",
            &["--format=custom", "--file", &to, "--dbname", &url],
            "postgresql-client",
        )?,
    }
    println!(
        "{}",
        serde_json::json!({
            "backup": to,
            "metadata": if sqlite_path(&url).is_some() { "sqlite" } else { "postgres" },
            "hold_id": hold,
            "hold_hours": args.hold_hours,
        })
    );
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let config = args.store.base_config()?;
    config.validate()?;
    let url = config.metadata_url();
    if !args.from.is_file() {
        bail!("{} is not a backup file", args.from.display());
    }
    let from = args.from.display().to_string();
    match sqlite_path(&url) {
        Some(path) => {
            // Checked before anything is replaced: a SQLite database.
            rusqlite::Connection::open_with_flags(
                &args.from,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM schema_version", [], |_| Ok(())))
            .with_context(|| format!("{from} is not a SQLite backup of a Strata store"))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            // Copied beside the store, then renamed over it; the old
            // store's write-ahead log and index go with it.
            let staging = path.with_extension("db.restoring");
            std::fs::copy(&args.from, &staging)
                .with_context(|| format!("cannot copy {from} to {}", staging.display()))?;
            for suffix in ["-wal", "-shm"] {
                let mut side = path.as_os_str().to_os_string();
                side.push(suffix);
                match std::fs::remove_file(&side) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot remove {}", side.to_string_lossy()));
                    }
                }
            }
            std::fs::rename(&staging, path)
                .with_context(|| format!("cannot move the backup into {}", path.display()))?;
        }
        None => run_tool(
            "pg_restore",
            &[
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--dbname",
                &url,
                &from,
            ],
            "postgresql-client",
        )?,
    }
    println!(
        "{}",
        serde_json::json!({ "restored": from, "metadata": if sqlite_path(&url).is_some() { "sqlite" } else { "postgres" } })
    );
    Ok(())
}
