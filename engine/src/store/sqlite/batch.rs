//! The SQLite group-commit writer: a group of a batch is written by its statements in one
//! `BEGIN IMMEDIATE` transaction, without savepoints. Each change's version-checked
//! checkpoint goes first, so a refusal there writes nothing; the history rows, outbox rows and
//! new activity tasks of the whole group go in multi-row statements at its end.

use crate::history::{self, ActivityTask, OutboxEvent, RunCommit, TaskOp, TimerOp};
use crate::store::events::shard_of;
use crate::store::sql::ACTIVITY_COLUMNS;
use crate::store::sql::batch::{
    Failed, GroupWriter, Groups, HistoryRow, history_rows, inserts_can_wait,
};
use crate::store::{StoreError, classify};
use prost::Message as _;

/// A new run's checkpoint, if no run of its workflow id was ever started (the start assumed a
/// fresh id and did not read its runs).
const INSERT_FRESH_RUN: &str = "INSERT INTO executions (run_id, namespace, workflow_id, \
    workflow_type, task_queue, status, start_time, close_time, next_event_id, version, \
    wft_queue, wft_attempt, wft_scheduled_event_id, wft_visible_at, wft_lease_id, \
    wft_lease_until, state, wft_timeout_ms) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11, $12, $13, $14, $15, $16, $17 \
    WHERE NOT EXISTS (SELECT 1 FROM executions WHERE namespace = $2 AND workflow_id = $3)";

/// A new run's checkpoint.
const INSERT_RUN: &str = "INSERT INTO executions (run_id, namespace, workflow_id, \
    workflow_type, task_queue, status, start_time, close_time, next_event_id, version, \
    wft_queue, wft_attempt, wft_scheduled_event_id, wft_visible_at, wft_lease_id, \
    wft_lease_until, state, wft_timeout_ms) VALUES \
    ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11, $12, $13, $14, $15, $16, $17)";

/// Writes one run's part of a commit inside the transaction on `conn`, the parts every change
/// of a batch shares (history events, outbox rows, new activity tasks) left in `later` to be
/// written for the whole batch at its end. On a refusal, `later.tainted` says whether the
/// transaction holds anything of the change (or was broken by it): a refusal at the first
/// statement, the version-checked checkpoint, writes nothing.
async fn write_run<'a>(
    conn: &mut sqlx::SqliteConnection,
    c: &'a RunCommit,
    later: &mut Later<'a>,
) -> Result<(), StoreError> {
    // A refusal at the first statement leaves the transaction as it found it.
    let untouched = !later.tainted;
    later.tainted = true;
    let r = &c.run;
    let run_id = r.run_id.to_text();
    let state = r.state.encode_to_vec();
    let wft = r.wft.as_ref();
    let wft_queue = wft.map(|w| w.queue.as_str());
    let wft_attempt = wft.map_or(0, |w| w.attempt);
    let wft_sched = wft.map_or(0, |w| w.scheduled_event_id);
    let wft_visible = wft.map_or(0, |w| w.visible_at);
    let lease_id = wft.and_then(|w| w.lease.as_ref()).map(|l| l.id.clone());
    let lease_until = wft.and_then(|w| w.lease.as_ref()).map(|l| l.until);
    match c.expected_version {
        None => {
            let sql = if c.fresh_id {
                INSERT_FRESH_RUN
            } else {
                INSERT_RUN
            };
            let done = sqlx::query(sql)
                .bind(&run_id)
                .bind(r.namespace.as_str())
                .bind(r.workflow_id.as_str())
                .bind(r.workflow_type.as_str())
                .bind(r.task_queue.as_str())
                .bind(r.status as i32)
                .bind(r.start_time)
                .bind(r.close_time)
                .bind(r.next_event_id)
                .bind(wft_queue)
                .bind(wft_attempt)
                .bind(wft_sched)
                .bind(wft_visible)
                .bind(lease_id)
                .bind(lease_until)
                .bind(state)
                .bind(r.state.workflow_task_timeout_ms)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
            if done.rows_affected() != 1 {
                later.tainted = !untouched;
                return Err(StoreError::IdUsed);
            }
        }
        Some(expected) => {
            let done = sqlx::query(
                "UPDATE executions SET status = $1, close_time = $2, next_event_id = $3, \
                 version = $4 + 1, wft_queue = $5, wft_attempt = $6, \
                 wft_scheduled_event_id = $7, wft_visible_at = $8, wft_lease_id = $9, \
                 wft_lease_until = $10, state = $11 WHERE run_id = $12 AND version = $4",
            )
            .bind(r.status as i32)
            .bind(r.close_time)
            .bind(r.next_event_id)
            .bind(expected)
            .bind(wft_queue)
            .bind(wft_attempt)
            .bind(wft_sched)
            .bind(wft_visible)
            .bind(lease_id)
            .bind(lease_until)
            .bind(state)
            .bind(&run_id)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
            if done.rows_affected() != 1 {
                later.tainted = !untouched;
                return Err(StoreError::Conflict {
                    run: r.run_id,
                    expected,
                });
            }
        }
    }
    later.events.extend(history_rows(&run_id, &c.events));
    later.outbox.extend(c.outbox.iter());
    if let Some(request_id) = &c.request_id {
        let done = sqlx::query(
            "INSERT INTO signal_requests (namespace, request_id, received_at, fingerprint) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (namespace, request_id) DO NOTHING",
        )
        .bind(r.namespace.as_str())
        .bind(request_id)
        .bind(c.at)
        .bind(c.request_fingerprint)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Duplicate);
        }
    }
    if let Some(key) = &c.fired_timer {
        let done = sqlx::query("DELETE FROM timers WHERE run_id = $1 AND timer_key = $2")
            .bind(&run_id)
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        if done.rows_affected() != 1 {
            return Err(StoreError::StaleTask);
        }
    }
    let defer_inserts = inserts_can_wait(c);
    for op in &c.tasks {
        // Every statement but a plain delete must find the row its change assumed.
        let (statement, must_find) = match op {
            TaskOp::Insert(t) if defer_inserts => {
                later.tasks.push(t);
                continue;
            }
            TaskOp::Insert(t) => {
                insert_tasks(&mut *conn, &[t]).await?;
                continue;
            }
            TaskOp::Retry {
                scheduled_event_id,
                attempt,
                visible_at,
                lease_id,
            } => (
                sqlx::query(
                    "UPDATE activity_tasks SET attempt = $1, visible_at = $2, \
                     lease_id = NULL, lease_until = NULL, started_at = NULL \
                     WHERE run_id = $3 AND scheduled_event_id = $4 AND lease_id = $5",
                )
                .bind(attempt)
                .bind(visible_at)
                .bind(&run_id)
                .bind(scheduled_event_id)
                .bind(lease_id),
                true,
            ),
            TaskOp::RetryNow {
                scheduled_event_id,
                attempt,
                visible_at,
            } => (
                sqlx::query(
                    "UPDATE activity_tasks SET attempt = $1, visible_at = $2 \
                     WHERE run_id = $3 AND scheduled_event_id = $4 AND lease_id IS NULL",
                )
                .bind(attempt)
                .bind(visible_at)
                .bind(&run_id)
                .bind(scheduled_event_id),
                true,
            ),
            TaskOp::Hold {
                scheduled_event_id,
                visible_at,
            } => (
                sqlx::query(
                    "UPDATE activity_tasks SET visible_at = $1 \
                     WHERE run_id = $2 AND scheduled_event_id = $3 AND lease_id IS NULL",
                )
                .bind(visible_at)
                .bind(&run_id)
                .bind(scheduled_event_id),
                false,
            ),
            TaskOp::Park {
                scheduled_event_id,
                lease_id,
                breaker,
            } => (
                sqlx::query(
                    "UPDATE activity_tasks SET lease_id = $1, lease_until = $2, visible_at = $2, \
                     started_at = NULL \
                     WHERE run_id = $3 AND scheduled_event_id = $4 AND lease_id = $5",
                )
                .bind(history::breaker_lease(breaker))
                .bind(history::PARKED_UNTIL)
                .bind(&run_id)
                .bind(scheduled_event_id)
                .bind(lease_id),
                true,
            ),
            TaskOp::Unpark {
                scheduled_event_id,
                breaker,
                visible_at,
            } => (
                sqlx::query(
                    "UPDATE activity_tasks SET lease_id = NULL, lease_until = NULL, visible_at = $1 \
                     WHERE run_id = $2 AND scheduled_event_id = $3 AND lease_id = $4",
                )
                .bind(visible_at)
                .bind(&run_id)
                .bind(scheduled_event_id)
                .bind(history::breaker_lease(breaker)),
                false,
            ),
            TaskOp::Delete {
                scheduled_event_id,
                lease_id: Some(lease_id),
            } => (
                sqlx::query(
                    "DELETE FROM activity_tasks \
                     WHERE run_id = $1 AND scheduled_event_id = $2 AND lease_id = $3",
                )
                .bind(&run_id)
                .bind(scheduled_event_id)
                .bind(lease_id),
                true,
            ),
            TaskOp::Delete {
                scheduled_event_id,
                lease_id: None,
            } => (
                sqlx::query(
                    "DELETE FROM activity_tasks WHERE run_id = $1 AND scheduled_event_id = $2",
                )
                .bind(&run_id)
                .bind(scheduled_event_id),
                false,
            ),
        };
        let done = statement.execute(&mut *conn).await.map_err(classify)?;
        if must_find && done.rows_affected() == 0 {
            return Err(StoreError::StaleTask);
        }
    }
    for op in &c.timers {
        match op {
            TimerOp::Insert { key, fire_at } => {
                sqlx::query("INSERT INTO timers (run_id, timer_key, fire_at) VALUES ($1, $2, $3)")
                    .bind(&run_id)
                    .bind(key)
                    .bind(fire_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(classify)?;
            }
            TimerOp::Delete { key } => {
                sqlx::query("DELETE FROM timers WHERE run_id = $1 AND timer_key = $2")
                    .bind(&run_id)
                    .bind(key)
                    .execute(&mut *conn)
                    .await
                    .map_err(classify)?;
            }
        }
    }
    if c.closed {
        sqlx::query("DELETE FROM activity_tasks WHERE run_id = $1")
            .bind(&run_id)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        sqlx::query("DELETE FROM timers WHERE run_id = $1")
            .bind(&run_id)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
    }
    for (name, value) in &c.search_attributes {
        let (kind, text, int) = crate::visibility::stored(value);
        sqlx::query(
            "INSERT INTO search_attributes (run_id, namespace, name, kind, text_value, int_value) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, name) DO UPDATE SET \
             kind = excluded.kind, text_value = excluded.text_value, int_value = excluded.int_value",
        )
        .bind(&run_id)
        .bind(r.namespace.as_str())
        .bind(name)
        .bind(kind)
        .bind(text)
        .bind(int)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    }
    for t in &c.foreign_timers {
        sqlx::query(
            "INSERT INTO timers (run_id, timer_key, fire_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(t.run_id.to_text())
        .bind(&t.key)
        .bind(t.fire_at)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

/// History rows (`history_rows`), in multi-row statements.
async fn insert_events(
    conn: &mut sqlx::SqliteConnection,
    rows: &[HistoryRow],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(200) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO history_events (run_id, event_id, last_event_id, data) ",
        );
        qb.push_values(chunk, |mut b, row| {
            b.push_bind(row.run_id.clone())
                .push_bind(row.first)
                .push_bind(row.last)
                .push_bind(row.data.clone());
        });
        qb.build().execute(&mut *conn).await.map_err(classify)?;
    }
    Ok(())
}

/// Outbox rows, in multi-row statements.
async fn insert_outbox(
    conn: &mut sqlx::SqliteConnection,
    rows: &[&OutboxEvent],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(200) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO outbox (event_id, shard, namespace, subject, workflow_type, \
             run_id, sequence, event_type, occurred_at, body) ",
        );
        qb.push_values(chunk, |mut b, e| {
            b.push_bind(e.event_id.clone())
                .push_bind(shard_of(&e.namespace, &e.subject))
                .push_bind(e.namespace.clone())
                .push_bind(e.subject.clone())
                .push_bind(e.workflow_type.clone())
                .push_bind(e.run_id.to_text())
                .push_bind(e.sequence)
                .push_bind(e.event_type.clone())
                .push_bind(e.occurred_at)
                .push_bind(e.body.clone());
        });
        qb.build().execute(&mut *conn).await.map_err(classify)?;
    }
    Ok(())
}

/// New activity tasks, in multi-row statements.
async fn insert_tasks(
    conn: &mut sqlx::SqliteConnection,
    rows: &[&ActivityTask],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(200) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO activity_tasks (");
        qb.push(ACTIVITY_COLUMNS).push(") ");
        qb.push_values(chunk, |mut b, t| {
            b.push_bind(t.run_id.to_text())
                .push_bind(t.scheduled_event_id)
                .push_bind(t.namespace.to_string())
                .push_bind(t.task_queue.to_string())
                .push_bind(t.attempt)
                .push_bind(t.visible_at)
                .push_bind(t.lease.as_ref().map(|l| l.id.clone()))
                .push_bind(t.lease.as_ref().map(|l| l.until))
                .push_bind(t.lease_ms)
                .push_bind(prost::Message::encode_to_vec(&t.activity))
                .push_bind(t.heartbeat_details.clone())
                .push_bind(t.heartbeat_ms)
                .push_bind(t.started_at);
        });
        qb.build().execute(&mut *conn).await.map_err(classify)?;
    }
    Ok(())
}

/// What a batch writes at its end, for all its changes at once.
#[derive(Default)]
struct Later<'a> {
    /// The transaction holds part of the change being written, or was broken by it.
    tainted: bool,
    events: Vec<HistoryRow>,
    outbox: Vec<&'a OutboxEvent>,
    tasks: Vec<&'a ActivityTask>,
}

/// The changes `live` of a batch in one transaction, without savepoints: a change's
/// first statement (its checkpoint's, version-checked) refuses it without writing
/// anything; a refusal or an error after that is `Failed::Change`. History events,
/// outbox rows and new activity tasks of the whole batch go in one multi-row
/// statement each at the end.
async fn write_together(
    conn: &mut sqlx::SqliteConnection,
    commits: &[&RunCommit],
    live: &[usize],
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    let mut later = Later::default();
    let mut outcomes = Vec::with_capacity(live.len());
    for &i in live {
        let c = commits[i];
        later.tainted = false;
        let mut out = write_run(&mut *conn, c, &mut later).await;
        if out.is_ok()
            && let Some(next) = &c.new_run
        {
            out = write_run(&mut *conn, next, &mut later).await;
        }
        match out {
            Ok(()) => outcomes.push(Ok(())),
            Err(e) if !later.tainted => outcomes.push(Err(e)),
            Err(e) => return Err(Failed::Change(i, e)),
        }
    }
    let shared = async {
        insert_events(&mut *conn, &later.events).await?;
        insert_outbox(&mut *conn, &later.outbox).await?;
        insert_tasks(&mut *conn, &later.tasks).await
    };
    shared.await.map_err(Failed::Batch)?;
    Ok(outcomes)
}

/// A batch's commits and the connection they are written on.
struct SqliteBatch<'a> {
    conn: &'a mut sqlx::SqliteConnection,
    commits: &'a [&'a RunCommit],
}

impl GroupWriter for SqliteBatch<'_> {
    async fn write_group(
        &mut self,
        group: &[usize],
    ) -> Result<Vec<Result<(), StoreError>>, Failed> {
        use sqlx::Connection as _;
        // The write lock first (waiting per the busy timeout): a transaction that reads
        // before it writes cannot take it once another connection (the adapters', the
        // relay's) wrote after its read began.
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| Failed::All(classify(e)))?;
        // On a failure, dropping the transaction rolls it back.
        let outcomes = write_together(&mut tx, self.commits, group).await?;
        tx.commit().await.map_err(|e| Failed::All(classify(e)))?;
        Ok(outcomes)
    }
}

/// Writes the commits on `conn`, one transaction per group (`Groups` has the rules). SQLite
/// sends no notices: it has one node.
pub(super) async fn write_batch(
    conn: &mut sqlx::SqliteConnection,
    commits: &[&RunCommit],
) -> Groups {
    Groups::write(commits.len(), &mut SqliteBatch { conn, commits }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::RUN_COLUMNS;

    #[test]
    fn run_inserts_write_the_run_columns() {
        for sql in [INSERT_FRESH_RUN, INSERT_RUN] {
            assert!(
                sql.starts_with(&format!(
                    "INSERT INTO executions ({RUN_COLUMNS}, wft_timeout_ms)"
                )),
                "{sql}"
            );
        }
    }
}
