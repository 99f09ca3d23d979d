//! The PostgreSQL backend: the production store. Several engine nodes may share one database;
//! claims use `FOR UPDATE SKIP LOCKED` so they never hand one task to two nodes.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

use crate::store::Failed;

/// The store on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    write: sqlx::PgPool,
    read: sqlx::PgPool,
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    committer: tokio::sync::mpsc::UnboundedSender<Pending>,
    notices: tokio::sync::broadcast::Sender<crate::store::TaskNotice>,
}

/// Applies the engine's migrations (`martix_migrate`: one migrator at a time per database,
/// tracked apart from other owners').
async fn migrate(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(classify)?;
    let applied = martix_migrate::apply_postgres(&mut conn, &super::MIGRATIONS).await;
    if applied.is_err() {
        // Never hand a session that may still hold the migrations' lock back to the pool:
        // closing it releases the lock.
        conn.close_on_drop();
    }
    applied.map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))
}

impl PostgresStore {
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
        let writes = std::sync::Arc::default();
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
                std::sync::Arc::clone(&writes),
                writers,
                // Writers keep their connections when that leaves two for the rest (besides
                // the one LISTEN holds).
                size as usize >= writers + 3,
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
    Postgres,
    " FOR UPDATE",
    "SET LOCAL synchronous_commit = off",
    true
);

/// The relay's check that a batch is the next past `consumer`'s cursors of its shards
/// (`follows_cursor` in store/events.rs), in one statement: the shards' rows locked in shard
/// order, and a look for a row between each cursor and the batch's first row of the shard
/// (`first`: shard -> its first `(xact, position)`).
async fn outbox_follows_cursor(
    conn: &mut sqlx::PgConnection,
    consumer: crate::store::events::Consumer,
    first: &std::collections::BTreeMap<i32, (i64, i64)>,
) -> Result<bool, StoreError> {
    let cursor = consumer.cursor();
    let shards: Vec<i32> = first.keys().copied().collect();
    let xacts: Vec<i64> = first.values().map(|f| f.0).collect();
    let positions: Vec<i64> = first.values().map(|f| f.1).collect();
    let gaps: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM (SELECT shard, {cursor}_xact AS x, {cursor}_position AS p \
         FROM outbox_shards WHERE shard = ANY($1) ORDER BY shard FOR UPDATE) c \
         JOIN (SELECT unnest($1::INTEGER[]) AS shard, unnest($2::BIGINT[]) AS x, \
         unnest($3::BIGINT[]) AS p) f ON f.shard = c.shard \
         WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.shard = c.shard \
         AND (o.xact, o.position) > (c.x, c.p) AND (o.xact, o.position) < (f.x, f.p))"
    )))
    .bind(&shards)
    .bind(&xacts)
    .bind(&positions)
    .fetch_one(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(gaps == 0)
}

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
}

impl BatchArrays {
    /// Adds change `change` (its position in the group): its run, then the run it continues
    /// as, each with its statements in the order the function runs them.
    fn push(&mut self, change: i32, c: &RunCommit, notify_as: Option<&str>) {
        let notices = notify_as
            .map(|node| {
                crate::store::notices(c)
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
        self.c_namespace.push(r.namespace.clone());
        // Only an insert writes the run's names; an update leaves them empty (no copies, fewer
        // bytes for the server to read).
        let inserted = c.expected_version.is_none();
        let name = |n: &String| if inserted { n.clone() } else { String::new() };
        self.c_workflow_id.push(name(&r.workflow_id));
        self.c_workflow_type.push(name(&r.workflow_type));
        self.c_task_queue.push(name(&r.task_queue));
        self.c_status.push(r.status as i32);
        self.c_start.push(r.start_time);
        self.c_close.push(r.close_time);
        self.c_next.push(r.next_event_id);
        self.c_wft_queue.push(wft.map(|w| w.queue.clone()));
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
            self.push_op(op::REQUEST_ID, Some(request_id), Some(c.at), None, None);
        }
        if let Some(key) = &c.fired_timer {
            self.push_op(op::FIRED_TIMER, Some(key), None, None, None);
        }
        let in_place = !crate::store::inserts_can_wait(c);
        for t in &c.tasks {
            match t {
                TaskOp::Insert(t) => {
                    debug_assert!(t.run_id == r.run_id && t.namespace == r.namespace);
                    self.t_checkpoint.push(checkpoint);
                    self.t_in_place.push(in_place);
                    self.t_sched.push(t.scheduled_event_id);
                    self.t_queue.push(t.task_queue.clone());
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
        for (_, first, last, data) in event_rows(&run_id, &c.events) {
            self.h_checkpoint.push(checkpoint);
            self.h_first.push(first);
            self.h_last.push(last);
            self.h_data.push(data);
        }
        for e in &c.outbox {
            debug_assert_eq!(e.namespace, r.namespace);
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

/// Writes a group of a batch with one call of `martix_write_batch_v1`.
async fn write_group(
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
        Err(sqlx::Error::Database(db))
            if db.code().is_some_and(|c| crate::store::connection_lost(&c)) =>
        {
            Err(Failed::All(StoreError::Unavailable(
                db.message().to_owned(),
            )))
        }
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

impl crate::store::GroupWriter for PgBatch<'_> {
    async fn write_group(
        &mut self,
        group: &[usize],
    ) -> Result<Vec<Result<(), StoreError>>, Failed> {
        write_group(&mut *self.conn, self.commits, group, self.notify_as).await
    }
}

/// Writes the commits on `conn`, one call and one transaction per group (`Groups` has the
/// rules).
async fn write_batch(
    conn: &mut sqlx::PgConnection,
    commits: &[&RunCommit],
    notify_as: Option<&str>,
) -> crate::store::Groups {
    let mut batch = PgBatch {
        conn,
        commits,
        notify_as,
    };
    crate::store::Groups::write(commits.len(), &mut batch).await
}
