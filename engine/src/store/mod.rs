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
//! tasks, timers, outbox rows, a continued run) in one transaction, guarded by the
//! checkpoint's version, or nothing.
//!
//! SQL lives in this module (and the migrations) only. Both backends are one implementation,
//! `sql::SqlStore`, generic over the sqlx backend and sending the same statement text wherever
//! the dialects agree; `postgres/` and `sqlite/` connect it and hold what differs: claims
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL), the relay's locks and cursor checks, and how a
//! group-commit batch (`batch`) is written: SQLite runs its statements, PostgreSQL sends the
//! whole batch to one function call, one round trip (migration 0012).
//!
//! `conformance` (feature `conformance`, for tests only) is the behaviour kit every backend
//! passes.

mod breakers;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod event;
pub mod events;
mod introspect;
mod namespaces;
mod postgres;
pub mod projection;
mod runs;
mod schedules;
mod sql;
mod sqlite;
mod tasks;
mod timers;

pub use breakers::{
    BREAKER_REPORT_FRESH_MS, BREAKER_REPORT_KEPT_MS, BreakerHold, BreakerReport, BreakerState,
    BreakerStore, OpenBreaker, PollerSeen, WorkerBreaker,
};
pub use events::EventStore;
pub use introspect::{Backlog, Introspection, TaskKind};
pub use namespaces::{DEFAULT_RETENTION_MS, NamespaceSettings, NamespaceStore};
pub use postgres::PostgresStore;
pub use runs::{ListAfter, ListQuery, RunStore};
pub use schedules::{ScheduleRow, ScheduleStore};
pub use sql::SqlStore;
pub use sqlite::SqliteStore;
pub(crate) use tasks::TASK_CHANNEL;
pub use tasks::{ActivityLease, ExpiredLease, TaskNotice, TaskStore};
pub use timers::{DueTimer, TimerStore};

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
    /// The store's write queue is full: the change was not queued (nothing written).
    #[error("{0}")]
    Overloaded(String),
}

/// The engine's own tables: runs, histories, tasks, timers, the outbox and its cursors,
/// signal request ids, breaker reports.
pub static MIGRATIONS: martix_migrate::Owner = martix_migrate::Owner {
    name: "engine",
    shared_history: true,
    postgres: martix_migrate::embedded!("engine_postgres"),
    sqlite: martix_migrate::embedded!("engine_sqlite"),
};

/// The transactions of the engine, of every concern: what the engine holds. Whatever
/// implements all the concerns' traits is a `Store`.
pub trait Store:
    RunStore
    + TaskStore
    + TimerStore
    + NamespaceStore
    + ScheduleStore
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
        + ScheduleStore
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
/// (besides `martix_write_batch_v1`'s own MX001 refusals, read in `postgres/batch.rs`).
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
