//! SCRAM credentials in SQLite.

use rusqlite::{Connection, params};

use crate::metadata::{Result, ScramRecord};

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
