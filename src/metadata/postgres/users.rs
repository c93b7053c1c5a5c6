//! SCRAM credentials and ACL bindings in PostgreSQL.

use super::Client;
use crate::metadata::{AclRecord, QuotaRecord, Result, ScramRecord};

fn record(r: &tokio_postgres::Row) -> Result<ScramRecord> {
    Ok(ScramRecord {
        user: r.try_get(0)?,
        mechanism: i8::try_from(r.try_get::<_, i16>(1)?).unwrap_or(0),
        salt: r.try_get(2)?,
        iterations: r.try_get(3)?,
        stored_key: r.try_get(4)?,
        server_key: r.try_get(5)?,
    })
}

pub(super) async fn scram_credentials(
    client: &Client,
    users: Option<&[String]>,
) -> Result<Vec<ScramRecord>> {
    const COLUMNS: &str = "SELECT user_name, mechanism, salt, iterations, stored_key, server_key FROM scram_credentials";
    let rows = match users {
        None => {
            client
                .query(&format!("{COLUMNS} ORDER BY user_name, mechanism"), &[])
                .await?
        }
        Some(users) => {
            let users: Vec<String> = users.to_vec();
            client
                .query(
                    &format!("{COLUMNS} WHERE user_name = ANY($1) ORDER BY user_name, mechanism"),
                    &[&users],
                )
                .await?
        }
    };
    rows.iter().map(record).collect()
}

pub(super) async fn put_scram_credential(client: &Client, r: &ScramRecord) -> Result<()> {
    client
        .execute(
            "INSERT INTO scram_credentials
                 (user_name, mechanism, salt, iterations, stored_key, server_key)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_name, mechanism) DO UPDATE SET salt = excluded.salt,
                 iterations = excluded.iterations, stored_key = excluded.stored_key,
                 server_key = excluded.server_key",
            &[
                &r.user,
                &i16::from(r.mechanism),
                &r.salt,
                &r.iterations,
                &r.stored_key,
                &r.server_key,
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn delete_scram_credential(
    client: &Client,
    user: &str,
    mechanism: i8,
) -> Result<bool> {
    let deleted = client
        .execute(
            "DELETE FROM scram_credentials WHERE user_name = $1 AND mechanism = $2",
            &[&user, &i16::from(mechanism)],
        )
        .await?;
    Ok(deleted > 0)
}

fn code(value: i16) -> i8 {
    i8::try_from(value).unwrap_or(0)
}

pub(super) async fn acls(client: &Client) -> Result<Vec<AclRecord>> {
    let rows = client
        .query(
            "SELECT resource_type, resource_name, pattern_type, principal, host, operation,
                    permission_type FROM acls",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AclRecord {
                resource_type: code(r.try_get(0)?),
                resource_name: r.try_get(1)?,
                pattern_type: code(r.try_get(2)?),
                principal: r.try_get(3)?,
                host: r.try_get(4)?,
                operation: code(r.try_get(5)?),
                permission_type: code(r.try_get(6)?),
            })
        })
        .collect()
}

pub(super) async fn create_acls(client: &mut Client, bindings: &[AclRecord]) -> Result<()> {
    let tx = client.transaction().await?;
    for b in bindings {
        tx.execute(
            "INSERT INTO acls (resource_type, resource_name, pattern_type, principal, host,
                 operation, permission_type) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
            &[
                &i16::from(b.resource_type),
                &b.resource_name,
                &i16::from(b.pattern_type),
                &b.principal,
                &b.host,
                &i16::from(b.operation),
                &i16::from(b.permission_type),
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn delete_acls(client: &mut Client, bindings: &[AclRecord]) -> Result<usize> {
    let tx = client.transaction().await?;
    let mut deleted = 0;
    for b in bindings {
        deleted += tx
            .execute(
                "DELETE FROM acls WHERE resource_type = $1 AND resource_name = $2
                     AND pattern_type = $3 AND principal = $4 AND host = $5
                     AND operation = $6 AND permission_type = $7",
                &[
                    &i16::from(b.resource_type),
                    &b.resource_name,
                    &i16::from(b.pattern_type),
                    &b.principal,
                    &b.host,
                    &i16::from(b.operation),
                    &i16::from(b.permission_type),
                ],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
}

pub(super) async fn client_quotas(client: &Client) -> Result<Vec<QuotaRecord>> {
    let rows = client
        .query("SELECT entity, quota_key, value FROM client_quotas", &[])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(QuotaRecord {
                entity: r.try_get(0)?,
                key: r.try_get(1)?,
                value: r.try_get(2)?,
            })
        })
        .collect()
}

pub(super) async fn alter_client_quotas(
    client: &mut Client,
    set: &[QuotaRecord],
    remove: &[(String, String)],
) -> Result<()> {
    let tx = client.transaction().await?;
    for (entity, key) in remove {
        tx.execute(
            "DELETE FROM client_quotas WHERE entity = $1 AND quota_key = $2",
            &[entity, key],
        )
        .await?;
    }
    for q in set {
        tx.execute(
            "INSERT INTO client_quotas (entity, quota_key, value) VALUES ($1, $2, $3)
             ON CONFLICT (entity, quota_key) DO UPDATE SET value = EXCLUDED.value",
            &[&q.entity, &q.key, &q.value],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
