//! The SQLite backend: the embedded store of `martix dev`. One writer connection (SQLite has
//! one writer at a time; queueing in the pool beats retrying on `SQLITE_BUSY`) and a few
//! readers, in WAL mode with `synchronous = FULL`, so a commit survives a power cut.
//!
//! Everything this store does is the shared `SqlStore`'s (`store/sql/`) but how a
//! group-commit batch is written (`batch.rs`); this module connects it and says, as its
//! `Backend`, where SQLite differs: no row locks (one writer serializes everything), so claims
//! look before they take the writer's turn, and outbox rows are ordered by position alone.

mod batch;

use crate::history::RunCommit;
use crate::store::events::Consumer;
use crate::store::projection::{Pools, ProjectionTx};
use crate::store::sql::batch::{Groups, spawn_committer};
use crate::store::sql::{Backend, Place, SqlStore};
use crate::store::{StoreError, classify};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The store on SQLite.
pub type SqliteStore = SqlStore<sqlx::Sqlite>;

impl SqlStore<sqlx::Sqlite> {
    /// Opens (creating it if missing) the database `url` names (`sqlite://path` or
    /// `sqlite::memory:`) and applies the engine's migrations (`migrations/engine/sqlite`).
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
        // No ping before each use (a round trip to the connection's thread): a SQLite
        // connection does not die idle.
        let write = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(classify)?;
        {
            let mut conn = write.acquire().await.map_err(classify)?;
            martix_migrate::apply_sqlite(&mut conn, &super::MIGRATIONS)
                .await
                .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        }
        // An in-memory database exists once per connection: readers must share the writer.
        let read = if memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(true))
                .await
                .map_err(classify)?
        };
        let writes = Arc::default();
        Ok(Self {
            // One writer: SQLite has one write connection.
            committer: spawn_committer(write.clone(), None, Arc::clone(&writes), 1, false),
            write,
            read,
            writes,
            run_reads: Arc::default(),
            notices: None,
        })
    }
}

impl Backend for sqlx::Sqlite {
    const NAME: &'static str = "sqlite";

    const CLAIM_WORKFLOW_TASK: &'static str = "UPDATE executions SET wft_lease_id = $1, \
        wft_lease_until = $2 + wft_timeout_ms, version = version + 1 \
        WHERE run_id = (SELECT run_id FROM executions \
        WHERE namespace = $3 AND wft_queue = $4 AND wft_visible_at <= $2 \
        AND (wft_lease_until IS NULL OR wft_lease_until <= $2) \
        ORDER BY wft_visible_at LIMIT 1) \
        RETURNING run_id, namespace, workflow_id, workflow_type, task_queue, status, start_time, \
        close_time, next_event_id, version, wft_queue, wft_attempt, wft_scheduled_event_id, \
        wft_visible_at, wft_lease_id, wft_lease_until, state";

    const CLAIM_EXPIRED_STICKY: &'static str = "UPDATE executions SET wft_queue = task_queue, \
        wft_lease_id = $1, wft_lease_until = $2 + wft_timeout_ms, version = version + 1 \
        WHERE run_id = (SELECT run_id FROM executions \
        WHERE namespace = $3 AND task_queue = $4 AND wft_queue IS NOT NULL \
        AND wft_queue <> task_queue AND wft_visible_at <= $5 \
        AND (wft_lease_until IS NULL OR wft_lease_until <= $2) \
        ORDER BY wft_visible_at LIMIT 1) \
        RETURNING run_id, namespace, workflow_id, workflow_type, task_queue, status, start_time, \
        close_time, next_event_id, version, wft_queue, wft_attempt, wft_scheduled_event_id, \
        wft_visible_at, wft_lease_id, wft_lease_until, state";

    const CLAIM_ACTIVITY_TASK: &'static str = "UPDATE activity_tasks SET lease_id = $1, \
        started_at = $2, lease_until = $2 + \
        CASE WHEN heartbeat_ms > 0 AND heartbeat_ms < lease_ms THEN heartbeat_ms ELSE lease_ms END \
        WHERE (run_id, scheduled_event_id) = (SELECT run_id, scheduled_event_id \
        FROM activity_tasks WHERE namespace = $3 AND task_queue = $4 \
        AND visible_at <= $2 AND lease_id IS NULL \
        ORDER BY visible_at LIMIT 1) \
        RETURNING run_id, scheduled_event_id, namespace, task_queue, attempt, visible_at, \
        lease_id, lease_until, lease_ms, info, heartbeat_details, heartbeat_ms, started_at";

    const READ_BEFORE_CLAIM: bool = true;

    const LOCK_SHARDS: Option<&'static str> = None;

    const RELAXED_COMMIT: Option<&'static str> = None;

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn begin_write(
        pool: &sqlx::SqlitePool,
    ) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// SQLite keeps no such count.
    async fn count_transactions(_pool: &sqlx::SqlitePool) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    /// SQLite sends no notices: it has one node.
    async fn write_batch(
        conn: &mut sqlx::SqliteConnection,
        commits: &[&RunCommit],
        _notify_as: Option<&str>,
    ) -> Groups {
        batch::write_batch(conn, commits).await
    }

    /// By position: `xact` is always 0, and SQLite ranges a row-value comparison over its
    /// first column only and filters the rest (every row of the shard).
    fn past_cursor(consumer: Consumer) -> String {
        let cursor = consumer.cursor();
        format!("o.xact = 0 AND o.position > s.{cursor}_position")
    }

    /// Positions follow commit order (one writer), so every committed row past the cursor.
    fn push_pending_from(qb: &mut sqlx::QueryBuilder<Self>, past: &str, _limit: i64) {
        qb.push(format!(
            " FROM outbox_shards s JOIN outbox o ON o.shard = s.shard AND {past} \
             WHERE s.shard IN ("
        ));
    }

    /// One look per shard; nothing to lock (one writer), and `xact` is always 0.
    async fn outbox_follows_cursor(
        conn: &mut sqlx::SqliteConnection,
        consumer: Consumer,
        first: &BTreeMap<i32, Place>,
    ) -> Result<bool, StoreError> {
        let cursor = consumer.cursor();
        for (shard, place) in first {
            let between: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT 1 FROM outbox o JOIN outbox_shards s ON s.shard = o.shard \
                 WHERE o.shard = $1 AND o.xact = 0 AND o.position > s.{cursor}_position \
                 AND o.position < $2)"
            )))
            .bind(shard)
            .bind(place.position)
            .fetch_one(&mut *conn)
            .await
            .map_err(classify)?;
            if between {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn projection_tx(conn: &mut sqlx::SqliteConnection) -> ProjectionTx<'_> {
        ProjectionTx::Sqlite(conn)
    }

    fn pools(write: &sqlx::SqlitePool, read: &sqlx::SqlitePool) -> Pools {
        Pools::Sqlite {
            write: write.clone(),
            read: read.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::{ACTIVITY_COLUMNS, RUN_COLUMNS};

    #[test]
    fn claims_return_what_is_decoded() {
        for sql in [
            <sqlx::Sqlite as Backend>::CLAIM_WORKFLOW_TASK,
            <sqlx::Sqlite as Backend>::CLAIM_EXPIRED_STICKY,
        ] {
            assert!(sql.ends_with(&format!("RETURNING {RUN_COLUMNS}")), "{sql}");
        }
        let sql = <sqlx::Sqlite as Backend>::CLAIM_ACTIVITY_TASK;
        assert!(
            sql.ends_with(&format!("RETURNING {ACTIVITY_COLUMNS}")),
            "{sql}"
        );
    }

    #[test]
    fn claims_differ_from_postgres_only_by_the_row_lock() {
        for (sqlite, postgres) in [
            (
                <sqlx::Sqlite as Backend>::CLAIM_WORKFLOW_TASK,
                <sqlx::Postgres as Backend>::CLAIM_WORKFLOW_TASK,
            ),
            (
                <sqlx::Sqlite as Backend>::CLAIM_EXPIRED_STICKY,
                <sqlx::Postgres as Backend>::CLAIM_EXPIRED_STICKY,
            ),
            (
                <sqlx::Sqlite as Backend>::CLAIM_ACTIVITY_TASK,
                <sqlx::Postgres as Backend>::CLAIM_ACTIVITY_TASK,
            ),
        ] {
            assert_eq!(sqlite, postgres.replace(" FOR UPDATE SKIP LOCKED", ""));
        }
    }
}
