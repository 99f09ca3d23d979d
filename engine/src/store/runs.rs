//! Runs: the transactions of a run's change and the reads of its checkpoint and history.
//!
//! `commit` is the store's one write of a run: everything a change produces (events, the
//! checkpoint, tasks, timers, outbox rows, a continued run) in one transaction, guarded by the
//! checkpoint's version, or nothing. Claims and leases of the tasks it writes are
//! `TaskStore`'s; its timers come due through `TimerStore`.

use crate::clock::Millis;
use crate::history::{Run, RunCommit};
use crate::ids::{Namespace, RunId, TaskQueue, WorkflowType};
use crate::store::StoreError;
use martix_proto::v1 as pb;

/// Where a page of a run listing continues: after this run, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListAfter {
    pub start_time: Millis,
    pub run_id: String,
}

/// Filters and page position of a run listing.
#[derive(Clone, Debug)]
pub struct ListQuery {
    pub namespace: Namespace,
    pub statuses: Vec<pb::WorkflowStatus>,
    pub workflow_type: Option<WorkflowType>,
    pub task_queue: Option<TaskQueue>,
    pub workflow_id_prefix: Option<String>,
    pub start_time_from: Option<Millis>,
    pub start_time_to: Option<Millis>,
    /// Continue after this run (by start time, then run id), in the order asked.
    pub after: Option<ListAfter>,
    pub limit: usize,
    /// Oldest first (what has waited longest), instead of newest first.
    pub oldest_first: bool,
    /// A parsed `ListWorkflows` query, with the filters above.
    pub filter: Option<crate::visibility::Filter>,
}

impl ListQuery {
    /// The newest `limit` runs of `namespace`, unfiltered.
    pub fn new(namespace: Namespace, limit: usize) -> Self {
        Self {
            namespace,
            statuses: Vec::new(),
            workflow_type: None,
            task_queue: None,
            workflow_id_prefix: None,
            start_time_from: None,
            start_time_to: None,
            after: None,
            limit,
            oldest_first: false,
            filter: None,
        }
    }
}

/// A run's changes and what they wrote. Every method is atomic.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync {
    /// Writes one change of a run (and of the run it continues into), or nothing.
    /// `Conflict` if the run is no longer at `expected_version`; `AlreadyOpen` if a new run's
    /// workflow id has an open run; `StaleTask` if a task or timer it names is not as assumed.
    async fn commit(&self, commit: &RunCommit) -> Result<(), StoreError>;

    /// `commit` of a change the caller shares: queued for the writer without a copy.
    async fn commit_shared(&self, commit: std::sync::Arc<RunCommit>) -> Result<(), StoreError> {
        self.commit(&commit).await
    }

    /// The checkpoint of a run.
    async fn load_run(&self, run_id: RunId) -> Result<Option<Run>, StoreError>;

    /// The newest run of a workflow id.
    async fn latest_run(
        &self,
        namespace: &str,
        workflow_id: &str,
    ) -> Result<Option<Run>, StoreError>;

    /// Up to `limit` events from `from_event_id` on, in order.
    async fn history(
        &self,
        run_id: RunId,
        from_event_id: i64,
        limit: usize,
    ) -> Result<Vec<pb::HistoryEvent>, StoreError>;

    /// The last event of a run's history.
    async fn last_event(&self, run_id: RunId) -> Result<Option<pb::HistoryEvent>, StoreError>;

    /// Runs matching the query, newest first.
    async fn list_runs(&self, query: &ListQuery) -> Result<Vec<Run>, StoreError>;

    /// The fingerprint recorded with a signal's request id (by the `commit` that delivered
    /// it), if it was recorded and not yet purged (`EventStore::purge_events`): `Some(None)`
    /// for an id recorded without one (before fingerprints were). Looks for each of `keys`
    /// (the id as recorded now, and as recorded before ids were scoped by workflow).
    async fn request_recorded(
        &self,
        namespace: &str,
        keys: &[&str],
    ) -> Result<Option<Option<i64>>, StoreError>;

    /// Deletes up to `limit` runs of `namespace` that closed before `closed_before`, oldest
    /// first, with their histories (their tasks and timers went when they closed); returns
    /// how many. Open runs are never touched.
    async fn purge_closed_runs(
        &self,
        namespace: &str,
        closed_before: Millis,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// When the oldest closed run `namespace` keeps closed, if it keeps any.
    async fn oldest_closed_run(&self, namespace: &str) -> Result<Option<Millis>, StoreError>;
}
