//! The store both backends share: one `SqlStore`, generic over the sqlx backend, that sends
//! PostgreSQL and SQLite the same statement text wherever their dialects agree (both take
//! `$N` placeholders). What differs is a `Backend`'s, implemented in `postgres/` and
//! `sqlite/`: the claims (row locks), the relay's locks and cursor checks, how a group-commit
//! batch is written (`store::sql::batch`), and the handles lent to projections.
//!
//! The trait impls live by concern: `runs.rs` (runs, namespaces), `tasks.rs` (claims, leases,
//! timers), `events.rs` (the outbox and its cursors), `introspect.rs` (figures, backlog,
//! breakers). Each carries the same `where` clause, the types the shared statements bind and
//! read, which both sqlx backends meet; Rust does not let one trait name them once (bounds on
//! other types than `Self` are not implied by a trait).

pub(crate) mod batch;
mod events;
mod introspect;
mod runs;
mod schedules;
mod tasks;

pub(crate) use events::Place;

use crate::history::{
    ActivityTask, Lease, Run, RunCommit, RunState, ScheduledActivity, WorkflowTask,
};
use crate::ids::{InvalidId, Namespace, RunId, TaskQueue, WorkflowId, WorkflowType};
use crate::store::events::Consumer;
use crate::store::projection::{Pools, ProjectionTx};
use crate::store::sql::batch::{Groups, Pending};
use crate::store::{StoreError, TaskNotice, classify};
use martix_proto::v1 as pb;
use prost::Message as _;
use sqlx::Row as _;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The execution columns, in the order `run_from_row` reads them.
pub(crate) const RUN_COLUMNS: &str = "run_id, namespace, workflow_id, workflow_type, \
    task_queue, status, start_time, close_time, next_event_id, version, wft_queue, wft_attempt, \
    wft_scheduled_event_id, wft_visible_at, wft_lease_id, wft_lease_until, state";

/// The activity task columns, in the order `activity_from_row` reads them.
pub(crate) const ACTIVITY_COLUMNS: &str = "run_id, scheduled_event_id, namespace, task_queue, \
    attempt, visible_at, lease_id, lease_until, lease_ms, info, heartbeat_details, heartbeat_ms, \
    started_at";

/// A store on a sqlx backend: [`PostgresStore`](crate::store::PostgresStore) or
/// [`SqliteStore`](crate::store::SqliteStore).
pub struct SqlStore<DB: sqlx::Database> {
    pub(in crate::store) write: sqlx::Pool<DB>,
    pub(in crate::store) read: sqlx::Pool<DB>,
    /// Write transactions committed or tried (`Introspection::write_transactions`).
    pub(in crate::store) writes: Arc<AtomicU64>,
    /// Reads of one run by id (`Introspection::run_reads`).
    pub(in crate::store) run_reads: Arc<AtomicU64>,
    /// The group-commit writer (`store::sql::batch`) that `RunStore::commit` queues for.
    pub(in crate::store) committer: tokio::sync::mpsc::Sender<Pending>,
    /// Other nodes' task notices, where the backend hears them (PostgreSQL).
    pub(in crate::store) notices: Option<tokio::sync::broadcast::Sender<TaskNotice>>,
}

impl<DB: sqlx::Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            write: self.write.clone(),
            read: self.read.clone(),
            writes: Arc::clone(&self.writes),
            run_reads: Arc::clone(&self.run_reads),
            committer: self.committer.clone(),
            notices: self.notices.clone(),
        }
    }
}

impl<DB: sqlx::Database> std::fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &DB::NAME)
            .field("write", &self.write)
            .field("read", &self.read)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

/// A Rust type the shared statements bind and read back as a column.
pub(crate) trait Column<DB: sqlx::Database>:
    for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB> + Send
{
}

impl<DB: sqlx::Database, T> Column<DB> for T where
    T: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB> + Send
{
}

/// What differs between the backends under the shared statements.
pub(crate) trait Backend: sqlx::Database {
    /// The name `Introspection::backend` answers.
    const NAME: &'static str;

    /// Leases the oldest available workflow task of queue `$4` of namespace `$3` to lease `$1`
    /// at `$2` (now), returning the run's `RUN_COLUMNS`.
    const CLAIM_WORKFLOW_TASK: &'static str;

    /// Moves to its run's own queue, and leases to `$1` at `$2`, the oldest workflow task of
    /// queue `$4`'s runs of namespace `$3` waiting on a sticky queue since `$5`, returning the
    /// run's `RUN_COLUMNS`.
    const CLAIM_EXPIRED_STICKY: &'static str;

    /// Leases the oldest available activity task of queue `$4` of namespace `$3` to `$1` at
    /// `$2`, returning its `ACTIVITY_COLUMNS`. An expired lease is not claimed here: the
    /// engine's reaper records the timed-out attempt and schedules the retry per the retry
    /// policy.
    const CLAIM_ACTIVITY_TASK: &'static str;

    /// Whether a claim looks for a task with a read first. A store without row locks to skip
    /// (SQLite, one writer for everything) does, so that an empty queue takes no turn on the
    /// writer; PostgreSQL claims at once (an update of no row writes nothing).
    const READ_BEFORE_CLAIM: bool;

    /// Locks every shard's row in shard order, where the backend has row locks (PostgreSQL;
    /// SQLite has one writer).
    const LOCK_SHARDS: Option<&'static str>;

    /// Lets a transaction of the relay's own bookkeeping (read model, sent marks) commit
    /// without waiting for the disk, where the backend can (PostgreSQL).
    const RELAXED_COMMIT: Option<&'static str>;

    /// Rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Begins a transaction that writes. SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`), waiting out another connection's write under the busy timeout: a
    /// transaction that read first could not take it once that connection wrote, and would fail
    /// with `database is locked` whatever the timeout.
    fn begin_write(
        pool: &sqlx::Pool<Self>,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self>, sqlx::Error>> + Send;

    /// Transactions the whole database has committed or rolled back, if it counts them.
    fn count_transactions(
        pool: &sqlx::Pool<Self>,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// Writes a batch of changes on `conn`, one transaction per group (`Groups` has the
    /// rules), sending task notices as node `notify_as` where the backend has them.
    fn write_batch(
        conn: &mut Self::Connection,
        commits: &[&RunCommit],
        notify_as: Option<&str>,
    ) -> impl Future<Output = Groups> + Send;

    /// The condition on `outbox o` joined with its shard `outbox_shards s` that a row lies
    /// past `consumer`'s cursor, as a range of `outbox_pending`.
    fn past_cursor(consumer: Consumer) -> String;

    /// The `FROM` of the relay's read of shards past their cursors (`past`), up to `limit`
    /// rows a shard, through `WHERE s.shard IN (`.
    fn push_pending_from(qb: &mut sqlx::QueryBuilder<Self>, past: &str, limit: i64);

    /// Whether no row lies between `consumer`'s cursor of each shard of `first` and the
    /// batch's first row there (locking the cursors where the backend has row locks).
    fn outbox_follows_cursor(
        conn: &mut Self::Connection,
        consumer: Consumer,
        first: &BTreeMap<i32, Place>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A transaction lent to a projection.
    fn projection_tx(conn: &mut Self::Connection) -> ProjectionTx<'_>;

    /// The pools lent to a domain's own tables.
    fn pools(write: &sqlx::Pool<Self>, read: &sqlx::Pool<Self>) -> Pools;
}

/// A name or id read from a column, checked by the rules it was written under.
fn name<T>(
    raw: Result<String, sqlx::Error>,
    parse: fn(&str) -> Result<T, InvalidId>,
) -> Result<T, StoreError> {
    parse(&raw.map_err(corrupt)?).map_err(corrupt)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The events of a `history_events` row: several, length-delimited, when it has a
/// `last_event_id`; one, not delimited, in a row written before rows held several.
fn events_from_row(
    last_event_id: Option<i64>,
    data: &[u8],
) -> Result<Vec<pb::HistoryEvent>, StoreError> {
    if last_event_id.is_none() {
        return Ok(vec![pb::HistoryEvent::decode(data).map_err(corrupt)?]);
    }
    let mut buf = data;
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(pb::HistoryEvent::decode_length_delimited(&mut buf).map_err(corrupt)?);
    }
    Ok(out)
}

// Private helpers of the trait impls (claims and row decoding). `private_bounds`: the bounds name
// the crate's own traits (`Backend`, `Column`), and nothing outside the crate calls these.
#[allow(private_bounds)]
impl<DB> SqlStore<DB>
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
    /// Claims a task with `claim`, an update returning the row it leased, after `probe` found
    /// one where the backend reads first (`Backend::READ_BEFORE_CLAIM`). A claim counts as a
    /// write transaction when it claimed, and, where the backend reads first, whenever it ran
    /// (it took the writer's turn even if it lost the race).
    async fn claim(
        &self,
        probe: sqlx::query::Query<'_, DB, DB::Arguments>,
        claim: sqlx::query::Query<'_, DB, DB::Arguments>,
    ) -> Result<Option<DB::Row>, StoreError> {
        if DB::READ_BEFORE_CLAIM
            && probe
                .fetch_optional(&self.read)
                .await
                .map_err(classify)?
                .is_none()
        {
            return Ok(None);
        }
        let row = claim.fetch_optional(&self.write).await.map_err(classify)?;
        if row.is_some() || DB::READ_BEFORE_CLAIM {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(row)
    }

    /// A run from its `RUN_COLUMNS`.
    fn run_from_row(row: &DB::Row) -> Result<Run, StoreError> {
        let run_id: String = row.try_get(0).map_err(corrupt)?;
        let status: i32 = row.try_get(5).map_err(corrupt)?;
        let wft_queue: Option<String> = row.try_get(10).map_err(corrupt)?;
        let lease_id: Option<String> = row.try_get(14).map_err(corrupt)?;
        let lease_until: Option<i64> = row.try_get(15).map_err(corrupt)?;
        let state: Vec<u8> = row.try_get(16).map_err(corrupt)?;
        let wft = match wft_queue {
            None => None,
            Some(queue) => Some(WorkflowTask {
                queue: TaskQueue::parse(&queue).map_err(corrupt)?,
                attempt: row.try_get(11).map_err(corrupt)?,
                scheduled_event_id: row.try_get(12).map_err(corrupt)?,
                visible_at: row.try_get(13).map_err(corrupt)?,
                lease: lease_id.map(|id| Lease {
                    id,
                    until: lease_until.unwrap_or(0),
                }),
            }),
        };
        Ok(Run {
            run_id: RunId::parse("run_id", &run_id).map_err(corrupt)?,
            namespace: name(row.try_get(1), Namespace::parse)?,
            workflow_id: name(row.try_get(2), WorkflowId::parse)?,
            workflow_type: name(row.try_get(3), WorkflowType::parse)?,
            task_queue: name(row.try_get(4), TaskQueue::parse)?,
            status: pb::WorkflowStatus::try_from(status).map_err(corrupt)?,
            start_time: row.try_get(6).map_err(corrupt)?,
            close_time: row.try_get(7).map_err(corrupt)?,
            next_event_id: row.try_get(8).map_err(corrupt)?,
            version: row.try_get(9).map_err(corrupt)?,
            wft,
            state: RunState::decode(&state[..]).map_err(corrupt)?,
        })
    }

    /// An activity task from its `ACTIVITY_COLUMNS`.
    fn activity_from_row(row: &DB::Row) -> Result<ActivityTask, StoreError> {
        let run_id: String = row.try_get(0).map_err(corrupt)?;
        let lease_id: Option<String> = row.try_get(6).map_err(corrupt)?;
        let lease_until: Option<i64> = row.try_get(7).map_err(corrupt)?;
        Ok(ActivityTask {
            run_id: RunId::parse("run_id", &run_id).map_err(corrupt)?,
            scheduled_event_id: row.try_get(1).map_err(corrupt)?,
            namespace: name(row.try_get(2), Namespace::parse)?,
            task_queue: name(row.try_get(3), TaskQueue::parse)?,
            attempt: row.try_get(4).map_err(corrupt)?,
            visible_at: row.try_get(5).map_err(corrupt)?,
            lease: lease_id.map(|id| Lease {
                id,
                until: lease_until.unwrap_or(0),
            }),
            lease_ms: row.try_get(8).map_err(corrupt)?,
            activity: ScheduledActivity::decode(row.try_get::<&[u8], _>(9).map_err(corrupt)?)
                .map_err(corrupt)?,
            heartbeat_details: row.try_get(10).map_err(corrupt)?,
            heartbeat_ms: row.try_get(11).map_err(corrupt)?,
            started_at: row.try_get(12).map_err(corrupt)?,
        })
    }
}
