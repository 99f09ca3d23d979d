//! The store conformance kit: the same behaviour checks for every backend. A backend's test
//! file expands `store_conformance!` with a function that makes a fresh store; each case is a
//! test of its own. Cases isolate themselves by namespace and task queue, so they may share
//! one database.
//!
//! Compiled only with the `conformance` feature, which the tests crate turns on: nothing here
//! ships in the engine. The cases are by concern: `runs.rs` (commits, reads, listings),
//! `tasks.rs` (claims, leases, timers), `events.rs` (the outbox and its cursors).

mod events;
mod runs;
mod tasks;

pub use events::*;
pub use runs::*;
pub use tasks::*;

use crate::clock::Millis;
use crate::history::{
    self, ActivityTask, Dispatch, Run, RunCommit, ScheduledActivity, StartParams,
};
use crate::ids::{Namespace, RunId, TaskQueue, WorkflowId, WorkflowType};
use crate::store::Store;
use martix_proto::v1 as pb;

pub(super) const T0: Millis = 1_700_000_000_000;

pub(super) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub(super) async fn namespace(store: &dyn Store) -> String {
    let ns = unique("ns");
    store
        .create_namespace(&ns, crate::store::DEFAULT_RETENTION_MS, T0)
        .await
        .expect("create namespace");
    ns
}

pub(super) fn start(ns: &str, workflow_id: &str, queue: &str, at: Millis) -> RunCommit {
    let params = StartParams::new(
        Namespace::parse(ns).unwrap(),
        WorkflowId::parse(workflow_id).unwrap(),
        WorkflowType::parse("thing").unwrap(),
        TaskQueue::parse(queue).unwrap(),
    );
    history::new_run(&params, RunId::new(), at, Dispatch::nobody(at)).commit
}

/// An activity task of `run` on `queue`, as a change would schedule it.
pub(super) fn activity(run: &Run, queue: &str, visible_at: Millis) -> ActivityTask {
    ActivityTask {
        namespace: run.namespace.clone(),
        task_queue: TaskQueue::parse(queue).unwrap(),
        run_id: run.run_id,
        scheduled_event_id: 3,
        attempt: 1,
        visible_at,
        lease: None,
        lease_ms: 5_000,
        activity: ScheduledActivity {
            activity_id: "a-1".into(),
            activity_type: "reserve".into(),
            input: Some(pb::Payload {
                data: vec![1, 2, 3],
                ..Default::default()
            }),
            ..Default::default()
        },
        heartbeat_details: None,
        heartbeat_ms: 0,
        started_at: None,
    }
}

/// The run as stored after `commit` (version moved on).
pub(super) fn stored(commit: &RunCommit) -> Run {
    let mut r = commit.run.clone();
    r.version = commit.expected_version.map_or(1, |v| v + 1);
    r
}

/// Expands to one `#[tokio::test]` per conformance case, each on a store from `$make`
/// (an async fn returning `Arc<dyn Store>`).
#[macro_export]
macro_rules! store_conformance {
    ($make:path) => {
        $crate::store_conformance!(@cases $make;
            a_started_run_reads_back_whole,
            a_long_change_reads_back_from_any_event,
            a_stale_version_conflicts_and_writes_nothing,
            one_open_run_per_workflow_id,
            a_start_on_a_fresh_id_is_refused_once_the_id_has_run,
            a_workflow_task_is_claimed_once_per_lease,
            activity_tasks_are_leased_and_guarded,
            held_tasks_wait_and_held_rows_are_left_alone,
            tasks_parked_behind_a_breaker_wait_until_released,
            a_breaker_is_open_while_its_latest_report_says_so,
            expired_leases_are_reaped_not_reclaimed,
            timers_come_due_and_fire_once,
            closing_a_run_drops_its_tasks_and_timers,
            runs_are_listed_filtered_and_paged,
            closed_runs_past_retention_are_purged,
            continue_as_new_writes_both_runs,
            concurrent_changes_commit_together_and_fail_alone,
            outbox_rows_travel_with_their_change,
            outbox_shards_are_leased_apart,
            breakers_are_kept_per_namespace_and_forgotten_when_stale,
            pollers_are_kept_per_queue_and_forgotten_when_old,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = $make().await;
                $crate::store::conformance::$case(&*store).await;
            }
        )*
    };
}
