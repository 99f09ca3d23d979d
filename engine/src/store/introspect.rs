//! Introspection: what the store can tell about itself and the work waiting in it, for
//! metrics, readiness and operators. Nothing here changes anything; the breakers operators
//! see are `BreakerStore`'s.

use crate::clock::Millis;
use crate::store::StoreError;

/// Which kind of task a backlog counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Workflow,
    Activity,
}

impl TaskKind {
    /// The name metrics label it with.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Workflow => "workflow",
            TaskKind::Activity => "activity",
        }
    }
}

/// Tasks of one queue due now that no worker holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backlog {
    pub namespace: String,
    pub queue: String,
    pub kind: TaskKind,
    pub tasks: i64,
}

/// The store's own figures and the work waiting in it.
#[async_trait::async_trait]
pub trait Introspection: Send + Sync {
    /// Which backend this is ("postgres", "sqlite").
    fn backend(&self) -> &'static str;

    /// How many write transactions this store has committed (or tried to): the figure the
    /// commit budget is about.
    fn write_transactions(&self) -> u64;

    /// How many times this store has read one run by its id (`RunStore::load_run`).
    fn run_reads(&self) -> u64;

    /// Transactions the whole database has committed or rolled back so far, as the database
    /// counts them (`pg_stat_database`; reads and other clients included), if it can tell.
    async fn database_transactions(&self) -> Result<Option<i64>, StoreError>;

    /// Tasks due at `now` that no worker holds, per queue and kind.
    async fn backlog(&self, now: Millis) -> Result<Vec<Backlog>, StoreError>;
}
