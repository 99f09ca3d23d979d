//! Tasks and timers on both backends: claims (each backend's statement, `Backend::CLAIM_*`),
//! heartbeats, leases that ran out, and due timers. The rest is the same statement text on
//! PostgreSQL and SQLite.

use super::{Backend, Column, SqlStore, corrupt};
use crate::clock::Millis;
use crate::history::{ActivityTask, Run};
use crate::ids::RunId;
use crate::store::{
    ActivityLease, DueTimer, ExpiredLease, StoreError, TaskNotice, TaskStore, TimerStore, classify,
};
use sqlx::Row as _;
use std::sync::atomic::Ordering;

#[async_trait::async_trait]
impl<DB> TaskStore for SqlStore<DB>
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
    fn subscribe_tasks(&self) -> Option<tokio::sync::broadcast::Receiver<TaskNotice>> {
        self.notices.as_ref().map(|n| n.subscribe())
    }

    async fn claim_workflow_task(
        &self,
        namespace: &str,
        queue: &str,
        lease_id: &str,
        now: Millis,
    ) -> Result<Option<Run>, StoreError> {
        let probe = sqlx::query(
            "SELECT 1 FROM executions WHERE namespace = $1 AND wft_queue = $2 \
             AND wft_visible_at <= $3 AND (wft_lease_until IS NULL OR wft_lease_until <= $3) \
             LIMIT 1",
        )
        .bind(namespace)
        .bind(queue)
        .bind(now);
        let claim = sqlx::query(DB::CLAIM_WORKFLOW_TASK)
            .bind(lease_id)
            .bind(now)
            .bind(namespace)
            .bind(queue);
        let row = self.claim(probe, claim).await?;
        row.as_ref().map(Self::run_from_row).transpose()
    }

    async fn release_workflow_task(
        &self,
        run_id: RunId,
        lease_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE executions SET wft_lease_id = NULL, wft_lease_until = NULL, \
             version = version + 1 WHERE run_id = $1 AND wft_lease_id = $2",
        )
        .bind(run_id.to_text())
        .bind(lease_id)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn claim_expired_sticky(
        &self,
        namespace: &str,
        queue: &str,
        lease_id: &str,
        now: Millis,
        stale_before: Millis,
    ) -> Result<Option<Run>, StoreError> {
        let probe = sqlx::query(
            "SELECT 1 FROM executions WHERE namespace = $1 AND task_queue = $2 \
             AND wft_queue IS NOT NULL AND wft_queue <> task_queue AND wft_visible_at <= $3 \
             LIMIT 1",
        )
        .bind(namespace)
        .bind(queue)
        .bind(stale_before);
        let claim = sqlx::query(DB::CLAIM_EXPIRED_STICKY)
            .bind(lease_id)
            .bind(now)
            .bind(namespace)
            .bind(queue)
            .bind(stale_before);
        let row = self.claim(probe, claim).await?;
        row.as_ref().map(Self::run_from_row).transpose()
    }

    async fn claim_activity_task(
        &self,
        namespace: &str,
        queue: &str,
        lease_id: &str,
        now: Millis,
    ) -> Result<Option<ActivityTask>, StoreError> {
        let probe = sqlx::query(
            "SELECT 1 FROM activity_tasks WHERE namespace = $1 AND task_queue = $2 \
             AND visible_at <= $3 AND lease_id IS NULL LIMIT 1",
        )
        .bind(namespace)
        .bind(queue)
        .bind(now);
        let claim = sqlx::query(DB::CLAIM_ACTIVITY_TASK)
            .bind(lease_id)
            .bind(now)
            .bind(namespace)
            .bind(queue);
        let row = self.claim(probe, claim).await?;
        row.as_ref().map(Self::activity_from_row).transpose()
    }

    async fn heartbeat_activity(
        &self,
        namespace: &str,
        run_id: RunId,
        scheduled_event_id: i64,
        lease_id: &str,
        details: Option<&[u8]>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let done = sqlx::query(
            "UPDATE activity_tasks SET heartbeat_details = COALESCE($1, heartbeat_details), \
             lease_until = CASE WHEN heartbeat_ms = 0 THEN lease_until \
               WHEN started_at + lease_ms < $5 + heartbeat_ms THEN started_at + lease_ms \
               ELSE $5 + heartbeat_ms END \
             WHERE run_id = $2 AND scheduled_event_id = $3 AND lease_id = $4 AND lease_until > $5 \
             AND namespace = $6",
        )
        .bind(details)
        .bind(run_id.to_text())
        .bind(scheduled_event_id)
        .bind(lease_id)
        .bind(now)
        .bind(namespace)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn expired_activity_leases(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<ExpiredLease>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, scheduled_event_id, attempt, lease_id, started_at, lease_ms, \
             lease_until, namespace FROM activity_tasks WHERE lease_id IS NOT NULL \
             AND lease_until <= $1 ORDER BY lease_until LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let run_id: String = r.try_get(0).map_err(corrupt)?;
                let started_at: Option<i64> = r.try_get(4).map_err(corrupt)?;
                let lease_ms: i64 = r.try_get(5).map_err(corrupt)?;
                let lease_until: Option<i64> = r.try_get(6).map_err(corrupt)?;
                Ok(ExpiredLease {
                    run_id: RunId::parse("run_id", &run_id).map_err(corrupt)?,
                    namespace: r.try_get(7).map_err(corrupt)?,
                    scheduled_event_id: r.try_get(1).map_err(corrupt)?,
                    attempt: r.try_get(2).map_err(corrupt)?,
                    lease_id: r.try_get(3).map_err(corrupt)?,
                    heartbeat: match (started_at, lease_until) {
                        (Some(s), Some(u)) => u < s + lease_ms,
                        _ => false,
                    },
                })
            })
            .collect()
    }

    async fn activity_leases(&self, run_id: RunId) -> Result<Vec<ActivityLease>, StoreError> {
        let rows = sqlx::query(
            "SELECT scheduled_event_id, attempt, lease_until FROM activity_tasks \
             WHERE run_id = $1 ORDER BY scheduled_event_id",
        )
        .bind(run_id.to_text())
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(ActivityLease {
                    scheduled_event_id: r.try_get(0).map_err(corrupt)?,
                    attempt: r.try_get(1).map_err(corrupt)?,
                    lease_until: r.try_get(2).map_err(corrupt)?,
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl<DB> TimerStore for SqlStore<DB>
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
    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<DueTimer>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, timer_key, fire_at FROM timers WHERE fire_at <= $1 \
             ORDER BY fire_at LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let run_id: String = r.try_get(0).map_err(corrupt)?;
                Ok(DueTimer {
                    run_id: RunId::parse("run_id", &run_id).map_err(corrupt)?,
                    key: r.try_get(1).map_err(corrupt)?,
                    fire_at: r.try_get(2).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn delete_timer(&self, run_id: RunId, key: &str) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        sqlx::query("DELETE FROM timers WHERE run_id = $1 AND timer_key = $2")
            .bind(run_id.to_text())
            .bind(key)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        Ok(())
    }
}
