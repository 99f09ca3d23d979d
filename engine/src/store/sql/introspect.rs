//! What operators see on both backends: the store's own figures, the tasks waiting, and the
//! circuit breakers workers report. Same statement text on PostgreSQL and SQLite.

use super::{Backend, Column, SqlStore, corrupt};
use crate::clock::Millis;
use crate::history;
use crate::ids::RunId;
use crate::store::{
    Backlog, BreakerHold, BreakerReport, BreakerState, BreakerStore, Introspection, OpenBreaker,
    PollerSeen, StoreError, TaskKind, WorkerBreaker, classify,
};
use sqlx::Row as _;
use std::sync::atomic::Ordering;

#[async_trait::async_trait]
impl<DB> Introspection for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'r> &'r [u8]: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    fn backend(&self) -> &'static str {
        <DB as Backend>::NAME
    }

    fn write_transactions(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn run_reads(&self) -> u64 {
        self.run_reads.load(Ordering::Relaxed)
    }

    async fn database_transactions(&self) -> Result<Option<i64>, StoreError> {
        DB::count_transactions(&self.read).await
    }

    async fn backlog(&self, now: Millis) -> Result<Vec<Backlog>, StoreError> {
        let rows = sqlx::query(
            "SELECT namespace, wft_queue, 'workflow', COUNT(*) FROM executions \
             WHERE wft_queue IS NOT NULL AND wft_visible_at <= $1 \
               AND (wft_lease_until IS NULL OR wft_lease_until <= $1) \
             GROUP BY namespace, wft_queue \
             UNION ALL \
             SELECT namespace, task_queue, 'activity', COUNT(*) FROM activity_tasks \
             WHERE visible_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
             GROUP BY namespace, task_queue",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(2).map_err(corrupt)?;
                Ok(Backlog {
                    namespace: r.try_get(0).map_err(corrupt)?,
                    queue: r.try_get(1).map_err(corrupt)?,
                    kind: match kind.as_str() {
                        "workflow" => TaskKind::Workflow,
                        "activity" => TaskKind::Activity,
                        other => return Err(corrupt(format!("a backlog of kind {other:?}"))),
                    },
                    tasks: r.try_get(3).map_err(corrupt)?,
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl<DB> BreakerStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'r> &'r [u8]: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    async fn record_breakers(
        &self,
        namespace: &str,
        worker: &str,
        reports: &[BreakerReport],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.write).await.map_err(classify)?;
        for report in reports {
            sqlx::query(
                "INSERT INTO breakers (namespace, worker, adapter, state, changed_at, reported_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (namespace, worker, adapter) \
                 DO UPDATE SET changed_at = CASE WHEN breakers.state <> excluded.state \
                   THEN excluded.changed_at ELSE breakers.changed_at END, \
                 state = excluded.state, reported_at = excluded.reported_at",
            )
            .bind(namespace)
            .bind(worker)
            .bind(&report.adapter)
            .bind(report.state.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn open_breakers(
        &self,
        namespace: Option<&str>,
        reported_since: Millis,
    ) -> Result<Vec<OpenBreaker>, StoreError> {
        let rows = match namespace {
            Some(ns) => sqlx::query(
                "SELECT worker, adapter, changed_at FROM breakers \
                 WHERE namespace = $1 AND state = 'open' AND reported_at >= $2 \
                 ORDER BY changed_at DESC LIMIT 100",
            )
            .bind(ns)
            .bind(reported_since),
            None => sqlx::query(
                "SELECT worker, adapter, changed_at FROM breakers \
                 WHERE state = 'open' AND reported_at >= $1 \
                 ORDER BY changed_at DESC LIMIT 100",
            )
            .bind(reported_since),
        }
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(OpenBreaker {
                    worker: r.try_get(0).map_err(corrupt)?,
                    adapter: r.try_get(1).map_err(corrupt)?,
                    since: r.try_get(2).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn record_poller(
        &self,
        namespace: &str,
        task_queue: &str,
        kind: &str,
        identity: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pollers (namespace, task_queue, kind, identity, last_seen) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (namespace, task_queue, kind, identity) \
             DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(namespace)
        .bind(task_queue)
        .bind(kind)
        .bind(identity)
        .bind(now)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn pollers(
        &self,
        namespace: &str,
        task_queue: &str,
        since: Millis,
    ) -> Result<Vec<PollerSeen>, StoreError> {
        let rows = sqlx::query(
            "SELECT identity, kind, last_seen FROM pollers \
             WHERE namespace = $1 AND task_queue = $2 AND last_seen >= $3 \
             ORDER BY last_seen DESC LIMIT 20",
        )
        .bind(namespace)
        .bind(task_queue)
        .bind(since)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(PollerSeen {
                    identity: r.try_get(0).map_err(corrupt)?,
                    kind: r.try_get(1).map_err(corrupt)?,
                    last_seen: r.try_get(2).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn queue_pollers(
        &self,
        namespace: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<(String, PollerSeen)>, StoreError> {
        let rows = sqlx::query(
            "SELECT task_queue, identity, kind, last_seen FROM pollers \
             WHERE namespace = $1 AND last_seen >= $2 \
             ORDER BY task_queue, last_seen DESC LIMIT $3",
        )
        .bind(namespace)
        .bind(since)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(corrupt)?,
                    PollerSeen {
                        identity: r.try_get(1).map_err(corrupt)?,
                        kind: r.try_get(2).map_err(corrupt)?,
                        last_seen: r.try_get(3).map_err(corrupt)?,
                    },
                ))
            })
            .collect()
    }

    async fn purge_pollers(&self, before: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM pollers WHERE last_seen < $1")
            .bind(before)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        Ok(DB::rows_affected(&done))
    }

    async fn breaker_open(
        &self,
        namespace: &str,
        adapter: &str,
        reported_since: Millis,
    ) -> Result<bool, StoreError> {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM breakers WHERE namespace = $1 AND adapter = $2 \
             AND reported_at >= $3 ORDER BY changed_at DESC LIMIT 1",
        )
        .bind(namespace)
        .bind(adapter)
        .bind(reported_since)
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        Ok(state.is_some_and(|s| s != BreakerState::Closed.as_str()))
    }

    async fn set_breaker_hold(
        &self,
        namespace: &str,
        breaker: &str,
        hold: Option<&BreakerHold>,
    ) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        match hold {
            Some(h) => sqlx::query(
                "INSERT INTO breaker_holds (namespace, breaker, hold, reason, held_by, held_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (namespace, breaker) DO UPDATE \
                 SET hold = excluded.hold, reason = excluded.reason, \
                 held_by = excluded.held_by, held_at = excluded.held_at",
            )
            .bind(namespace)
            .bind(breaker)
            .bind(h.state.as_str())
            .bind(h.reason.as_str())
            .bind(h.by.as_str())
            .bind(h.since),
            None => sqlx::query("DELETE FROM breaker_holds WHERE namespace = $1 AND breaker = $2")
                .bind(namespace)
                .bind(breaker),
        }
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn breaker_holds(
        &self,
        namespace: &str,
    ) -> Result<Vec<(String, BreakerHold)>, StoreError> {
        let rows = sqlx::query(
            "SELECT breaker, hold, reason, held_by, held_at FROM breaker_holds \
             WHERE namespace = $1 ORDER BY breaker LIMIT 100",
        )
        .bind(namespace)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(1).map_err(corrupt)?;
                Ok((
                    r.try_get(0).map_err(corrupt)?,
                    BreakerHold {
                        state: state.parse().map_err(corrupt)?,
                        reason: r.try_get(2).map_err(corrupt)?,
                        by: r.try_get(3).map_err(corrupt)?,
                        since: r.try_get(4).map_err(corrupt)?,
                    },
                ))
            })
            .collect()
    }

    async fn breaker_reports(
        &self,
        namespace: &str,
        since: Millis,
    ) -> Result<Vec<WorkerBreaker>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker, adapter, state, changed_at, reported_at FROM breakers \
             WHERE namespace = $1 AND reported_at >= $2 ORDER BY adapter, worker LIMIT 1000",
        )
        .bind(namespace)
        .bind(since)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(2).map_err(corrupt)?;
                Ok(WorkerBreaker {
                    worker: r.try_get(0).map_err(corrupt)?,
                    adapter: r.try_get(1).map_err(corrupt)?,
                    state: state.parse().map_err(corrupt)?,
                    changed_at: r.try_get(3).map_err(corrupt)?,
                    reported_at: r.try_get(4).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn parked_counts(&self, namespace: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT lease_id, COUNT(*) FROM (SELECT lease_id FROM activity_tasks \
             WHERE namespace = $1 AND lease_until = {} LIMIT 10000) p GROUP BY lease_id",
            history::PARKED_UNTIL
        )))
        .bind(namespace)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .filter_map(|r| {
                let lease: String = match r.try_get(0) {
                    Ok(l) => l,
                    Err(e) => return Some(Err(corrupt(e))),
                };
                let breaker = history::breaker_of_lease(&lease)?.to_owned();
                Some(r.try_get(1).map_err(corrupt).map(|n: i64| (breaker, n)))
            })
            .collect()
    }

    async fn parked_breakers(&self) -> Result<Vec<(String, String)>, StoreError> {
        // The time is written in the statement, as the partial index says it, so that the
        // planner uses that index whatever the plan.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT namespace, lease_id FROM activity_tasks \
             WHERE lease_until = {} ORDER BY namespace, lease_id LIMIT 1000",
            history::PARKED_UNTIL
        )))
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .filter_map(|r| {
                let lease: String = match r.try_get(1) {
                    Ok(l) => l,
                    Err(e) => return Some(Err(corrupt(e))),
                };
                let breaker = history::breaker_of_lease(&lease)?.to_owned();
                Some(r.try_get(0).map_err(corrupt).map(|ns| (ns, breaker)))
            })
            .collect()
    }

    async fn parked_tasks(
        &self,
        namespace: &str,
        breaker: &str,
        limit: usize,
    ) -> Result<Vec<(RunId, i64)>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT run_id, scheduled_event_id FROM activity_tasks \
             WHERE namespace = $1 AND lease_id = $2 AND lease_until = {} LIMIT $3",
            history::PARKED_UNTIL
        )))
        .bind(namespace)
        .bind(history::breaker_lease(breaker))
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let run_id: String = r.try_get(0).map_err(corrupt)?;
                Ok((
                    RunId::parse("run_id", &run_id).map_err(corrupt)?,
                    r.try_get(1).map_err(corrupt)?,
                ))
            })
            .collect()
    }

    async fn purge_breakers(&self, before: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM breakers WHERE reported_at < $1")
            .bind(before)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        Ok(DB::rows_affected(&done))
    }
}
