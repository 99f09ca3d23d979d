//! The store conformance kit: the same behaviour checks for every backend. A backend's test
//! file expands `store_conformance!` with a function that makes a fresh store; each case is a
//! test of its own. Cases isolate themselves by namespace and task queue, so they may share
//! one database.
//!
//! Compiled only with the `conformance` feature, which the tests crate turns on: nothing here
//! ships in the engine.

use crate::clock::Millis;
use crate::events::projection::{Projection, ProjectionError, ProjectionTx};
use crate::history::{
    self, ActivityTask, Dispatch, Lease, Run, RunCommit, ScheduledActivity, StartParams, TaskOp,
    TimerOp,
};
use crate::ids::RunId;
use crate::store::events::{Consumer, StoredEvent};
use crate::store::{ListAfter, ListQuery, Store, StoreError};
use martix_proto::v1 as pb;
use std::sync::Arc;

const T0: Millis = 1_700_000_000_000;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn namespace(store: &dyn Store) -> String {
    let ns = unique("ns");
    store
        .create_namespace(&ns, T0)
        .await
        .expect("create namespace");
    ns
}

fn start(ns: &str, workflow_id: &str, queue: &str, at: Millis) -> RunCommit {
    let params = StartParams {
        namespace: ns.into(),
        workflow_id: workflow_id.into(),
        workflow_type: "thing".into(),
        task_queue: queue.into(),
        ..Default::default()
    };
    history::new_run(&params, RunId::new(), at, Dispatch::nobody(at)).commit
}

/// The run as stored after `commit` (version moved on).
fn stored(commit: &RunCommit) -> Run {
    let mut r = commit.run.clone();
    r.version = commit.expected_version.map_or(1, |v| v + 1);
    r
}

/// A new run is stored whole: checkpoint, first events, its workflow task.
pub async fn a_started_run_reads_back_whole(store: &dyn Store) {
    let ns = namespace(store).await;
    let c = start(&ns, "wf-1", &unique("q"), T0);
    store.commit(&c).await.expect("insert run");
    let run = store.load_run(c.run.run_id).await.unwrap().expect("stored");
    assert_eq!(run, stored(&c));
    let events = store.history(run.run_id, 1, 100).await.unwrap();
    assert_eq!(events, c.events);
    assert_eq!(
        store.last_event(run.run_id).await.unwrap().as_ref(),
        c.events.last()
    );
    let latest = store
        .latest_run(&ns, "wf-1")
        .await
        .unwrap()
        .expect("latest");
    assert_eq!(latest.run_id, run.run_id);
    assert!(store.namespace_exists(&ns).await.unwrap());
    assert!(!store.namespace_exists(&unique("nope")).await.unwrap());
}

/// A change with more events than a history row holds (a reset copying a long history)
/// reads back whole and from any event on.
pub async fn a_long_change_reads_back_from_any_event(store: &dyn Store) {
    let ns = namespace(store).await;
    let mut c = start(&ns, &unique("wf"), &unique("q"), T0);
    let first_extra = c.run.next_event_id;
    for id in first_extra..first_extra + 600 {
        let mut e = c.events[0].clone();
        e.event_id = id;
        c.events.push(e);
    }
    c.run.next_event_id = first_extra + 600;
    store.commit(&c).await.unwrap();
    let run = c.run.run_id;
    assert_eq!(store.history(run, 1, 10_000).await.unwrap(), c.events);
    let ids: Vec<i64> = store
        .history(run, 300, 5)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, [300, 301, 302, 303, 304]);
    assert_eq!(
        store.history(run, 259, 1000).await.unwrap(),
        c.events[258..]
    );
    assert_eq!(
        store.last_event(run).await.unwrap().as_ref(),
        c.events.last()
    );
}

/// A write from a stale read conflicts and writes nothing.
pub async fn a_stale_version_conflicts_and_writes_nothing(store: &dyn Store) {
    let ns = namespace(store).await;
    let c = start(&ns, "wf", &unique("q"), T0);
    store.commit(&c).await.unwrap();
    let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
    let first = history::signal(&run, "a", None, "t", T0 + 1, Dispatch::nobody(T0 + 1))
        .unwrap()
        .commit;
    let second = history::signal(&run, "b", None, "t", T0 + 2, Dispatch::nobody(T0 + 2))
        .unwrap()
        .commit;
    store.commit(&first).await.expect("first writer wins");
    let err = store.commit(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let events = store.history(run.run_id, 1, 100).await.unwrap();
    assert_eq!(events.len() as i64, first.run.next_event_id - 1);
    let after = store.load_run(run.run_id).await.unwrap().unwrap();
    assert_eq!(after.version, run.version + 1);
}

/// At most one open run per workflow id; a closed one may be followed by another.
pub async fn one_open_run_per_workflow_id(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let first = start(&ns, "w-7", &q, T0);
    store.commit(&first).await.unwrap();
    let err = store
        .commit(&start(&ns, "w-7", &q, T0 + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyOpen), "{err}");
    let run = store.load_run(first.run.run_id).await.unwrap().unwrap();
    store
        .commit(&history::terminate(&run, "test", "t", T0 + 2).unwrap())
        .await
        .unwrap();
    let next = start(&ns, "w-7", &q, T0 + 3);
    store
        .commit(&next)
        .await
        .expect("a closed id may run again");
    let latest = store.latest_run(&ns, "w-7").await.unwrap().unwrap();
    assert_eq!(latest.run_id, next.run.run_id);
}

/// A start that assumed a fresh id is refused, with nothing written, once any run of the id
/// exists, open or closed; a start that read the id is not.
pub async fn a_start_on_a_fresh_id_is_refused_once_the_id_has_run(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let fresh = |at| {
        let mut c = start(&ns, "w-9", &q, at);
        c.fresh_id = true;
        c
    };
    let first = fresh(T0);
    store.commit(&first).await.expect("a new id starts");
    let second = fresh(T0 + 1);
    let err = store.commit(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::IdUsed), "open: {err}");
    assert!(store.load_run(second.run.run_id).await.unwrap().is_none());
    let run = store.load_run(first.run.run_id).await.unwrap().unwrap();
    store
        .commit(&history::terminate(&run, "test", "t", T0 + 2).unwrap())
        .await
        .unwrap();
    let third = fresh(T0 + 3);
    let err = store.commit(&third).await.unwrap_err();
    assert!(matches!(err, StoreError::IdUsed), "closed: {err}");
    assert!(
        store
            .history(third.run.run_id, 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let read = start(&ns, "w-9", &q, T0 + 4);
    store.commit(&read).await.expect("a start that read the id");
    let latest = store.latest_run(&ns, "w-9").await.unwrap().unwrap();
    assert_eq!(latest.run_id, read.run.run_id);
}

/// A workflow task is leased to one claimer until its lease runs out.
pub async fn a_workflow_task_is_claimed_once_per_lease(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = store
        .claim_workflow_task(&ns, &q, "lease-a", T0)
        .await
        .unwrap()
        .expect("claimable");
    let wft = run.wft.as_ref().unwrap();
    assert_eq!(wft.lease.as_ref().unwrap().id, "lease-a");
    assert_eq!(
        wft.lease.as_ref().unwrap().until,
        T0 + history::DEFAULT_WORKFLOW_TASK_TIMEOUT_MS
    );
    assert_eq!(run.version, 2, "a claim is a change of the run");
    assert!(
        store
            .claim_workflow_task(&ns, &q, "lease-b", T0 + 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .claim_workflow_task(&ns, &unique("other"), "x", T0)
            .await
            .unwrap()
            .is_none()
    );
    let later = T0 + history::DEFAULT_WORKFLOW_TASK_TIMEOUT_MS;
    let again = store
        .claim_workflow_task(&ns, &q, "lease-b", later)
        .await
        .unwrap();
    let again = again.unwrap();
    assert_eq!(
        again.wft.as_ref().unwrap().lease.as_ref().unwrap().id,
        "lease-b",
        "an expired lease makes the task available again"
    );
    // Given back by its holder (not by anyone else), it is claimable at once.
    assert!(
        !store
            .release_workflow_task(again.run_id, "lease-a")
            .await
            .unwrap()
    );
    assert!(
        store
            .release_workflow_task(again.run_id, "lease-b")
            .await
            .unwrap()
    );
    let released = store.load_run(again.run_id).await.unwrap().unwrap();
    assert_eq!(
        released.version,
        again.version + 1,
        "a release is a change of the run"
    );
    assert!(released.wft.as_ref().unwrap().lease.is_none());
    let taken = store
        .claim_workflow_task(&ns, &q, "lease-c", later + 1)
        .await
        .unwrap()
        .expect("claimable again");
    assert_eq!(taken.wft.unwrap().lease.unwrap().id, "lease-c");
}

fn activity(run: &Run, queue: &str, visible_at: Millis) -> ActivityTask {
    ActivityTask {
        namespace: run.namespace.clone(),
        task_queue: queue.into(),
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

/// Activity tasks: claimed once, invisible before their time, and a change that assumes a
/// lease it does not hold is rolled back whole.
pub async fn activity_tasks_are_leased_and_guarded(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    change
        .tasks
        .push(TaskOp::Insert(activity(&run, &q, T0 + 1000)));
    store.commit(&change).await.unwrap();
    assert!(
        store
            .claim_activity_task(&ns, &q, "l1", T0)
            .await
            .unwrap()
            .is_none(),
        "not visible before visible_at"
    );
    let task = store
        .claim_activity_task(&ns, &q, "l1", T0 + 1000)
        .await
        .unwrap()
        .expect("visible now");
    assert_eq!(task.activity, activity(&run, &q, T0 + 1000).activity);
    assert_eq!(
        task.lease,
        Some(Lease {
            id: "l1".into(),
            until: T0 + 6000
        })
    );
    assert!(
        store
            .claim_activity_task(&ns, &q, "l2", T0 + 1001)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .heartbeat_activity(run.run_id, 3, "l1", Some(b"hb"), T0 + 1000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .heartbeat_activity(run.run_id, 3, "l2", None, T0 + 1000)
            .await
            .unwrap()
    );

    let run = stored(&change);
    let mut wrong = history::signal(
        &run,
        "s2",
        None,
        "t",
        T0 + 2000,
        Dispatch::nobody(T0 + 2000),
    )
    .unwrap()
    .commit;
    wrong.tasks.push(TaskOp::Delete {
        scheduled_event_id: 3,
        lease_id: Some("forged".into()),
    });
    let err = store.commit(&wrong).await.unwrap_err();
    assert!(matches!(err, StoreError::StaleTask), "{err}");
    let after = store.load_run(run.run_id).await.unwrap().unwrap();
    assert_eq!(
        after.version, run.version,
        "nothing of the change was written"
    );
    assert_eq!(
        store.history(run.run_id, 1, 100).await.unwrap().len() as i64,
        run.next_event_id - 1
    );

    let mut retry = history::signal(
        &run,
        "s3",
        None,
        "t",
        T0 + 2000,
        Dispatch::nobody(T0 + 2000),
    )
    .unwrap()
    .commit;
    retry.tasks.push(TaskOp::Retry {
        scheduled_event_id: 3,
        attempt: 2,
        visible_at: T0 + 3000,
        lease_id: "l1".into(),
    });
    store.commit(&retry).await.expect("the holder may retry");
    let task = store
        .claim_activity_task(&ns, &q, "l3", T0 + 3000)
        .await
        .unwrap()
        .expect("retried attempt");
    assert_eq!(task.attempt, 2);
    assert_eq!(task.heartbeat_details.as_deref(), Some(&b"hb"[..]));
    let leases = store.activity_leases(run.run_id).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].attempt, 2);

    // An activity scheduled and cancelled by one change leaves no task behind.
    let run = stored(&retry);
    let mut both = history::signal(
        &run,
        "s4",
        None,
        "t",
        T0 + 4000,
        Dispatch::nobody(T0 + 4000),
    )
    .unwrap()
    .commit;
    let mut task = activity(&run, &q, T0 + 4000);
    task.scheduled_event_id = 90;
    both.tasks.push(TaskOp::Insert(task));
    both.tasks.push(TaskOp::Delete {
        scheduled_event_id: 90,
        lease_id: None,
    });
    store.commit(&both).await.unwrap();
    assert!(
        store
            .claim_activity_task(&ns, &q, "l4", T0 + 4000)
            .await
            .unwrap()
            .is_none(),
        "the cancelled activity's task is gone"
    );
}

/// A lease that runs out is listed for the reaper and never claimed again as is; heartbeats
/// extend a heartbeat-timed lease up to the start-to-close limit.
pub async fn expired_leases_are_reaped_not_reclaimed(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    let mut task = activity(&run, &q, T0);
    task.heartbeat_ms = 1_000;
    change.tasks.push(TaskOp::Insert(task));
    store.commit(&change).await.unwrap();
    let claimed = store
        .claim_activity_task(&ns, &q, "l1", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        claimed.lease.as_ref().unwrap().until,
        T0 + 1_000,
        "the heartbeat timeout is shorter"
    );
    assert_eq!(claimed.started_at, Some(T0));
    // A heartbeat at +800 extends the lease to +1800; one at +4500 only to +5000 (start-to-close).
    assert!(
        store
            .heartbeat_activity(run.run_id, 3, "l1", None, T0 + 800)
            .await
            .unwrap()
    );
    let mine = |v: Vec<crate::store::ExpiredLease>| {
        v.into_iter()
            .filter(|e| e.run_id == run.run_id)
            .collect::<Vec<_>>()
    };
    assert!(
        mine(
            store
                .expired_activity_leases(T0 + 1_500, 100)
                .await
                .unwrap()
        )
        .is_empty()
    );
    for at in [1_700, 2_600, 3_500, 4_400] {
        assert!(
            store
                .heartbeat_activity(run.run_id, 3, "l1", None, T0 + at)
                .await
                .unwrap()
        );
    }
    assert!(
        mine(
            store
                .expired_activity_leases(T0 + 4_999, 100)
                .await
                .unwrap()
        )
        .is_empty()
    );
    let expired = mine(
        store
            .expired_activity_leases(T0 + 5_000, 100)
            .await
            .unwrap(),
    );
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].lease_id, "l1");
    assert!(
        !expired[0].heartbeat,
        "start-to-close ran out, not the heartbeat"
    );
    assert!(
        store
            .claim_activity_task(&ns, &q, "l2", T0 + 9_000)
            .await
            .unwrap()
            .is_none(),
        "an expired lease waits for the reaper"
    );
    assert!(
        !store
            .heartbeat_activity(run.run_id, 3, "l1", None, T0 + 9_000)
            .await
            .unwrap()
    );
}

/// A due timer is listed, and firing it twice is refused.
pub async fn timers_come_due_and_fire_once(store: &dyn Store) {
    let ns = namespace(store).await;
    let c = start(&ns, "wf", &unique("q"), T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    change.timers.push(TimerOp::Insert {
        key: "t:nap".into(),
        fire_at: T0 + 500,
    });
    store.commit(&change).await.unwrap();
    let run = stored(&change);
    let mine = |due: Vec<crate::store::DueTimer>| {
        due.into_iter()
            .filter(|t| t.run_id == run.run_id)
            .collect::<Vec<_>>()
    };
    assert!(mine(store.due_timers(T0 + 499, 1000).await.unwrap()).is_empty());
    let due = mine(store.due_timers(T0 + 500, 1000).await.unwrap());
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].key, "t:nap");
    let mut fire = history::signal(
        &run,
        "fired",
        None,
        "t",
        T0 + 500,
        Dispatch::nobody(T0 + 500),
    )
    .unwrap()
    .commit;
    fire.fired_timer = Some("t:nap".into());
    store.commit(&fire).await.unwrap();
    let mut again = history::signal(
        &stored(&fire),
        "fired",
        None,
        "t",
        T0 + 501,
        Dispatch::nobody(T0 + 501),
    )
    .unwrap()
    .commit;
    again.fired_timer = Some("t:nap".into());
    let err = store.commit(&again).await.unwrap_err();
    assert!(matches!(err, StoreError::StaleTask), "{err}");
    assert!(mine(store.due_timers(T0 + 10_000, 1000).await.unwrap()).is_empty());
}

/// Closing a run drops its task rows and timers.
pub async fn closing_a_run_drops_its_tasks_and_timers(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "wf", &q, T0);
    store.commit(&c).await.unwrap();
    let run = stored(&c);
    let mut change = history::signal(&run, "s", None, "t", T0, Dispatch::nobody(T0))
        .unwrap()
        .commit;
    change.tasks.push(TaskOp::Insert(activity(&run, &q, T0)));
    change.timers.push(TimerOp::Insert {
        key: "t:x".into(),
        fire_at: T0,
    });
    store.commit(&change).await.unwrap();
    let end = history::terminate(&stored(&change), "done", "t", T0 + 1).unwrap();
    store.commit(&end).await.unwrap();
    assert!(store.activity_leases(run.run_id).await.unwrap().is_empty());
    assert!(
        store
            .due_timers(T0 + 10, 1000)
            .await
            .unwrap()
            .iter()
            .all(|t| t.run_id != run.run_id)
    );
    assert!(
        store
            .claim_workflow_task(&ns, &q, "l", T0 + 2)
            .await
            .unwrap()
            .is_none()
    );
}

/// Listing filters by status, type, queue, id prefix and time, newest first, in pages.
pub async fn runs_are_listed_filtered_and_paged(store: &dyn Store) {
    let ns = namespace(store).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = start(&ns, &format!("w-{i}"), "q", T0 + i);
        store.commit(&c).await.unwrap();
        ids.push(c.run.run_id);
    }
    let other = start(&ns, "bill-1", "billing", T0 + 10);
    store.commit(&other).await.unwrap();
    let run = store.load_run(ids[0]).await.unwrap().unwrap();
    store
        .commit(&history::terminate(&run, "x", "t", T0 + 20).unwrap())
        .await
        .unwrap();

    let q = |f: &dyn Fn(&mut ListQuery)| {
        let mut q = ListQuery {
            namespace: ns.clone(),
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let all = store.list_runs(&q(&|_| {})).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].workflow_id, "bill-1", "newest first");
    let ids_of = |runs: Vec<Run>| runs.into_iter().map(|r| r.workflow_id).collect::<Vec<_>>();
    assert_eq!(
        ids_of(
            store
                .list_runs(&q(&|q| q.workflow_id_prefix = Some("w-".into())))
                .await
                .unwrap()
        ),
        ["w-4", "w-3", "w-2", "w-1", "w-0"]
    );
    assert_eq!(
        ids_of(
            store
                .list_runs(&q(&|q| q.statuses = vec![pb::WorkflowStatus::Terminated]))
                .await
                .unwrap()
        ),
        ["w-0"]
    );
    assert_eq!(
        ids_of(
            store
                .list_runs(&q(&|q| q.task_queue = Some("billing".into())))
                .await
                .unwrap()
        ),
        ["bill-1"]
    );
    assert_eq!(
        ids_of(
            store
                .list_runs(&q(&|q| {
                    q.start_time_from = Some(T0 + 1);
                    q.start_time_to = Some(T0 + 3);
                }))
                .await
                .unwrap()
        ),
        ["w-2", "w-1"]
    );
    // Pages of two, each continuing after the last row of the previous one.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_runs(&q(&|q| {
                q.limit = 2;
                q.after = after.clone();
            }))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        after = Some(ListAfter {
            start_time: last.start_time,
            run_id: last.run_id.to_text(),
        });
        seen.extend(page.into_iter().map(|r| r.workflow_id));
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    let total: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(total.len(), 6, "no run twice: {seen:?}");
}

/// Continue-as-new closes one run and opens the next in one transaction.
pub async fn continue_as_new_writes_both_runs(store: &dyn Store) {
    let ns = namespace(store).await;
    let q = unique("q");
    let c = start(&ns, "loop", &q, T0);
    store.commit(&c).await.unwrap();
    let run = store
        .claim_workflow_task(&ns, &q, "l", T0)
        .await
        .unwrap()
        .unwrap();
    let token = history::TaskToken {
        namespace: ns.clone(),
        run_id: run.run_id.to_text(),
        kind: history::TOKEN_KIND_WORKFLOW,
        scheduled_event_id: 2,
        attempt: 1,
        lease_id: "l".into(),
        history_len: run.next_event_id - 1,
    };
    let cmd = pb::Command {
        attributes: Some(pb::command::Attributes::ContinueAsNew(Default::default())),
    };
    let commit = match history::complete_workflow_task(
        &run,
        &token,
        &[cmd],
        "w",
        T0 + 1,
        Dispatch::nobody(T0 + 1),
    )
    .unwrap()
    {
        history::WftOutcome::Applied(c) => c.commit,
        history::WftOutcome::Rejected { error, .. } => panic!("{error}"),
    };
    store.commit(&commit).await.unwrap();
    let old = store.load_run(run.run_id).await.unwrap().unwrap();
    assert_eq!(old.status, pb::WorkflowStatus::ContinuedAsNew);
    let latest = store.latest_run(&ns, "loop").await.unwrap().unwrap();
    assert_eq!(latest.run_id, commit.new_run.as_ref().unwrap().run.run_id);
    assert!(latest.is_open());
}

/// Changes committed at the same time share transactions (group commit), yet each stays all or
/// nothing: a conflicting one is refused alone, the others are written whole.
pub async fn concurrent_changes_commit_together_and_fail_alone(store: &dyn Store) {
    let ns = namespace(store).await;
    let starts: Vec<RunCommit> = (0..20)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + i))
        .collect();
    let before = store.write_transactions();
    let results = futures::future::join_all(starts.iter().map(|c| store.commit(c))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let used = store.write_transactions() - before;
    assert!(used < 20, "20 concurrent starts took {used} transactions");
    // Signal every run; one run also gets a second, stale signal in the same burst.
    let mut changes = Vec::new();
    for c in &starts {
        let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
        changes.push(
            history::signal(&run, "go", None, "t", T0 + 100, Dispatch::nobody(T0 + 100))
                .unwrap()
                .commit,
        );
    }
    let victim = store.load_run(starts[7].run.run_id).await.unwrap().unwrap();
    let stale = history::signal(
        &victim,
        "late",
        None,
        "t",
        T0 + 101,
        Dispatch::nobody(T0 + 101),
    )
    .unwrap()
    .commit;
    let mut all: Vec<&RunCommit> = changes.iter().collect();
    all.insert(3, &stale);
    let results = futures::future::join_all(all.iter().map(|c| store.commit(c))).await;
    let conflicts = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(conflicts, 1, "{results:?}");
    for c in &changes {
        let events = store.history(c.run.run_id, 1, 100).await.unwrap();
        let is_victim = c.run.run_id == victim.run_id;
        let stale_won = results[3].is_ok();
        if !is_victim || !stale_won {
            assert_eq!(
                events.len() as i64,
                c.run.next_event_id - 1,
                "written whole"
            );
        }
    }
    let victim_events = store.history(victim.run_id, 1, 100).await.unwrap();
    assert_eq!(
        victim_events.len() as i64,
        victim.next_event_id,
        "exactly one of the two signals was written"
    );
    // A burst where one change fails in the database itself (a second open run of an id):
    // that change alone fails, the others are written.
    let more: Vec<RunCommit> = (0..10)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + 200 + i))
        .collect();
    let twin = start(&ns, &starts[0].run.workflow_id, &unique("q"), T0 + 300);
    let mut burst: Vec<&RunCommit> = more.iter().collect();
    burst.insert(5, &twin);
    let results = futures::future::join_all(burst.iter().map(|c| store.commit(c))).await;
    for (i, r) in results.iter().enumerate() {
        if i == 5 {
            assert!(matches!(r, Err(StoreError::AlreadyOpen)), "{r:?}");
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
        }
    }
    assert!(store.load_run(twin.run.run_id).await.unwrap().is_none());
    for c in &more {
        let events = store.history(c.run.run_id, 1, 100).await.unwrap();
        assert_eq!(
            events.len() as i64,
            c.run.next_event_id - 1,
            "written whole"
        );
    }
    // A burst where one change names a task it does not hold, and another a stale checkpoint
    // and a task it does not hold: refused as stale and as a conflict, nothing of them written.
    let q = unique("q");
    let holder = start(&ns, &unique("wf"), &q, T0 + 400);
    store.commit(&holder).await.unwrap();
    let run = stored(&holder);
    let mut with_task = history::signal(&run, "s", None, "t", T0 + 401, Dispatch::nobody(T0 + 401))
        .unwrap()
        .commit;
    with_task
        .tasks
        .push(TaskOp::Insert(activity(&run, &q, T0 + 401)));
    store.commit(&with_task).await.unwrap();
    let run = stored(&with_task);
    let mut forged = history::signal(
        &run,
        "forged",
        None,
        "t",
        T0 + 402,
        Dispatch::nobody(T0 + 402),
    )
    .unwrap()
    .commit;
    forged.tasks.push(TaskOp::Delete {
        scheduled_event_id: 3,
        lease_id: Some("forged".into()),
    });
    let mut stale = history::signal(
        &stored(&holder),
        "stale",
        None,
        "t",
        T0 + 402,
        Dispatch::nobody(T0 + 402),
    )
    .unwrap()
    .commit;
    stale.tasks.push(TaskOp::Delete {
        scheduled_event_id: 3,
        lease_id: Some("forged".into()),
    });
    let others: Vec<RunCommit> = (0..6)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + 410 + i))
        .collect();
    let mut burst: Vec<&RunCommit> = others.iter().collect();
    burst.insert(2, &forged);
    burst.insert(4, &stale);
    let results = futures::future::join_all(burst.iter().map(|c| store.commit(c))).await;
    assert!(
        matches!(results[2], Err(StoreError::StaleTask)),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(results[4], Err(StoreError::Conflict { .. })),
        "{:?}",
        results[4]
    );
    let after = store.load_run(run.run_id).await.unwrap().unwrap();
    assert_eq!(
        after.version, run.version,
        "the refused changes wrote nothing"
    );
    assert_eq!(
        store.history(run.run_id, 1, 100).await.unwrap().len() as i64,
        run.next_event_id - 1
    );
    for (i, r) in results.iter().enumerate() {
        if i != 2 && i != 4 {
            assert!(r.is_ok(), "{i}: {r:?}");
        }
    }
    // A burst where one change's history event collides with a stored one, so a statement
    // the batch's changes share fails: that change alone fails, the others are written whole.
    let runs: Vec<RunCommit> = (0..6)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + 500 + i))
        .collect();
    let started = futures::future::join_all(runs.iter().map(|c| store.commit(c))).await;
    assert!(started.iter().all(Result::is_ok), "{started:?}");
    let signals: Vec<RunCommit> = runs
        .iter()
        .map(|c| {
            history::signal(
                &stored(c),
                "go",
                None,
                "t",
                T0 + 510,
                Dispatch::nobody(T0 + 510),
            )
            .unwrap()
            .commit
        })
        .collect();
    let mut bad = signals[3].clone();
    bad.events[0].event_id = 1;
    let mut burst: Vec<&RunCommit> = signals.iter().collect();
    burst[3] = &bad;
    let before = store.write_transactions();
    let results = futures::future::join_all(burst.iter().map(|c| store.commit(c))).await;
    assert_eq!(
        store.write_transactions() - before,
        1,
        "the burst went to the writers as one batch"
    );
    for (i, (r, c)) in results.iter().zip(&signals).enumerate() {
        let events = store.history(c.run.run_id, 1, 100).await.unwrap();
        if i == 3 {
            assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
            let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
            assert_eq!(run.version, 1, "nothing of the bad change was written");
            assert_eq!(events.len() as i64, runs[i].run.next_event_id - 1);
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
            assert_eq!(
                events.len() as i64,
                c.run.next_event_id - 1,
                "written whole"
            );
        }
    }
    // A burst where two changes of different runs carry one request id: refused after the
    // checkpoint was written, so the batch is written again without it; exactly one of the
    // two is recorded, the other answered as a duplicate with nothing of it written.
    let runs: Vec<RunCommit> = (0..5)
        .map(|i| start(&ns, &unique("wf"), &unique("q"), T0 + 600 + i))
        .collect();
    let started = futures::future::join_all(runs.iter().map(|c| store.commit(c))).await;
    assert!(started.iter().all(Result::is_ok), "{started:?}");
    let request = unique("req");
    let signals: Vec<RunCommit> = runs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut s = history::signal(
                &stored(c),
                "go",
                None,
                "t",
                T0 + 610,
                Dispatch::nobody(T0 + 610),
            )
            .unwrap()
            .commit;
            if i == 1 || i == 3 {
                s.request_id = Some(request.clone());
            }
            s
        })
        .collect();
    let results = futures::future::join_all(signals.iter().map(|c| store.commit(c))).await;
    let duplicates: Vec<usize> = (0..results.len())
        .filter(|&i| matches!(results[i], Err(StoreError::Duplicate)))
        .collect();
    assert!(
        duplicates == [1] || duplicates == [3],
        "one of the two is a duplicate: {results:?}"
    );
    for (i, (r, c)) in results.iter().zip(&signals).enumerate() {
        let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
        if duplicates.contains(&i) {
            assert_eq!(
                run,
                stored(&runs[i]),
                "nothing of the duplicate was written"
            );
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
            assert_eq!(run.next_event_id, c.run.next_event_id, "written whole");
        }
    }
}

/// The relay's view of every shard past `consumer`'s cursors, once `ready` holds of it (for up
/// to ten seconds): on PostgreSQL a row is read only once every transaction older than its own
/// has ended, and the server's other transactions (other tests) hold that back for moments.
pub async fn relay_view(
    store: &dyn Store,
    consumer: Consumer,
    ready: impl Fn(&[StoredEvent]) -> bool,
) -> Vec<StoredEvent> {
    let all: Vec<i32> = (0..crate::store::events::SHARDS).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let view = match consumer {
            Consumer::Projected => store.unprojected_events(&all, 100_000).await,
            Consumer::Sent => store.unsent_events(&all, 100_000).await,
        }
        .unwrap();
        if ready(&view) || std::time::Instant::now() > deadline {
            return view;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn outbox_event(
    run: &Run,
    seq: i64,
    event_type: &str,
    at: Millis,
    body: &str,
) -> history::OutboxEvent {
    history::OutboxEvent {
        event_id: format!("{}/{}", run.run_id.to_text(), 100 + seq),
        namespace: run.namespace.clone(),
        subject: run.workflow_id.clone(),
        workflow_type: run.workflow_type.clone(),
        run_id: run.run_id,
        sequence: seq,
        event_type: event_type.into(),
        occurred_at: at,
        body: body.into(),
    }
}

/// Outbox rows are written with the run change that publishes them, or not at all; a signal
/// request id is recorded once; the relay's two cursors move apart and never back; the host
/// hands a projection the events it takes in the cursor's transaction; a rebuild sets the
/// cursor back; sent and folded rows are purged.
pub async fn outbox_rows_travel_with_their_change(store: &dyn Store) {
    let ns = namespace(store).await;
    let c = start(&ns, "w-1", &unique("q"), T0);
    store.commit(&c).await.unwrap();
    let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
    let mut change = history::signal(&run, "go", None, "t", T0 + 1, Dispatch::nobody(T0 + 1))
        .unwrap()
        .commit;
    change.request_id = Some("req-1".into());
    change.outbox = vec![
        outbox_event(&run, 1, "thing.made", T0 + 1, r#"{"owner":"c-1"}"#),
        outbox_event(&run, 2, "thing.priced", T0 + 1, r#"{"cents":1080}"#),
        outbox_event(&run, 3, "thing.paid", T0 + 1, r#"{"cents":1080}"#),
    ];
    // A stale twin of the change: refused, and none of its rows is written.
    let mut stale = history::signal(&run, "late", None, "t", T0 + 2, Dispatch::nobody(T0 + 2))
        .unwrap()
        .commit;
    stale.outbox = vec![outbox_event(&run, 9, "thing.failed", T0 + 2, "{}")];
    store
        .commit(&change)
        .await
        .expect("the change and its events");
    assert!(matches!(
        store.commit(&stale).await,
        Err(StoreError::Conflict { .. })
    ));
    let rows = store.list_outbox(Some(&ns), 0, 100).await.unwrap();
    let seqs: Vec<(i64, &str)> = rows
        .iter()
        .map(|e| (e.sequence, e.event_type.as_str()))
        .collect();
    assert_eq!(
        seqs,
        [(1, "thing.made"), (2, "thing.priced"), (3, "thing.paid")]
    );
    assert!(
        rows.windows(2)
            .all(|w| (w[0].xact, w[0].position) < (w[1].xact, w[1].position))
    );
    let shard = crate::store::events::shard_of(&ns, "w-1");
    assert!(
        rows.iter()
            .all(|e| !e.sent && e.subject == "w-1" && e.shard == shard)
    );

    // The same request id again: refused as a duplicate, nothing written.
    let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
    let mut again = history::signal(&run, "go", None, "t", T0 + 3, Dispatch::nobody(T0 + 3))
        .unwrap()
        .commit;
    again.request_id = Some("req-1".into());
    assert!(matches!(
        store.commit(&again).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.load_run(run.run_id).await.unwrap().unwrap(), run);

    // The relay's view: each shard's events past its projection cursor, ours in order.
    let ours = |events: &[StoredEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.namespace == ns)
            .map(|e| e.event_id.clone())
            .collect()
    };
    let ids: Vec<String> = rows.iter().map(|e| e.event_id.clone()).collect();
    let pending = relay_view(store, Consumer::Projected, |e| ours(e) == ids).await;
    assert_eq!(ours(&pending), ids);
    // A batch that is not the next past the cursor (the first event skipped) is refused and
    // folds nothing.
    let tally = Arc::new(Tally::default());
    let projections: Vec<Arc<dyn Projection>> = vec![tally.clone()];
    let first = pending.iter().position(|e| e.namespace == ns).unwrap();
    let mut skipping = pending.clone();
    skipping.remove(first);
    assert!(matches!(
        store.project(&skipping, &projections).await,
        Err(StoreError::CursorMoved)
    ));
    assert!(tally.folded(&ns).is_empty());
    // Folded: each event the projection takes, in order, once per call.
    store.project(&pending, &projections).await.unwrap();
    assert_eq!(tally.folded(&ns), ids);
    // The cursor is past them, and a batch folded again behind it does not move it back.
    store.project(&pending[..1], &projections).await.unwrap();
    let all: Vec<i32> = (0..crate::store::events::SHARDS).collect();
    let left = store.unprojected_events(&all, 100_000).await.unwrap();
    assert!(ours(&left).is_empty(), "{left:?}");
    assert_eq!(store.outbox_status(T0 + 5).await.unwrap().unprojected, 0);

    // A rebuild clears the projection, folds what it is given and sets the cursors back: a
    // batch read before it is refused, not folded past what the rebuild wiped; read again from
    // the start, everything is offered once more.
    let rebuilt = Arc::new(Tally::default());
    let projections: Vec<Arc<dyn Projection>> = vec![rebuilt.clone()];
    store
        .rebuild_projections(&projections, &pending[first..first + 1])
        .await
        .unwrap();
    assert_eq!(rebuilt.cleared.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(rebuilt.folded(&ns), ids[..1]);
    assert!(matches!(
        store.project(&pending[first + 1..], &projections).await,
        Err(StoreError::CursorMoved)
    ));
    let again = relay_view(store, Consumer::Projected, |e| ours(e) == ids).await;
    store.project(&again, &projections).await.unwrap();
    assert_eq!(
        rebuilt.folded(&ns).len(),
        4,
        "the first again, then the three"
    );

    // The broker's cursor is its own: folding sent nothing.
    let unsent = relay_view(store, Consumer::Sent, |e| ours(e) == ids).await;
    assert_eq!(ours(&unsent), ids);
    assert!(store.outbox_status(T0 + 5).await.unwrap().unsent >= 3);
    store.mark_sent(&unsent).await.unwrap();
    assert!(
        store
            .list_outbox(Some(&ns), 0, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.sent)
    );
    assert_eq!(store.outbox_status(T0 + 7).await.unwrap().unsent, 0);

    // Sent and folded rows go after the retention.
    assert!(store.purge_events(T0 + 8, 1_000_000).await.unwrap() >= 3);
    assert!(
        store
            .list_outbox(Some(&ns), 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A projection that notes what it is given (the kit checks the host, not a read model).
#[derive(Default)]
struct Tally {
    folded: std::sync::Mutex<Vec<(String, String)>>,
    cleared: std::sync::atomic::AtomicUsize,
}

impl Tally {
    /// The ids folded of namespace `ns`, in order.
    fn folded(&self, ns: &str) -> Vec<String> {
        let folded = self.folded.lock().unwrap();
        folded
            .iter()
            .filter(|(n, _)| n == ns)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl Projection for Tally {
    fn name(&self) -> &'static str {
        "tally"
    }

    fn takes(&self, event: &StoredEvent) -> bool {
        event.event_type.starts_with("thing.")
    }

    async fn fold(
        &self,
        _tx: &mut ProjectionTx<'_>,
        batch: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut folded = self.folded.lock().unwrap();
        folded.extend(
            batch
                .iter()
                .map(|e| (e.namespace.clone(), e.event_id.clone())),
        );
        Ok(())
    }

    async fn clear(&self, _tx: &mut ProjectionTx<'_>) -> Result<(), ProjectionError> {
        self.cleared
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Shard leases: live nodes share the shards evenly, never one shard at a time by two, and a
/// newcomer gets its share from a node that held them all.
pub async fn outbox_shards_are_leased_apart(store: &dyn Store) {
    let (a, b) = (unique("owner"), unique("owner"));
    // An hour ahead: every lease of a live relay (other tests' engines) has run out by then.
    let now = crate::clock::Clock::now(&crate::clock::SystemClock) + 3_600_000;
    let all = store.lease_shards(&a, now, 10_000).await.unwrap();
    assert_eq!(all.len(), 16, "alone, a node takes every shard");
    let none = store.lease_shards(&b, now, 10_000).await.unwrap();
    assert!(none.is_empty(), "nothing is free yet: {none:?}");
    // The first node sees the second and gives back half; the second takes them.
    let kept = store.lease_shards(&a, now + 1, 10_000).await.unwrap();
    assert_eq!(kept.len(), 8, "{kept:?}");
    let taken = store.lease_shards(&b, now + 2, 10_000).await.unwrap();
    assert!(!taken.is_empty() && taken.len() <= 8, "{taken:?}");
    assert!(
        taken.iter().all(|s| !kept.contains(s)),
        "{kept:?} / {taken:?}"
    );
    store.release_shards(&a).await.unwrap();
    store.release_shards(&b).await.unwrap();
    let status = store.outbox_status(now + 3).await.unwrap();
    assert!(status.leases.iter().all(|l| l.owner != a && l.owner != b));
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
            expired_leases_are_reaped_not_reclaimed,
            timers_come_due_and_fire_once,
            closing_a_run_drops_its_tasks_and_timers,
            runs_are_listed_filtered_and_paged,
            continue_as_new_writes_both_runs,
            concurrent_changes_commit_together_and_fail_alone,
            outbox_rows_travel_with_their_change,
            outbox_shards_are_leased_apart,
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
