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
    committer: tokio::sync::mpsc::UnboundedSender<Pending>,
    notices: tokio::sync::broadcast::Sender<crate::store::TaskNotice>,
}

/// Applies the migrations, one node at a time. Nodes that start together wait for the lock
/// by polling (`pg_try_advisory_lock`), not blocked in `pg_advisory_lock` as sqlx's migrator
/// waits: a session blocked there is a transaction that `CREATE INDEX CONCURRENTLY`
/// (migration 0009) must wait out while it waits for the lock that build's node holds, and
/// PostgreSQL breaks that deadlock by failing one node's start. The holder then takes sqlx's
/// own lock as well (uncontended among nodes of this version; it keeps nodes of older versions,
/// which take only that one, out of the same migrations).
async fn migrate(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    /// "martix" in ASCII: the advisory lock of this schema's migrations.
    const LOCK: i64 = 0x6d61_7274_6978;
    let mut conn = pool.acquire().await.map_err(classify)?;
    let waiting = std::time::Instant::now();
    let mut told = Duration::ZERO;
    while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK)
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?
    {
        if waiting.elapsed() >= told + Duration::from_secs(10) {
            told = waiting.elapsed();
            tracing::warn!(
                waited_s = told.as_secs(),
                "waiting for another node to finish the migrations (advisory lock {LOCK})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied = sqlx::migrate!("../migrations/postgres")
        .run(&mut *conn)
        .await;
    let released = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
        .bind(LOCK)
        .fetch_one(&mut *conn)
        .await;
    if !matches!(released, Ok(true)) {
        // Never hand a session that may still hold the lock back to the pool: closing it
        // releases the lock.
        conn.close_on_drop();
    }
    applied.map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))
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
        migrate(&pool).await?;
        let node = uuid::Uuid::new_v4().simple().to_string();
        let (notices, _) = tokio::sync::broadcast::channel(4096);
        tokio::spawn(listen(pool.clone(), node.clone(), notices.clone()));
        let writes = std::sync::Arc::default();
        Ok(Self {
            // A few writers: PostgreSQL commits them in parallel; each batches what queued.
            committer: spawn_committer(
                pool.clone(),
                Some(node.clone()),
                std::sync::Arc::clone(&writes),
                std::env::var("MARTIX_DB_WRITERS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(4usize)
                    .clamp(1, size as usize),
            ),
            write: pool.clone(),
            read: pool,
            writes,
            notices,
        })
    }

    /// The connection pool, for tests and tools that inspect the database.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.write
    }
}

impl PostgresStore {
    /// `xact_commit + xact_rollback` of this database. Backends report their counts about a
    /// second after they go idle: read after a pause to see a burst whole.
    async fn count_transactions(&self) -> Result<Option<i64>, StoreError> {
        let mut conn = self.read.acquire().await.map_err(classify)?;
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        let n: i64 = sqlx::query_scalar(
            "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(Some(n))
    }

    fn notices(&self) -> Option<&tokio::sync::broadcast::Sender<crate::store::TaskNotice>> {
        Some(&self.notices)
    }
}

/// Forwards other nodes' task notifications until the pool closes. `PgListener` reconnects
/// by itself; notices sent while it was away are covered by the pollers' periodic recheck.
async fn listen(
    pool: sqlx::PgPool,
    node: String,
    out: tokio::sync::broadcast::Sender<crate::store::TaskNotice>,
) {
    let mut listener = loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(crate::store::TASK_CHANNEL).await {
                Ok(()) => break l,
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; retrying"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the notification connection; retrying")
            }
        }
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    loop {
        match listener.recv().await {
            Ok(n) => {
                let mut parts = n.payload().split('\t');
                let (Some(from), Some(ns), Some(kind), Some(queue)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if from == node {
                    continue;
                }
                let _ = out.send(crate::store::TaskNotice {
                    namespace: ns.to_owned(),
                    queue: queue.to_owned(),
                    workflow: kind == "W",
                });
            }
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "notification connection lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

super::sql::impl_store!(
    PostgresStore,
    sqlx::Postgres,
    "postgres",
    " FOR UPDATE SKIP LOCKED"
);

super::events::impl_event_store!(
    PostgresStore,
    sqlx::Postgres,
    " FOR UPDATE",
    "SET LOCAL synchronous_commit = off"
);
