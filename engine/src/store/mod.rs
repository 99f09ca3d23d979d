//! The store: the transactions the engine needs, each atomic, on PostgreSQL or SQLite.
//!
//! Not generic CRUD: every method is one unit of the engine's work, and the methods are
//! grouped by concern into traits: [`RunStore`] (a run's changes, checkpoint and history),
//! [`TaskStore`] (claims and leases of tasks), [`TimerStore`], [`NamespaceStore`],
//! [`EventStore`] (the outbox, its shards and the projection cursors), [`BreakerStore`] (the
//! circuit breakers workers report) and [`Introspection`] (what the store tells about itself
//! and the work waiting in it). [`Store`] is all of them: the engine holds one
//! `Arc<dyn Store>`; a part that needs one concern may take just its trait.
//! `RunStore::commit` writes everything one change of a run produces (events, checkpoint,
//! tasks, timers, a continued run) in one transaction, guarded by the checkpoint's version, or
//! nothing. SQL lives in this module (and the migrations) only; both backends share their
//! reads and claims through `sql::impl_store!` and differ where the dialects do (claims use
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL) and in how a group-commit batch is written: SQLite
//! runs its statements (`sqlite.rs`), PostgreSQL sends the whole batch to one function call,
//! one round trip (`postgres.rs`, migration 0012), both under the rules of `Groups`.
//! `conformance` (feature `conformance`, for tests only) is the behaviour kit every backend
//! passes.

mod breakers;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod events;
mod introspect;
mod namespaces;
mod postgres;
mod runs;
mod sql;
mod sqlite;
mod tasks;
mod timers;

pub use breakers::{BreakerReport, BreakerState, BreakerStore, OpenBreaker};
pub use events::EventStore;
pub use introspect::{Backlog, Introspection, TaskKind};
pub use namespaces::NamespaceStore;
pub use postgres::PostgresStore;
pub use runs::{ListAfter, ListQuery, RunStore};
pub use sqlite::SqliteStore;
pub(crate) use tasks::TASK_CHANNEL;
pub use tasks::{ActivityLease, ExpiredLease, TaskNotice, TaskStore};
pub use timers::{DueTimer, TimerStore};

use crate::history::RunCommit;
use crate::ids::RunId;
use std::sync::Arc;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The run changed since it was read; read it again and redo the decision.
    #[error("run {run} changed concurrently (expected version {expected})")]
    Conflict { run: RunId, expected: i64 },
    /// A task or timer named by the change is no longer held as the change assumed.
    #[error("the task is no longer current")]
    StaleTask,
    /// A run of this workflow id is already open.
    #[error("a run of this workflow id is already open")]
    AlreadyOpen,
    /// A start that assumed a never used workflow id (`RunCommit::fresh_id`) found a run of it.
    #[error("a run of this workflow id exists")]
    IdUsed,
    /// The database could not be reached or refused for a passing reason.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The change carries a request id that was already recorded: it was applied before.
    #[error("this request was already applied")]
    Duplicate,
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Outbox events to fold are not the next past their shard's cursor any more (a rebuild
    /// set it back while they were read): read again from the cursor.
    #[error("the outbox cursor moved since these events were read")]
    CursorMoved,
}

/// The engine's own tables: runs, histories, tasks, timers, the outbox and its cursors,
/// signal request ids, breaker reports.
pub static MIGRATIONS: martix_migrate::Owner = martix_migrate::Owner {
    name: "engine",
    postgres: sqlx::migrate!("../migrations/engine/postgres"),
    sqlite: sqlx::migrate!("../migrations/engine/sqlite"),
};

/// Most run changes one group-commit transaction carries.
pub(crate) const MAX_BATCH: usize = 64;

/// Events of one change per `history_events` row, at most (a reset copying a long history
/// writes several rows).
pub(crate) const EVENTS_PER_ROW: usize = 256;

/// The notices a commit sends: one per queue that got a task no poller of this node took.
pub(crate) fn notices(commit: &RunCommit) -> Vec<String> {
    let mut out = Vec::new();
    for c in std::iter::once(commit).chain(commit.new_run.as_deref()) {
        let ns = &c.run.namespace;
        if let Some(w) = &c.run.wft
            && w.lease.is_none()
        {
            // The run id keeps notices of several runs in one group-commit transaction apart:
            // PostgreSQL folds identical payloads of one transaction into one.
            out.push(format!("{ns}\tW\t{}\t{}", w.queue, c.run.run_id));
        }
        for op in &c.tasks {
            if let crate::history::TaskOp::Insert(t) = op
                && t.lease.is_none()
            {
                out.push(format!("{ns}\tA\t{}\t{}", t.task_queue, c.run.run_id));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a run's new activity tasks may be written at the batch's end: not when a
/// later statement of the change touches them (an activity scheduled and cancelled
/// by one completion; a closing run's deletes).
pub(crate) fn inserts_can_wait(c: &RunCommit) -> bool {
    !c.closed
        && c.tasks.iter().all(|op| match op {
            crate::history::TaskOp::Insert(_) => true,
            crate::history::TaskOp::Retry {
                scheduled_event_id: id,
                ..
            }
            | crate::history::TaskOp::RetryNow {
                scheduled_event_id: id,
                ..
            }
            | crate::history::TaskOp::Delete {
                scheduled_event_id: id,
                ..
            } => !c.tasks.iter().any(
                |o| matches!(o, crate::history::TaskOp::Insert(t) if t.scheduled_event_id == *id),
            ),
        })
}

/// How writing a group of a batch failed.
pub(crate) enum Failed {
    /// Change `i` was refused or failed after it wrote (or broke the transaction): the
    /// group is rolled back and written again without it.
    Change(usize, StoreError),
    /// A statement the whole group shares failed: each change is written alone.
    Batch(StoreError),
    /// The group could not be written at all (no connection, a failed commit), or its
    /// outcome could not be read.
    All(StoreError),
}

/// The outcomes of a batch written in groups, one transaction each: first all its changes
/// together; a change refused or failing after it wrote is answered with that and the others
/// are written again without it (rare: a lease or a request id lost since the change was
/// decided, a broken row); if a statement the group shares fails, each change is written
/// alone, so a bad change fails by itself.
pub(crate) struct Groups {
    out: Vec<Option<Result<(), StoreError>>>,
    alone: bool,
    /// A group failed as a whole (`Failed::All`): the connection may be broken.
    pub(crate) broken: bool,
}

/// Writes one group of a batch (indices into it, in order) in one transaction, each backend
/// its way.
pub(crate) trait GroupWriter {
    fn write_group(
        &mut self,
        group: &[usize],
    ) -> impl std::future::Future<Output = Result<Vec<Result<(), StoreError>>, Failed>> + Send;
}

impl Groups {
    /// Writes a batch of `n` changes with `writer`, group after group, until each change is
    /// answered.
    pub(crate) async fn write(n: usize, writer: &mut impl GroupWriter) -> Groups {
        let mut groups = Groups::new(n);
        loop {
            let next = groups.next();
            if next.is_empty() {
                return groups;
            }
            for group in next {
                let written = writer.write_group(&group).await;
                groups.record(&group, written);
            }
        }
    }

    fn new(n: usize) -> Self {
        Self {
            out: (0..n).map(|_| None).collect(),
            alone: false,
            broken: false,
        }
    }

    /// The groups to write next (indices, in order); none once every change is answered.
    fn next(&self) -> Vec<Vec<usize>> {
        let live: Vec<usize> = (0..self.out.len())
            .filter(|&i| self.out[i].is_none())
            .collect();
        if live.is_empty() {
            Vec::new()
        } else if self.alone {
            live.iter().map(|&i| vec![i]).collect()
        } else {
            vec![live]
        }
    }

    /// What writing `group` came to.
    fn record(&mut self, group: &[usize], written: Result<Vec<Result<(), StoreError>>, Failed>) {
        match written {
            Ok(outcomes) => {
                for (&i, o) in group.iter().zip(outcomes) {
                    self.out[i] = Some(o);
                }
            }
            Err(Failed::Change(i, e)) => self.out[i] = Some(Err(e)),
            Err(Failed::Batch(e)) if group.len() == 1 => self.out[group[0]] = Some(Err(e)),
            Err(Failed::Batch(_)) => self.alone = true,
            Err(Failed::All(e)) => {
                // Only an unreachable database may have broken the connection; a result that
                // could not be decoded is answered as corrupt, not as worth retrying.
                let corrupt = matches!(e, StoreError::Corrupt(_));
                self.broken |= !corrupt;
                let why = e.to_string();
                for &i in group {
                    self.out[i] = Some(Err(if corrupt {
                        StoreError::Corrupt(why.clone())
                    } else {
                        StoreError::Unavailable(why.clone())
                    }));
                }
            }
        }
    }

    /// One outcome per change, in order.
    pub(crate) fn outcomes(self) -> Vec<Result<(), StoreError>> {
        self.out
            .into_iter()
            .map(|o| o.expect("every change answered"))
            .collect()
    }
}

/// The transactions of the engine, of every concern: what the engine holds. Whatever
/// implements all the concerns' traits is a `Store`.
pub trait Store:
    RunStore
    + TaskStore
    + TimerStore
    + NamespaceStore
    + EventStore
    + BreakerStore
    + Introspection
    + Send
    + Sync
    + 'static
{
}

impl<S> Store for S where
    S: RunStore
        + TaskStore
        + TimerStore
        + NamespaceStore
        + EventStore
        + BreakerStore
        + Introspection
        + Send
        + Sync
        + 'static
{
}

/// Opens the store a database URL names (`postgres://...`, `sqlite://path`, `sqlite::memory:`)
/// and applies its migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Unavailable(format!(
            "unsupported database URL '{}': use postgres://... or sqlite://...",
            url.split('@').next_back().unwrap_or(url)
        )))
    }
}

/// A SQLSTATE of the connection exception (08) or operator intervention (57, e.g. a
/// restart's FATAL 57P01) classes: the session is gone or going.
pub(crate) fn connection_lost(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57")
}

/// Classifies a database error: the one place SQLSTATEs and driver errors are interpreted
/// (besides `martix_write_batch_v1`'s own MX001 refusals, read in `postgres.rs`).
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.is_unique_violation() {
                let msg = db.message();
                if db.constraint() == Some("executions_open_id")
                    || msg.contains("executions.namespace, executions.workflow_id")
                {
                    return StoreError::AlreadyOpen;
                }
                return StoreError::Corrupt(format!("unexpected duplicate: {msg}"));
            }
            match code.as_ref() {
                // serialization_failure, deadlock_detected, lock_not_available
                "40001" | "40P01" | "55P03" => StoreError::Unavailable(db.message().to_owned()),
                // SQLITE_BUSY, SQLITE_LOCKED
                "5" | "6" | "517" | "261" => StoreError::Unavailable(db.message().to_owned()),
                _ if connection_lost(&code) => StoreError::Unavailable(db.message().to_owned()),
                _ => StoreError::Corrupt(format!("database error {code}: {}", db.message())),
            }
        }
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}
