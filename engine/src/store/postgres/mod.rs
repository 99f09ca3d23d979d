//! The PostgreSQL backend: the production store. Several engine nodes may share one database;
//! claims use `FOR UPDATE SKIP LOCKED` so they never hand one task to two nodes, commits
//! notify the other nodes of new tasks (`LISTEN/NOTIFY`), and a group-commit batch is one call
//! of `martix_write_batch_v1` (`batch.rs`).
//!
//! Everything else this store does is the shared `SqlStore`'s (`store/sql/`); this module
//! connects it and says, as its `Backend`, where PostgreSQL differs.

mod batch;

use crate::history::RunCommit;
use crate::store::events::Consumer;
use crate::store::projection::{Pools, ProjectionTx};
use crate::store::sql::batch::{Groups, spawn_committer};
use crate::store::sql::{Backend, Place, SqlStore};
use crate::store::{StoreError, TASK_CHANNEL, TaskNotice, classify};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The store on PostgreSQL.
pub type PostgresStore = SqlStore<sqlx::Postgres>;

/// Applies the engine's migrations (`martix_migrate`: one migrator at a time per database,
/// tracked apart from other owners').
async fn migrate(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(classify)?;
    // Never hand a session that may still hold the migrations' lock back to the pool (an error
    // midway, or this future dropped): closing it releases the lock.
    conn.close_on_drop();
    martix_migrate::apply_postgres(&mut conn, &super::MIGRATIONS)
        .await
        .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))
}

impl SqlStore<sqlx::Postgres> {
    /// Connects with a pool of `MARTIX_DB_POOL_SIZE` (default 16) connections and applies
    /// the engine's migrations (`migrations/engine/postgres`).
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
        let writes = Arc::default();
        // One writer: everything that queues while a batch is in flight goes into the next
        // one. A second writer overlaps batches (a change waits for no batch in flight), which
        // helps while the machine has cores to spare, but splits the batches once it has
        // not, and a batch costs the server about as much as the changes in it; so one is the
        // default, and `MARTIX_DB_WRITERS=2` serves moderate loads on a machine with cores to
        // spare (the measurements are in docs/performance.md).
        let writers = std::env::var("MARTIX_DB_WRITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1usize)
            .clamp(1, size as usize);
        Ok(Self {
            committer: spawn_committer(
                pool.clone(),
                Some(node.clone()),
                Arc::clone(&writes),
                writers,
                // Writers keep their connections when that leaves two for the rest (besides
                // the one LISTEN holds).
                size as usize >= writers + 3,
            ),
            write: pool.clone(),
            read: pool,
            writes,
            run_reads: Arc::default(),
            notices: Some(notices),
        })
    }

    /// The connection pool, for tests and tools that inspect the database.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.write
    }
}

/// Forwards other nodes' task notifications until the pool closes. `PgListener` reconnects
/// by itself; notices sent while it was away are covered by the pollers' periodic recheck.
async fn listen(pool: sqlx::PgPool, node: String, out: tokio::sync::broadcast::Sender<TaskNotice>) {
    let mut listener = loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(TASK_CHANNEL).await {
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
                let _ = out.send(TaskNotice {
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

impl Backend for sqlx::Postgres {
    const NAME: &'static str = "postgres";

    const CLAIM_WORKFLOW_TASK: &'static str = "UPDATE executions SET wft_lease_id = $1, \
        wft_lease_until = $2 + wft_timeout_ms, version = version + 1 \
        WHERE run_id = (SELECT run_id FROM executions \
        WHERE namespace = $3 AND wft_queue = $4 AND wft_visible_at <= $2 \
        AND (wft_lease_until IS NULL OR wft_lease_until <= $2) \
        ORDER BY wft_visible_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
        RETURNING run_id, namespace, workflow_id, workflow_type, task_queue, status, start_time, \
        close_time, next_event_id, version, wft_queue, wft_attempt, wft_scheduled_event_id, \
        wft_visible_at, wft_lease_id, wft_lease_until, state";

    const CLAIM_EXPIRED_STICKY: &'static str = "UPDATE executions SET wft_queue = task_queue, \
        wft_lease_id = $1, wft_lease_until = $2 + wft_timeout_ms, version = version + 1 \
        WHERE run_id = (SELECT run_id FROM executions \
        WHERE namespace = $3 AND task_queue = $4 AND wft_queue IS NOT NULL \
        AND wft_queue <> task_queue AND wft_visible_at <= $5 \
        AND (wft_lease_until IS NULL OR wft_lease_until <= $2) \
        ORDER BY wft_visible_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
        RETURNING run_id, namespace, workflow_id, workflow_type, task_queue, status, start_time, \
        close_time, next_event_id, version, wft_queue, wft_attempt, wft_scheduled_event_id, \
        wft_visible_at, wft_lease_id, wft_lease_until, state";

    const CLAIM_ACTIVITY_TASK: &'static str = "UPDATE activity_tasks SET lease_id = $1, \
        started_at = $2, lease_until = $2 + \
        CASE WHEN heartbeat_ms > 0 AND heartbeat_ms < lease_ms THEN heartbeat_ms ELSE lease_ms END \
        WHERE (run_id, scheduled_event_id) = (SELECT run_id, scheduled_event_id \
        FROM activity_tasks WHERE namespace = $3 AND task_queue = $4 \
        AND visible_at <= $2 AND lease_id IS NULL \
        ORDER BY visible_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
        RETURNING run_id, scheduled_event_id, namespace, task_queue, attempt, visible_at, \
        lease_id, lease_until, lease_ms, info, heartbeat_details, heartbeat_ms, started_at";

    const READ_BEFORE_CLAIM: bool = false;

    const LOCK_SHARDS: Option<&'static str> =
        Some("SELECT shard FROM outbox_shards ORDER BY shard FOR UPDATE");

    const RELAXED_COMMIT: Option<&'static str> = Some("SET LOCAL synchronous_commit = off");

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn begin_write(
        pool: &sqlx::PgPool,
    ) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error> {
        pool.begin().await
    }

    /// `xact_commit + xact_rollback` of this database. Backends report their counts about a
    /// second after they go idle: read after a pause to see a burst whole.
    async fn count_transactions(pool: &sqlx::PgPool) -> Result<Option<i64>, StoreError> {
        let mut conn = pool.acquire().await.map_err(classify)?;
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

    async fn write_batch(
        conn: &mut sqlx::PgConnection,
        commits: &[&RunCommit],
        notify_as: Option<&str>,
    ) -> Groups {
        batch::write_batch(conn, commits, notify_as).await
    }

    /// By `(xact, position)`.
    fn past_cursor(consumer: Consumer) -> String {
        let cursor = consumer.cursor();
        format!("(o.xact, o.position) > (s.{cursor}_xact, s.{cursor}_position)")
    }

    /// Each shard's range of `outbox_pending`, from its cursor, of rows of transactions older
    /// than every running one: a transaction still running may hold a lower position, and a
    /// cursor moved past its rows would skip them (migration 0013).
    fn push_pending_from(qb: &mut sqlx::QueryBuilder<Self>, past: &str, limit: i64) {
        qb.push(format!(
            " FROM outbox_shards s CROSS JOIN LATERAL (SELECT * FROM outbox o \
             WHERE o.shard = s.shard AND {past} \
             AND o.xact < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint) \
             ORDER BY o.xact, o.position LIMIT "
        ))
        .push_bind(limit)
        .push(") o WHERE s.shard IN (");
    }

    /// In one statement: the shards' cursor rows locked in shard order, and a look for a row
    /// between each cursor and the batch's first row of the shard: the first row after the
    /// cursor, read from the index where the cursor is (`ORDER BY … LIMIT 1`), comes before the
    /// batch's first. (Written as "a row exists between the two", PostgreSQL bounded its index
    /// scan by the upper end only and read every row the shard kept below it: 617 ms for an
    /// outbox of 950,000 rows, against 0.5 ms.)
    async fn outbox_follows_cursor(
        conn: &mut sqlx::PgConnection,
        consumer: Consumer,
        first: &BTreeMap<i32, Place>,
    ) -> Result<bool, StoreError> {
        let cursor = consumer.cursor();
        let shards: Vec<i32> = first.keys().copied().collect();
        let xacts: Vec<i64> = first.values().map(|f| f.xact).collect();
        let positions: Vec<i64> = first.values().map(|f| f.position).collect();
        let gaps: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM (SELECT shard, {cursor}_xact AS x, {cursor}_position AS p \
             FROM outbox_shards WHERE shard = ANY($1) ORDER BY shard FOR UPDATE) c \
             JOIN (SELECT unnest($1::INTEGER[]) AS shard, unnest($2::BIGINT[]) AS x, \
             unnest($3::BIGINT[]) AS p) f ON f.shard = c.shard \
             CROSS JOIN LATERAL (SELECT o.xact, o.position FROM outbox o \
             WHERE o.shard = c.shard AND (o.xact, o.position) > (c.x, c.p) \
             ORDER BY o.xact, o.position LIMIT 1) n \
             WHERE (n.xact, n.position) < (f.x, f.p)"
        )))
        .bind(&shards)
        .bind(&xacts)
        .bind(&positions)
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(gaps == 0)
    }

    fn projection_tx(conn: &mut sqlx::PgConnection) -> ProjectionTx<'_> {
        ProjectionTx::Postgres(conn)
    }

    fn pools(write: &sqlx::PgPool, read: &sqlx::PgPool) -> Pools {
        Pools::Postgres {
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
    fn claims_lock_what_they_take_and_return_what_is_decoded() {
        for sql in [
            <sqlx::Postgres as Backend>::CLAIM_WORKFLOW_TASK,
            <sqlx::Postgres as Backend>::CLAIM_EXPIRED_STICKY,
        ] {
            assert!(sql.ends_with(&format!("RETURNING {RUN_COLUMNS}")), "{sql}");
            assert!(sql.contains("LIMIT 1 FOR UPDATE SKIP LOCKED)"), "{sql}");
        }
        let sql = <sqlx::Postgres as Backend>::CLAIM_ACTIVITY_TASK;
        assert!(
            sql.ends_with(&format!("RETURNING {ACTIVITY_COLUMNS}")),
            "{sql}"
        );
        assert!(sql.contains("LIMIT 1 FOR UPDATE SKIP LOCKED)"), "{sql}");
    }
}
