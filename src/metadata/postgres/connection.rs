//! Connections to PostgreSQL: the pool, and the bound on every call (see
//! the parent module's header): a call past `call_timeout` is abandoned,
//! and the connection it held is closed rather than returned to the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::{PostgresStore, schema};
use crate::metadata::{MetadataError, Result};

/// Connections per broker: the write path's commits, the sealer, the
/// collector and admin reads each get their own without waiting.
const POOL_SIZE: usize = 8;

/// The bound of a call when none is configured.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(15);

tokio::task_local! {
    /// Set by `bounded` for the call it runs: raised when the call ran out
    /// of time, so the connection it held is closed rather than pooled.
    static ABANDONED: Arc<AtomicBool>;
}

/// A pooled connection, held by one call. If that call is abandoned (it
/// ran out of time mid-statement), the connection's state is unknown and
/// it may be stuck on a dead peer: it is closed instead of returned.
pub(in crate::metadata::postgres) struct Client {
    object: Option<deadpool_postgres::Object>,
    abandoned: Option<Arc<AtomicBool>>,
}

impl std::ops::Deref for Client {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        self.object.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.object.as_mut().expect("present until dropped")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let abandoned = self
            .abandoned
            .as_ref()
            .is_some_and(|a| a.load(Ordering::Acquire));
        if abandoned && let Some(object) = self.object.take() {
            // Detached from the pool: dropping it closes the connection.
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`)
    /// and brings the schema up to date.
    pub async fn open(url: &str, call_timeout: Duration) -> Result<Self> {
        let store = Self::connect(url, false, call_timeout)?;
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// For tools beside running brokers (the Parquet export): every
    /// session is read-only, nothing is migrated, and the schema must be
    /// this build's version.
    pub async fn open_read_only(url: &str) -> Result<Self> {
        let store = Self::connect(url, true, DEFAULT_CALL_TIMEOUT)?;
        let client = store.client().await?;
        schema::check_current(&client).await?;
        Ok(store)
    }

    fn connect(url: &str, read_only: bool, call_timeout: Duration) -> Result<Self> {
        let (url, tls) = super::tls::split(url)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            MetadataError::Backend(format!(
                "invalid PostgreSQL URL (expected postgres://user:password@host:port/database): {e}"
            ))
        })?;
        if config.get_application_name().is_none() {
            config.application_name("strata");
        }
        let call_timeout = call_timeout.max(Duration::from_millis(100));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(call_timeout.min(Duration::from_secs(10)));
        }
        // A peer that vanished without a FIN (a failover, a NAT entry
        // dropped) is found by keepalive probes instead of never.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        // The server gives up a statement (or a lock wait) past the call's
        // bound too, so it does not go on holding locks for a call the
        // broker has abandoned. Kept with any options of the URL (a
        // search_path, say).
        let mut options = format!(
            "-c statement_timeout={ms} -c lock_timeout={ms}",
            ms = call_timeout.as_millis()
        );
        if read_only {
            options.push_str(" -c default_transaction_read_only=on");
        }
        if let Some(given) = config.get_options() {
            options = format!("{given} {options}");
        }
        config.options(&options);
        config.ssl_mode(tls.ssl_mode());
        let manager = Manager::from_config(
            config,
            tls.connector()?,
            ManagerConfig {
                // Connections of abandoned calls are closed (`Client`), so
                // a pooled one is known good without a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(call_timeout))
            .create_timeout(Some(call_timeout))
            .recycle_timeout(Some(call_timeout))
            .build()
            .map_err(|e| MetadataError::Backend(format!("postgres pool: {e}")))?;
        Ok(Self { pool, call_timeout })
    }

    pub(super) async fn client(&self) -> Result<Client> {
        let object = self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Timeout(_) => MetadataError::Unavailable(format!(
                "no PostgreSQL connection within {} ms: {e}",
                self.call_timeout.as_millis()
            )),
            other => {
                // The causes too: a TLS handshake failure says why only there
                // (an unknown issuer, a name mismatch).
                let mut text = format!("postgres connection: {other}");
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                MetadataError::Unavailable(text)
            }
        })?;
        Ok(Client {
            object: Some(object),
            abandoned: ABANDONED.try_with(Arc::clone).ok(),
        })
    }

    /// Runs one store call within `call_timeout`: past it the call is
    /// abandoned (its connection closed, see `Client`) and fails with
    /// `Unavailable`.
    pub(super) async fn bounded<T>(
        &self,
        call: &'static str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let abandoned = Arc::new(AtomicBool::new(false));
        let work = ABANDONED.scope(Arc::clone(&abandoned), work);
        tokio::pin!(work);
        tokio::select! {
            biased;
            result = &mut work => result,
            _ = tokio::time::sleep(self.call_timeout) => {
                // Raised before `work` (and the connection it holds) drops.
                abandoned.store(true, Ordering::Release);
                Err(MetadataError::Unavailable(format!(
                    "PostgreSQL did not answer {call} within {} ms",
                    self.call_timeout.as_millis()
                )))
            }
        }
    }
}

impl From<tokio_postgres::Error> for MetadataError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message says what went wrong; the default Display
        // of a database error is only "db error".
        use tokio_postgres::error::SqlState;
        match e.as_db_error() {
            Some(db)
                if *db.code() == SqlState::T_R_DEADLOCK_DETECTED
                    || *db.code() == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                MetadataError::Conflict(format!("postgres: {}", db.message()))
            }
            Some(db)
                if *db.code() == SqlState::QUERY_CANCELED
                    || *db.code() == SqlState::LOCK_NOT_AVAILABLE =>
            {
                // statement_timeout / lock_timeout: the call's bound.
                MetadataError::Unavailable(format!("postgres: {}", db.message()))
            }
            Some(db) => MetadataError::Backend(format!("postgres: {}", db.message())),
            // No answer from the server: the connection closed or its
            // socket failed.
            None if e.is_closed()
                || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) =>
            {
                MetadataError::Unavailable(format!("postgres: {e}"))
            }
            None => MetadataError::Backend(format!("postgres: {e}")),
        }
    }
}
