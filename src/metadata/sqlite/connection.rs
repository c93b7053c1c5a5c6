//! Opening the SQLite store (read-write with migration, or read-only beside
//! a running broker) and running calls on its two connections.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::{SqliteStore, schema};
use crate::metadata::{MetadataError, Result};

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                MetadataError::Backend(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let path = path.to_path_buf();
        let (conn, reader) = tokio::task::spawn_blocking(move || -> Result<_> {
            let conn = Connection::open(&path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            schema::migrate(&conn)?;
            let reader = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            Ok((conn, reader))
        })
        .await
        .map_err(|e| MetadataError::Backend(format!("open task failed: {e}")))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Opens an existing store for reading only, beside a broker that may
    /// be running: no migration, no journal-mode change, no write lock; any
    /// write through the returned store fails. The schema must be this
    /// build's version.
    pub async fn open_read_only(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(MetadataError::Backend(format!(
                "no metadata store at {}",
                path.display()
            )));
        }
        let path = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || -> Result<_> {
            let reader = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            schema::check_current(&reader)?;
            Ok(reader)
        })
        .await
        .map_err(|e| MetadataError::Backend(format!("open task failed: {e}")))??;
        let reader = Arc::new(Mutex::new(reader));
        Ok(Self {
            conn: Arc::clone(&reader),
            reader,
        })
    }

    /// Runs `f` on the read-only connection (queries only).
    pub(super) async fn with_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        on_blocking_pool(Arc::clone(&self.reader), move |conn| f(conn)).await
    }

    /// Runs `f` on the connection that writes.
    pub(super) async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        on_blocking_pool(Arc::clone(&self.conn), f).await
    }
}

/// Runs `f` with `conn` locked, on the blocking pool (SQLite calls block).
async fn on_blocking_pool<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut guard = conn
            .lock()
            .map_err(|_| MetadataError::Backend("sqlite connection mutex poisoned".into()))?;
        f(&mut guard)
    })
    .await
    .map_err(|e| MetadataError::Backend(format!("metadata task failed: {e}")))?
}
