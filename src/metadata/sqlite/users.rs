//! SCRAM credentials and ACL bindings in SQLite.

use rusqlite::{Connection, params};

use crate::metadata::{AclRecord, QuotaRecord, Result, ScramRecord};

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScramRecord> {
    Ok(ScramRecord {
        user: r.get(0)?,
        mechanism: r.get(1)?,
        salt: r.get(2)?,
        iterations: r.get(3)?,
        stored_key: r.get(4)?,
        server_key: r.get(5)?,
    })
}

pub(super) fn scram_credentials(
    conn: &Connection,
    users: Option<&[String]>,
) -> Result<Vec<ScramRecord>> {
    const COLUMNS: &str = "SELECT user_name, mechanism, salt, iterations, stored_key, server_key FROM scram_credentials";
    let mut out = Vec::new();
    match users {
        None => {
            let mut stmt =
                conn.prepare_cached(&format!("{COLUMNS} ORDER BY user_name, mechanism"))?;
            for row in stmt.query_map([], record)? {
                out.push(row?);
            }
        }
        Some(users) => {
            let mut stmt = conn.prepare_cached(&format!(
                "{COLUMNS} WHERE user_name = ?1 ORDER BY mechanism"
            ))?;
            for user in users {
                for row in stmt.query_map(params![user], record)? {
                    out.push(row?);
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn put_scram_credential(conn: &mut Connection, r: &ScramRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO scram_credentials
             (user_name, mechanism, salt, iterations, stored_key, server_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (user_name, mechanism) DO UPDATE SET salt = excluded.salt,
             iterations = excluded.iterations, stored_key = excluded.stored_key,
             server_key = excluded.server_key",
        params![
            r.user,
            r.mechanism,
            r.salt,
            r.iterations,
            r.stored_key,
            r.server_key
        ],
    )?;
    Ok(())
}

pub(super) fn delete_scram_credential(
    conn: &mut Connection,
    user: &str,
    mechanism: i8,
) -> Result<bool> {
    let deleted = conn.execute(
        "DELETE FROM scram_credentials WHERE user_name = ?1 AND mechanism = ?2",
        params![user, mechanism],
    )?;
    Ok(deleted > 0)
}

pub(super) fn acls(conn: &Connection) -> Result<Vec<AclRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT resource_type, resource_name, pattern_type, principal, host, operation,
                permission_type FROM acls",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(AclRecord {
            resource_type: r.get(0)?,
            resource_name: r.get(1)?,
            pattern_type: r.get(2)?,
            principal: r.get(3)?,
            host: r.get(4)?,
            operation: r.get(5)?,
            permission_type: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

pub(super) fn create_acls(conn: &mut Connection, bindings: &[AclRecord]) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO acls (resource_type, resource_name, pattern_type, principal,
                 host, operation, permission_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for b in bindings {
            stmt.execute(params![
                b.resource_type,
                b.resource_name,
                b.pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn delete_acls(conn: &mut Connection, bindings: &[AclRecord]) -> Result<usize> {
    let tx = conn.transaction()?;
    let mut deleted = 0;
    {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM acls WHERE resource_type = ?1 AND resource_name = ?2
                 AND pattern_type = ?3 AND principal = ?4 AND host = ?5 AND operation = ?6
                 AND permission_type = ?7",
        )?;
        for b in bindings {
            deleted += stmt.execute(params![
                b.resource_type,
                b.resource_name,
                b.pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type
            ])?;
        }
    }
    tx.commit()?;
    Ok(deleted)
}

pub(super) fn client_quotas(conn: &Connection) -> Result<Vec<QuotaRecord>> {
    let mut stmt = conn.prepare_cached("SELECT entity, quota_key, value FROM client_quotas")?;
    let rows = stmt.query_map([], |r| {
        Ok(QuotaRecord {
            entity: r.get(0)?,
            key: r.get(1)?,
            value: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

pub(super) fn alter_client_quotas(
    conn: &mut Connection,
    set: &[QuotaRecord],
    remove: &[(String, String)],
) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut delete =
            tx.prepare_cached("DELETE FROM client_quotas WHERE entity = ?1 AND quota_key = ?2")?;
        for (entity, key) in remove {
            delete.execute(params![entity, key])?;
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO client_quotas (entity, quota_key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (entity, quota_key) DO UPDATE SET value = excluded.value",
        )?;
        for q in set {
            upsert.execute(params![q.entity, q.key, q.value])?;
        }
    }
    tx.commit()?;
    Ok(())
}
