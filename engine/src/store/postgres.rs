//! The PostgreSQL backend: the production store. Several engine nodes may share one database;
//! claims use `FOR UPDATE SKIP LOCKED` so they never hand one task to two nodes.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// The store on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    write: sqlx::PgPool,
    read: sqlx::PgPool,
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PostgresStore {
    /// Connects with a pool of `MARTIX_DB_POOL_SIZE` (default 16) connections and applies
    /// the migrations in `migrations/postgres`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let size = std::env::var("MARTIX_DB_POOL_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad database URL: {e}")))?
            .application_name("martix");
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(classify)?;
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(Self {
            write: pool.clone(),
            read: pool,
            writes: Default::default(),
        })
    }

    /// The connection pool, for tests and tools that inspect the database.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.write
    }
}

super::sql::impl_store!(
    PostgresStore,
    sqlx::Postgres,
    "postgres",
    " FOR UPDATE SKIP LOCKED"
);
