//! Runs and their namespaces on both backends: a run's commit (queued for the group-commit
//! writer), the reads of its checkpoint, history and listing, signal request ids, and the
//! namespaces. Same statement text on PostgreSQL and SQLite.

use super::{Backend, Column, RUN_COLUMNS, SqlStore, corrupt, events_from_row};
use crate::clock::Millis;
use crate::history::{Run, RunCommit};
use crate::ids::RunId;
use crate::store::sql::batch::Pending;
use crate::store::{ListQuery, NamespaceSettings, NamespaceStore, RunStore, StoreError, classify};
use crate::visibility::{self, Field, Filter, Value};
use martix_proto::v1 as pb;
use sqlx::Row as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The run `$1`.
const LOAD_RUN: &str = "SELECT run_id, namespace, workflow_id, workflow_type, task_queue, \
    status, start_time, close_time, next_event_id, version, wft_queue, wft_attempt, \
    wft_scheduled_event_id, wft_visible_at, wft_lease_id, wft_lease_until, state \
    FROM executions WHERE run_id = $1";

/// The newest run of workflow id `$2` of namespace `$1`.
const LATEST_RUN: &str = "SELECT run_id, namespace, workflow_id, workflow_type, task_queue, \
    status, start_time, close_time, next_event_id, version, wft_queue, wft_attempt, \
    wft_scheduled_event_id, wft_visible_at, wft_lease_id, wft_lease_until, state \
    FROM executions WHERE namespace = $1 AND workflow_id = $2 \
    ORDER BY start_time DESC, run_id DESC LIMIT 1";

#[async_trait::async_trait]
impl<DB> RunStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    i16: Column<DB>,
    bool: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'r> &'r [u8]: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    async fn commit(&self, commit: &RunCommit) -> Result<(), StoreError> {
        self.commit_shared(Arc::new(commit.clone())).await
    }

    async fn commit_shared(&self, commit: Arc<RunCommit>) -> Result<(), StoreError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.committer
            .try_send(Pending { commit, done })
            .map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => StoreError::Overloaded(format!(
                    "the store's write queue is full ({} changes wait for the database)",
                    crate::store::sql::batch::COMMIT_QUEUE
                )),
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    StoreError::Unavailable("the store is closed".into())
                }
            })?;
        outcome
            .await
            .map_err(|_| StoreError::Unavailable("the commit writer stopped".into()))?
    }

    async fn load_run(&self, run_id: RunId) -> Result<Option<Run>, StoreError> {
        self.run_reads.fetch_add(1, Ordering::Relaxed);
        let row = sqlx::query(LOAD_RUN)
            .bind(run_id.to_text())
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
        row.as_ref().map(Self::run_from_row).transpose()
    }

    async fn purge_closed_runs(
        &self,
        namespace: &str,
        closed_before: Millis,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT run_id FROM executions WHERE namespace = $1 AND status <> 1 \
             AND close_time < $2 ORDER BY close_time LIMIT $3",
        )
        .bind(namespace)
        .bind(closed_before)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = DB::begin_write(&self.write).await.map_err(classify)?;
        let mut purged = 0;
        // History first, then the runs; a run is deleted only while closed.
        for (table, guard) in [
            ("history_events", ""),
            ("search_attributes", ""),
            ("executions", " AND status <> 1"),
        ] {
            let mut qb =
                sqlx::QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE run_id IN ("));
            let mut ids_list = qb.separated(", ");
            for id in &ids {
                ids_list.push_bind(id.as_str());
            }
            qb.push(")").push(guard);
            let done = qb.build().execute(&mut *tx).await.map_err(classify)?;
            purged = DB::rows_affected(&done);
        }
        tx.commit().await.map_err(classify)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(purged)
    }

    async fn oldest_closed_run(&self, namespace: &str) -> Result<Option<Millis>, StoreError> {
        sqlx::query_scalar::<DB, Option<i64>>(
            "SELECT MIN(close_time) FROM executions WHERE namespace = $1 AND status <> 1",
        )
        .bind(namespace)
        .fetch_one(&self.read)
        .await
        .map_err(classify)
    }

    async fn latest_run(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<Run>, StoreError> {
        let row = sqlx::query(LATEST_RUN)
            .bind(namespace)
            .bind(workflow_id)
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
        row.as_ref().map(Self::run_from_row).transpose()
    }

    async fn history(
        &self,
        run_id: RunId,
        from_event_id: i64,
        limit: usize,
    ) -> Result<Vec<pb::HistoryEvent>, StoreError> {
        // The row holding `from_event_id` (the last row starting at or before it) and those
        // after it, up to the row holding the last event asked for (event ids have no gaps);
        // `limit` rows hold at least `limit` events.
        let limit_rows = limit.min(i64::MAX as usize) as i64;
        let rows = sqlx::query(
            "SELECT last_event_id, data FROM history_events WHERE run_id = $1 \
             AND event_id >= (SELECT COALESCE(MAX(event_id), 0) FROM history_events \
             WHERE run_id = $1 AND event_id <= $2) AND event_id < $3 \
             ORDER BY event_id LIMIT $4",
        )
        .bind(run_id.to_text())
        .bind(from_event_id)
        .bind(from_event_id.saturating_add(limit_rows))
        .bind(limit_rows)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let mut out = Vec::new();
        for r in &rows {
            let last: Option<i64> = r.try_get(0).map_err(corrupt)?;
            let data: Vec<u8> = r.try_get(1).map_err(corrupt)?;
            out.extend(
                events_from_row(last, &data)?
                    .into_iter()
                    .filter(|e| e.event_id >= from_event_id),
            );
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn last_event(&self, run_id: RunId) -> Result<Option<pb::HistoryEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT last_event_id, data FROM history_events WHERE run_id = $1 \
             ORDER BY event_id DESC LIMIT 1",
        )
        .bind(run_id.to_text())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        match row {
            None => Ok(None),
            Some(r) => {
                let last: Option<i64> = r.try_get(0).map_err(corrupt)?;
                let data: Vec<u8> = r.try_get(1).map_err(corrupt)?;
                Ok(events_from_row(last, &data)?.pop())
            }
        }
    }

    async fn list_runs(&self, q: &ListQuery) -> Result<Vec<Run>, StoreError> {
        let mut qb = sqlx::QueryBuilder::<DB>::new("SELECT ");
        qb.push(RUN_COLUMNS)
            .push(" FROM executions WHERE namespace = ")
            .push_bind(q.namespace.to_string());
        if !q.statuses.is_empty() {
            qb.push(" AND status IN (");
            let mut sep = qb.separated(", ");
            for s in &q.statuses {
                sep.push_bind(*s as i32);
            }
            qb.push(")");
        }
        if let Some(t) = &q.workflow_type {
            qb.push(" AND workflow_type = ").push_bind(t.to_string());
        }
        if let Some(t) = &q.task_queue {
            qb.push(" AND task_queue = ").push_bind(t.to_string());
        }
        if let Some(p) = &q.workflow_id_prefix {
            qb.push(" AND substr(workflow_id, 1, ")
                .push_bind(p.chars().count() as i32)
                .push(") = ")
                .push_bind(p.clone());
        }
        if let Some(from) = q.start_time_from {
            qb.push(" AND start_time >= ").push_bind(from);
        }
        if let Some(to) = q.start_time_to {
            qb.push(" AND start_time < ").push_bind(to);
        }
        if let Some(f) = &q.filter {
            qb.push(" AND ");
            push_filter(&mut qb, f);
        }
        let (beyond, order) = if q.oldest_first {
            (" > ", "ASC")
        } else {
            (" < ", "DESC")
        };
        if let Some(after) = &q.after {
            qb.push(" AND (start_time")
                .push(beyond)
                .push_bind(after.start_time)
                .push(" OR (start_time = ")
                .push_bind(after.start_time)
                .push(" AND run_id")
                .push(beyond)
                .push_bind(after.run_id.clone())
                .push("))");
        }
        qb.push(format!(
            " ORDER BY start_time {order}, run_id {order} LIMIT "
        ))
        .push_bind(q.limit as i64);
        let rows = qb.build().fetch_all(&self.read).await.map_err(classify)?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn request_recorded(
        &self,
        namespace: &str,
        keys: &[&str],
    ) -> Result<Option<Option<i64>>, StoreError> {
        for key in keys {
            let found: Option<Option<i64>> = sqlx::query_scalar(
                "SELECT fingerprint FROM signal_requests WHERE namespace = $1 AND request_id = $2",
            )
            .bind(namespace)
            .bind(*key)
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl<DB> NamespaceStore for SqlStore<DB>
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
    async fn namespace_exists(&self, namespace: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM namespaces WHERE name = $1")
            .bind(namespace)
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
        Ok(row.is_some())
    }

    async fn create_namespace(
        &self,
        namespace: &str,
        retention_ms: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO namespaces (name, created_at, retention_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(namespace)
        .bind(now)
        .bind(retention_ms)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn namespace_settings(&self) -> Result<Vec<NamespaceSettings>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, retention_ms FROM namespaces ORDER BY name")
                .fetch_all(&self.read)
                .await
                .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(name, retention_ms)| NamespaceSettings { name, retention_ms })
            .collect())
    }

    async fn set_retention(
        &self,
        namespace: &str,
        retention_ms: Millis,
    ) -> Result<Option<NamespaceSettings>, StoreError> {
        let done = sqlx::query("UPDATE namespaces SET retention_ms = $1 WHERE name = $2")
            .bind(retention_ms)
            .bind(namespace)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        Ok((DB::rows_affected(&done) == 1).then(|| NamespaceSettings {
            name: namespace.to_owned(),
            retention_ms,
        }))
    }

    async fn list_namespaces(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT name FROM namespaces ORDER BY name")
            .fetch_all(&self.read)
            .await
            .map_err(classify)
    }
}

/// A parsed query as SQL over `executions`, its values bound.
fn push_filter<DB>(qb: &mut sqlx::QueryBuilder<DB>, f: &Filter)
where
    DB: Backend,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    i16: Column<DB>,
{
    match f {
        Filter::And(a, b) | Filter::Or(a, b) => {
            qb.push("(");
            push_filter(qb, a);
            qb.push(if matches!(f, Filter::And(..)) {
                " AND "
            } else {
                " OR "
            });
            push_filter(qb, b);
            qb.push(")");
        }
        Filter::Compare(field, cmp, value) => {
            let op = format!(" {} ", cmp.sql());
            let column = match field {
                Field::WorkflowId => Some("workflow_id"),
                Field::WorkflowType => Some("workflow_type"),
                Field::TaskQueue => Some("task_queue"),
                Field::Status => Some("status"),
                Field::Started => Some("start_time"),
                Field::Closed => Some("close_time"),
                Field::Attribute(_) => None,
            };
            match (column, value) {
                (Some(c), Value::Text(t)) => {
                    qb.push(c).push(op).push_bind(t.clone());
                }
                (Some(c), Value::Status(s)) => {
                    qb.push(c).push(op).push_bind(*s);
                }
                (Some(c), Value::Time(t)) => {
                    qb.push(c).push(op).push_bind(*t);
                }
                (Some(c), Value::Int(i)) => {
                    qb.push(c).push(op).push_bind(*i);
                }
                (Some(_), Value::TextOrTime(..)) => {
                    qb.push("FALSE");
                }
                (None, v) => {
                    let Field::Attribute(name) = field else {
                        unreachable!("only attributes have no column")
                    };
                    qb.push(
                        "EXISTS (SELECT 1 FROM search_attributes a \
                         WHERE a.run_id = executions.run_id AND a.name = ",
                    )
                    .push_bind(name.clone());
                    match v {
                        Value::Int(i) => {
                            qb.push(" AND a.kind = ")
                                .push_bind(visibility::KIND_INT)
                                .push(" AND a.int_value")
                                .push(op)
                                .push_bind(*i);
                        }
                        Value::TextOrTime(t, at) => {
                            qb.push(" AND ((a.kind = ")
                                .push_bind(visibility::KIND_KEYWORD)
                                .push(" AND a.text_value")
                                .push(op.clone())
                                .push_bind(t.clone())
                                .push(")");
                            if let Some(at) = at {
                                qb.push(" OR (a.kind = ")
                                    .push_bind(visibility::KIND_TIME)
                                    .push(" AND a.int_value")
                                    .push(op)
                                    .push_bind(*at)
                                    .push(")");
                            }
                            qb.push(")");
                        }
                        _ => {
                            qb.push(" AND FALSE");
                        }
                    }
                    qb.push(")");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reads_select_the_run_columns() {
        for sql in [LOAD_RUN, LATEST_RUN] {
            assert!(sql.contains(RUN_COLUMNS), "{sql}");
        }
    }
}
