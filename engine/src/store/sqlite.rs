//! The SQLite backend: the embedded store of `martix dev`. One writer connection (SQLite has
//! one writer at a time; queueing in the pool beats retrying on `SQLITE_BUSY`) and a few
//! readers, in WAL mode with `synchronous = FULL`, so a commit survives a power cut.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// The store on SQLite.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    write: sqlx::SqlitePool,
    read: sqlx::SqlitePool,
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    committer: tokio::sync::mpsc::UnboundedSender<Pending>,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database `url` names (`sqlite://path` or
    /// `sqlite::memory:`) and applies the migrations in `migrations/sqlite`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad database URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(classify)?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&write)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        // An in-memory database exists once per connection: readers must share the writer.
        let read = if memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(true))
                .await
                .map_err(classify)?
        };
        let writes = std::sync::Arc::default();
        Ok(Self {
            // One writer: SQLite has one write connection.
            committer: spawn_committer(write.clone(), None, std::sync::Arc::clone(&writes), 1),
            write,
            read,
            writes,
        })
    }
}

impl SqliteStore {
    /// SQLite keeps no such count.
    async fn count_transactions(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    fn notices(&self) -> Option<&tokio::sync::broadcast::Sender<crate::store::TaskNotice>> {
        None
    }
}

super::sql::impl_store!(SqliteStore, sqlx::Sqlite, "sqlite", "");

super::events::impl_event_store!(SqliteStore, sqlx::Sqlite, "", "");
