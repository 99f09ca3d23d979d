//! Tasks: claims and leases of the workflow and activity tasks that `RunStore::commit` writes.
//!
//! A task is handed to one worker at a time: a claim leases it until a deadline, and only the
//! lease's holder may complete, heartbeat or give it back. A lease that runs out makes a
//! workflow task claimable again; an activity attempt's is reaped by the engine, which records
//! the timeout and schedules the retry (`expired_activity_leases`), never claimed here.

use crate::clock::Millis;
use crate::history::{ActivityTask, Run};
use crate::ids::RunId;
use crate::store::StoreError;

/// The channel commits notify on (`martix_write_batch_v1`, migration 0012, names it too).
pub(crate) const TASK_CHANNEL: &str = "martix_tasks";

/// A queue that got a claimable task on another node (PostgreSQL `LISTEN/NOTIFY`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskNotice {
    pub namespace: String,
    pub queue: String,
    /// `true`: a workflow task; `false`: an activity task.
    pub workflow: bool,
}

/// An activity attempt whose lease ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredLease {
    pub run_id: RunId,
    pub namespace: String,
    pub scheduled_event_id: i64,
    pub attempt: i32,
    pub lease_id: String,
    /// The lease was cut short by a missed heartbeat, not by the start-to-close timeout.
    pub heartbeat: bool,
}

/// What a held activity task row says about its attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityLease {
    pub scheduled_event_id: i64,
    pub attempt: i32,
    pub lease_until: Option<Millis>,
}

/// Claims, leases and heartbeats of tasks. Every method is atomic.
#[async_trait::async_trait]
pub trait TaskStore: Send + Sync {
    /// Tasks made claimable by other nodes sharing the database, if the backend can tell.
    fn subscribe_tasks(&self) -> Option<tokio::sync::broadcast::Receiver<TaskNotice>> {
        None
    }

    /// Leases the oldest available workflow task of a queue to `lease_id`, for the run's
    /// workflow task timeout. Returns the run with the lease, at its new version.
    async fn claim_workflow_task(
        &self,
        namespace: &str,
        queue: &str,
        lease_id: &str,
        now: Millis,
    ) -> Result<Option<Run>, StoreError>;

    /// Gives back a workflow task leased to `lease_id` that nobody took: it becomes claimable
    /// at once, at the run's next version. False if the run no longer holds that lease.
    async fn release_workflow_task(
        &self,
        run_id: RunId,
        lease_id: &str,
    ) -> Result<bool, StoreError>;

    /// Moves to its run's own queue, and leases to `lease_id`, the oldest workflow task of
    /// `queue`'s runs that has waited on a sticky queue since `stale_before` unclaimed (the
    /// worker that cached the run is gone).
    async fn claim_expired_sticky(
        &self,
        namespace: &str,
        queue: &str,
        lease_id: &str,
        now: Millis,
        stale_before: Millis,
    ) -> Result<Option<Run>, StoreError>;

    /// Leases the oldest available activity task of a queue to `lease_id`, for its
    /// start-to-close timeout.
    async fn claim_activity_task(
        &self,
        namespace: &str,
        queue: &str,
        lease_id: &str,
        now: Millis,
    ) -> Result<Option<ActivityTask>, StoreError>;

    /// Records heartbeat details on the activity task held by `lease_id`. `false` if no task is
    /// held by it.
    async fn heartbeat_activity(
        &self,
        namespace: &str,
        run_id: RunId,
        scheduled_event_id: i64,
        lease_id: &str,
        details: Option<&[u8]>,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Activity attempts whose lease ran out (the worker died, hung, or missed a heartbeat).
    async fn expired_activity_leases(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<ExpiredLease>, StoreError>;

    /// The activity task rows of a run (for describing it).
    async fn activity_leases(&self, run_id: RunId) -> Result<Vec<ActivityLease>, StoreError>;
}
