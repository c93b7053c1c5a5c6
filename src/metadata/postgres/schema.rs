//! The PostgreSQL schema: the SQL files in `migrations/`, applied in order,
//! each in its own transaction with its version row. Brokers that start at
//! once serialize on an advisory lock, so each step runs once; a database
//! newer than this broker is refused.

use super::Client;
use crate::metadata::{MetadataError, Result};

/// Migrations in order; entry `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_cluster.sql"),
    include_str!("migrations/0003_group_state.sql"),
    include_str!("migrations/0004_txn_coordinator_epoch.sql"),
    include_str!("migrations/0005_backup_holds.sql"),
    include_str!("migrations/0006_listener_endpoints.sql"),
    include_str!("migrations/0007_scram_credentials.sql"),
    include_str!("migrations/0008_acls.sql"),
    include_str!("migrations/0009_client_quotas.sql"),
];

/// Key of the advisory lock held while migrating ("strata" in ASCII).
const MIGRATION_LOCK: i64 = 0x7374_7261_7461;

async fn current_version(client: &impl deadpool_postgres::GenericClient) -> Result<i64> {
    let table: Option<String> = client
        .query_one("SELECT to_regclass('schema_version')::TEXT", &[])
        .await?
        .try_get(0)?;
    if table.is_none() {
        return Ok(0);
    }
    let version: Option<i64> = client
        .query_one("SELECT MAX(version) FROM schema_version", &[])
        .await?
        .try_get(0)?;
    Ok(version.unwrap_or(0))
}

pub(super) async fn migrate(client: &mut Client) -> Result<()> {
    let latest = MIGRATIONS.len() as i64;
    loop {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await?;
        let current = current_version(&tx).await?;
        if current > latest {
            return Err(MetadataError::Backend(format!(
                "metadata schema version {current} is newer than this broker's {latest}"
            )));
        }
        let Some(migration) = MIGRATIONS.get(current as usize) else {
            tx.commit().await?;
            return Ok(());
        };
        tx.batch_execute(migration).await?;
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute("INSERT INTO schema_version VALUES ($1)", &[&(current + 1)])
            .await?;
        tx.commit().await?;
        tracing::info!(
            version = current + 1,
            "migrated the PostgreSQL metadata schema"
        );
    }
}

/// For a read-only open: the schema must be exactly this build's version.
pub(super) async fn check_current(client: &Client) -> Result<()> {
    let current = current_version(&**client).await?;
    let latest = MIGRATIONS.len() as i64;
    if current == 0 {
        return Err(MetadataError::Backend(
            "not a Strata metadata store (no schema version)".into(),
        ));
    }
    if current < latest {
        return Err(MetadataError::Backend(format!(
            "metadata schema version {current} is older than this build's {latest}: start a broker once to migrate it"
        )));
    }
    if current > latest {
        return Err(MetadataError::Backend(format!(
            "metadata schema version {current} is newer than this build's {latest}"
        )));
    }
    Ok(())
}
