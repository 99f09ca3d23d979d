//! The PostgreSQL group-commit writer: a group of a batch goes as arrays to one call of
//! `martix_write_batch_v1` (migration 0012; 0022 its latest form), one round trip and one transaction, whose
//! answer and refusals (SQLSTATE MX001) are read back into each change's outcome.

use crate::history::{self, RunCommit, TaskOp, TimerOp};
use crate::store::sql::batch::{
    Failed, GroupWriter, Groups, history_rows, inserts_can_wait, notices,
};
use crate::store::{StoreError, classify, connection_lost};
use prost::Message as _;

/// A group of a batch as the arrays `martix_write_batch_v1` takes (migration 0012 explains
/// them): one call, one round trip, one transaction.
#[derive(Default)]
struct BatchArrays {
    c_change: Vec<i32>,
    c_run: Vec<String>,
    c_expected: Vec<Option<i64>>,
    c_fresh: Vec<bool>,
    c_namespace: Vec<String>,
    c_workflow_id: Vec<String>,
    c_workflow_type: Vec<String>,
    c_task_queue: Vec<String>,
    c_status: Vec<i32>,
    c_start: Vec<i64>,
    c_close: Vec<Option<i64>>,
    c_next: Vec<i64>,
    c_wft_queue: Vec<Option<String>>,
    c_wft_attempt: Vec<i32>,
    c_wft_sched: Vec<i64>,
    c_wft_visible: Vec<i64>,
    c_lease_id: Vec<Option<String>>,
    c_lease_until: Vec<Option<i64>>,
    c_state: Vec<Vec<u8>>,
    c_wft_timeout: Vec<i64>,
    o_checkpoint: Vec<i32>,
    o_kind: Vec<i16>,
    o_text: Vec<Option<String>>,
    o_a: Vec<Option<i64>>,
    o_b: Vec<Option<i64>>,
    o_c: Vec<Option<i64>>,
    h_checkpoint: Vec<i32>,
    h_first: Vec<i64>,
    h_last: Vec<i64>,
    h_data: Vec<Vec<u8>>,
    x_checkpoint: Vec<i32>,
    x_event_id: Vec<String>,
    x_shard: Vec<i32>,
    x_subject: Vec<String>,
    x_workflow_type: Vec<String>,
    x_run: Vec<String>,
    x_sequence: Vec<i64>,
    x_event_type: Vec<String>,
    x_occurred: Vec<i64>,
    x_body: Vec<String>,
    t_checkpoint: Vec<i32>,
    t_in_place: Vec<bool>,
    t_sched: Vec<i64>,
    t_queue: Vec<String>,
    t_attempt: Vec<i32>,
    t_visible: Vec<i64>,
    t_lease_id: Vec<Option<String>>,
    t_lease_until: Vec<Option<i64>>,
    t_lease_ms: Vec<i64>,
    t_info: Vec<Vec<u8>>,
    t_details: Vec<Option<Vec<u8>>>,
    t_heartbeat_ms: Vec<i64>,
    t_started: Vec<Option<i64>>,
}

/// The statement kinds of `o_kind` (migration 0012).
mod op {
    pub(super) const NOTIFY: i16 = 1;
    pub(super) const REQUEST_ID: i16 = 2;
    pub(super) const FIRED_TIMER: i16 = 3;
    pub(super) const TASK_IN_PLACE: i16 = 4;
    pub(super) const RETRY: i16 = 5;
    pub(super) const RETRY_NOW: i16 = 6;
    pub(super) const DELETE_LEASED: i16 = 7;
    pub(super) const DELETE: i16 = 8;
    pub(super) const TIMER_INSERT: i16 = 9;
    pub(super) const TIMER_DELETE: i16 = 10;
    pub(super) const CLOSE: i16 = 11;
    pub(super) const HOLD: i16 = 12;
    pub(super) const PARK: i16 = 13;
    pub(super) const UNPARK: i16 = 14;
}

impl BatchArrays {
    /// Adds change `change` (its position in the group): its run, then the run it continues
    /// as, each with its statements in the order the function runs them.
    fn push(&mut self, change: i32, c: &RunCommit, notify_as: Option<&str>) {
        let notices = notify_as
            .map(|node| {
                notices(c)
                    .into_iter()
                    .map(|n| format!("{node}\t{n}"))
                    .collect()
            })
            .unwrap_or_default();
        self.push_run(change, c, notices);
        if let Some(next) = &c.new_run {
            self.push_run(change, next, Vec::new());
        }
    }

    fn push_op(
        &mut self,
        kind: i16,
        text: Option<&str>,
        a: Option<i64>,
        b: Option<i64>,
        c: Option<i64>,
    ) {
        self.o_checkpoint.push(self.c_run.len() as i32);
        self.o_kind.push(kind);
        self.o_text.push(text.map(str::to_owned));
        self.o_a.push(a);
        self.o_b.push(b);
        self.o_c.push(c);
    }

    fn push_run(&mut self, change: i32, c: &RunCommit, notices: Vec<String>) {
        let r = &c.run;
        let run_id = r.run_id.to_text();
        let wft = r.wft.as_ref();
        let lease = wft.and_then(|w| w.lease.as_ref());
        self.c_change.push(change);
        self.c_run.push(run_id.clone());
        self.c_expected.push(c.expected_version);
        self.c_fresh.push(c.fresh_id);
        self.c_namespace.push(r.namespace.to_string());
        // Only an insert writes the run's names; an update leaves them empty (no copies, fewer
        // bytes for the server to read).
        let inserted = c.expected_version.is_none();
        let name = |n: &str| {
            if inserted {
                n.to_owned()
            } else {
                String::new()
            }
        };
        self.c_workflow_id.push(name(&r.workflow_id));
        self.c_workflow_type.push(name(&r.workflow_type));
        self.c_task_queue.push(name(&r.task_queue));
        self.c_status.push(r.status as i32);
        self.c_start.push(r.start_time);
        self.c_close.push(r.close_time);
        self.c_next.push(r.next_event_id);
        self.c_wft_queue.push(wft.map(|w| w.queue.to_string()));
        self.c_wft_attempt.push(wft.map_or(0, |w| w.attempt));
        self.c_wft_sched
            .push(wft.map_or(0, |w| w.scheduled_event_id));
        self.c_wft_visible.push(wft.map_or(0, |w| w.visible_at));
        self.c_lease_id.push(lease.map(|l| l.id.clone()));
        self.c_lease_until.push(lease.map(|l| l.until));
        self.c_state.push(r.state.encode_to_vec());
        self.c_wft_timeout.push(r.state.workflow_task_timeout_ms);
        let checkpoint = self.c_run.len() as i32;

        for n in &notices {
            self.push_op(op::NOTIFY, Some(n), None, None, None);
        }
        if let Some(request_id) = &c.request_id {
            self.push_op(
                op::REQUEST_ID,
                Some(request_id),
                Some(c.at),
                Some(c.request_fingerprint),
                None,
            );
        }
        if let Some(key) = &c.fired_timer {
            self.push_op(op::FIRED_TIMER, Some(key), None, None, None);
        }
        let in_place = !inserts_can_wait(c);
        for t in &c.tasks {
            match t {
                TaskOp::Insert(t) => {
                    debug_assert!(t.run_id == r.run_id && t.namespace == r.namespace);
                    self.t_checkpoint.push(checkpoint);
                    self.t_in_place.push(in_place);
                    self.t_sched.push(t.scheduled_event_id);
                    self.t_queue.push(t.task_queue.to_string());
                    self.t_attempt.push(t.attempt);
                    self.t_visible.push(t.visible_at);
                    self.t_lease_id.push(t.lease.as_ref().map(|l| l.id.clone()));
                    self.t_lease_until.push(t.lease.as_ref().map(|l| l.until));
                    self.t_lease_ms.push(t.lease_ms);
                    self.t_info.push(prost::Message::encode_to_vec(&t.activity));
                    self.t_details.push(t.heartbeat_details.clone());
                    self.t_heartbeat_ms.push(t.heartbeat_ms);
                    self.t_started.push(t.started_at);
                    if in_place {
                        let k = self.t_sched.len() as i64;
                        self.push_op(op::TASK_IN_PLACE, None, Some(k), None, None);
                    }
                }
                TaskOp::Retry {
                    scheduled_event_id,
                    attempt,
                    visible_at,
                    lease_id,
                } => self.push_op(
                    op::RETRY,
                    Some(lease_id),
                    Some(*scheduled_event_id),
                    Some(i64::from(*attempt)),
                    Some(*visible_at),
                ),
                TaskOp::RetryNow {
                    scheduled_event_id,
                    attempt,
                    visible_at,
                } => self.push_op(
                    op::RETRY_NOW,
                    None,
                    Some(*scheduled_event_id),
                    Some(i64::from(*attempt)),
                    Some(*visible_at),
                ),
                TaskOp::Hold {
                    scheduled_event_id,
                    visible_at,
                } => self.push_op(
                    op::HOLD,
                    None,
                    Some(*scheduled_event_id),
                    None,
                    Some(*visible_at),
                ),
                TaskOp::Park {
                    scheduled_event_id,
                    lease_id,
                    breaker,
                } => self.push_op(
                    op::PARK,
                    Some(&format!(
                        "{lease_id}\u{1f}{}",
                        history::breaker_lease(breaker)
                    )),
                    Some(*scheduled_event_id),
                    None,
                    Some(history::PARKED_UNTIL),
                ),
                TaskOp::Unpark {
                    scheduled_event_id,
                    breaker,
                    visible_at,
                } => self.push_op(
                    op::UNPARK,
                    Some(&history::breaker_lease(breaker)),
                    Some(*scheduled_event_id),
                    None,
                    Some(*visible_at),
                ),
                TaskOp::Delete {
                    scheduled_event_id,
                    lease_id: Some(lease_id),
                } => self.push_op(
                    op::DELETE_LEASED,
                    Some(lease_id),
                    Some(*scheduled_event_id),
                    None,
                    None,
                ),
                TaskOp::Delete {
                    scheduled_event_id,
                    lease_id: None,
                } => self.push_op(op::DELETE, None, Some(*scheduled_event_id), None, None),
            }
        }
        for t in &c.timers {
            match t {
                TimerOp::Insert { key, fire_at } => {
                    self.push_op(op::TIMER_INSERT, Some(key), Some(*fire_at), None, None)
                }
                TimerOp::Delete { key } => {
                    self.push_op(op::TIMER_DELETE, Some(key), None, None, None)
                }
            }
        }
        if c.closed {
            self.push_op(op::CLOSE, None, None, None, None);
        }
        for row in history_rows(&run_id, &c.events) {
            self.h_checkpoint.push(checkpoint);
            self.h_first.push(row.first);
            self.h_last.push(row.last);
            self.h_data.push(row.data);
        }
        for e in &c.outbox {
            debug_assert_eq!(r.namespace, e.namespace);
            self.x_checkpoint.push(checkpoint);
            self.x_event_id.push(e.event_id.clone());
            self.x_shard
                .push(crate::store::events::shard_of(&e.namespace, &e.subject));
            self.x_subject.push(e.subject.clone());
            self.x_workflow_type.push(e.workflow_type.clone());
            self.x_run.push(e.run_id.to_text());
            self.x_sequence.push(e.sequence);
            self.x_event_type.push(e.event_type.clone());
            self.x_occurred.push(e.occurred_at);
            self.x_body.push(e.body.clone());
        }
    }

    /// Calls the function: one outcome per checkpoint (0 written, 1 stale version, 2 the
    /// workflow id was used).
    async fn write(self, conn: &mut sqlx::PgConnection) -> Result<Vec<i32>, sqlx::Error> {
        const CALL: &str = "SELECT martix_write_batch_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, \
            $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, \
            $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39, $40, $41, $42, $43, \
            $44, $45, $46, $47, $48, $49, $50, $51, $52, $53)";
        sqlx::query_scalar(CALL)
            .bind(self.c_change)
            .bind(self.c_run)
            .bind(self.c_expected)
            .bind(self.c_fresh)
            .bind(self.c_namespace)
            .bind(self.c_workflow_id)
            .bind(self.c_workflow_type)
            .bind(self.c_task_queue)
            .bind(self.c_status)
            .bind(self.c_start)
            .bind(self.c_close)
            .bind(self.c_next)
            .bind(self.c_wft_queue)
            .bind(self.c_wft_attempt)
            .bind(self.c_wft_sched)
            .bind(self.c_wft_visible)
            .bind(self.c_lease_id)
            .bind(self.c_lease_until)
            .bind(self.c_state)
            .bind(self.c_wft_timeout)
            .bind(self.o_checkpoint)
            .bind(self.o_kind)
            .bind(self.o_text)
            .bind(self.o_a)
            .bind(self.o_b)
            .bind(self.o_c)
            .bind(self.h_checkpoint)
            .bind(self.h_first)
            .bind(self.h_last)
            .bind(self.h_data)
            .bind(self.x_checkpoint)
            .bind(self.x_event_id)
            .bind(self.x_shard)
            .bind(self.x_subject)
            .bind(self.x_workflow_type)
            .bind(self.x_run)
            .bind(self.x_sequence)
            .bind(self.x_event_type)
            .bind(self.x_occurred)
            .bind(self.x_body)
            .bind(self.t_checkpoint)
            .bind(self.t_in_place)
            .bind(self.t_sched)
            .bind(self.t_queue)
            .bind(self.t_attempt)
            .bind(self.t_visible)
            .bind(self.t_lease_id)
            .bind(self.t_lease_until)
            .bind(self.t_lease_ms)
            .bind(self.t_info)
            .bind(self.t_details)
            .bind(self.t_heartbeat_ms)
            .bind(self.t_started)
            .fetch_one(conn)
            .await
    }
}

/// Search attribute rows of a group, as the arrays of one insert.
#[derive(Default)]
struct SearchRows {
    run: Vec<String>,
    namespace: Vec<String>,
    name: Vec<String>,
    kind: Vec<i16>,
    text: Vec<Option<String>>,
    int: Vec<Option<i64>>,
}

impl SearchRows {
    /// Keeps the last row of each (run, name).
    fn keep_last(&mut self) {
        let mut seen = std::collections::HashSet::new();
        let keep: Vec<bool> = (0..self.run.len())
            .rev()
            .map(|i| seen.insert((self.run[i].clone(), self.name[i].clone())))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut k = keep.iter();
        self.run.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.namespace.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.name.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.kind.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.text.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.int.retain(|_| *k.next().unwrap_or(&true));
    }
}

/// Writes a group of a batch with one call of `martix_write_batch_v1`; a group with changes
/// that write timer rows for other runs (`RunCommit::foreign_timers`, rare: a child workflow
/// or its parent closed) or search attributes writes those rows, for the changes written, in
/// the same transaction.
async fn write_group(
    conn: &mut sqlx::PgConnection,
    commits: &[&RunCommit],
    group: &[usize],
    notify_as: Option<&str>,
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    let extras = |c: &RunCommit| {
        !c.foreign_timers.is_empty()
            || !c.search_attributes.is_empty()
            || c.new_run
                .as_deref()
                .is_some_and(|n| !n.search_attributes.is_empty())
    };
    if !group.iter().any(|&i| extras(commits[i])) {
        return write_batch_call(conn, commits, group, notify_as).await;
    }
    use sqlx::Connection as _;
    let mut tx = conn.begin().await.map_err(|e| Failed::All(classify(e)))?;
    let outcomes = write_batch_call(&mut tx, commits, group, notify_as).await?;
    let (mut runs, mut keys, mut at) = (Vec::new(), Vec::new(), Vec::new());
    for (&i, outcome) in group.iter().zip(&outcomes) {
        if outcome.is_ok() {
            for t in &commits[i].foreign_timers {
                runs.push(t.run_id.to_text());
                keys.push(t.key.clone());
                at.push(t.fire_at);
            }
        }
    }
    sqlx::query(
        "INSERT INTO timers (run_id, timer_key, fire_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
    )
    .bind(runs)
    .bind(keys)
    .bind(at)
    .execute(&mut *tx)
    .await
    .map_err(|e| Failed::Batch(classify(e)))?;
    let mut a = SearchRows::default();
    for (&i, outcome) in group.iter().zip(&outcomes) {
        if outcome.is_ok() {
            let c = commits[i];
            for c in std::iter::once(c).chain(c.new_run.as_deref()) {
                for (name, value) in &c.search_attributes {
                    let (kind, text, int) = crate::visibility::stored(value);
                    a.run.push(c.run.run_id.to_text());
                    a.namespace.push(c.run.namespace.to_string());
                    a.name.push(name.clone());
                    a.kind.push(kind);
                    a.text.push(text);
                    a.int.push(int);
                }
            }
        }
    }
    // A later value of a name wins: the rows go in the order their changes were decided,
    // and one statement may not touch a row twice.
    a.keep_last();
    sqlx::query(
        "INSERT INTO search_attributes (run_id, namespace, name, kind, text_value, int_value) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[], \
         $6::bigint[]) ON CONFLICT (run_id, name) DO UPDATE SET kind = excluded.kind, \
         text_value = excluded.text_value, int_value = excluded.int_value",
    )
    .bind(a.run)
    .bind(a.namespace)
    .bind(a.name)
    .bind(a.kind)
    .bind(a.text)
    .bind(a.int)
    .execute(&mut *tx)
    .await
    .map_err(|e| Failed::Batch(classify(e)))?;
    tx.commit().await.map_err(|e| Failed::All(classify(e)))?;
    Ok(outcomes)
}

/// Writes a group of a batch with one call of `martix_write_batch_v1`.
async fn write_batch_call(
    conn: &mut sqlx::PgConnection,
    commits: &[&RunCommit],
    group: &[usize],
    notify_as: Option<&str>,
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    let mut arrays = BatchArrays::default();
    let mut first_checkpoint = Vec::with_capacity(group.len());
    for (pos, &i) in group.iter().enumerate() {
        first_checkpoint.push(arrays.c_run.len());
        arrays.push(pos as i32, commits[i], notify_as);
    }
    match arrays.write(conn).await {
        Ok(outcome) => Ok(group
            .iter()
            .zip(first_checkpoint)
            .map(|(&i, k)| {
                let c = commits[i];
                match outcome.get(k) {
                    Some(0) => Ok(()),
                    Some(1) => Err(StoreError::Conflict {
                        run: c.run.run_id,
                        expected: c.expected_version.unwrap_or_default(),
                    }),
                    Some(2) => Err(StoreError::IdUsed),
                    other => Err(StoreError::Corrupt(format!(
                        "martix_write_batch_v1 answered {other:?} for a change"
                    ))),
                }
            })
            .collect()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("MX001") => {
            // DETAIL '<position in the group> <reason>'.
            let detail = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|e| e.detail())
                .unwrap_or_default();
            let (pos, reason) = detail.split_once(' ').unwrap_or((detail, ""));
            let Some(&i) = pos.parse::<usize>().ok().and_then(|p| group.get(p)) else {
                return Err(Failed::Batch(StoreError::Corrupt(format!(
                    "martix_write_batch_v1 refused a change it did not name: {detail:?}"
                ))));
            };
            let c = commits[i];
            let e = match reason {
                "stale_task" => StoreError::StaleTask,
                "duplicate" => StoreError::Duplicate,
                "id_used" => StoreError::IdUsed,
                "conflict" => StoreError::Conflict {
                    run: c.run.run_id,
                    expected: c.expected_version.unwrap_or_default(),
                },
                other => StoreError::Corrupt(format!(
                    "martix_write_batch_v1 refused a change for an unknown reason {other:?}"
                )),
            };
            Err(Failed::Change(i, e))
        }
        // The connection was lost or the server is going away (a restart's FATAL 57P01):
        // nothing was written; the connection is not reused.
        Err(sqlx::Error::Database(db)) if db.code().is_some_and(|c| connection_lost(&c)) => Err(
            Failed::All(StoreError::Unavailable(db.message().to_owned())),
        ),
        // A statement failed (a constraint, a deadlock): which change broke it is not known,
        // so each is written alone and answered with its own error.
        Err(e @ sqlx::Error::Database(_)) => Err(Failed::Batch(classify(e))),
        Err(e) => Err(Failed::All(classify(e))),
    }
}

/// A batch's commits and where they go.
struct PgBatch<'a> {
    conn: &'a mut sqlx::PgConnection,
    commits: &'a [&'a RunCommit],
    notify_as: Option<&'a str>,
}

impl GroupWriter for PgBatch<'_> {
    async fn write_group(
        &mut self,
        group: &[usize],
    ) -> Result<Vec<Result<(), StoreError>>, Failed> {
        write_group(&mut *self.conn, self.commits, group, self.notify_as).await
    }
}

/// Writes the commits on `conn`, one call and one transaction per group (`Groups` has the
/// rules).
pub(super) async fn write_batch(
    conn: &mut sqlx::PgConnection,
    commits: &[&RunCommit],
    notify_as: Option<&str>,
) -> Groups {
    let mut batch = PgBatch {
        conn,
        commits,
        notify_as,
    };
    Groups::write(commits.len(), &mut batch).await
}
